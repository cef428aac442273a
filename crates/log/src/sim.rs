//! A simulated disk for power-loss tests: it keeps written bytes in memory and, at a crash,
//! keeps only what was synced plus a torn, possibly garbled, part of what was not.
//!
//! A crash is scheduled with [`SimDisk::crash_after`]: the n-th file operation from then on
//! crashes the disk (an append is cut part-way), every later operation fails, and
//! [`SimDisk::after_crash`] gives the disk as it would be found after power came back.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};

use crate::storage::{Dir, SegmentFile};

#[derive(Debug, Default, Clone)]
struct SimFile {
    data: Vec<u8>,
    synced: usize,
    /// Whether the file's name is durable (its folder was synced after it was created).
    named: bool,
}

#[derive(Debug)]
struct State {
    files: BTreeMap<String, SimFile>,
    crash_in: Option<u64>,
    image: Option<BTreeMap<String, SimFile>>,
    rng: rand::rngs::StdRng,
}

/// An in-memory disk that can lose power.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// A handle on one file of a [`SimDisk`].
#[derive(Debug)]
pub struct SimFileHandle {
    disk: SimDisk,
    name: String,
}

fn crashed() -> io::Error {
    io::Error::other("simulated power loss")
}

impl SimDisk {
    /// An empty disk; `seed` decides how torn writes are torn.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                files: BTreeMap::new(),
                crash_in: None,
                image: None,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a test failure already; keep going with the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses power on the `ops`-th file operation from now (0: the next one).
    pub fn crash_after(&self, ops: u64) {
        self.lock().crash_in = Some(ops);
    }

    /// Whether power has been lost.
    pub fn has_crashed(&self) -> bool {
        self.lock().image.is_some()
    }

    /// The disk as found after the crash, or the current state if it has not crashed (with
    /// unsynced bytes torn as at a crash now).
    pub fn after_crash(&self, seed: u64) -> SimDisk {
        let mut guard = self.lock();
        let st = &mut *guard;
        let files = match &st.image {
            Some(image) => image.clone(),
            None => tear(&st.files, &mut st.rng),
        };
        SimDisk {
            state: Arc::new(Mutex::new(State {
                files,
                crash_in: None,
                image: None,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// Total bytes held, synced or not.
    pub fn bytes(&self) -> usize {
        self.lock().files.values().map(|f| f.data.len()).sum()
    }

    /// Counts one operation; returns an error if power is (now) lost. `partial` is the append
    /// being made, if any: part of it lands before the power goes.
    fn tick(&self, st: &mut State, partial: Option<(&str, &[u8])>) -> io::Result<()> {
        if st.image.is_some() {
            return Err(crashed());
        }
        match st.crash_in {
            Some(0) => {
                if let Some((name, data)) = partial {
                    let cut = st.rng.random_range(0..=data.len());
                    if let Some(f) = st.files.get_mut(name) {
                        f.data.extend_from_slice(&data[..cut]);
                    }
                }
                let image = {
                    let State { files, rng, .. } = &mut *st;
                    tear(files, rng)
                };
                st.image = Some(image);
                Err(crashed())
            }
            Some(n) => {
                st.crash_in = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// What survives a power loss: named files, their synced bytes, and a torn, possibly garbled,
/// prefix of their unsynced bytes.
fn tear(
    files: &BTreeMap<String, SimFile>,
    rng: &mut rand::rngs::StdRng,
) -> BTreeMap<String, SimFile> {
    let mut out = BTreeMap::new();
    for (name, f) in files {
        if !f.named {
            continue;
        }
        let mut data = f.data[..f.synced].to_vec();
        let unsynced = &f.data[f.synced..];
        if !unsynced.is_empty() {
            let keep = rng.random_range(0..=unsynced.len());
            data.extend_from_slice(&unsynced[..keep]);
            // Sometimes the last block of what was kept is garbage (zeros or noise).
            if keep > 0 && rng.random_bool(0.3) {
                let garble = rng.random_range(1..=keep.min(64));
                let zero = rng.random_bool(0.5);
                let len = data.len();
                for b in &mut data[len - garble..] {
                    *b = if zero { 0 } else { rng.random() };
                }
            }
        }
        let synced = data.len();
        out.insert(
            name.clone(),
            SimFile {
                data,
                synced,
                named: true,
            },
        );
    }
    out
}

impl Dir for SimDisk {
    type File = SimFileHandle;

    fn lock(&self) -> io::Result<()> {
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut st = self.lock();
        self.tick(&mut st, None)?;
        Ok(st.files.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<SimFileHandle> {
        let mut st = self.lock();
        self.tick(&mut st, None)?;
        if !st.files.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::NotFound, name.to_string()));
        }
        Ok(SimFileHandle {
            disk: self.clone(),
            name: name.to_string(),
        })
    }

    fn create(&self, name: &str) -> io::Result<SimFileHandle> {
        let mut st = self.lock();
        self.tick(&mut st, None)?;
        if st.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_string(),
            ));
        }
        st.files.insert(name.to_string(), SimFile::default());
        Ok(SimFileHandle {
            disk: self.clone(),
            name: name.to_string(),
        })
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.lock();
        self.tick(&mut st, None)?;
        for f in st.files.values_mut() {
            f.named = true;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "simulated disk".into()
    }
}

impl SimFileHandle {
    fn with<T>(
        &self,
        partial: Option<&[u8]>,
        f: impl FnOnce(&mut SimFile) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.disk.lock();
        self.disk
            .tick(&mut st, partial.map(|p| (self.name.as_str(), p)))?;
        let file = st
            .files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, self.name.clone()))?;
        f(file)
    }
}

impl SegmentFile for SimFileHandle {
    fn len(&self) -> io::Result<u64> {
        self.with(None, |f| Ok(f.data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(None, |f| {
            let pos = pos as usize;
            let src = f
                .data
                .get(pos..pos + buf.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        self.with(Some(data), |f| {
            f.data.extend_from_slice(data);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(None, |f| {
            f.synced = f.data.len();
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(None, |f| {
            f.data.truncate(len as usize);
            f.synced = f.synced.min(f.data.len());
            Ok(())
        })
    }
}
