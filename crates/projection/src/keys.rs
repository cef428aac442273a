//! The key store: one data key per subject record, kept apart from the log, destroyed on
//! erasure.
//!
//! Two files in their own folder (by default `<data_dir>/keys`):
//! - `keys.dat`, fixed 64-byte slots: key id (8 bytes), a hash of the record's name (16), the
//!   key (32), a state byte (live or destroyed), and a CRC-32C over the rest. New slots are
//!   appended and fsynced before the ciphertext that needs them is written to the log, so an
//!   acknowledged event never lacks its key. Destroying a key overwrites its slot in place
//!   with zeros and fsyncs.
//! - `erased.jsonl`, one tombstone per destroyed key (which erasure, when, why), written and
//!   fsynced *before* the slot is overwritten, so a crash between the two is finished on the
//!   next open. Tombstones let a rebuild tell "erased on purpose" from "key lost": a missing
//!   key without a tombstone is an error, never a silent blank.
//!
//! The store holds no names in the clear: records are found by a hash of their name.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::HashMap;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tellonce_domain::seal::DataKey;
use tellonce_domain::Timestamp;

const SLOT: usize = 64;
const LIVE: u8 = 1;
const DESTROYED: u8 = 2;
const KEYS_FILE: &str = "keys.dat";
const TOMBS_FILE: &str = "erased.jsonl";

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key files failed.
    #[error("key store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A slot before the end does not check out.
    #[error("key store {0} is damaged at slot {1}; restore it from backup")]
    Damaged(PathBuf, u64),
}

/// Why a key is gone: what the projections show instead of the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The erasure that destroyed it.
    pub erasure_id: String,
    /// When.
    pub erased_at: Timestamp,
    /// Why, in a few words ([`tellonce_domain::seal::ErasureReason::label`]).
    pub label: String,
}

impl Tombstone {
    /// The tombstone erasure `x` leaves on each key it destroys.
    pub fn of(x: &tellonce_domain::seal::Erasure) -> Self {
        Tombstone {
            erasure_id: x.erasure_id.clone(),
            erased_at: x.erased_at,
            label: x.reason.label().into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TombLine {
    key_id: String,
    #[serde(flatten)]
    tomb: Tombstone,
}

/// What the store holds for a key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState<K = DataKey> {
    /// The key ([`KeyView::get`]), or only that it is live ([`KeyView::state`]).
    Live(K),
    /// Destroyed by an erasure.
    Erased(Tombstone),
    /// Never held here: the store is not the one the log was written with, or was lost.
    Missing,
}

/// A read view of a [`KeyStore`] ([`KeyStore::view`]).
pub struct KeyView<'a>(RwLockReadGuard<'a, Inner>);

impl KeyView<'_> {
    /// What the store holds for key `id`.
    pub fn get(&self, id: &str) -> KeyState {
        self.find(id, |slot| self.0.slot_keys[slot as usize].0)
    }

    /// What the store holds for key `id`, without reading a live key itself: a rebuild checks
    /// the keys of every sealed event it does not open, and the table of keys is three times
    /// the size of the table of ids.
    pub fn state(&self, id: &str) -> KeyState<()> {
        self.find(id, |_| ())
    }

    /// What the store holds for key `id`, a live key's slot given to `live`.
    #[inline]
    fn find<K>(&self, id: &str, live: impl FnOnce(u64) -> K) -> KeyState<K> {
        let Some(raw) = parse_id(id) else {
            return KeyState::Missing;
        };
        if let Some(&slot) = self.0.by_id.get(&raw) {
            return KeyState::Live(live(slot));
        }
        match self.0.erased.get(&raw) {
            Some(t) => KeyState::Erased(t.clone()),
            None => KeyState::Missing,
        }
    }
}

