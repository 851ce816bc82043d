//! The spool: every tenant's log, keys and cursors under one data directory, with quotas and
//! retention.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::config::{LogConfig, QuotaPolicy, SpoolConfig};
use crate::cursor::{CursorState, CursorStore};
use crate::error::{Error, Result};
use crate::forward::dlq::DeadLetters;
use crate::keys::Keyring;
use crate::sample::Batch;
use crate::tenant::TenantId;
use crate::wal::fs::{Fs, StdFs};
use crate::wal::{ReadBatch, ReadLimits, RecoveryEvent, RecoveryReport, Wal};

/// Why samples were dropped. Every dropped sample is counted under exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// An append was refused by the `reject` quota policy.
    QuotaRejected,
    /// Unread samples deleted by the `drop_oldest` quota policy.
    QuotaDropOldest,
    /// Samples in records recovery found corrupt and skipped.
    Corrupt,
}

impl DropReason {
    /// Every reason, for exporting counters.
    pub const ALL: [DropReason; 3] = [Self::QuotaRejected, Self::QuotaDropOldest, Self::Corrupt];

    /// Stable lower-case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuotaRejected => "quota_rejected",
            Self::QuotaDropOldest => "quota_drop_oldest",
            Self::Corrupt => "corrupt",
        }
    }
}

/// A point-in-time view of a tenant's counters and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStats {
    /// Samples acknowledged since open.
    pub appended_samples: u64,
    /// Dropped samples by reason, since open (`Corrupt` counts what recovery skipped).
    pub dropped: Vec<(DropReason, u64)>,
    /// Consumed segments kept for replay that a quota forced out.
    pub retained_segments_deleted_for_quota: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Segments on disk.
    pub segments: usize,
    /// Oldest stored offset.
    pub first_offset: u64,
    /// One past the newest acknowledged offset.
    pub end_offset: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appended: AtomicU64,
    dropped: [AtomicU64; 3],
    retained_deleted: AtomicU64,
}

impl Counters {
    fn drop(&self, reason: DropReason, n: u64) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.dropped[i].fetch_add(n, Ordering::Relaxed);
    }
}

/// Where a new consumer's cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the end of the log: only data appended from now on.
    Now,
    /// At the oldest retained offset.
    Earliest,
    /// At an explicit offset.
    Offset(u64),
    /// At the first sealed segment (or the segment being written) that may hold a sample at
    /// or after this time (ms), found with the segments' time index. Timestamps are not
    /// ordered by offset, so a few older samples of that segment may be sent too.
    Time(i64),
}

/// One tenant: its log, cursors and counters.
#[derive(Debug)]
pub struct Tenant {
    id: TenantId,
    wal: Wal,
    cursors: CursorStore,
    config: LogConfig,
    counters: Counters,
    space_freed: tokio::sync::Notify,
    spool: Weak<SpoolShared>,
    dead_letters: Mutex<HashMap<String, Arc<DeadLetters>>>,
}

impl Tenant {
    /// The dead-letter log of `consumer` (a backend forwarder), opened on first use.
    pub fn dead_letters(&self, consumer: &str) -> Result<Arc<DeadLetters>> {
        let mut map = self.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(consumer) {
            return Ok(Arc::clone(d));
        }
        crate::cursor::check_name(consumer)?;
        let dir = self
            .wal
            .dir()
            .parent()
            .unwrap_or(self.wal.dir())
            .join("dlq")
            .join(consumer.replace(['/', '\\'], "_"));
        let d = Arc::new(DeadLetters::open(
            self.wal.fs(),
            &dir,
            self.id.clone(),
            self.wal.keys_snapshot(),
        )?);
        map.insert(consumer.to_owned(), Arc::clone(&d));
        Ok(d)
    }

