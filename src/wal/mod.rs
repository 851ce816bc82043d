//! One tenant's append-only, sealed, segmented write-ahead log.
//!
//! # Design constraints
//!
//! - Offsets number samples, not records: a record holding `n` samples covers
//!   `[first_offset, first_offset + n)`. Offsets are dense except where recovery skipped a
//!   corrupt record or retention deleted a segment; readers report such gaps.
//! - Records never span segments. A record's sealed payload is at most 64 MiB and holds at
//!   most 2^20 samples; segments are at most 1 GiB.
//! - Every length read from disk is bounded before anything is allocated from it.
//! - One writer thread per tenant. It alone assigns offsets, seals records (the nonce and the
//!   associated data depend on the position) and writes; appenders encode and compress in
//!   their own threads, so compression runs on every core while writes are grouped.
//! - Readers see only what is acknowledged: under `fsync` durability, only what is durable.
//!   A batch that was read (and perhaps forwarded) is never rewritten with other content.
//! - After a failed write or fsync the log is poisoned; every append fails with
//!   [`Error::Poisoned`] until the log is reopened, which runs recovery.
//! - Recovery reads segment headers and index files, and scans only segments that have no
//!   valid index (normally just the last one). It truncates a torn tail, skips and reports a
//!   corrupt record in the middle, and never discards a segment for one bad record.
//! - A nonce is never reused: a durable writer epoch is incremented before each writer starts.
//! - Only retention deletes segments, and never the one being written.

pub mod fs;
mod reader;
pub mod record;
mod recovery;
pub mod segment;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::oneshot;

pub use reader::{ReadBatch, ReadLimits, SkipReason, Skipped};
pub use recovery::{RecoveryEvent, RecoveryReport};

use crate::config::LogConfig;
use crate::error::{Error, InvalidInput, Result};
use crate::keys::TenantKeys;
use crate::sample::Batch;
use crate::tenant::TenantId;
use fs::{Fs, FsFile};
use segment::RecordLoc;

/// Summary of one segment, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment file path.
    pub path: PathBuf,
    /// First offset the segment may hold.
    pub base_offset: u64,
    /// One past its last sample.
    pub end_offset: u64,
    /// Smallest timestamp, if it holds a record.
    pub min_ts: Option<i64>,
    /// Largest timestamp, if it holds a record.
    pub max_ts: Option<i64>,
    /// Key id its records are sealed with.
    pub key_id: u32,
    /// Bytes on disk (segment and index).
    pub bytes: u64,
    /// Creation time.
    pub created_ms: i64,
    /// When it was sealed; `None` for the segment being written.
    pub sealed_ms: Option<i64>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) info: SegmentInfo,
    pub(crate) file: Arc<dyn FsFile>,
    /// Record locations of the segment being written; sealed segments load theirs from the
    /// index file on demand.
    pub(crate) records: Option<Vec<RecordLoc>>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) segments: BTreeMap<u64, Segment>,
    /// Readers see offsets below this.
    pub(crate) visible_end: u64,
    pub(crate) poisoned: Option<String>,
    pub(crate) disk_bytes: u64,
    /// What `log.state` holds: this session's epoch and the offset floor.
    pub(crate) log_state: recovery::LogState,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tenant: TenantId,
    pub(crate) dir: PathBuf,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) config: LogConfig,
    pub(crate) keys: RwLock<TenantKeys>,
    pub(crate) state: RwLock<State>,
    pub(crate) index_cache: Mutex<HashMap<u64, Arc<Vec<RecordLoc>>>>,
    /// Serialises segment deletions (each rewrites `log.state`).
    pub(crate) delete_lock: Mutex<()>,
    /// Publishes the visible end offset to waiting consumers.
    pub(crate) end_tx: tokio::sync::watch::Sender<u64>,
    /// How long each data fsync of the active segment took.
    pub(crate) fsync_latency: crate::latency::Latency,
}

/// How many sealed segments' record tables readers keep in memory.
const INDEX_CACHE_SEGMENTS: usize = 8;

