//! The file operations the embedded engine needs, behind a trait so that tests can run the
//! engine over a simulated disk that loses unsynced bytes at a crash ([`crate::sim`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A folder of segment files.
pub trait Dir: Send + Sync + 'static {
    /// An open segment file.
    type File: SegmentFile;
    /// Takes an exclusive lock on the folder for this process, or fails if another holds it.
    fn lock(&self) -> io::Result<()>;
    /// Names of the files in the folder.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and appending.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Creates a new, empty file (failing if it exists).
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Makes file creations in the folder durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// A human-readable location, for messages.
    fn describe(&self) -> String;
}

/// An append-only file. Every method takes `&self` so readers and the writer can share it.
pub trait SegmentFile: Send + Sync + 'static {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Appends `data` at the end.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes and makes that durable.
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// Segment files in a real folder on disk.
#[derive(Debug)]
pub struct FsDir {
    path: PathBuf,
    lock: std::sync::Mutex<Option<File>>,
}

impl FsDir {
    /// Uses (and creates if needed) the folder at `path`.
    pub fn new(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        Ok(FsDir {
            path,
            lock: std::sync::Mutex::new(None),
        })
    }
}

impl Dir for FsDir {
    type File = FsFile;

    fn lock(&self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another TellOnce process (stop it first)",
                        self.path.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if let Ok(mut guard) = self.lock.lock() {
            *guard = Some(file);
        }
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.path.join(name))?;
        Ok(FsFile { file })
    }

    fn create(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(self.path.join(name))?;
        Ok(FsFile { file })
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A segment file on disk.
#[derive(Debug)]
pub struct FsFile {
    file: File,
}

impl SegmentFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        (&self.file).write_all(data)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }
}
