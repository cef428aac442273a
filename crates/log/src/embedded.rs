//! The embedded engine: the log in append-only segment files, with group commit.
//!
//! Segments are named by the offset of their first entry (`00000000000000000000.seg`) and hold
//! frames in the [`crate::frame`] format. One writer thread owns the write path: it takes every
//! append request that is waiting, assigns offsets, checks the idempotency index, writes the
//! frames with one `write` and makes them durable with one `fdatasync`, then answers them all.
//! So concurrent publishers share an fsync, and nothing is acknowledged before it is on disk.
//!
//! The idempotency index (`(source, id)` → offset) and the position of every entry live in
//! memory and are rebuilt by scanning the segments at open, which also verifies every checksum
//! and the hash chain. A torn last entry (a crash mid-write) is cut off and reported; damage
//! anywhere else is refused as corruption rather than silently dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use foldhash::HashMap;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::frame::{self, key_of, Peek};
use crate::storage::{Dir, SegmentFile};
use crate::{AppendOutcome, BoxFuture, Hash, Head, Log, LogError, NewEntry, StoredEntry};

/// Settings of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Start a new segment once the current one reaches this many bytes.
    pub segment_bytes: u64,
    /// The most entries written (and synced) as one group.
    pub max_group_entries: usize,
    /// The most bytes written (and synced) as one group.
    pub max_group_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            segment_bytes: 128 * 1024 * 1024,
            max_group_entries: 8192,
            max_group_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What opening the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Entries in the log.
    pub entries: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of a torn last entry that were cut off, up to its last byte that is not zero (0
    /// if the log ended cleanly; zeros after the last entry are room prepared for appends).
    pub torn_bytes: u64,
    /// The segment the torn bytes were cut from.
    pub torn_segment: Option<String>,
}

/// Counters of the write path, for benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteStats {
    /// Groups written (= fdatasync calls for data).
    pub groups: u64,
    /// Entries appended.
    pub entries: u64,
}

struct Segment<F> {
    base: u64,
    file: Arc<F>,
    /// Start of each entry, relative to the segment.
    positions: Vec<u32>,
    /// Committed (durable) length.
    len: u64,
}

struct Index<F> {
    segments: Vec<Segment<F>>,
    head: Head,
}

struct Shared<F> {
    index: RwLock<Index<F>>,
    groups: AtomicU64,
    entries: AtomicU64,
}

type Reply = oneshot::Sender<Result<Vec<AppendOutcome>, LogError>>;

struct Request {
    entries: Vec<NewEntry>,
    reply: Reply,
}

/// The embedded log engine over a folder `D` (a real folder, or a simulated disk in tests).
pub struct EmbeddedLog<D: Dir> {
    shared: Arc<Shared<D::File>>,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The buffers reads read segment bytes into, kept between reads (up to
    /// [`SCRATCHES_KEPT`] of them, each up to [`SCRATCH_KEEP`]): a fresh one is zeroed and
    /// faulted in by the kernel on every read, which was a quarter of a rebuild's reading. A
    /// rebuild reads on two threads at once, so one kept buffer left the other a fresh one each
    /// time.
    scratch: Mutex<Vec<Vec<u8>>>,
}

/// The largest read buffer [`EmbeddedLog`] keeps for the next read (a rebuild reads about
/// 2.5 MiB at a time).
const SCRATCH_KEEP: usize = 16 << 20;

/// How many read buffers [`EmbeddedLog`] keeps (as many as reads at once in a rebuild and more).
const SCRATCHES_KEPT: usize = 4;

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Whether a valid frame starts anywhere in `data`.
fn valid_frame_in(data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(frame::HEADER_LEN - 1))
        .filter(|&i| data[i..].starts_with(&frame::MAGIC))
        .find(|&i| matches!(frame::peek(&data[i..]), Peek::Frame { .. }))
}

struct Scanned<F> {
    index: Index<F>,
    keys: HashMap<Vec<u8>, u64>,
    report: OpenReport,
}

