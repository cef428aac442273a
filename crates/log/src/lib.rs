//! The append-only log of TellOnce: the one source of truth every projection is built from.
//!
//! The [`Log`] trait is what every storage engine provides: append batches of entries keyed by
//! `(source, id)`, idempotently and durably, at dense `u64` offsets; read them back verified.
//! [`embedded::EmbeddedLog`] keeps the log in checksummed, hash-chained segment files with one
//! shared fdatasync per group of appends (group commit). [`suite`] is the test suite every
//! engine must pass, and [`sim`] a disk that loses unsynced bytes, for power-loss tests. The
//! log does not interpret entry bodies: the domain crate says what they mean.

use std::future::Future;
use std::pin::Pin;

pub mod embedded;
pub mod frame;
pub mod merkle;
pub mod sim;
pub mod storage;
pub mod suite;

pub use embedded::{EmbeddedLog, EmbeddedOptions, OpenReport};

/// A SHA-256 hash of an entry.
pub type Hash = [u8; 32];

/// A boxed future, so that [`Log`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Who published it (a partner id, or `hub` for the hub's own entries).
    pub source: String,
    /// The publisher's id for it: with `source`, the idempotency key.
    pub id: String,
    /// When the hub recorded it, in milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
    /// The encoded record (see `tellonce_domain::Record`).
    pub body: Vec<u8>,
}

impl NewEntry {
    /// The entry for a record, under the record's own idempotency key
    /// ([`tellonce_domain::Record::key`]).
    pub fn of(record: &tellonce_domain::Record, recorded_at_ms: i64) -> NewEntry {
        let (source, id) = record.key();
        NewEntry {
            source: source.to_string(),
            id: id.into_owned(),
            recorded_at_ms,
            body: record.encode(),
        }
    }
}

/// An entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its position in the log, from 0, dense.
    pub offset: u64,
    /// The hash of the entry before it (zeros for the first).
    pub prev_hash: Hash,
    /// This entry's hash.
    pub hash: Hash,
    /// When the hub recorded it.
    pub recorded_at_ms: i64,
    /// Who published it.
    pub source: String,
    /// The publisher's id for it.
    pub id: String,
    /// The encoded record.
    pub body: Vec<u8>,
}

impl StoredEntry {
    /// A view of it, as [`Log::read_blocking_each`] gives entries.
    pub fn view(&self) -> EntryView<'_> {
        EntryView {
            offset: self.offset,
            prev_hash: self.prev_hash,
            hash: self.hash,
            recorded_at_ms: self.recorded_at_ms,
            source: &self.source,
            id: &self.id,
            body: &self.body,
        }
    }
}

/// An entry read back from the log, borrowed from where it was read (a [`StoredEntry`]
/// without its copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// Its position in the log, from 0, dense.
    pub offset: u64,
    /// The hash of the entry before it (zeros for the first).
    pub prev_hash: Hash,
    /// This entry's hash.
    pub hash: Hash,
    /// When the hub recorded it.
    pub recorded_at_ms: i64,
    /// Who published it.
    pub source: &'a str,
    /// The publisher's id for it.
    pub id: &'a str,
    /// The encoded record.
    pub body: &'a [u8],
}

impl EntryView<'_> {
    /// The entry, copied.
    pub fn to_entry(&self) -> StoredEntry {
        StoredEntry {
            offset: self.offset,
            prev_hash: self.prev_hash,
            hash: self.hash,
            recorded_at_ms: self.recorded_at_ms,
            source: self.source.to_string(),
            id: self.id.to_string(),
            body: self.body.to_vec(),
        }
    }
}

/// What happened to one appended entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly written, durable at this offset.
    Appended(u64),
    /// Its `(source, id)` was already in the log at this offset; nothing was written.
    Duplicate(u64),
}

impl AppendOutcome {
    /// The offset of the entry, new or original.
    pub fn offset(self) -> u64 {
        match self {
            AppendOutcome::Appended(o) | AppendOutcome::Duplicate(o) => o,
        }
    }
}

/// The end of the log: how many entries it holds and the hash of the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The offset the next entry will get (= the number of entries).
    pub next_offset: u64,
    /// The hash of the last entry (zeros when empty).
    pub last_hash: Hash,
}

