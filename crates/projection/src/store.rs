//! The durable copy of the timeline lines: chunk bodies in an append-only file (`lines.dat`),
//! and in sled the index (each chunk's first offset to where its body lies, with its length and
//! CRC-32C) and the applied offset.
//!
//! Keys and values apart: sled rewrites its leaves as they grow, so ~95 KB chunks stored inline
//! cost 4.8 bytes written per byte kept and about an eighth of a rebuild's CPU; here a body is
//! written once and sled holds 16 bytes per chunk. A body that is replaced (an erasure rewrites
//! its lines) or dropped is overwritten with zeros, so no erased content stays in the file, and
//! once the zeros are durable its space is given back to the filesystem (a punched hole) where
//! the filesystem allows it, so replaced bodies do not grow the file for good.
//!
//! The access log's index (access entries' offsets by family, person and user, and all of
//! them) is kept here too, below an offset ([`LineStore::access_spilled`]): at each snapshot
//! the projection moves what it holds in memory here, in one atomic batch, so memory and the
//! snapshot hold only the reads since. Each key's offsets are a piece per move (at most
//! [`ACCESS_PIECE`] offsets), delta-encoded as varints under `x<key>\xff<first offset>`.
//! A long catch-up's storer appends bodies ([`LineStore::append`]) and indexes them with the
//! applied offset every few batches ([`LineStore::index`]): until then a restart finds neither.
//! Nothing here is fsynced per batch (the log is the truth and a restart re-applies it from
//! the snapshot): [`LineStore::sync`] makes the file durable before a snapshot relies on it,
//! and a body that does not match its checksum at start-up makes the projection rebuild.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ProjectionError;

/// sled key of the applied offset (big-endian u64).
pub(crate) const K_APPLIED: &[u8] = b"m/applied";
/// sled key naming this layout; a store without it (chunks inside sled), or with an older one
/// (`lines-file-1`: every sealed event's summary stored sealed, where sealed events' summaries
/// are now read from the log when first shown), is rebuilt.
const K_FORMAT: &[u8] = b"m/format";
const FORMAT: &[u8] = b"lines-file-2";
/// sled key of the offset below which the access index is stored here (big-endian u64).
const K_ACCESS_SPILLED: &[u8] = b"m/access-spilled";
/// Most offsets in one stored piece of the access index.
pub(crate) const ACCESS_PIECE: usize = 65_536;
/// Ends an access index key in a sled key (a byte UTF-8 never holds).
const SEP: u8 = 0xff;

/// The file of chunk bodies.
const LINES_FILE: &str = "lines.dat";
/// Opening a locked store is tried this many times, 20 ms apart.
const LOCK_TRIES: u32 = 50;
/// Zeros are written in pieces of at most this many bytes.
const ZEROS: usize = 1 << 20;

/// Where a chunk's body lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Byte position.
    pos: u64,
    /// Length in bytes.
    len: u32,
    /// CRC-32C of the body.
    crc: u32,
}

impl Slot {
    fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.pos.to_be_bytes());
        v[8..12].copy_from_slice(&self.len.to_be_bytes());
        v[12..].copy_from_slice(&self.crc.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let v: &[u8; 16] = v.try_into().ok()?;
        Some(Slot {
            pos: u64::from_be_bytes(v[..8].try_into().ok()?),
            len: u32::from_be_bytes(v[8..12].try_into().ok()?),
            crc: u32::from_be_bytes(v[12..].try_into().ok()?),
        })
    }

    fn end(&self) -> u64 {
        self.pos + u64::from(self.len)
    }
}