    fn close(&self) -> Result<()> {
        let dls: Vec<_> = self
            .dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, d)| d)
            .collect();
        for d in dls {
            d.close()?;
        }
        self.wal.close_blocking()
    }

    /// The tenant's log settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The tenant's id.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// The tenant's log, for reads and inspection.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The tenant's cursor store.
    pub fn cursors(&self) -> &CursorStore {
        &self.cursors
    }

    /// Appends a batch and returns its offsets once acknowledged under the durability
    /// policy, after the quota policy has had its say.
    pub async fn append(&self, batch: &Batch) -> Result<Range<u64>> {
        let deadline = Instant::now() + self.config.block_timeout;
        while let Some(e) = self.admit(batch)? {
            tokio::select! {
                _ = self.space_freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if Instant::now() >= deadline {
                return Err(e);
            }
        }
        let r = self.wal.append(batch).await?;
        self.counters
            .appended
            .fetch_add(r.end - r.start, Ordering::Relaxed);
        Ok(r)
    }

    /// [`Tenant::append`] for callers outside an async runtime.
    pub fn append_blocking(&self, batch: &Batch) -> Result<Range<u64>> {
        let deadline = Instant::now() + self.config.block_timeout;
        while let Some(e) = self.admit(batch)? {
            if Instant::now() >= deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = self.wal.append_blocking(batch)?;
        self.counters
            .appended
            .fetch_add(r.end - r.start, Ordering::Relaxed);
        Ok(r)
    }

    /// Applies the quota policy. `Ok(None)`: go ahead. `Ok(Some(e))`: blocked; wait and call
    /// again, returning `e` once the deadline passes. `Err`: refused.
    fn admit(&self, batch: &Batch) -> Result<Option<Error>> {
        if self.over_quota().is_none() {
            return Ok(None);
        }
        // Quota wins over keep-for-replay: consumed segments go first, whatever the policy.
        self.enforce_retention_inner(true)?;
        let Some((used, limit)) = self.over_quota() else {
            return Ok(None);
        };
        let exceeded = |policy| Error::QuotaExceeded {
            tenant: self.id.to_string(),
            used,
            limit,
            policy,
        };
        match self.config.quota_policy {
            QuotaPolicy::Reject => {
                self.counters
                    .drop(DropReason::QuotaRejected, batch.sample_count() as u64);
                tracing::warn!(tenant = %self.id, samples = batch.sample_count(), "append rejected: disk quota full");
                Err(exceeded(
                    "policy reject: the append was refused and counted as dropped",
                ))
            }
            QuotaPolicy::DropOldest => {
                self.drop_oldest()?;
                Ok(None)
            }
            QuotaPolicy::Block => Ok(Some(exceeded(
                "policy block: waited for retention to free space; nothing was stored, retry later",
            ))),
        }
    }

    /// `(used, limit)` of the first quota (tenant, then global) that is full.
    fn over_quota(&self) -> Option<(u64, u64)> {
        let used = self.wal.disk_bytes();
        if let Some(q) = self.config.quota_bytes
            && used >= q
        {
            return Some((used, q));
        }
        let spool = self.spool.upgrade()?;
        let limit = spool.config.global_quota_bytes?;
        let total = spool.total_disk_bytes();
        (total >= limit).then_some((total, limit))
    }

    /// Deletes the oldest segments, read or not, until the quotas hold; counts unread samples.
    fn drop_oldest(&self) -> Result<()> {
        while self.over_quota().is_some() {
            let segs = self.wal.segments();
            let Some(oldest) = segs.first() else {
                return Ok(());
            };
            if oldest.sealed_ms.is_none() {
                self.wal.roll_blocking()?;
                continue;
            }
            let min = self.min_committed().unwrap_or(oldest.base_offset);
            let unread = oldest
                .end_offset
                .saturating_sub(min.max(oldest.base_offset));
            if self.wal.delete_segment(oldest.base_offset)? == 0 {
                // Deleted meanwhile by a concurrent append or retention, which counted it.
                continue;
            }
            self.counters.drop(DropReason::QuotaDropOldest, unread);
            tracing::warn!(tenant = %self.id, segment = oldest.base_offset, unread, "quota policy drop_oldest deleted a segment");
        }
        Ok(())
    }

    fn min_committed(&self) -> Option<u64> {
        let cursors = self.cursors.list().ok()?;
        cursors.iter().map(|(_, c)| c.committed).min()
    }

    /// Registers a consumer (a backend forwarder, a replay job) unless it exists.
    pub fn register_consumer(&self, name: &str, start: StartAt) -> Result<CursorState> {
        let at = match start {
            StartAt::Now => self.wal.end_offset(),
            StartAt::Earliest => self.wal.first_offset(),
            StartAt::Offset(o) => o,
            StartAt::Time(ts) => self.wal.first_offset_at_or_after(ts),
        };
        self.cursors.register(name, at)
    }

    /// Records `[next_read, end)` as in flight for `consumer` before sending it.
    pub fn begin_batch(&self, consumer: &str, end: u64) -> Result<CursorState> {
        if end > self.wal.end_offset() {
            return Err(Error::Cursor {
                tenant: self.id.to_string(),
                consumer: consumer.to_owned(),
                reason: format!(
                    "batch end {end} is past the log end {}",
                    self.wal.end_offset()
                ),
            });
        }
        self.cursors.begin(consumer, end)
    }

    /// Commits `consumer` up to `end` (durable on return), then lets retention run.
    pub fn commit(&self, consumer: &str, end: u64) -> Result<CursorState> {
        let s = self.cursors.commit(consumer, end)?;
        if self.enforce_retention()? > 0 {
            self.space_freed.notify_waiters();
        }
        Ok(s)
    }

    /// Reads a deterministic batch from `offset` (see [`Wal::read_from`]).
    pub fn read_from(&self, offset: u64, limits: ReadLimits) -> Result<ReadBatch> {
        self.wal.read_from(offset, limits)
    }

    /// Deletes sealed segments every consumer has passed, as the retention settings allow.
    /// Returns the bytes freed. With no consumer registered nothing is deleted.
    pub fn enforce_retention(&self) -> Result<u64> {
        self.enforce_retention_inner(false)
    }

    fn enforce_retention_inner(&self, quota_pressure: bool) -> Result<u64> {
        let Some(min) = self.min_committed() else {
            return Ok(0);
        };
        let consumed: Vec<_> = self
            .wal
            .segments()
            .into_iter()
            .take_while(|s| s.sealed_ms.is_some() && s.end_offset <= min)
            .collect();
        let r = self.config.retention;
        let now = crate::now_ms();
        let mut kept: u64 = consumed.iter().map(|s| s.bytes).sum();
        let mut freed = 0;
        for s in consumed {
            let age = Duration::from_millis(now.saturating_sub(s.sealed_ms.unwrap_or(now)) as u64);
            let too_old = age >= r.keep_for;
            let too_big = r.keep_max_bytes.is_some_and(|m| kept > m);
            let forced = quota_pressure && self.over_quota().is_some();
            if !(too_old || too_big || forced) {
                continue;
            }
            if forced && !too_old && !too_big {
                self.counters
                    .retained_deleted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant = %self.id, segment = s.base_offset, "disk quota deleted a segment kept for replay");
            }
            freed += self.wal.delete_segment(s.base_offset)?;
            kept -= s.bytes;
        }
        Ok(freed)
    }

    /// Counters and log figures.
    pub fn stats(&self) -> TenantStats {
        let c = &self.counters;
        TenantStats {
            appended_samples: c.appended.load(Ordering::Relaxed),
            dropped: DropReason::ALL
                .iter()
                .zip(&c.dropped)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            retained_segments_deleted_for_quota: c.retained_deleted.load(Ordering::Relaxed),
            disk_bytes: self.wal.disk_bytes(),
            segments: self.wal.segments().len(),
            first_offset: self.wal.first_offset(),
            end_offset: self.wal.end_offset(),
        }
    }
}