impl Shared {
    pub(crate) fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn keys(&self) -> TenantKeys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(crate) struct AppendReq {
    pub(crate) sealed: Vec<u8>,
    pub(crate) count: u32,
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    pub(crate) reply: oneshot::Sender<Result<Range<u64>>>,
}

pub(crate) enum Request {
    Append(AppendReq),
    Sync(oneshot::Sender<Result<()>>),
    Roll(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// One tenant's log. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    tx: Mutex<Option<std::sync::mpsc::Sender<Request>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, running recovery. The report says what recovery
    /// found and did.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: impl Into<PathBuf>,
        tenant: TenantId,
        keys: TenantKeys,
        config: LogConfig,
    ) -> Result<(Self, RecoveryReport)> {
        config.validate()?;
        let dir = dir.into();
        fs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let shared = Arc::new(Shared {
            tenant,
            dir,
            fs,
            config,
            keys: RwLock::new(keys),
            state: RwLock::new(State::default()),
            index_cache: Mutex::new(HashMap::new()),
            delete_lock: Mutex::new(()),
            end_tx: tokio::sync::watch::Sender::new(0),
            fsync_latency: crate::latency::Latency::default(),
        });
        let (report, epoch) = recovery::recover(&shared)?;
        shared.end_tx.send_replace(report.end_offset);
        let (tx, rx) = std::sync::mpsc::channel();
        let w = writer::Writer::new(Arc::clone(&shared), epoch);
        let thread = std::thread::Builder::new()
            .name(format!("wal-{}", shared.tenant))
            .spawn(move || w.run(rx))
            .map_err(|e| Error::io(&shared.dir, e))?;
        Ok((
            Self {
                shared,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            },
            report,
        ))
    }

    /// The tenant this log belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.shared.tenant
    }

    pub(crate) fn keys_snapshot(&self) -> TenantKeys {
        self.shared.keys()
    }

    pub(crate) fn fs(&self) -> Arc<dyn Fs> {
        Arc::clone(&self.shared.fs)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn send(&self, req: Request) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.as_ref()
            .ok_or(Error::Closed)?
            .send(req)
            .map_err(|_| Error::Closed)
    }