struct Inner {
    keys: File,
    tombs: File,
    /// Live keys' slots, by key id. Small entries (not the keys): a rebuild looks up every
    /// sealed event's keys here, and a table of whole keys was four times the size, twice the
    /// L3 cache at the 1M-event demo.
    by_id: HashMap<[u8; 8], u64>,
    /// Each slot's key and name hash (zeros where destroyed): one per slot of the file.
    slot_keys: Vec<(DataKey, [u8; 16])>,
    by_name: HashMap<[u8; 16], [u8; 8]>,
    erased: HashMap<[u8; 8], Tombstone>,
    /// Set when an fsync failed: keys may not be on disk, so no more are handed out.
    failed: Option<String>,
}

impl Inner {
    /// The slots in the key file.
    fn slots(&self) -> u64 {
        self.slot_keys.len() as u64
    }
}

/// The key store (see the module docs).
pub struct KeyStore {
    dir: PathBuf,
    inner: RwLock<Inner>,
    /// Slots known to be on disk; held while fsyncing, so concurrent batches share one fsync
    /// (group commit) without holding `inner`, which readers need.
    synced: Mutex<u64>,
    /// The key file, for fsyncs outside `inner`.
    sync_file: File,
    sealing: tokio::sync::RwLock<()>,
}

fn name_hash(name: &str) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(b"tellonce key name\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&d[..16]);
    out
}

fn slot_bytes(id: [u8; 8], name: [u8; 16], key: &DataKey, state: u8) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..8].copy_from_slice(&id);
    s[8..24].copy_from_slice(&name);
    s[24..56].copy_from_slice(key);
    s[56] = state;
    let crc = crc32c::crc32c(&s[..60]);
    s[60..].copy_from_slice(&crc.to_le_bytes());
    s
}

/// Parses a key id (16 hex digits).
fn parse_id(id: &str) -> Option<[u8; 8]> {
    let mut out = [0; 8];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some(out)
}

