//! The I/O seam: the few file operations the log uses, behind a trait, so tests can run the
//! log on [`SimFs`], which keeps "live" and "durable" bytes apart and can crash at any point.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A file opened through [`Fs`]. Positional reads and writes so readers and the writer can
/// share it.
pub trait FsFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;

    /// True when the file holds no byte.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        let mut buf = buf;
        while !buf.is_empty() {
            let n = self.read_at(buf, pos)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }
}

/// The directory and file operations of the log.
pub trait Fs: Send + Sync + Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// File names (not paths) in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames a file, replacing the target.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(std::fs::File);

impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// How a simulated crash treats bytes written but not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// The first `n` unsynced bytes past the durable length of each file survive (a torn write).
    KeepTorn(usize),
}

/// An in-memory file system that keeps what is durable apart from what is only written, for
/// crash tests. Directory entries become durable on [`Fs::sync_dir`] of their parent, file
/// contents on [`FsFile::sync_data`].
///
/// `fail_at_sync(n)` makes the `n`-th sync (counting from 1, files and directories) and
/// every later operation fail, as a power cut would; `capacity` makes writes beyond a total
/// size fail with `StorageFull`.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    inner: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    next_inode: u64,
    data: HashMap<u64, SimData>,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: std::collections::BTreeSet<PathBuf>,
    syncs: u64,
    fail_at_sync: Option<u64>,
    dead: bool,
    capacity: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct SimData {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: u64,
}

fn dead() -> io::Error {
    io::Error::other("simulated power cut")
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the `n`-th sync from now on (1 = the next one) fail, and everything after it.
    pub fn fail_at_sync(&self, n: u64) {
        let mut s = self.state();
        s.fail_at_sync = Some(s.syncs + n);
    }

    /// Number of syncs performed so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Caps the total bytes of all files; writes beyond it fail with `StorageFull`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Simulates a power cut and reboot: only durable entries and bytes remain (plus a torn
    /// prefix of unsynced bytes in `KeepTorn` mode), and the file system works again. Files
    /// opened before the crash must not be used afterwards.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.state();
        s.live = s.durable.clone();
        let keep: std::collections::HashSet<u64> = s.live.values().copied().collect();
        s.data.retain(|ino, _| keep.contains(ino));
        for d in s.data.values_mut() {
            let torn = match mode {
                CrashMode::DropUnsynced => 0,
                CrashMode::KeepTorn(n) => n,
            };
            let mut bytes = d.durable.clone();
            if d.live.len() > bytes.len() && torn > 0 {
                let end = d.live.len().min(bytes.len() + torn);
                bytes.extend_from_slice(&d.live[d.durable.len().min(end)..end]);
            }
            d.live = bytes.clone();
            d.durable = bytes;
        }
        s.dead = false;
        s.fail_at_sync = None;
    }

    /// Total live bytes of a file, for tests.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let s = self.state();
        s.live.get(path).map(|i| s.data[i].live.len() as u64)
    }

    /// Overwrites live and durable bytes of a file at `pos`, for corruption tests.
    pub fn corrupt(&self, path: &Path, pos: usize, bytes: &[u8]) {
        let mut s = self.state();
        if let Some(ino) = s.live.get(path).copied() {
            let d = s.data.get_mut(&ino).expect("inode of a live entry exists");
            for (i, b) in bytes.iter().enumerate() {
                if let Some(x) = d.live.get_mut(pos + i) {
                    *x = *b;
                }
                if let Some(x) = d.durable.get_mut(pos + i) {
                    *x = *b;
                }
            }
        }
    }

    fn sync_point(s: &mut SimState) -> io::Result<()> {
        if s.dead {
            return Err(dead());
        }
        s.syncs += 1;
        if s.fail_at_sync.is_some_and(|n| s.syncs >= n) {
            s.dead = true;
            return Err(dead());
        }
        Ok(())
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let s = self.fs.state();
        let d = s.data.get(&self.inode).ok_or_else(dead)?;
        let pos = pos.min(d.live.len() as u64) as usize;
        let n = buf.len().min(d.live.len() - pos);
        buf[..n].copy_from_slice(&d.live[pos..pos + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut s = self.fs.state();
        if s.dead {
            return Err(dead());
        }
        let end = pos as usize + buf.len();
        if let Some(cap) = s.capacity {
            let total: u64 = s.data.values().map(|d| d.live.len() as u64).sum();
            let cur = s.data.get(&self.inode).map_or(0, |d| d.live.len());
            let grow = end.saturating_sub(cur) as u64;
            if total + grow > cap {
                return Err(io::ErrorKind::StorageFull.into());
            }
        }
        let d = s.data.get_mut(&self.inode).ok_or_else(dead)?;
        if d.live.len() < end {
            d.live.resize(end, 0);
        }
        d.live[pos as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.state();
        SimFs::sync_point(&mut s)?;
        let d = s.data.get_mut(&self.inode).ok_or_else(dead)?;
        d.durable = d.live.clone();
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.state();
        if s.dead {
            return Err(dead());
        }
        let d = s.data.get_mut(&self.inode).ok_or_else(dead)?;
        d.live.resize(len as usize, 0);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        let s = self.fs.state();
        Ok(s.data.get(&self.inode).ok_or_else(dead)?.live.len() as u64)
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        for a in path.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.state();
        if s.dead {
            return Err(dead());
        }
        if s.live.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        s.next_inode += 1;
        let ino = s.next_inode;
        s.data.insert(ino, SimData::default());
        s.live.insert(path.to_path_buf(), ino);
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            inode: ino,
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let s = self.state();
        if s.dead {
            return Err(dead());
        }
        let ino = *s.live.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            inode: ino,
        }))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(dead());
        }
        let ino = s.live.remove(from).ok_or(io::ErrorKind::NotFound)?;
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(dead());
        }
        s.live.remove(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        SimFs::sync_point(&mut s)?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable.retain(|p, _| !in_dir(p));
        let entries: Vec<(PathBuf, u64)> = s
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable.extend(entries);
        Ok(())
    }
}
