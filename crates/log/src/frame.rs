//! The byte format of one log entry, shared by every engine.
//!
//! ```text
//! magic "TOE1" | len u32 | crc32c u32 | rest (len bytes)
//! rest = offset u64 | prev_hash [32] | recorded_at_ms i64 | source_len u16 | id_len u16
//!        | source | id | body
//! ```
//! All integers are little-endian. The checksum covers `rest`; the entry's hash is SHA-256 of
//! `rest`, and every entry carries the hash of the one before it (zeros for the first), so the
//! entries form a hash chain: changing, removing or reordering any entry breaks it.

use sha2::{Digest, Sha256};

use crate::{EntryView, Hash, LogError, NewEntry, StoredEntry};

/// The four bytes that open every entry.
pub const MAGIC: [u8; 4] = *b"TOE1";
/// Bytes before `rest`: magic, length and checksum.
pub const HEADER_LEN: usize = 12;
/// Fixed bytes at the start of `rest`.
pub const FIXED_LEN: usize = 8 + 32 + 8 + 2 + 2;
/// The largest `rest` accepted, to refuse absurd lengths read from a damaged file.
pub const MAX_REST_LEN: usize = 16 * 1024 * 1024;

/// Appends the frame of `entry` at `offset` after `prev_hash` to `buf`; returns its hash.
pub fn encode(buf: &mut Vec<u8>, offset: u64, prev_hash: &Hash, entry: &NewEntry) -> Hash {
    let rest_len = FIXED_LEN + entry.source.len() + entry.id.len() + entry.body.len();
    let start = buf.len();
    buf.reserve(HEADER_LEN + rest_len);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&(rest_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    let rest_start = buf.len();
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(prev_hash);
    buf.extend_from_slice(&entry.recorded_at_ms.to_le_bytes());
    buf.extend_from_slice(&(entry.source.len() as u16).to_le_bytes());
    buf.extend_from_slice(&(entry.id.len() as u16).to_le_bytes());
    buf.extend_from_slice(entry.source.as_bytes());
    buf.extend_from_slice(entry.id.as_bytes());
    buf.extend_from_slice(&entry.body);
    let rest = &buf[rest_start..];
    let crc = crc32c::crc32c(rest);
    let hash: Hash = Sha256::digest(rest).into();
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    hash
}

/// The stored bytes of an entry (`rest` above: what its checksum and hash cover), rebuilt from
/// the entry as read: the data of its Merkle leaf.
pub fn stored_bytes(e: &StoredEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + e.source.len() + e.id.len() + e.body.len());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.prev_hash);
    out.extend_from_slice(&e.recorded_at_ms.to_le_bytes());
    out.extend_from_slice(&(e.source.len() as u16).to_le_bytes());
    out.extend_from_slice(&(e.id.len() as u16).to_le_bytes());
    out.extend_from_slice(e.source.as_bytes());
    out.extend_from_slice(e.id.as_bytes());
    out.extend_from_slice(&e.body);
    out
}

/// The RFC 9162 leaf hash of an entry: over its stored bytes.
pub fn leaf_of(e: &StoredEntry) -> Hash {
    tellonce_domain::merkle::leaf_hash(&stored_bytes(e))
}

/// The total frame length of an entry, for checking sizes before writing.
pub fn frame_len(entry: &NewEntry) -> usize {
    HEADER_LEN + FIXED_LEN + entry.source.len() + entry.id.len() + entry.body.len()
}

/// Checks that every entry can be framed (key parts and size within the format's limits).
pub fn check_entries(entries: &[NewEntry]) -> Result<(), LogError> {
    for e in entries {
        if e.source.len() > usize::from(u16::MAX) || e.id.len() > usize::from(u16::MAX) {
            return Err(LogError::Invalid(
                "source or id longer than 65535 bytes".into(),
            ));
        }
        if frame_len(e) > MAX_REST_LEN {
            return Err(LogError::Invalid(format!(
                "entry of {} bytes exceeds the {} byte limit",
                frame_len(e),
                MAX_REST_LEN
            )));
        }
    }
    Ok(())
}

/// The idempotency key of an entry as bytes: `source`, a zero byte, `id`.
pub fn key_of(source: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1 + id.len());
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// What is at some position of a segment.
#[derive(Debug)]
pub enum Peek {
    /// A complete frame whose checksum verifies, `len` bytes long in all.
    Frame {
        /// Total length including the header.
        len: usize,
    },
    /// Fewer bytes than a frame needs: the end of the data, or a torn write.
    Short,
    /// Bytes that are not a valid frame.
    Invalid(&'static str),
}

/// Checks whether `data` starts with a complete, checksummed frame.
pub fn peek(data: &[u8]) -> Peek {
    if data.len() < HEADER_LEN {
        return Peek::Short;
    }
    if data[..4] != MAGIC {
        return Peek::Invalid("bad magic");
    }
    let rest_len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    if !(FIXED_LEN..=MAX_REST_LEN).contains(&rest_len) {
        return Peek::Invalid("impossible length");
    }
    if data.len() < HEADER_LEN + rest_len {
        return Peek::Short;
    }
    let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if crc32c::crc32c(&data[HEADER_LEN..HEADER_LEN + rest_len]) != crc {
        return Peek::Invalid("checksum mismatch");
    }
    Peek::Frame {
        len: HEADER_LEN + rest_len,
    }
}

/// A verified frame, borrowing its bytes: its entry (whose fields it derefs to) and the
/// bytes its checksum and hash cover.
#[derive(Debug)]
pub struct FrameView<'a> {
    /// The entry.
    pub entry: EntryView<'a>,
    /// The stored bytes its checksum and hash cover (see [`stored_bytes`]).
    pub stored: &'a [u8],
}