impl KeyStore {
    /// Opens (or creates) the key store in `dir`, finishing any destruction a crash cut short
    /// and dropping a torn slot at the end (it was never acknowledged).
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io {
                path: path.clone(),
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let kp = dir.join(KEYS_FILE);
        let tp = dir.join(TOMBS_FILE);
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .append(false)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(io(p))
        };
        let keys = open(&kp)?;
        let tombs = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&tp)
            .map_err(io(&tp))?;
        let mut erased = HashMap::default();
        for line in std::io::BufReader::new(&tombs).lines() {
            let line = line.map_err(io(&tp))?;
            // A torn last line was never fsynced, so its slot was never overwritten.
            if let Ok(t) = serde_json::from_str::<TombLine>(&line) {
                if let Some(id) = parse_id(&t.key_id) {
                    erased.insert(id, t.tomb);
                }
            }
        }
        let bytes = std::fs::read(&kp).map_err(io(&kp))?;
        let mut inner = Inner {
            keys,
            tombs,
            by_id: HashMap::default(),
            slot_keys: Vec::new(),
            by_name: HashMap::default(),
            erased,
            failed: None,
        };
        let whole = bytes.len() / SLOT;
        let mut good = 0u64;
        let mut unfinished = Vec::new();
        for (i, s) in bytes.chunks_exact(SLOT).enumerate() {
            let crc = u32::from_le_bytes([s[60], s[61], s[62], s[63]]);
            if crc != crc32c::crc32c(&s[..60]) {
                if bytes.chunks_exact(SLOT).skip(i + 1).any(|rest| {
                    u32::from_le_bytes([rest[60], rest[61], rest[62], rest[63]])
                        == crc32c::crc32c(&rest[..60])
                }) {
                    return Err(KeyError::Damaged(kp, i as u64));
                }
                break;
            }
            good = i as u64 + 1;
            let mut id = [0; 8];
            id.copy_from_slice(&s[..8]);
            let mut name = [0; 16];
            name.copy_from_slice(&s[8..24]);
            let mut key = [0; 32];
            key.copy_from_slice(&s[24..56]);
            if s[56] == LIVE && !inner.erased.contains_key(&id) {
                inner.by_id.insert(id, i as u64);
                inner.by_name.insert(name, id);
                inner.slot_keys.push((key, name));
                continue;
            }
            if s[56] == LIVE {
                unfinished.push((i as u64, id, name));
            }
            inner.slot_keys.push(([0; 32], [0; 16]));
        }
        if good as usize != whole || bytes.len() % SLOT != 0 {
            inner.keys.set_len(good * SLOT as u64).map_err(io(&kp))?;
        }
        for (slot, id, name) in unfinished {
            Self::zero(&inner.keys, slot, id, name).map_err(io(&kp))?;
        }
        inner.keys.sync_data().map_err(io(&kp))?;
        let sync_file = inner.keys.try_clone().map_err(io(&kp))?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            synced: Mutex::new(inner.slots()),
            sync_file,
            inner: RwLock::new(inner),
            sealing: tokio::sync::RwLock::new(()),
        })
    }

    fn zero(file: &File, slot: u64, id: [u8; 8], name: [u8; 16]) -> std::io::Result<()> {
        file.write_all_at(
            &slot_bytes(id, name, &[0; 32], DESTROYED),
            slot * SLOT as u64,
        )
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn io_err(&self, file: &str) -> impl Fn(std::io::Error) -> KeyError + '_ {
        let path = self.dir.join(file);
        move |source| KeyError::Io {
            path: path.clone(),
            source,
        }
    }

    /// Held for reading while an event is sealed and appended, and for writing while a
    /// person is erased, so no event is sealed under a key that an erasure is destroying.
    pub fn sealing(&self) -> &tokio::sync::RwLock<()> {
        &self.sealing
    }

    /// The live key of each distinct name (in first-seen order), made and fsynced for names
    /// that have none (new records, or records whose key an erasure destroyed).
    pub fn keys_for(&self, names: &[String]) -> Result<Vec<(String, DataKey)>, KeyError> {
        let mut all = self.keys_for_many(std::slice::from_ref(&names.to_vec()))?;
        Ok(all.pop().unwrap_or_default())
    }

    /// [`KeyStore::keys_for`] for each list of names (one per event of a batch). Returns
    /// once every key handed out is on disk, with one fsync shared by the batches that wait
    /// at the same time.
    pub fn keys_for_many(
        &self,
        lists: &[Vec<String>],
    ) -> Result<Vec<Vec<(String, DataKey)>>, KeyError> {
        let (all, need) = self.take_keys(lists)?;
        self.sync_to(need)?;
        Ok(all)
    }

    /// Whether the first `need` slots are known to be on disk.
    pub fn is_synced(&self, need: u64) -> bool {
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) >= need
    }

    /// Makes sure the first `need` slots are on disk (an fsync, shared with the callers that
    /// wait at the same time, unless they already are).
    pub fn sync_to(&self, need: u64) -> Result<(), KeyError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= need {
            return Ok(());
        }
        let target = self.read().slots();
        if let Err(e) = self.sync_file.sync_data() {
            self.lock().failed = Some(format!("fsync of the key store failed: {e}"));
            return Err(self.io_err(KEYS_FILE)(e));
        }
        *synced = target;
        Ok(())
    }

    /// Looks up or makes the keys, writing new slots (not yet fsynced). Returns the keys and
    /// the number of slots that must be on disk ([`KeyStore::sync_to`]) before any of them
    /// is used.
    #[allow(clippy::type_complexity)]
    pub fn take_keys(
        &self,
        lists: &[Vec<String>],
    ) -> Result<(Vec<Vec<(String, DataKey)>>, u64), KeyError> {
        let mut inner = self.lock();
        if let Some(why) = &inner.failed {
            return Err(KeyError::Io {
                path: self.dir.join(KEYS_FILE),
                source: std::io::Error::other(format!("{why}; restart the hub")),
            });
        }
        let mut need = 0u64;
        let before = inner.slots();
        let mut fresh: Vec<u8> = Vec::new();
        let mut all = Vec::with_capacity(lists.len());
        for names in lists {
            let mut out: Vec<(String, DataKey)> = Vec::with_capacity(names.len());
            let mut seen: Vec<[u8; 16]> = Vec::with_capacity(names.len());
            for name in names {
                let h = name_hash(name);
                if seen.contains(&h) {
                    continue;
                }
                seen.push(h);
                if let Some(id) = inner.by_name.get(&h).copied() {
                    if let Some(&slot) = inner.by_id.get(&id) {
                        need = need.max(slot + 1);
                        out.push((hex::encode(id), inner.slot_keys[slot as usize].0));
                        continue;
                    }
                }
                let mut rng = rand::rng();
                let (mut id, mut key) = ([0u8; 8], [0u8; 32]);
                loop {
                    rng.fill_bytes(&mut id);
                    if !inner.by_id.contains_key(&id) && !inner.erased.contains_key(&id) {
                        break;
                    }
                }
                rng.fill_bytes(&mut key);
                let slot = inner.slots();
                need = need.max(slot + 1);
                fresh.extend_from_slice(&slot_bytes(id, h, &key, LIVE));
                inner.by_id.insert(id, slot);
                inner.slot_keys.push((key, h));
                inner.by_name.insert(h, id);
                out.push((hex::encode(id), key));
            }
            all.push(out);
        }
        if !fresh.is_empty() {
            let at = before * SLOT as u64;
            if let Err(e) = inner.keys.write_all_at(&fresh, at) {
                // Forget the keys that may not be on disk; nothing was sealed with them yet.
                for s in fresh.chunks_exact(SLOT) {
                    let mut id = [0; 8];
                    id.copy_from_slice(&s[..8]);
                    let mut name = [0; 16];
                    name.copy_from_slice(&s[8..24]);
                    inner.by_id.remove(&id);
                    inner.by_name.remove(&name);
                }
                inner.slot_keys.truncate(before as usize);
                let _ = inner.keys.set_len(at);
                return Err(self.io_err(KEYS_FILE)(e));
            }
        }
        Ok((all, need))
    }

    /// What the store holds for key `id`.
    pub fn get(&self, id: &str) -> KeyState {
        self.view().get(id)
    }

    /// A read view of the store, for looking up many keys under one lock (a batch of log
    /// entries: the two threads decoding a rebuild took the lock per key, contending for it).
    /// Keys cannot be added or destroyed while it is held, so hold it briefly.
    pub fn view(&self) -> KeyView<'_> {
        KeyView(self.read())
    }

    /// The live key ids of `names` (names without one are left out).
    pub fn current(&self, names: &[String]) -> Vec<String> {
        let inner = self.read();
        let mut ids: Vec<String> = names
            .iter()
            .filter_map(|n| inner.by_name.get(&name_hash(n)))
            .filter(|id| inner.by_id.contains_key(*id))
            .map(hex::encode)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Destroys the keys `ids`: tombstones written and fsynced first, then each slot
    /// overwritten with zeros and fsynced. Keys already destroyed or unknown are skipped.
    /// Returns how many were destroyed now.
    pub fn destroy(&self, ids: &[String], tomb: &Tombstone) -> Result<usize, KeyError> {
        let mut inner = self.lock();
        let live: Vec<[u8; 8]> = ids
            .iter()
            .filter_map(|id| parse_id(id))
            .filter(|id| inner.by_id.contains_key(id))
            .collect();
        if live.is_empty() {
            return Ok(0);
        }
        let mut lines = Vec::new();
        for id in &live {
            let line = TombLine {
                key_id: hex::encode(id),
                tomb: tomb.clone(),
            };
            // Serialising plain strings cannot fail.
            serde_json::to_writer(&mut lines, &line).unwrap_or_default();
            lines.push(b'\n');
        }
        let tomb_err = self.io_err(TOMBS_FILE);
        inner.tombs.write_all(&lines).map_err(&tomb_err)?;
        inner.tombs.sync_data().map_err(&tomb_err)?;
        for id in &live {
            inner.erased.insert(*id, tomb.clone());
        }
        let key_err = self.io_err(KEYS_FILE);
        for id in &live {
            if let Some(slot) = inner.by_id.remove(id) {
                // The key leaves memory as it leaves the disk.
                let (_, name) = std::mem::take(&mut inner.slot_keys[slot as usize]);
                inner.by_name.remove(&name);
                Self::zero(&inner.keys, slot, *id, name).map_err(&key_err)?;
            }
        }
        inner.keys.sync_data().map_err(&key_err)?;
        Ok(live.len())
    }

    /// Live and destroyed key counts.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.by_id.len(), inner.erased.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tomb() -> Tombstone {
        Tombstone {
            erasure_id: "x1".into(),
            erased_at: Timestamp(1_700_000_000_000),
            label: "right to erasure".into(),
        }
    }

    #[test]
    fn keys_are_stable_per_name_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        let names = vec!["police/A".to_string(), "school/B".into(), "police/A".into()];
        let first = ks.keys_for(&names).unwrap();
        assert_eq!(first.len(), 2, "repeats share a key");
        assert_eq!(ks.keys_for(&names).unwrap(), first);
        drop(ks);
        let ks = KeyStore::open(dir.path()).unwrap();
        assert_eq!(ks.keys_for(&names).unwrap(), first);
        assert_eq!(ks.get(&first[1].0), KeyState::Live(first[1].1));
        assert_eq!(ks.get("0000000000000000"), KeyState::Missing);
        assert_eq!(ks.get("not hex"), KeyState::Missing);
    }

    #[test]
    fn a_destroyed_key_is_gone_from_disk_and_a_new_one_follows() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        let names = vec!["police/A".to_string()];
        let (id, key) = ks.keys_for(&names).unwrap().remove(0);
        assert_eq!(ks.current(&names), vec![id.clone()]);
        assert_eq!(ks.destroy(std::slice::from_ref(&id), &tomb()).unwrap(), 1);
        assert_eq!(ks.destroy(std::slice::from_ref(&id), &tomb()).unwrap(), 0);
        assert_eq!(ks.get(&id), KeyState::Erased(tomb()));
        assert!(ks.current(&names).is_empty());
        let on_disk = std::fs::read(dir.path().join(KEYS_FILE)).unwrap();
        assert!(
            !on_disk.windows(32).any(|w| w == key),
            "the key's bytes must not remain in the file"
        );
        assert!(
            ks.read().slot_keys.iter().all(|(k, _)| *k != key),
            "nor in memory"
        );
        let (id2, key2) = ks.keys_for(&names).unwrap().remove(0);
        assert_ne!(id2, id);
        assert_ne!(key2, key);
        drop(ks);
        let ks = KeyStore::open(dir.path()).unwrap();
        assert_eq!(ks.get(&id), KeyState::Erased(tomb()));
        assert_eq!(ks.get(&id2), KeyState::Live(key2));
        assert_eq!(ks.counts(), (1, 1));
        assert!(ks.read().slot_keys.iter().all(|(k, _)| *k != key));
    }

    #[test]
    fn each_key_is_found_by_its_id_around_destroyed_slots() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        let names: Vec<String> = (0..6).map(|i| format!("school/{i}")).collect();
        let keys = ks.keys_for(&names).unwrap();
        let gone: Vec<String> = vec![keys[1].0.clone(), keys[4].0.clone()];
        assert_eq!(ks.destroy(&gone, &tomb()).unwrap(), 2);
        let more = ks
            .keys_for(&["school/1".to_string(), "nhs/9".to_string()])
            .unwrap();
        let check = |ks: &KeyStore| {
            for (i, (id, key)) in keys.iter().enumerate() {
                let want = match i {
                    1 | 4 => KeyState::Erased(tomb()),
                    _ => KeyState::Live(*key),
                };
                assert_eq!(ks.get(id), want, "key {i}");
                // The state without the key says the same.
                let state = match want {
                    KeyState::Live(_) => KeyState::Live(()),
                    KeyState::Erased(t) => KeyState::Erased(t),
                    KeyState::Missing => KeyState::Missing,
                };
                assert_eq!(ks.view().state(id), state, "key {i}");
            }
            for (id, key) in &more {
                assert_eq!(ks.get(id), KeyState::Live(*key));
            }
            assert_eq!(ks.get("00000000000000ff"), KeyState::Missing);
            assert_eq!(ks.view().state("00000000000000ff"), KeyState::Missing);
            assert_eq!(ks.view().state("not hex"), KeyState::Missing);
            assert_eq!(ks.counts(), (6, 2));
        };
        check(&ks);
        drop(ks);
        check(&KeyStore::open(dir.path()).unwrap());
    }

    #[test]
    fn a_crash_between_tombstone_and_overwrite_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        let (id, key) = ks.keys_for(&["a/1".to_string()]).unwrap().remove(0);
        drop(ks);
        // Only the tombstone reached the disk.
        let line = serde_json::to_string(&TombLine {
            key_id: id.clone(),
            tomb: tomb(),
        })
        .unwrap();
        std::fs::write(dir.path().join(TOMBS_FILE), format!("{line}\n")).unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        assert_eq!(ks.get(&id), KeyState::Erased(tomb()));
        let on_disk = std::fs::read(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!on_disk.windows(32).any(|w| w == key));
    }

    #[test]
    fn concurrent_batches_agree_on_one_key_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let ks = std::sync::Arc::new(KeyStore::open(dir.path()).unwrap());
        let batches: Vec<Vec<Vec<String>>> = (0..8)
            .map(|t| {
                (0..50)
                    .map(|i| vec![format!("p/{}", (i * 7 + t) % 60), format!("q/{i}")])
                    .collect()
            })
            .collect();
        let got: Vec<Vec<Vec<(String, DataKey)>>> = std::thread::scope(|s| {
            let hs: Vec<_> = batches
                .iter()
                .map(|b| {
                    let ks = ks.clone();
                    s.spawn(move || ks.keys_for_many(b).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut by_name: HashMap<String, (String, DataKey)> = HashMap::default();
        for (b, keys) in batches.iter().zip(&got) {
            for (names, ks) in b.iter().zip(keys) {
                for (n, k) in names.iter().zip(ks) {
                    let first = by_name.entry(n.clone()).or_insert_with(|| k.clone());
                    assert_eq!(first, k, "one key per name");
                }
            }
        }
        assert_eq!(ks.counts().0, 110);
        drop(ks);
        let ks = KeyStore::open(dir.path()).unwrap();
        for (n, k) in &by_name {
            assert_eq!(&ks.keys_for(std::slice::from_ref(n)).unwrap()[0], k);
        }
    }

    #[test]
    fn a_torn_last_slot_is_dropped_and_damage_before_the_end_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        let got = ks
            .keys_for(&["a/1".to_string(), "a/2".into(), "a/3".into()])
            .unwrap();
        drop(ks);
        let path = dir.path().join(KEYS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(2 * SLOT + 20);
        std::fs::write(&path, &bytes).unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
        assert_eq!(ks.get(&got[1].0), KeyState::Live(got[1].1));
        assert_eq!(ks.get(&got[2].0), KeyState::Missing);
        drop(ks);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT);
        bytes[5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            KeyStore::open(dir.path()),
            Err(KeyError::Damaged(_, 0))
        ));
    }
}