/// sled key of the chunk whose first line is at `offset`.
fn chunk_key(offset: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'c';
    k[1..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// sled key of the piece of the access index under `key` whose first offset is `first`.
fn access_key(key: &str, first: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 10);
    k.push(b'x');
    k.extend_from_slice(key.as_bytes());
    k.push(SEP);
    k.extend_from_slice(&first.to_be_bytes());
    k
}

/// Ascending `offsets` as varints: the first, then each one's distance from the one before.
fn encode_offsets(offsets: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(offsets.len() * 3);
    let mut prev = 0;
    for &o in offsets {
        let mut d = o - prev;
        prev = o;
        loop {
            let byte = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

/// The offsets [`encode_offsets`] wrote; `None` if the bytes are not such a list.
fn decode_offsets(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut prev, mut d, mut shift) = (0u64, 0u64, 0u32);
    for &b in bytes {
        d |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            prev = prev.checked_add(d)?;
            out.push(prev);
            (d, shift) = (0, 0);
        } else {
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }
    (shift == 0).then_some(out)
}

/// The error for a stored piece of the access index (sled key `key`) that does not decode.
fn bad_piece(key: &[u8]) -> ProjectionError {
    damaged(format!(
        "access index piece {}",
        String::from_utf8_lossy(key)
    ))
}

fn offset_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

fn io(e: std::io::Error) -> ProjectionError {
    ProjectionError::Store(e.into())
}

fn damaged(what: String) -> ProjectionError {
    ProjectionError::Damaged(format!("timeline store: {what}"))
}

/// Bodies [`LineStore::append`] wrote that are not yet indexed: their index entries and the
/// applied offset to store with them ([`LineStore::index`]).
#[derive(Debug, Default)]
pub(crate) struct Unindexed {
    entries: Vec<(u64, Slot)>,
    applied: Option<u64>,
}

impl Unindexed {
    /// How many bodies wait to be indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The durable copy of the timeline lines (see the module's doc).
pub(crate) struct LineStore {
    db: sled::Db,
    file: File,
    /// Where the next body goes (the file's length as this store knows it).
    end: AtomicU64,
}

impl LineStore {
    /// Opens (or creates) the store in `dir`. Returns it and whether it holds this layout
    /// (false for an empty store and for one written by an older version: clear it).
    pub fn open(dir: &Path) -> Result<(Self, bool), ProjectionError> {
        let config = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500));
        // sled 0.34 lets go of its folder lock a moment after the last handle is dropped (its
        // I/O threads finish first), so opening the store right after closing it in the same
        // process can find it locked: waited for, up to a second, before saying it is in use.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    if tries == LOCK_TRIES {
                        return Err(ProjectionError::Store(sled::Error::Io(std::io::Error::other(
                            format!("{e}; another hub (or tellonce command) has this data folder's projections open: stop it, or give this one its own --data-dir"),
                        ))));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LINES_FILE))
            .map_err(io)?;
        let end = file.metadata().map_err(io)?.len();
        let current = db.get(K_FORMAT)?.is_some_and(|v| v.as_ref() == FORMAT);
        if !current && !db.is_empty() {
            tracing::warn!("projection store has an older layout; rebuilding");
        }
        Ok((
            LineStore {
                db,
                file,
                end: AtomicU64::new(end),
            },
            current,
        ))
    }

    /// The applied offset stored with the last batch (0 if none).
    pub fn applied(&self) -> Result<u64, ProjectionError> {
        Ok(self
            .db
            .get(K_APPLIED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Empties the store (index and file) and marks it with this layout.
    pub fn clear(&self) -> Result<(), ProjectionError> {
        self.db.clear()?;
        self.db.insert(K_FORMAT, FORMAT)?;
        self.file.set_len(0).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        self.end.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Appends `fresh` chunks (first offset, body: keys not yet in the store) and `rewritten`
    /// ones (replacing the body at `Slot`), and stores `applied`: the bodies first, then the
    /// index in one atomic sled batch. Replaced bodies are then zeroed; the new ones are
    /// fsynced before the index points at them, so a crash cannot leave an index entry
    /// pointing at zeros with no newer body. One caller at a time (the projection's
    /// `applying` lock).
    pub fn store(
        &self,
        fresh: &[(u64, &[u8])],
        rewritten: &[(u64, Vec<u8>, Slot)],
        removed: &[(u64, Slot)],
        applied: Option<u64>,
    ) -> Result<(), ProjectionError> {
        let bodies = fresh
            .iter()
            .map(|(o, b)| (*o, *b))
            .chain(rewritten.iter().map(|(o, b, _)| (*o, b.as_slice())));
        let mut batch = sled::Batch::default();
        self.write_bodies(bodies, |first, slot| {
            batch.insert(&chunk_key(first), &slot.encode())
        })?;
        for (first, _) in removed {
            batch.remove(&chunk_key(*first));
        }
        if let Some(a) = applied {
            batch.insert(K_APPLIED, &a.to_be_bytes());
        }
        // Where the bodies replaced or dropped lie.
        let replaced: Vec<(u64, u64)> = rewritten
            .iter()
            .map(|(_, _, s)| s)
            .chain(removed.iter().map(|(_, s)| s))
            .map(|s| (s.pos, s.end()))
            .collect();
        if !replaced.is_empty() {
            self.file.sync_data().map_err(io)?;
        }
        self.db.apply_batch(batch)?;
        if !replaced.is_empty() {
            self.db.flush()?;
            for &(from, to) in &replaced {
                self.zero(from, to)?;
            }
            self.file.sync_data().map_err(io)?;
            self.release(replaced);
        }
        Ok(())
    }

    /// Writes `bodies` (each chunk's first offset and body) one after another at the end of the
    /// file, telling `written` where each lies. Not synced, not indexed.
    fn write_bodies<'b>(
        &self,
        bodies: impl IntoIterator<Item = (u64, &'b [u8])>,
        mut written: impl FnMut(u64, Slot),
    ) -> Result<(), ProjectionError> {
        let mut pos = self.end.load(Ordering::SeqCst);
        for (first, body) in bodies {
            let len = u32::try_from(body.len())
                .map_err(|_| damaged(format!("chunk at {first} is over 4 GiB")))?;
            let slot = Slot {
                pos,
                len,
                crc: crc32c::crc32c(body),
            };
            // Each body straight from where it is (not copied into one buffer first).
            self.file.write_all_at(body, pos).map_err(io)?;
            written(first, slot);
            pos += u64::from(len);
        }
        self.end.store(pos, Ordering::SeqCst);
        Ok(())
    }

    /// Appends `fresh` chunks (first offset, body: keys not yet in the store) to the file
    /// without indexing them: their index entries and `applied` go to `unindexed`, which
    /// [`LineStore::index`] stores in one sled batch. Until then a restart finds neither (the
    /// stored applied offset is older, the bodies unreferenced and zeroed at start-up). For a
    /// long catch-up's storer, where one sled batch per applied batch was most of its time,
    /// blocked in sled. One caller at a time, as [`LineStore::store`].
    pub fn append(
        &self,
        fresh: &[(u64, &[u8])],
        applied: u64,
        unindexed: &mut Unindexed,
    ) -> Result<(), ProjectionError> {
        let entries = &mut unindexed.entries;
        self.write_bodies(fresh.iter().copied(), |first, slot| {
            entries.push((first, slot))
        })?;
        unindexed.applied = Some(applied);
        Ok(())
    }

    /// Stores the index entries and the applied offset [`LineStore::append`] left in
    /// `unindexed` in one atomic sled batch, and empties it.
    pub fn index(&self, unindexed: &mut Unindexed) -> Result<(), ProjectionError> {
        let Some(applied) = unindexed.applied.take() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for (first, slot) in unindexed.entries.drain(..) {
            batch.insert(&chunk_key(first), &slot.encode());
        }
        batch.insert(K_APPLIED, &applied.to_be_bytes());
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Overwrites bytes `from..to` of the file with zeros (the callers sync, then
    /// [`LineStore::release`] the space).
    fn zero(&self, from: u64, to: u64) -> Result<(), ProjectionError> {
        let zeros = vec![0u8; ZEROS.min((to - from) as usize)];
        let mut at = from;
        while at < to {
            let n = zeros.len().min((to - at) as usize);
            self.file.write_all_at(&zeros[..n], at).map_err(io)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Gives the space of `ranges` (zeroed and synced already) back to the filesystem by
    /// punching holes, which read as zeros, where the filesystem can; elsewhere the zeros
    /// stay. After the sync, so the freed blocks hold zeros too, never the old content, and a
    /// crash that loses the hole leaves the durable zeros. Best effort: space, not safety.
    fn release(&self, ranges: impl IntoIterator<Item = (u64, u64)>) {
        use rustix::fs::{fallocate, FallocateFlags};
        for (from, to) in ranges.into_iter().filter(|(f, t)| t > f) {
            let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            if let Err(e) = fallocate(&self.file, mode, from, to - from) {
                tracing::debug!(error = %e, "lines file: cannot punch a hole; the zeros stay");
                return;
            }
        }
    }

    /// The body at `slot` (of the chunk at `first`), checked against its CRC.
    pub fn body(&self, first: u64, slot: Slot) -> Result<Vec<u8>, ProjectionError> {
        let mut body = vec![0u8; slot.len as usize];
        self.file
            .read_exact_at(&mut body, slot.pos)
            .map_err(|e| damaged(format!("chunk at {first}: {e}")))?;
        if crc32c::crc32c(&body) != slot.crc {
            return Err(damaged(format!(
                "chunk at {first} does not match its checksum"
            )));
        }
        Ok(body)
    }

    /// The chunk's first offset and where its body lies, from its sled key and value.
    fn index_entry(k: &[u8], v: &[u8]) -> Result<(u64, Slot), ProjectionError> {
        let first = offset_of(k).ok_or_else(|| damaged("bad chunk key".into()))?;
        let slot = Slot::decode(v).ok_or_else(|| damaged(format!("bad index entry at {first}")))?;
        Ok((first, slot))
    }

    /// The chunk holding `offset` if it is stored (the one with the greatest first offset at
    /// or below it): its first offset and where its body lies.
    pub fn slot_at_or_below(&self, offset: u64) -> Result<Option<(u64, Slot)>, ProjectionError> {
        match self.db.range(chunk_key(0)..=chunk_key(offset)).next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                Ok(Some(Self::index_entry(&k, &v)?))
            }
            None => Ok(None),
        }
    }

    /// Every chunk's first offset and body, in order (for tests; start-up reads the bodies
    /// on helper threads, by [`LineStore::slots_from`] and [`LineStore::body`]).
    #[cfg(test)]
    pub fn chunks(&self) -> Result<Vec<(u64, Vec<u8>)>, ProjectionError> {
        self.slots_from(0)?
            .into_iter()
            .map(|(first, slot)| Ok((first, self.body(first, slot)?)))
            .collect()
    }

    /// Where every chunk at or after `from` lies (their index entries only).
    pub fn slots_from(&self, from: u64) -> Result<Vec<(u64, Slot)>, ProjectionError> {
        self.db
            .range(chunk_key(from)..=chunk_key(u64::MAX))
            .map(|kv| {
                let (k, v) = kv?;
                Self::index_entry(&k, &v)
            })
            .collect()
    }

    /// Zeroes every byte of the file that no index entry points at (bodies of a batch whose
    /// index a crash lost, or replaced ones a crash kept from being zeroed) and cuts the file
    /// after the last body. For start-up, after the index is tidied.
    pub fn zero_unreferenced(&self) -> Result<(), ProjectionError> {
        let mut slots: Vec<Slot> = self.slots_from(0)?.into_iter().map(|(_, s)| s).collect();
        slots.sort_by_key(|s| s.pos);
        let mut at = 0;
        let mut changed = false;
        let mut buf = Vec::new();
        let mut gaps = Vec::new();
        for s in &slots {
            if s.pos > at {
                changed |= self.zero_if_not(at, s.pos, &mut buf)?;
                gaps.push((at, s.pos));
            }
            at = at.max(s.end());
        }
        if self.end.load(Ordering::SeqCst) > at {
            self.file.set_len(at).map_err(io)?;
            self.end.store(at, Ordering::SeqCst);
            changed = true;
        }
        // Synced whenever there are gaps, even if this open wrote nothing: zeros read back
        // may be a crashed run's writes still in the page cache, not yet on disk.
        if changed || !gaps.is_empty() {
            self.file.sync_data().map_err(io)?;
        }
        // Every gap, zeroed now or before (a hole already punched costs nothing).
        self.release(gaps);
        Ok(())
    }

    /// Zeroes `from..to` unless it is zeros already; says whether it wrote.
    fn zero_if_not(&self, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<bool, ProjectionError> {
        let mut at = from;
        while at < to {
            let n = ZEROS.min((to - at) as usize);
            buf.resize(n, 0);
            self.file.read_exact_at(buf, at).map_err(io)?;
            if buf.iter().any(|&b| b != 0) {
                self.zero(from, to)?;
                return Ok(true);
            }
            at += n as u64;
        }
        Ok(false)
    }

    /// Makes every body written so far durable, then stores `applied` and flushes sled (for a
    /// snapshot, which a restart takes only if the stored applied offset reaches it).
    pub fn sync(&self, applied: u64) -> Result<(), ProjectionError> {
        self.file.sync_data().map_err(io)?;
        self.db.insert(K_APPLIED, &applied.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The offset below which the access index is stored here (0: nothing stored).
    pub fn access_spilled(&self) -> Result<u64, ProjectionError> {
        Ok(self
            .db
            .get(K_ACCESS_SPILLED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Stores the access index's offsets `by` key (each list ascending, and above everything
    /// stored before) and that everything below `upto` is now stored, in one atomic batch
    /// (made durable by the next [`LineStore::sync`]).
    pub fn spill_access<'a>(
        &self,
        by: impl Iterator<Item = (&'a str, &'a [u64])>,
        upto: u64,
    ) -> Result<(), ProjectionError> {
        let mut batch = sled::Batch::default();
        for (key, offsets) in by {
            for piece in offsets.chunks(ACCESS_PIECE) {
                batch.insert(access_key(key, piece[0]), encode_offsets(piece));
            }
        }
        batch.insert(K_ACCESS_SPILLED, &upto.to_be_bytes());
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// The stored offsets under access index `key` below `before`, newest first, at most
    /// `limit` of them.
    pub fn access_offsets(
        &self,
        key: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<u64>, ProjectionError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .range(access_key(key, 0)..access_key(key, before))
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let piece = decode_offsets(&v).ok_or_else(|| bad_piece(&k))?;
            out.extend(
                piece
                    .into_iter()
                    .rev()
                    .filter(|&o| o < before)
                    .take(limit - out.len()),
            );
        }
        Ok(out)
    }

    /// Every stored access index key with its offsets, ascending (`""`: all of them).
    pub fn access_all(&self) -> Result<BTreeMap<String, Vec<u64>>, ProjectionError> {
        let mut all: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for kv in self.db.range(b"x".as_slice()..b"y".as_slice()) {
            let (k, v) = kv?;
            let key = k
                .get(1..k.len().saturating_sub(9))
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| bad_piece(&k))?;
            let piece = decode_offsets(&v).ok_or_else(|| bad_piece(&k))?;
            all.entry(key.to_string()).or_default().extend(piece);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(dir: &Path, text: &str) -> bool {
        let bytes = std::fs::read(dir.join(LINES_FILE)).expect("file");
        bytes.windows(text.len()).any(|w| w == text.as_bytes())
    }

    /// A new store in `dir` holding one chunk, `body` at offset 0, applied up to 1.
    fn holding(dir: &Path, body: &[u8]) -> LineStore {
        let (s, _) = LineStore::open(dir).expect("open");
        s.clear().expect("clear");
        s.store(&[(0, body)], &[], &[], Some(1)).expect("store");
        s
    }

    fn body_at(s: &LineStore, offset: u64) -> Vec<u8> {
        let (first, slot) = s.slot_at_or_below(offset).expect("read").expect("a chunk");
        s.body(first, slot).expect("body")
    }

    #[test]
    fn a_store_in_use_is_named_after_waiting_and_a_closed_one_reopens() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (s, _) = LineStore::open(tmp.path()).expect("open");
        let err = LineStore::open(tmp.path())
            .err()
            .expect("the store is in use");
        assert!(err.to_string().contains("another hub"), "{err}");
        drop(s);
        // Dropped and opened again straight away (sled lets go of its lock a moment later).
        for i in 0..20 {
            let (s, _) = LineStore::open(tmp.path()).expect("reopen");
            s.store(&[(i, b"[line]")], &[], &[], Some(i + 1))
                .expect("store");
            drop(s);
        }
    }

    #[test]
    fn a_new_store_is_not_current_until_cleared() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (s, current) = LineStore::open(tmp.path()).expect("open");
        assert!(!current);
        s.clear().expect("clear");
        drop(s);
        let (_, current) = LineStore::open(tmp.path()).expect("reopen");
        assert!(current);
    }

    #[test]
    fn rewriting_a_chunk_zeroes_its_old_body_and_reads_the_new_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (s, _) = LineStore::open(tmp.path()).expect("open");
        s.clear().expect("clear");
        let fresh: [(u64, &[u8]); 2] = [(0, b"[alpha-secret]"), (10, b"[beta]")];
        s.store(&fresh, &[], &[], Some(20)).expect("store");
        assert_eq!(s.applied().expect("applied"), 20);
        assert_eq!(body_at(&s, 5), b"[alpha-secret]");
        assert_eq!(body_at(&s, 10), b"[beta]");
        assert!(s.slot_at_or_below(0).expect("read").is_some());

        let old = s.slots_from(0).expect("slots")[0].1;
        s.store(&[], &[(0, b"[alpha-erased]".to_vec(), old)], &[], None)
            .expect("rewrite");
        assert_eq!(body_at(&s, 9), b"[alpha-erased]");
        assert!(!holds(tmp.path(), "alpha-secret"), "the old body is zeroed");
        assert_eq!(s.applied().expect("applied"), 20, "kept when not given");

        // Dropped chunks are zeroed too.
        let from_ten = s.slots_from(10).expect("slots");
        s.store(&[], &[], &from_ten, None).expect("remove");
        assert!(!holds(tmp.path(), "beta"));
        assert_eq!(body_at(&s, 50), b"[alpha-erased]");
        let bodies: Vec<u64> = s
            .chunks()
            .expect("chunks")
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(bodies, vec![0]);
    }

    #[test]
    fn appended_bodies_are_found_once_indexed_and_unreferenced_after_a_crash_before() {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let s = holding(tmp.path(), b"[first]");
            let mut unindexed = Unindexed::default();
            s.append(&[(1, b"[second]"), (5, b"[third]")], 9, &mut unindexed)
                .expect("append");
            assert_eq!(unindexed.len(), 2);
            // Neither the bodies nor the applied offset are in the index yet.
            assert_eq!(body_at(&s, 3), b"[first]");
            assert_eq!(s.applied().expect("applied"), 1);
            s.index(&mut unindexed).expect("index");
            assert_eq!(unindexed.len(), 0);
            assert_eq!(body_at(&s, 3), b"[second]");
            assert_eq!(body_at(&s, 7), b"[third]");
            assert_eq!(s.applied().expect("applied"), 9);
            // Nothing waiting: nothing stored, the applied offset kept.
            s.index(&mut unindexed).expect("index nothing");
            assert_eq!(s.applied().expect("applied"), 9);
            // Appended after, then the store dropped without indexing (a crash).
            s.append(&[(9, b"[lost-secret]")], 12, &mut unindexed)
                .expect("append");
            s.sync(9).expect("sync");
        }
        let (s, current) = LineStore::open(tmp.path()).expect("reopen");
        assert!(current);
        assert_eq!(s.applied().expect("applied"), 9, "the last index's offset");
        assert_eq!(body_at(&s, 20), b"[third]");
        s.zero_unreferenced().expect("tidy");
        assert!(
            !holds(tmp.path(), "lost-secret"),
            "an unindexed body is zeroed"
        );
        let firsts: Vec<u64> = s
            .slots_from(0)
            .expect("slots")
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(firsts, vec![0, 1, 5]);
    }

    #[test]
    fn a_replaced_body_gives_its_space_back() {
        use std::os::unix::fs::MetadataExt as _;
        let tmp = tempfile::tempdir().expect("tmp");
        let s = holding(tmp.path(), &vec![b'x'; 4 << 20]);
        s.sync(1).expect("sync");
        let file = tmp.path().join(LINES_FILE);
        let blocks = || std::fs::metadata(&file).expect("metadata").blocks();
        let before = blocks();
        let old = s.slots_from(0).expect("slots")[0].1;
        s.store(&[], &[(0, b"[small]".to_vec(), old)], &[], None)
            .expect("rewrite");
        assert_eq!(body_at(&s, 0), b"[small]");
        let bytes = std::fs::read(&file).expect("read");
        assert!(
            bytes[..4 << 20].iter().all(|&b| b == 0),
            "the old body reads as zeros"
        );
        // Whether this filesystem punches holes, asked of a file of its own.
        let probe = File::create(tmp.path().join("probe")).expect("probe");
        probe.set_len(1 << 20).expect("grow");
        let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&probe, mode, 0, 4096) {
            Ok(()) => assert!(
                blocks() < before / 4,
                "{} blocks of 512 bytes after the rewrite, {before} before",
                blocks()
            ),
            Err(e) => {
                eprintln!("this filesystem punches no holes ({e}): only the zeros are checked")
            }
        }
    }

    #[test]
    fn bytes_no_chunk_points_at_are_zeroed_and_the_tail_cut_at_start_up() {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let s = holding(tmp.path(), b"[kept]");
            s.sync(1).expect("sync");
        }
        // A crash lost the index of later bodies, and of a rewrite whose old body stayed.
        let path = tmp.path().join(LINES_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let kept_len = bytes.len() as u64;
        bytes.extend_from_slice(b"[orphan-secret]");
        std::fs::write(&path, &bytes).expect("write");
        let (s, current) = LineStore::open(tmp.path()).expect("reopen");
        assert!(current);
        s.zero_unreferenced().expect("tidy");
        assert!(!holds(tmp.path(), "orphan-secret"));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), kept_len);
        assert_eq!(body_at(&s, 0), b"[kept]");

        // A gap between bodies (an old body a crash kept from being zeroed).
        let old = s.slots_from(0).expect("slots")[0].1;
        s.store(&[(5, b"[later]")], &[], &[], None).expect("store");
        s.store(&[], &[(0, b"[new]".to_vec(), old)], &[], None)
            .expect("rewrite");
        // Put the old bytes back, as if the zeroing never reached the disk.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.splice(0..6, b"[gone]".iter().copied());
        std::fs::write(&path, &bytes).expect("write");
        s.zero_unreferenced().expect("tidy");
        assert!(!holds(tmp.path(), "[gone]"));
        assert_eq!(body_at(&s, 4), b"[new]");
        assert_eq!(body_at(&s, 5), b"[later]");
    }

    #[test]
    fn a_body_that_does_not_match_its_checksum_is_damage() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = holding(tmp.path(), b"[alpha]");
        s.file.write_all_at(b"X", 2).expect("flip");
        let (first, slot) = s.slot_at_or_below(0).expect("read").expect("a chunk");
        match s.body(first, slot) {
            Err(ProjectionError::Damaged(why)) => assert!(why.contains("checksum"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("damage not seen"),
        }
    }

    #[test]
    fn the_access_index_is_stored_in_pieces_and_read_back_newest_first() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = holding(tmp.path(), b"[x]");
        assert_eq!(s.access_spilled().expect("spilled"), 0);
        // More offsets than a piece holds, and far apart ones; keys that are prefixes of
        // each other.
        let all: Vec<u64> = (0..ACCESS_PIECE as u64 + 100).map(|i| 3 * i).collect();
        let far: Vec<u64> = vec![5, 1 << 20, 1 << 40, (1 << 40) + 1];
        let near: Vec<u64> = vec![7, 8];
        s.spill_access(
            [
                ("", all.as_slice()),
                ("f/a", far.as_slice()),
                ("f/ab", near.as_slice()),
            ]
            .into_iter(),
            (1 << 40) + 2,
        )
        .expect("spill");
        let later: Vec<u64> = vec![(1 << 40) + 10, (1 << 40) + 20];
        s.spill_access(
            [("", later.as_slice()), ("f/a", later.as_slice())].into_iter(),
            (1 << 40) + 30,
        )
        .expect("spill");
        assert_eq!(s.access_spilled().expect("spilled"), (1 << 40) + 30);
        let newest = |v: &[u64], before: u64, limit: usize| -> Vec<u64> {
            v.iter()
                .rev()
                .copied()
                .filter(|&o| o < before)
                .take(limit)
                .collect()
        };
        let far_all: Vec<u64> = far.iter().chain(&later).copied().collect();
        let every: Vec<u64> = all.iter().chain(&later).copied().collect();
        for before in [0, 6, 1 << 20, (1 << 40) + 1, (1 << 40) + 15, u64::MAX] {
            for limit in [1, 3, 100_000] {
                let got = |k: &str| s.access_offsets(k, before, limit).expect("read");
                assert_eq!(
                    got("f/a"),
                    newest(&far_all, before, limit),
                    "{before} {limit}"
                );
                assert_eq!(got("f/ab"), newest(&near, before, limit));
                assert_eq!(got(""), newest(&every, before, limit));
                assert!(got("f/").is_empty());
            }
        }
        let stored = s.access_all().expect("all");
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["", "f/a", "f/ab"]);
        assert_eq!(stored[""], every);
        assert_eq!(stored["f/a"], far_all);
        s.clear().expect("clear");
        assert_eq!(s.access_spilled().expect("spilled"), 0);
        assert!(s.access_all().expect("all").is_empty());
    }

    proptest::proptest! {
        #[test]
        fn offsets_read_back_as_written(mut v in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..50)) {
            v.sort_unstable();
            proptest::prop_assert_eq!(decode_offsets(&encode_offsets(&v)), Some(v));
        }
    }
}