fn segment_files(fs: &Arc<dyn Fs>, wal_dir: &std::path::Path) -> usize {
    fs.list(wal_dir).map_or(0, |names| {
        names
            .iter()
            .filter(|n| crate::wal::segment::parse_segment_file_name(n).is_some())
            .count()
    })
}

#[derive(Debug)]
struct SpoolShared {
    config: SpoolConfig,
    fs: Arc<dyn Fs>,
    keyring: Keyring,
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
    reports: RwLock<Vec<RecoveryReport>>,
}

impl SpoolShared {
    fn total_disk_bytes(&self) -> u64 {
        let t = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        t.values().map(|t| t.wal.disk_bytes()).sum()
    }
}

/// Every tenant's log under one data directory.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use metricspool::{Batch, MasterKey, MetricKind, Sample, Series, Spool, SpoolConfig, TenantId};
///
/// let dir = tempfile::tempdir()?;
/// let spool = Spool::open(SpoolConfig::new(dir.path(), MasterKey::generate()?))?;
/// let tenant = spool.tenant(&TenantId::new("edge-1")?)?;
///
/// let mut batch = Batch::new();
/// let series = Series::new("model_inference_time", [("model", "rec-v2")])?;
/// batch.push_one(series, MetricKind::Gauge, Sample::new(1_700_000_000_000, 0.045));
/// let offsets = tenant.append_blocking(&batch)?; // returns once fsynced
/// assert_eq!(offsets, 0..1);
///
/// let read = tenant.read_from(0, Default::default())?;
/// assert_eq!(read.batch, batch);
/// spool.close()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Spool {
    shared: Arc<SpoolShared>,
}