/// Errors from a log engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The storage failed; nothing of the failed call was acknowledged.
    #[error("log storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes do not verify: a checksum, the hash chain or the order is wrong.
    #[error("log is corrupt at offset {offset}: {detail}")]
    Corrupt {
        /// The first offset affected.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// An earlier write or fsync failed, so the log refuses further writes until restarted
    /// (after a failed fsync the state of the file is unknown; recovery re-reads it).
    #[error("log is unavailable after a storage failure; restart the hub to recover: {0}")]
    Poisoned(String),
    /// The entry cannot be stored (too large, key too long).
    #[error("entry rejected by the log: {0}")]
    Invalid(String),
    /// The log is shutting down.
    #[error("log is closed")]
    Closed,
}

/// A storage engine for the log.
///
/// Contract (checked by [`suite`]): offsets are dense from 0 in append order; an entry whose
/// `(source, id)` is already in the log, for the lifetime of the log, is not written again and
/// is answered with the original offset, also within one batch; a call returns only after every
/// entry it appended is durable; a failed call acknowledges nothing; reads verify checksums and
/// return entries whose `prev_hash` links to the previous entry's hash.
pub trait Log: Send + Sync + 'static {
    /// Appends a batch; one outcome per entry, in order.
    fn append(&self, entries: Vec<NewEntry>)
        -> BoxFuture<'_, Result<Vec<AppendOutcome>, LogError>>;
    /// Reads up to `max` entries from offset `from` (fewer at the end of the log).
    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, Result<Vec<StoredEntry>, LogError>>;
    /// The current end of the log (only durable entries).
    fn head(&self) -> Head;
    /// Learns of entries other writers appended (a replica sharing a stream); afterwards
    /// [`Log::head`] includes them. Engines with one writer have nothing to learn.
    fn refresh(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async { Ok(()) })
    }
    /// Reads like [`Log::read`], but on the calling thread and without the async runtime,
    /// where the engine can (the embedded engine reads files); `None` where it cannot (its
    /// reads need the runtime). Asked with `max` 0, it tells at no cost whether it can. A
    /// catch-up uses it to read the next batch on a helper thread.
    fn read_blocking(&self, _from: u64, _max: usize) -> Option<Result<Vec<StoredEntry>, LogError>> {
        None
    }
    /// Reads like [`Log::read_blocking`], handing each entry in order to `each` as a view of
    /// the bytes read (the embedded engine copies nothing: a rebuild decodes the entries
    /// where they were read); `None` where the engine cannot read without the runtime.
    /// Returns how many entries it read. On an error, the entries before it were handed over.
    fn read_blocking_each(
        &self,
        from: u64,
        max: usize,
        each: &mut dyn FnMut(EntryView<'_>),
    ) -> Option<Result<usize, LogError>> {
        Some(self.read_blocking(from, max)?.map(|entries| {
            entries.iter().for_each(|e| each(e.view()));
            entries.len()
        }))
    }
}

/// Checks that `entries` continue a chain ending at `prev`: dense offsets and linked hashes.
/// Returns the new end.
pub fn verify_chain(prev: Head, entries: &[StoredEntry]) -> Result<Head, LogError> {
    let mut head = prev;
    for e in entries {
        head.follow(e.offset, &e.prev_hash, e.hash)?;
    }
    Ok(head)
}

impl Head {
    /// Moves past the entry at `offset` (whose previous hash is `prev_hash`, and its own
    /// `hash`) if it continues the chain: the next offset, linked to the last hash.
    pub fn follow(&mut self, offset: u64, prev_hash: &Hash, hash: Hash) -> Result<(), LogError> {
        if offset != self.next_offset {
            return Err(LogError::Corrupt {
                offset: self.next_offset,
                detail: format!("expected offset {}, found {offset}", self.next_offset),
            });
        }
        if *prev_hash != self.last_hash {
            return Err(LogError::Corrupt {
                offset,
                detail: "hash chain broken: prev_hash does not match the previous entry".into(),
            });
        }
        *self = Head {
            next_offset: offset + 1,
            last_hash: hash,
        };
        Ok(())
    }

    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        next_offset: 0,
        last_hash: [0; 32],
    };
}
