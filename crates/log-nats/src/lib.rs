//! The scale-out log engine of TellOnce: the log as a NATS JetStream stream.
//!
//! Every entry is one message whose payload is the same checksummed, hash-chained frame the
//! embedded engine writes (`tellonce_log::frame`), published to `PREFIX.<source>` (a subject per
//! partner). The stream's sequence is the log's order: entry offset = sequence − 1, and each
//! frame carries its offset, so a reader checks that the two agree.
//!
//! Writes are conditional, so several hub replicas can share one stream without forking the
//! chain: the first message of a batch carries `Nats-Expected-Last-Sequence` (the replica's view
//! of the end of the log) and each later one also `Nats-Expected-Last-Msg-Id` (the previous
//! message of the batch), so a message can only land directly after the one it was chained to.
//! A replica that loses such a race catches up from the stream and tries again.
//!
//! Idempotency lasts for the life of the log, not only JetStream's duplicate window: a replica
//! appends only when it has applied every earlier entry (that is what the expected sequence
//! guarantees), so its index of `(source, id)` → offset, rebuilt from the stream at open and kept
//! up to date on every catch-up, is complete. `Nats-Msg-Id` (a hash of the key) is a second guard
//! within the window. With `sync_interval: always` on the servers and R3, an acknowledgement
//! means the entry is fsynced on a quorum.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tellonce_log::frame::key_of;
use tellonce_log::{frame, AppendOutcome, BoxFuture, Head, Log, LogError, NewEntry, StoredEntry};
use tracing::{info, warn};

/// How long a read of an entry known to exist keeps retrying a failing request.
const FETCH_PATIENCE: Duration = Duration::from_secs(15);

pub mod server;

/// Publishes sent before their acknowledgements are awaited.
const PUBLISH_WINDOW: usize = 1000;
/// Direct gets in flight while reading a range.
const READ_AHEAD: usize = 64;
/// Entries read per step of a catch-up.
const CATCH_UP_BATCH: u64 = 2_000;

/// Where and how the log is kept in JetStream.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// The NATS server URL(s), comma separated.
    pub url: String,
    /// The stream name.
    pub stream: String,
    /// Subjects are `PREFIX.<source>`.
    pub subject_prefix: String,
    /// Stream replicas: 1 on one server, 3 in a cluster.
    pub replicas: usize,
    /// JetStream's duplicate window (the `Nats-Msg-Id` guard).
    pub duplicate_window: Duration,
    /// How many times one append retries after losing a race to another writer.
    pub max_retries: usize,
    /// How long to wait for a JetStream answer (an acknowledgement, a read).
    pub timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            url: "nats://127.0.0.1:4222".into(),
            stream: "TELLONCE".into(),
            subject_prefix: "tellonce.log".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_retries: 20,
            timeout: Duration::from_secs(5),
        }
    }
}

struct Writer {
    keys: HashMap<Vec<u8>, u64>,
    head: Head,
    /// The message id of the last entry (for the chain of expectations).
    last_msg_id: Option<String>,
    /// Set when a publish failed in a way that leaves the stream's state unknown here.
    stale: bool,
}