impl Spool {
    /// Opens the data directory, recovering every tenant found in it.
    pub fn open(config: SpoolConfig) -> Result<Self> {
        Self::open_with_fs(config, Arc::new(StdFs))
    }

    /// [`Spool::open`] with the logs on another file system (tests use `SimFs`). Keyrings and
    /// cursors always live on the real file system under `data_dir`.
    pub fn open_with_fs(config: SpoolConfig, fs: Arc<dyn Fs>) -> Result<Self> {
        config.log.validate()?;
        for (_, c) in &config.tenant_overrides {
            c.validate()?;
        }
        let keyring = Keyring::open(config.data_dir.join("keys"), config.master_key.clone())?;
        let tenants_dir = config.data_dir.join("tenants");
        std::fs::create_dir_all(&tenants_dir).map_err(|e| Error::io(&tenants_dir, e))?;
        let spool = Self {
            shared: Arc::new(SpoolShared {
                config,
                fs,
                keyring,
                tenants: RwLock::new(HashMap::new()),
                reports: RwLock::new(Vec::new()),
            }),
        };
        for entry in std::fs::read_dir(&tenants_dir).map_err(|e| Error::io(&tenants_dir, e))? {
            let entry = entry.map_err(|e| Error::io(&tenants_dir, e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| TenantId::new(n).ok())
            else {
                continue;
            };
            match spool.tenant(&id) {
                Ok(_) => {}
                // An erase interrupted after the keys went: the data is unreadable anyway;
                // the other tenants must still open.
                Err(e @ Error::KeysErased { .. }) => tracing::warn!(tenant = %id, "{e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(spool)
    }

    fn tenant_dir(&self, id: &TenantId) -> PathBuf {
        self.shared
            .config
            .data_dir
            .join("tenants")
            .join(id.as_str())
    }

    /// The tenant's handle, opening (and creating) its log on first use.
    pub fn tenant(&self, id: &TenantId) -> Result<Arc<Tenant>> {
        if let Some(t) = self
            .shared
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Arc::clone(t));
        }
        let mut map = self
            .shared
            .tenants
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(id) {
            return Ok(Arc::clone(t));
        }
        let cfg = &self.shared.config;
        let config = cfg
            .tenant_overrides
            .iter()
            .find(|(t, _)| t == id)
            .map_or_else(|| cfg.log.clone(), |(_, c)| c.clone());
        let dir = self.tenant_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // A keyring is created only for a tenant without data: data without a keyring means
        // its keys were erased, and a fresh key could never open it.
        let existing = segment_files(&self.shared.fs, &dir.join("wal"));
        let keys = self
            .shared
            .keyring
            .load(id, existing == 0)?
            .ok_or_else(|| Error::KeysErased {
                tenant: id.to_string(),
                segments: existing,
            })?;
        let (wal, report) = Wal::open(
            Arc::clone(&self.shared.fs),
            dir.join("wal"),
            id.clone(),
            keys,
            config.clone(),
        )?;
        let cursors = CursorStore::open(&dir, id.clone())?;
        let counters = Counters::default();
        let corrupt: u64 = report
            .events
            .iter()
            .map(|e| match e {
                RecoveryEvent::CorruptRecordSkipped { offsets, .. } => offsets.end - offsets.start,
                _ => 0,
            })
            .sum();
        counters.drop(DropReason::Corrupt, corrupt);
        if !report.is_clean() {
            tracing::info!(tenant = %id, events = report.events.len(), "recovery repaired the log");
        }
        self.shared
            .reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(report);
        let t = Arc::new(Tenant {
            id: id.clone(),
            wal,
            cursors,
            config,
            counters,
            space_freed: tokio::sync::Notify::new(),
            spool: Arc::downgrade(&self.shared),
            dead_letters: Mutex::new(HashMap::new()),
        });
        map.insert(id.clone(), Arc::clone(&t));
        Ok(t)
    }

    /// Crypto-shredding: closes the tenant's log, erases its keyring (after which no record
    /// of it can be decrypted, even if the next step is interrupted), then deletes its data.
    pub fn erase_tenant(&self, id: &TenantId) -> Result<()> {
        let t = self
            .shared
            .tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(t) = t {
            let _ = t.close();
        }
        self.shared.keyring.erase(id)?;
        let dir = self.tenant_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }

    /// Every open tenant.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut v: Vec<_> = self
            .shared
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// What recovery found when each tenant's log was opened.
    pub fn recovery_reports(&self) -> Vec<RecoveryReport> {
        self.shared
            .reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds a new key id for the tenant; new segments use it from the next append on. Old
    /// segments stay readable while their key id remains in the keyring.
    pub fn rotate_key(&self, id: &TenantId) -> Result<u32> {
        let t = self.tenant(id)?;
        let keys = self.shared.keyring.rotate(id)?;
        let current = keys.current().key_id();
        t.wal.set_keys(keys);
        Ok(current)
    }

    /// Removes key id `key_id` from the tenant's keyring. Refuses the current key and any key
    /// a retained segment of the log or of a dead-letter log still uses: removing it would
    /// make that data unreadable (use [`Spool::erase_tenant`] to shred on purpose).
    pub fn retire_key(&self, id: &TenantId, key_id: u32) -> Result<()> {
        let t = self.tenant(id)?;
        let refuse = |reason: String| -> Result<()> {
            Err(Error::KeyInUse {
                tenant: id.to_string(),
                key_id,
                reason,
            })
        };
        let keys = t.wal.keys_snapshot();
        if !keys.ids().contains(&key_id) {
            return refuse("no such key id in the keyring".into());
        }
        if keys.current().key_id() == key_id {
            return refuse("it is the current key: rotate first".into());
        }
        let used = t
            .wal
            .segments()
            .iter()
            .filter(|s| s.key_id == key_id)
            .count();
        if used > 0 {
            return refuse(format!(
                "{used} retained segments still use it; wait until retention deletes them"
            ));
        }
        let dlq = t.wal.dir().parent().unwrap_or(t.wal.dir()).join("dlq");
        if let Ok(entries) = std::fs::read_dir(&dlq) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if t.dead_letters(&name)?.key_ids().contains(&key_id) {
                    return refuse(format!("the dead-letter log {name} still uses it"));
                }
            }
        }
        self.shared.keyring.remove(id, key_id)?;
        if let Some(keys) = self.shared.keyring.load(id, false)? {
            t.wal.set_keys(keys);
        }
        Ok(())
    }

    /// The keyring store.
    pub fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// Bytes on disk over all tenants.
    pub fn total_disk_bytes(&self) -> u64 {
        self.shared.total_disk_bytes()
    }

    /// Runs retention for every tenant; returns the bytes freed.
    pub fn enforce_retention(&self) -> Result<u64> {
        let tenants: Vec<_> = self
            .shared
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut freed = 0;
        for t in tenants {
            freed += t.enforce_retention()?;
        }
        Ok(freed)
    }

    /// Seals every tenant's log and stops its writer. Appends fail afterwards.
    pub fn close(&self) -> Result<()> {
        let tenants: Vec<_> = self
            .shared
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut first_err = None;
        for t in tenants {
            if let Err(e) = t.close() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