impl<'a> std::ops::Deref for FrameView<'a> {
    type Target = EntryView<'a>;
    fn deref(&self) -> &EntryView<'a> {
        &self.entry
    }
}

impl FrameView<'_> {
    /// Its RFC 9162 leaf hash, without copying (equal to [`leaf_of`] of the entry).
    pub fn leaf(&self) -> Hash {
        tellonce_domain::merkle::leaf_hash(self.stored)
    }

    /// An owned copy.
    pub fn to_entry(&self) -> StoredEntry {
        self.entry.to_entry()
    }
}

/// Decodes a frame that [`peek`] accepted. `expected_offset` is checked against the stored one.
pub fn decode(frame: &[u8], expected_offset: u64) -> Result<StoredEntry, LogError> {
    view(frame, expected_offset).map(|v| v.to_entry())
}

/// Verifies a frame and returns a view of it without copying; `expected_offset` is checked
/// against the stored one.
pub fn view(frame: &[u8], expected_offset: u64) -> Result<FrameView<'_>, LogError> {
    check(frame, expected_offset)?;
    view_peeked(frame, expected_offset, hash_of(frame))
}

/// Checks that `frame` is one whole frame whose checksum verifies ([`peek`]); the error says
/// what is wrong at `expected_offset`.
pub(crate) fn check(frame: &[u8], expected_offset: u64) -> Result<(), LogError> {
    match peek(frame) {
        Peek::Frame { len } if len == frame.len() => Ok(()),
        Peek::Frame { .. } => Err(corrupt(expected_offset, "frame length mismatch")),
        Peek::Short => Err(corrupt(expected_offset, "truncated entry")),
        Peek::Invalid(why) => Err(corrupt(expected_offset, why)),
    }
}

/// The `prev_hash` stored in `frame`, a whole frame that [`check`] (or [`peek`]) accepted.
pub(crate) fn prev_hash_in(frame: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(&frame[HEADER_LEN + 8..HEADER_LEN + 40]);
    h
}

fn corrupt(offset: u64, what: &str) -> LogError {
    LogError::Corrupt {
        offset,
        detail: what.to_string(),
    }
}

/// The hash of the entry in `frame` (a whole frame that [`peek`] accepted): SHA-256 of its
/// stored bytes, which the next entry's `prev_hash` must equal.
pub(crate) fn hash_of(frame: &[u8]) -> Hash {
    Sha256::digest(frame.get(HEADER_LEN..).unwrap_or_default()).into()
}

/// [`view`] of a whole frame that [`peek`] has accepted (its checksum is not worked out
/// again), whose hash is given: [`hash_of`] it (a log's open works the hashes out on several
/// threads), or the next frame's [`prev_hash_in`] (a read).
pub(crate) fn view_peeked(
    frame: &[u8],
    expected_offset: u64,
    hash: Hash,
) -> Result<FrameView<'_>, LogError> {
    let corrupt = |what: &str| corrupt(expected_offset, what);
    if frame.len() < HEADER_LEN + FIXED_LEN {
        return Err(corrupt("truncated entry"));
    }
    let rest = &frame[HEADER_LEN..];
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rest[i..i + 8]);
        b
    };
    let offset = u64::from_le_bytes(u64_at(0));
    if offset != expected_offset {
        return Err(corrupt(&format!("entry says offset {offset}")));
    }
    let prev_hash = prev_hash_in(frame);
    let recorded_at_ms = i64::from_le_bytes(u64_at(40));
    let source_len = u16::from_le_bytes([rest[48], rest[49]]) as usize;
    let id_len = u16::from_le_bytes([rest[50], rest[51]]) as usize;
    if FIXED_LEN + source_len + id_len > rest.len() {
        return Err(corrupt("key longer than entry"));
    }
    let key = &rest[FIXED_LEN..FIXED_LEN + source_len + id_len];
    let source =
        std::str::from_utf8(&key[..source_len]).map_err(|_| corrupt("source not UTF-8"))?;
    let id = std::str::from_utf8(&key[source_len..]).map_err(|_| corrupt("id not UTF-8"))?;
    Ok(FrameView {
        entry: EntryView {
            offset,
            prev_hash,
            hash,
            recorded_at_ms,
            source,
            id,
            body: &rest[FIXED_LEN + source_len + id_len..],
        },
        stored: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_are_what_the_hash_covers() {
        let entry = NewEntry {
            source: "police".into(),
            id: "PPN-1".into(),
            recorded_at_ms: 1_790_000_000_000,
            body: b"{\"x\":1}".to_vec(),
        };
        let mut buf = Vec::new();
        let hash = encode(&mut buf, 7, &[3; 32], &entry);
        let stored = decode(&buf, 7).expect("decodes");
        let bytes = stored_bytes(&stored);
        assert_eq!(&buf[HEADER_LEN..], &bytes[..]);
        let again: Hash = Sha256::digest(&bytes).into();
        assert_eq!(again, hash);
        assert_eq!(leaf_of(&stored), tellonce_domain::merkle::leaf_hash(&bytes));
        assert_eq!(view(&buf, 7).expect("view").leaf(), leaf_of(&stored));
    }
}