    fn prepare(&self, batch: &Batch) -> Result<(AppendReq, oneshot::Receiver<Result<Range<u64>>>)> {
        if batch.is_empty() {
            return Err(InvalidInput::Batch("the batch holds no sample".into()).into());
        }
        if batch.sample_count() > crate::payload::MAX_SAMPLES_PER_RECORD {
            return Err(InvalidInput::Batch(format!(
                "{} samples exceed the limit of {} per append",
                batch.sample_count(),
                crate::payload::MAX_SAMPLES_PER_RECORD
            ))
            .into());
        }
        if let Some(cause) = &self.shared.read_state().poisoned {
            return Err(self.poisoned(cause));
        }
        let (min_ts, max_ts) = batch.time_range().expect("the batch is not empty");
        let mut plain = Vec::new();
        crate::payload::encode(batch, &mut plain);
        let mut sealed = Vec::new();
        crate::seal::compress(&plain, self.shared.config.zstd_level, &mut sealed);
        if sealed.len() + crate::seal::TAG_LEN > record::MAX_PAYLOAD_LEN as usize {
            return Err(
                InvalidInput::Batch("the batch compresses to more than 64 MiB".into()).into(),
            );
        }
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            sealed,
            count: batch.sample_count() as u32,
            min_ts,
            max_ts,
            reply,
        };
        Ok((req, rx))
    }

    pub(crate) fn poisoned(&self, cause: &str) -> Error {
        Error::Poisoned {
            tenant: self.shared.tenant.to_string(),
            cause: cause.to_owned(),
        }
    }

    /// Appends `batch` as one record and returns its offsets once acknowledged under the
    /// durability policy. Encoding and compression run on the calling thread.
    pub async fn append(&self, batch: &Batch) -> Result<Range<u64>> {
        let (req, rx) = self.prepare(batch)?;
        self.send(Request::Append(req))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// [`Wal::append`] for callers outside an async runtime.
    pub fn append_blocking(&self, batch: &Batch) -> Result<Range<u64>> {
        let (req, rx) = self.prepare(batch)?;
        self.send(Request::Append(req))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Makes everything appended so far durable (useful under `interval` and `none`).
    pub fn sync_blocking(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Sync(tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Seals the segment being written, if it holds a record; the next append starts a new one.
    pub fn roll_blocking(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Roll(tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Flushes, seals the segment being written and stops the writer. Later appends fail with
    /// [`Error::Closed`]. Calling it twice is harmless.
    pub fn close_blocking(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Request::Close(tx));
        let result = match sent {
            Ok(()) => rx.blocking_recv().unwrap_or(Err(Error::Closed)),
            Err(_) => Ok(()),
        };
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        result
    }

    /// Replaces the tenant's keys (after a rotation); the writer seals the current segment and
    /// uses the newest key from the next append on.
    pub fn set_keys(&self, keys: TenantKeys) {
        *self.shared.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// A channel that holds the end offset and changes whenever appends become readable;
    /// consumers wait on it instead of polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.end_tx.subscribe()
    }

    /// One past the last acknowledged (readable) offset.
    pub fn end_offset(&self) -> u64 {
        self.shared.read_state().visible_end
    }

    /// The oldest offset still stored (equal to `end_offset` when the log is empty).
    pub fn first_offset(&self) -> u64 {
        let s = self.shared.read_state();
        s.segments
            .values()
            .next()
            .map_or(s.visible_end, |g| g.info.base_offset)
    }

    /// How long the data fsyncs of this log took since open.
    pub fn fsync_latency(&self) -> crate::latency::LatencySnapshot {
        self.shared.fsync_latency.snapshot()
    }

    /// Bytes on disk: segments plus indexes.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.read_state().disk_bytes
    }

    /// The first I/O failure, if the log is poisoned.
    pub fn poisoned_cause(&self) -> Option<String> {
        self.shared.read_state().poisoned.clone()
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .read_state()
            .segments
            .values()
            .map(|s| s.info.clone())
            .collect()
    }

    /// The base offset of the first segment whose time range reaches `ts` (ms) or later: no
    /// sample at or after `ts` is stored below it. The log end when none does.
    pub fn first_offset_at_or_after(&self, ts: i64) -> u64 {
        let s = self.shared.read_state();
        s.segments
            .values()
            .find(|g| g.info.max_ts.is_none_or(|m| m >= ts))
            .map_or(s.visible_end, |g| g.info.base_offset)
    }

    /// One past the last offset of the last segment holding a sample before `ts` (ms): no
    /// sample before `ts` is stored at or past it.
    pub fn end_offset_before(&self, ts: i64) -> u64 {
        let s = self.shared.read_state();
        s.segments
            .values()
            .rev()
            .find(|g| g.info.min_ts.is_none_or(|m| m < ts))
            .map_or(0, |g| {
                if g.info.sealed_ms.is_none() {
                    s.visible_end
                } else {
                    g.info.end_offset.min(s.visible_end)
                }
            })
    }

    /// Reads a deterministic batch starting at `offset`: the same log and limits give the
    /// same `[start, end)` every time.
    pub fn read_from(&self, offset: u64, limits: ReadLimits) -> Result<ReadBatch> {
        reader::read_from(&self.shared, offset, limits)
    }

    /// Reads samples with `from_ts <= timestamp < until_ts`, scanning records from `offset`
    /// on and skipping segments and records whose time range does not overlap. Continue from
    /// the returned `end` until it reaches [`Wal::end_offset`].
    pub fn read_time_range(
        &self,
        from_ts: i64,
        until_ts: i64,
        offset: u64,
        limits: ReadLimits,
    ) -> Result<ReadBatch> {
        reader::read_time_range(&self.shared, from_ts, until_ts, offset, limits)
    }

    /// Deletes the sealed segment with base `base` and its index. Refuses the segment being
    /// written. Returns the bytes freed: 0 when a concurrent call (retention run by another
    /// consumer's commit) deleted it first.
    pub fn delete_segment(&self, base: u64) -> Result<u64> {
        // Held from the lookup on: two retention runs racing for the same segment must not
        // both try to remove its file (the loser's ENOENT used to fail its commit).
        let _serial = self
            .shared
            .delete_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (path, bytes) = {
            let s = self.shared.read_state();
            let Some(seg) = s.segments.get(&base) else {
                return Ok(0);
            };
            if seg.info.sealed_ms.is_none() {
                return Err(InvalidInput::Batch(
                    "the segment being written cannot be deleted".into(),
                )
                .into());
            }
            (seg.info.path.clone(), seg.info.bytes)
        };
        // Raise the offset floor first, so that offsets are never reused even if this was
        // the last segment and the process restarts before another one is written.
        let mut ls = self.shared.read_state().log_state;
        let end = self
            .shared
            .read_state()
            .segments
            .get(&base)
            .map_or(0, |g| g.info.end_offset);
        if end > ls.offset_floor {
            ls.offset_floor = end;
            recovery::write_log_state(&self.shared, ls)?;
            self.shared.write_state().log_state = ls;
        }
        let fs = &self.shared.fs;
        let idx = self.shared.path(&segment::index_file_name(base));
        // The index goes first: a segment without an index is rescanned, an index without a
        // segment would be meaningless.
        match fs.remove_file(&idx) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&idx, e)),
        }
        fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(&self.shared.dir)
            .map_err(|e| Error::io(&self.shared.dir, e))?;
        let mut s = self.shared.write_state();
        s.segments.remove(&base);
        s.disk_bytes = s.disk_bytes.saturating_sub(bytes);
        drop(s);
        self.shared
            .index_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&base);
        Ok(bytes)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Dropping without close: stop the writer (it flushes what it holds) but skip sealing
        // errors; the next open recovers.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn cache_index(shared: &Shared, base: u64, records: Arc<Vec<RecordLoc>>) {
    let mut c = shared.index_cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= INDEX_CACHE_SEGMENTS && !c.contains_key(&base) {
        // Evict the oldest segment: readers move forward, so it is the least likely reread.
        if let Some(oldest) = c.keys().min().copied() {
            c.remove(&oldest);
        }
    }
    c.insert(base, records);
}