/// The log on a JetStream stream.
pub struct NatsLog {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    opts: NatsOptions,
    writer: tokio::sync::Mutex<Writer>,
    head: RwLock<Head>,
    /// Appends waiting for the writer; whoever holds the writer takes them all as one group.
    queue: std::sync::Mutex<Vec<Waiting>>,
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<AppendOutcome>, LogError>>;

struct Waiting {
    entries: Vec<NewEntry>,
    reply: Reply,
}

/// A copy of an error for each caller of a failed group.
fn copy_error(e: &LogError) -> LogError {
    match e {
        LogError::Corrupt { offset, detail } => LogError::Corrupt {
            offset: *offset,
            detail: detail.clone(),
        },
        LogError::Invalid(m) => LogError::Invalid(m.clone()),
        LogError::Closed => LogError::Closed,
        other => LogError::Io(std::io::Error::other(other.to_string())),
    }
}

/// The `Nats-Msg-Id` of a key: 128 bits of its SHA-256, in hex.
fn msg_id(key: &[u8]) -> String {
    Sha256::digest(key)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A subject token for a source: itself when it is a plain token, else hex.
fn subject_token(source: &str) -> String {
    if !source.is_empty()
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        source.to_string()
    } else {
        format!(
            "x{}",
            source
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Io(std::io::Error::other(format!("{what}: {e}")))
}

impl NatsLog {
    /// Connects, creates the stream if it does not exist, and reads the whole log to rebuild the
    /// idempotency index (verifying every checksum and the chain).
    pub async fn open(opts: NatsOptions) -> Result<NatsLog, LogError> {
        let urls: Vec<&str> = opts.url.split(',').map(str::trim).collect();
        let client = async_nats::connect(urls)
            .await
            .map_err(|e| unavailable(&format!("cannot connect to NATS at {}", opts.url), e))?;
        let js = jetstream::new(client);
        let config = jetstream::stream::Config {
            name: opts.stream.clone(),
            subjects: vec![format!("{}.>", opts.subject_prefix)],
            storage: jetstream::stream::StorageType::File,
            num_replicas: opts.replicas,
            duplicate_window: opts.duplicate_window,
            allow_direct: true,
            ..Default::default()
        };
        // A cluster that has just started may still be electing its JetStream leader: retry
        // for a bounded time.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(stream) => break stream,
                Err(e) if std::time::Instant::now() < deadline => {
                    warn!(error = %e, stream = %opts.stream, "stream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(unavailable(
                        &format!("cannot open stream {}", opts.stream),
                        e,
                    ))
                }
            }
        };
        let log = NatsLog {
            js,
            stream,
            opts,
            writer: tokio::sync::Mutex::new(Writer {
                keys: HashMap::new(),
                head: Head::EMPTY,
                last_msg_id: None,
                stale: false,
            }),
            head: RwLock::new(Head::EMPTY),
            queue: std::sync::Mutex::new(Vec::new()),
        };
        {
            let mut w = log.writer.lock().await;
            log.catch_up(&mut w).await?;
            info!(stream = %log.opts.stream, entries = w.head.next_offset, "nats log opened");
        }
        Ok(log)
    }