/// Reads segment `name` (open as `file`) whole into `data`. A running hub may give back the
/// room after a full segment's last entry while a tool reads beside it: a read cut short by
/// that is tried again (twice) on the file opened anew. One buffer serves every segment of an
/// open, so its pages are faulted in once, not once per segment.
fn read_segment<D: Dir>(
    dir: &D,
    name: &str,
    mut file: D::File,
    data: &mut Vec<u8>,
) -> Result<D::File, LogError> {
    let mut tries = 0;
    loop {
        data.clear();
        data.resize(file.len()? as usize, 0);
        match file.read_exact_at(data, 0) {
            Ok(()) => return Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && tries < 2 => {
                tries += 1;
                file = dir.open(name)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The most threads that work out a segment's hashes at open.
const SCAN_THREADS: usize = 4;

/// Segments with fewer entries than this are hashed on one thread.
const SCAN_PARALLEL_FROM: usize = 4096;

/// How many threads [`hashes_of`] uses: the cores there are, up to [`SCAN_THREADS`]. Asked
/// once per open (the standard library reads the cgroup's files each time it is asked).
fn scan_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(SCAN_THREADS)
}

/// The hash of each frame at `spans` in `data`, in order, worked out on `threads` threads:
/// SHA-256 of every entry was about a third of opening a 1M log (profiled).
fn hashes_of(data: &[u8], spans: &[(usize, usize)], threads: usize) -> Vec<Hash> {
    let hash = |part: &[(usize, usize)]| -> Vec<Hash> {
        part.iter()
            .map(|&(at, len)| frame::hash_of(&data[at..at + len]))
            .collect()
    };
    if threads < 2 || spans.len() < SCAN_PARALLEL_FROM {
        return hash(spans);
    }
    let chunk = spans.len().div_ceil(threads);
    let hash = &hash;
    std::thread::scope(|scope| {
        let others: Vec<_> = spans
            .chunks(chunk)
            .skip(1)
            .map(|part| scope.spawn(move || hash(part)))
            .collect();
        let mut all = Vec::with_capacity(spans.len());
        all.extend(hash(&spans[..chunk]));
        for other in others {
            match other.join() {
                Ok(part) => all.extend(part),
                // Hashing bytes cannot panic; if it did, the panic goes on here.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

/// Reads and verifies every segment, showing each verified entry to `visit`; cuts a torn tail
/// off the last segment if `repair`.
fn scan<D: Dir>(
    dir: &D,
    repair: bool,
    visit: &mut dyn FnMut(&frame::FrameView<'_>),
) -> Result<Scanned<D::File>, LogError> {
    let mut bases: Vec<u64> = dir
        .list()?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    let mut head = Head::EMPTY;
    // Keys are looked up at every append and all inserted at open: with std's SipHash,
    // inserting was a third of a 1M log's open (profiled); foldhash is seeded per process.
    let mut keys = HashMap::default();
    let mut segments = Vec::with_capacity(bases.len());
    let mut report = OpenReport::default();
    let count = bases.len();
    // Every segment opened first: their sizes size the buffer and the key index.
    let files = bases
        .iter()
        .map(|&base| dir.open(&segment_name(base)))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut total_bytes, mut largest) = (0u64, 0u64);
    for file in &files {
        let len = file.len()?;
        total_bytes += len;
        largest = largest.max(len);
    }
    // Room for the largest segment from the start: growing it later copies it whole.
    let mut data = Vec::with_capacity(usize::try_from(largest).unwrap_or(0));
    let threads = scan_threads();
    for (i, (&base, file)) in bases.iter().zip(files).enumerate() {
        let name = segment_name(base);
        let is_last = i + 1 == count;
        if base != head.next_offset {
            return Err(LogError::Corrupt {
                offset: head.next_offset,
                detail: format!(
                    "segment {name} starts at offset {base} but the log before it ends at {}: a segment is missing or misplaced",
                    head.next_offset
                ),
            });
        }
        let file = read_segment(dir, &name, file, &mut data)?;
        // First the frames' bounds, their checksums checked, in order; then their hashes, on
        // several threads; then the chain and the keys, in order. A damaged tail is cut off
        // only once everything before it has been verified.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0usize;
        let mut torn = None;
        while pos < data.len() {
            match frame::peek(&data[pos..]) {
                Peek::Frame { len } => {
                    spans.push((pos, len));
                    pos += len;
                }
                // Room prepared for appends (see `storage::FsFile`), or nothing more than
                // zeros of an append that was never acknowledged: a clean end.
                Peek::Short | Peek::Invalid(_) if data[pos..].iter().all(|&b| b == 0) => break,
                Peek::Short | Peek::Invalid(_) => {
                    let damaged_then_valid = valid_frame_in(&data[pos + 1..]);
                    if !is_last || damaged_then_valid.is_some() {
                        return Err(LogError::Corrupt {
                            offset: base + spans.len() as u64,
                            detail: format!(
                                "damaged entry at byte {pos} of {name}, with valid entries after it: refusing to drop acknowledged data"
                            ),
                        });
                    }
                    // Zeros after the torn bytes are room prepared for appends.
                    let bytes = data
                        .iter()
                        .rposition(|&b| b != 0)
                        .map_or(0, |last| last + 1 - pos);
                    torn = Some(bytes);
                    break;
                }
            }
        }
        if i == 0 && pos > 0 {
            // About as many entries in all as the first segment's density gives: the index is
            // sized once, where growing it step by step (each step rehashing every key) was
            // three quarters of filling it at 1M entries (profiled). A wrong guess only costs
            // growing as before, or room unused.
            let estimate = spans.len() as u128 * u128::from(total_bytes) / pos as u128;
            let _ = keys.try_reserve(usize::try_from(estimate).unwrap_or(usize::MAX));
        }
        let hashes = hashes_of(&data, &spans, threads);
        let mut positions = Vec::with_capacity(spans.len());
        for (&(at, len), hash) in spans.iter().zip(hashes) {
            let entry = frame::view_peeked(&data[at..at + len], head.next_offset, hash)?;
            head.follow(entry.offset, &entry.prev_hash, entry.hash)?;
            if keys
                .insert(key_of(entry.source, entry.id), entry.offset)
                .is_some()
            {
                return Err(LogError::Corrupt {
                    offset: entry.offset,
                    detail: format!("({}, {}) appears twice in the log", entry.source, entry.id),
                });
            }
            visit(&entry);
            positions.push(at as u32);
        }
        if pos < data.len() {
            if let Some(bytes) = torn {
                warn!(segment = %name, byte = pos, torn_bytes = bytes, "torn entry at the end of the log");
                report.torn_bytes = bytes as u64;
                report.torn_segment = Some(name.clone());
            }
            if repair {
                file.truncate(pos as u64)?;
                if torn.is_some() {
                    info!(segment = %name, byte = pos, "cut the torn entry off the log");
                }
            }
            data.truncate(pos);
        }
        segments.push(Segment {
            base,
            file: Arc::new(file),
            positions,
            len: data.len() as u64,
        });
    }
    report.entries = head.next_offset;
    report.segments = segments.len();
    Ok(Scanned {
        index: Index { segments, head },
        keys,
        report,
    })
}

/// Verifies a log folder without changing it: every checksum, the hash chain and uniqueness of
/// keys. A torn tail is reported in the result, not cut off.
pub fn verify<D: Dir>(dir: &D) -> Result<(Head, OpenReport), LogError> {
    let s = scan(dir, false, &mut |_| {})?;
    Ok((s.index.head, s.report))
}

/// Like [`verify`], and shows every verified entry, in order, to `visit` (for dumps and
/// offline tools). Reads without taking the folder's lock, so it also works beside a running
/// hub (entries written during the scan may or may not be seen).
pub fn verify_each<D: Dir>(
    dir: &D,
    visit: &mut dyn FnMut(&frame::FrameView<'_>),
) -> Result<(Head, OpenReport), LogError> {
    let s = scan(dir, false, visit)?;
    Ok((s.index.head, s.report))
}

impl<D: Dir> EmbeddedLog<D> {
    /// Opens (or creates) the log in `dir`: locks it, verifies it, cuts a torn tail, and starts
    /// the writer thread.
    pub fn open(dir: D, opts: EmbeddedOptions) -> Result<(Self, OpenReport), LogError> {
        if opts.segment_bytes == 0 || opts.segment_bytes > (u32::MAX as u64) / 2 {
            return Err(LogError::Invalid(
                "segment_bytes must be between 1 and 2 GiB".into(),
            ));
        }
        dir.lock()?;
        let Scanned {
            mut index,
            keys,
            report,
        } = scan(&dir, true, &mut |_| {})?;
        if index.segments.is_empty() {
            let file = dir.create(&segment_name(0))?;
            dir.sync_dir()?;
            index.segments.push(Segment {
                base: 0,
                file: Arc::new(file),
                positions: Vec::new(),
                len: 0,
            });
        }
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            groups: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir,
            shared: shared.clone(),
            keys,
            opts,
            poisoned: None,
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("tellonce-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            EmbeddedLog {
                scratch: Mutex::new(Vec::with_capacity(SCRATCHES_KEPT)),
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
            },
            report,
        ))
    }

    /// Counters of the write path so far.
    pub fn stats(&self) -> WriteStats {
        WriteStats {
            groups: self.shared.groups.load(Ordering::Relaxed),
            entries: self.shared.entries.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer thread after it has answered every waiting request.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }

    fn read_sync(&self, from: u64, max: usize) -> Result<Vec<StoredEntry>, LogError> {
        let mut out = Vec::with_capacity(max.min(1 << 12));
        self.read_each(from, max, &mut |e| out.push(e.to_entry()))?;
        Ok(out)
    }

    /// Reads up to `max` entries from `from`, handing each to `each` as a view of the bytes
    /// read (checked as [`frame::view`] checks them; each hash but the last is the next
    /// entry's `prev_hash`). Returns how many.
    fn read_each(
        &self,
        from: u64,
        max: usize,
        each: &mut dyn FnMut(crate::EntryView<'_>),
    ) -> Result<usize, LogError> {
        // Plan the reads under the lock, then read without it.
        let mut plan = Vec::new();
        {
            let idx = self.shared.index.read().map_err(|_| LogError::Closed)?;
            let end = idx.head.next_offset.min(from.saturating_add(max as u64));
            let mut offset = from;
            while offset < end {
                let si = idx.segments.partition_point(|s| s.base <= offset) - 1;
                let seg = &idx.segments[si];
                let first = (offset - seg.base) as usize;
                let last = ((end - seg.base) as usize).min(seg.positions.len());
                let rel: Vec<u32> = seg.positions[first..last].to_vec();
                let stop = seg.positions.get(last).map_or(seg.len, |&p| u64::from(p));
                plan.push((seg.file.clone(), offset, rel, stop));
                offset = seg.base + last as u64;
            }
        }
        let mut n = 0;
        // A kept buffer if there is one, else a fresh one; kept again after.
        let scratch = || self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = scratch().pop().unwrap_or_default();
        let data = &mut buf;
        for (file, first_offset, rel, stop) in plan {
            let start = u64::from(rel[0]);
            let len = (stop - start) as usize;
            // Zeroed only where the buffer grows: the read overwrites what it already holds.
            if data.len() < len {
                data.resize(len, 0);
            }
            let span = &mut data[..len];
            file.read_exact_at(span, start)?;
            let frame_at = |i: usize| {
                let a = (u64::from(rel[i]) - start) as usize;
                let b = rel
                    .get(i + 1)
                    .map_or(len, |&q| (u64::from(q) - start) as usize);
                &span[a..b]
            };
            for i in 0..rel.len() {
                let (frame, offset) = (frame_at(i), first_offset + i as u64);
                // Every frame after the first was checked as the one after its predecessor.
                if i == 0 {
                    frame::check(frame, offset)?;
                }
                // An entry's hash is the `prev_hash` of the entry after it, under that entry's
                // checksum: the open checked the chain against the hashes it worked out, and
                // appends since wrote the hashes they worked out. Only a read's last entry is
                // hashed (SHA-256 of every entry was a tenth of a rebuild's decoding).
                let hash = if i + 1 < rel.len() {
                    let next = frame_at(i + 1);
                    frame::check(next, offset + 1)?;
                    frame::prev_hash_in(next)
                } else {
                    frame::hash_of(frame)
                };
                each(frame::view_peeked(frame, offset, hash)?.entry);
                n += 1;
            }
        }
        if buf.capacity() <= SCRATCH_KEEP {
            let mut kept = scratch();
            if kept.len() < SCRATCHES_KEPT {
                kept.push(buf);
            }
        }
        Ok(n)
    }
}

impl<D: Dir> Drop for EmbeddedLog<D> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<D: Dir> Log for EmbeddedLog<D> {
    fn append(
        &self,
        entries: Vec<NewEntry>,
    ) -> BoxFuture<'_, Result<Vec<AppendOutcome>, LogError>> {
        Box::pin(async move {
            frame::check_entries(&entries)?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, rx) = oneshot::channel();
            {
                let tx = self.tx.lock().map_err(|_| LogError::Closed)?;
                let tx = tx.as_ref().ok_or(LogError::Closed)?;
                tx.send(Request { entries, reply })
                    .map_err(|_| LogError::Closed)?;
            }
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, Result<Vec<StoredEntry>, LogError>> {
        Box::pin(async move { self.read_sync(from, max) })
    }

    fn read_blocking(&self, from: u64, max: usize) -> Option<Result<Vec<StoredEntry>, LogError>> {
        Some(self.read_sync(from, max))
    }

    fn read_blocking_each(
        &self,
        from: u64,
        max: usize,
        each: &mut dyn FnMut(crate::EntryView<'_>),
    ) -> Option<Result<usize, LogError>> {
        Some(self.read_each(from, max, each))
    }

    fn head(&self) -> Head {
        self.shared
            .index
            .read()
            .map(|i| i.head)
            .unwrap_or(Head::EMPTY)
    }
}

struct Writer<D: Dir> {
    dir: D,
    shared: Arc<Shared<D::File>>,
    keys: HashMap<Vec<u8>, u64>,
    opts: EmbeddedOptions,
    poisoned: Option<String>,
    buf: Vec<u8>,
}

impl<D: Dir> Writer<D> {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut n = group[0].entries.len();
            let mut bytes: usize = group[0].entries.iter().map(frame::frame_len).sum();
            while n < self.opts.max_group_entries && bytes < self.opts.max_group_bytes {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.entries.len();
                        bytes += r.entries.iter().map(frame::frame_len).sum::<usize>();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if let Some(why) = &self.poisoned {
                for r in group {
                    let _ = r.reply.send(Err(LogError::Poisoned(why.clone())));
                }
                continue;
            }
            match self.write_group(&group) {
                Ok(outcomes) => {
                    for (r, o) in group.into_iter().zip(outcomes) {
                        let _ = r.reply.send(Ok(o));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    warn!(error = %why, "log write failed; refusing further writes until restart");
                    self.poisoned = Some(why.clone());
                    for r in group {
                        let _ = r.reply.send(Err(LogError::Poisoned(why.clone())));
                    }
                }
            }
        }
        // A clean close leaves the last segment holding its entries and nothing after them.
        if self.poisoned.is_none() {
            let last = self
                .shared
                .index
                .read()
                .ok()
                .and_then(|idx| idx.segments.last().map(|s| s.file.clone()));
            if let Some(Err(e)) = last.map(|f| f.trim()) {
                warn!(error = %e, "could not give back the room after the log's last entry");
            }
        }
    }

    /// Writes one group durably and publishes it to readers.
    fn write_group(&mut self, group: &[Request]) -> Result<Vec<Vec<AppendOutcome>>, LogError> {
        let (mut head, file, seg_len) = {
            let idx = self.shared.index.read().map_err(|_| LogError::Closed)?;
            let seg = idx.segments.last().ok_or(LogError::Closed)?;
            (idx.head, seg.file.clone(), seg.len)
        };
        let (file, seg_len) = if seg_len >= self.opts.segment_bytes {
            // The full segment keeps no room after its last entry.
            file.trim()?;
            (self.roll(head.next_offset)?, 0)
        } else {
            (file, seg_len)
        };
        self.buf.clear();
        let mut positions = Vec::new();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut appended = 0u64;
        for req in group {
            let mut out = Vec::with_capacity(req.entries.len());
            for e in &req.entries {
                let key = key_of(&e.source, &e.id);
                if let Some(&offset) = self.keys.get(&key) {
                    out.push(AppendOutcome::Duplicate(offset));
                    continue;
                }
                let offset = head.next_offset;
                positions.push((seg_len + self.buf.len() as u64) as u32);
                let hash: Hash = frame::encode(&mut self.buf, offset, &head.last_hash, e);
                self.keys.insert(key, offset);
                head = Head {
                    next_offset: offset + 1,
                    last_hash: hash,
                };
                appended += 1;
                out.push(AppendOutcome::Appended(offset));
            }
            outcomes.push(out);
        }
        if !self.buf.is_empty() {
            file.append(&self.buf)?;
            file.sync_data()?;
            let mut idx = self.shared.index.write().map_err(|_| LogError::Closed)?;
            if let Some(seg) = idx.segments.last_mut() {
                seg.positions.extend_from_slice(&positions);
                seg.len += self.buf.len() as u64;
            }
            idx.head = head;
            self.shared.groups.fetch_add(1, Ordering::Relaxed);
            self.shared.entries.fetch_add(appended, Ordering::Relaxed);
        }
        Ok(outcomes)
    }

    /// Starts a new segment at `base`, durably named before anything is written to it.
    fn roll(&mut self, base: u64) -> Result<Arc<D::File>, LogError> {
        let file = Arc::new(self.dir.create(&segment_name(base))?);
        self.dir.sync_dir()?;
        let mut idx = self.shared.index.write().map_err(|_| LogError::Closed)?;
        idx.segments.push(Segment {
            base,
            file: file.clone(),
            positions: Vec::new(),
            len: 0,
        });
        info!(segment = %segment_name(base), "started a new log segment");
        Ok(file)
    }
}