    async fn last_sequence(&self) -> Result<u64, LogError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("cannot read stream info", e))?;
        Ok(info.state.last_sequence)
    }

    /// Reads the entry at `offset` (known to exist: below the stream's last sequence). Direct
    /// gets may be answered by any replica, and one that is still catching up (a server back
    /// from a pause) may not hold the message yet: then the stream leader is asked.
    ///
    /// Because the entry exists, a request that fails (a timeout while the cluster elects a
    /// new leader after a fault) is retried, with a growing pause, for up to
    /// [`FETCH_PATIENCE`] before the read fails.
    async fn fetch(&self, offset: u64) -> Result<StoredEntry, LogError> {
        let deadline = std::time::Instant::now() + FETCH_PATIENCE;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.fetch_payload(offset).await {
                Ok(payload) => return frame::decode(&payload, offset),
                Err(e) if std::time::Instant::now() + pause < deadline => {
                    warn!(offset, error = %e, "reading an entry failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt at the stored bytes of the entry at `offset`.
    async fn fetch_payload(&self, offset: u64) -> Result<Bytes, LogError> {
        let msg = match self.stream.direct_get(offset + 1).await {
            Ok(msg) => msg,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => self
                .stream
                .get_raw_message(offset + 1)
                .await
                .map_err(|e| unavailable(&format!("cannot read offset {offset}"), e))?,
            Err(e) => return Err(unavailable(&format!("cannot read offset {offset}"), e)),
        };
        Ok(msg.payload)
    }

    /// Reads offsets `from..end` in order, with up to [`READ_AHEAD`] direct gets in flight
    /// (one at a time, a replica catching up on a large stream would wait a round trip per
    /// entry).
    async fn fetch_range(&self, from: u64, end: u64) -> Result<Vec<StoredEntry>, LogError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        stream::iter(from..end)
            .map(|o| self.fetch(o))
            .buffered(READ_AHEAD)
            .try_collect()
            .await
    }

    /// Applies every entry the stream has beyond this replica's head.
    async fn catch_up(&self, w: &mut Writer) -> Result<(), LogError> {
        let last = self.last_sequence().await?;
        while w.head.next_offset < last {
            let from = w.head.next_offset;
            let batch = self
                .fetch_range(from, last.min(from + CATCH_UP_BATCH))
                .await?;
            for e in batch {
                Self::adopt(w, e)?;
            }
        }
        if let Ok(mut h) = self.head.write() {
            *h = w.head;
        }
        w.stale = false;
        Ok(())
    }

    /// Takes one entry read from the stream into this replica's head and key index.
    fn adopt(w: &mut Writer, e: StoredEntry) -> Result<(), LogError> {
        w.head = tellonce_log::verify_chain(w.head, std::slice::from_ref(&e))?;
        let key = key_of(&e.source, &e.id);
        w.last_msg_id = Some(msg_id(&key));
        if w.keys.insert(key, e.offset).is_some() {
            return Err(LogError::Corrupt {
                offset: e.offset,
                detail: format!("({}, {}) appears twice in the log", e.source, e.id),
            });
        }
        Ok(())
    }

    /// Appends one group (the writer held), retrying after lost races.
    async fn append_group(
        &self,
        w: &mut Writer,
        entries: &[NewEntry],
    ) -> Result<Vec<AppendOutcome>, LogError> {
        if w.stale {
            self.catch_up(w).await?;
        }
        let mut mine = HashMap::new();
        for attempt in 0..=self.opts.max_retries {
            if let Some(outcomes) = self.try_append(w, entries, &mut mine).await? {
                return Ok(outcomes);
            }
            // Another writer got in first. Back off for a random while (up to 0.1 ms, doubling
            // per loss, at most 50 ms) before catching up and trying again, so a writer that
            // keeps losing to a busy one is not starved by retrying in lock-step with it.
            let cap_us = (100u64 << attempt.min(9)).min(50_000);
            tokio::time::sleep(Duration::from_micros(jitter(cap_us))).await;
            self.catch_up(w).await?;
        }
        Err(unavailable(
            "append",
            format!(
                "lost the race to other writers {} times",
                self.opts.max_retries + 1
            ),
        ))
    }

    /// One attempt to append: returns `Ok(None)` when another writer got in first.
    async fn try_append(
        &self,
        w: &mut Writer,
        entries: &[NewEntry],
        mine: &mut HashMap<Vec<u8>, u64>,
    ) -> Result<Option<Vec<AppendOutcome>>, LogError> {
        let mut head = w.head;
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut batch: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut planned = Vec::new();
        for e in entries {
            let key = key_of(&e.source, &e.id);
            if let Some(&offset) = mine.get(&key) {
                outcomes.push(AppendOutcome::Appended(offset));
                continue;
            }
            if let Some(&offset) = w.keys.get(&key).or_else(|| batch.get(&key)) {
                outcomes.push(AppendOutcome::Duplicate(offset));
                continue;
            }
            let offset = head.next_offset;
            let mut buf = Vec::with_capacity(frame::frame_len(e));
            let hash = frame::encode(&mut buf, offset, &head.last_hash, e);
            head = Head {
                next_offset: offset + 1,
                last_hash: hash,
            };
            batch.insert(key.clone(), offset);
            outcomes.push(AppendOutcome::Appended(offset));
            planned.push((key, offset, e.source.as_str(), buf, hash));
        }
        // Publish all, pipelined, each conditional on the one before it.
        // Publish in chunks, each message conditional on the one before it, and take the
        // acknowledgements of a chunk before sending the next (the client allows only so many
        // unacknowledged publishes).
        let mut prev_id = w.last_msg_id.clone();
        let mut lost_race = false;
        for chunk in planned.chunks(PUBLISH_WINDOW) {
            if lost_race {
                break;
            }
            let mut acks = Vec::with_capacity(chunk.len());
            for (key, offset, source, buf, _) in chunk {
                let id = msg_id(key);
                let mut msg = PublishMessage::build()
                    .payload(Bytes::from(buf.clone()))
                    .message_id(&id)
                    .expected_last_sequence(*offset);
                if let Some(p) = &prev_id {
                    msg = msg.expected_last_message_id(p);
                }
                let subject = format!("{}.{}", self.opts.subject_prefix, subject_token(source));
                match self.js.send_publish(subject, msg).await {
                    Ok(ack) => acks.push(ack),
                    Err(e) => {
                        w.stale = true;
                        return Err(unavailable("publish failed", e));
                    }
                }
                prev_id = Some(id);
            }
            for ((key, offset, _, _, hash), ack) in chunk.iter().zip(acks) {
                if lost_race {
                    // Later messages were conditional on an earlier one that did not land: they
                    // cannot have landed either, but their answers must still be drained.
                    let _ = ack.await;
                    continue;
                }
                match ack.await {
                    Ok(a) if !a.duplicate && a.sequence == offset + 1 => {
                        mine.insert(key.clone(), *offset);
                        w.keys.insert(key.clone(), *offset);
                        w.head = Head {
                            next_offset: offset + 1,
                            last_hash: *hash,
                        };
                        w.last_msg_id = Some(msg_id(key));
                    }
                    Ok(a) => {
                        warn!(
                            offset,
                            sequence = a.sequence,
                            duplicate = a.duplicate,
                            "another writer got in first"
                        );
                        lost_race = true;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            PublishErrorKind::WrongLastSequence
                                | PublishErrorKind::WrongLastMessageId
                        ) =>
                    {
                        lost_race = true;
                    }
                    Err(e) => {
                        w.stale = true;
                        return Err(unavailable("publish not acknowledged", e));
                    }
                }
            }
        }
        if let Ok(mut h) = self.head.write() {
            *h = w.head;
        }
        if lost_race {
            return Ok(None);
        }
        Ok(Some(outcomes))
    }
}

impl Log for NatsLog {
    fn append(
        &self,
        entries: Vec<NewEntry>,
    ) -> BoxFuture<'_, Result<Vec<AppendOutcome>, LogError>> {
        Box::pin(async move {
            frame::check_entries(&entries)?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            // Group commit by combining: queue the request, then whoever gets the writer
            // publishes every queued request as one pipelined group.
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.queue
                .lock()
                .map_err(|_| LogError::Closed)?
                .push(Waiting { entries, reply });
            {
                let mut w = self.writer.lock().await;
                let group: Vec<Waiting> =
                    std::mem::take(&mut *self.queue.lock().map_err(|_| LogError::Closed)?);
                if !group.is_empty() {
                    let all: Vec<NewEntry> = group
                        .iter()
                        .flat_map(|g| g.entries.iter().cloned())
                        .collect();
                    match self.append_group(&mut w, &all).await {
                        Ok(outcomes) => {
                            let mut rest = outcomes.into_iter();
                            for g in group {
                                let mine: Vec<AppendOutcome> =
                                    rest.by_ref().take(g.entries.len()).collect();
                                let _ = g.reply.send(Ok(mine));
                            }
                        }
                        Err(e) => {
                            for g in group {
                                let _ = g.reply.send(Err(copy_error(&e)));
                            }
                        }
                    }
                }
            }
            answer.await.map_err(|_| LogError::Closed)?
        })
    }

    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, Result<Vec<StoredEntry>, LogError>> {
        Box::pin(async move {
            let end = self.head().next_offset.min(from.saturating_add(max as u64));
            self.fetch_range(from, end).await
        })
    }

    fn head(&self) -> Head {
        self.head.read().map(|h| *h).unwrap_or(Head::EMPTY)
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            // Cheap when nothing is new: one stream-info request.
            if self.last_sequence().await? <= self.head().next_offset {
                return Ok(());
            }
            let mut w = self.writer.lock().await;
            self.catch_up(&mut w).await
        })
    }
}

/// A pseudo-random number below `cap` (for backoff; needs no quality, only spread).
fn jitter(cap: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() % cap.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_are_safe() {
        assert_eq!(subject_token("school-001"), "school-001");
        assert_eq!(subject_token("a.b>"), "x612e623e");
        assert_eq!(msg_id(b"police\0e1").len(), 32);
    }
}
