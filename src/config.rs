//! Configuration of the spool and of each tenant's log. Every field states its default and
//! its limits; [`LogConfig::validate`] enforces them.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::InvalidInput;
use crate::keys::MasterKey;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after the group's write and fdatasync (default). Nothing acknowledged is
    /// lost on power failure.
    #[default]
    Fsync,
    /// Acknowledge after the write reaches the OS; fdatasync on a timer of this period, also
    /// when no new write arrives. A power cut loses at most one period of acknowledged data.
    Interval(Duration),
    /// Never fdatasync except when a segment is sealed. A power cut can lose any amount of
    /// acknowledged data; a process crash loses nothing.
    None,
}

/// What happens when a tenant's (or the global) disk quota is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaPolicy {
    /// Appends wait for retention to free space, up to `block_timeout`, then fail with
    /// [`crate::Error::QuotaExceeded`] (default). Nothing is dropped.
    #[default]
    Block,
    /// Delete the oldest segments, even ones a consumer has not read; every unread sample
    /// deleted is counted under [`crate::DropReason::QuotaDropOldest`] and logged.
    DropOldest,
    /// Refuse the append at once; its samples are counted under
    /// [`crate::DropReason::QuotaRejected`].
    Reject,
}

/// How long consumed segments are kept for replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep a segment every consumer has passed for at least this long after it was sealed.
    /// Default 0 (delete as soon as every consumer has passed it).
    pub keep_for: Duration,
    /// Keep at most this many bytes of such segments (oldest go first). Default: no cap
    /// beyond the disk quota.
    pub keep_max_bytes: Option<u64>,
}

/// Settings of one tenant's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// When appends are acknowledged. Default [`Durability::Fsync`]; an `Interval` period
    /// must be 1 ms..=60 s.
    pub durability: Durability,
    /// A segment is sealed once it holds this many bytes. Default 64 MiB; 64 KiB..=1 GiB.
    pub segment_max_bytes: u64,
    /// A segment is sealed once it is this old, even if small. Default 1 h; 1 s..=7 days.
    pub segment_max_age: Duration,
    /// zstd level for record payloads. Default 3; 1..=19.
    pub zstd_level: i32,
    /// Most bytes the writer puts into one group write. Default 8 MiB; 64 KiB..=256 MiB.
    pub max_group_bytes: usize,
    /// Tenant disk quota in bytes (segments and indexes). Default none; at least 1 MiB.
    pub quota_bytes: Option<u64>,
    /// What a full quota does. Default [`QuotaPolicy::Block`].
    pub quota_policy: QuotaPolicy,
    /// How long a blocked append waits. Default 10 s; at most 1 h.
    pub block_timeout: Duration,
    /// Keep-for-replay settings. Default: keep nothing consumed.
    pub retention: Retention,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_max_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(3600),
            zstd_level: 3,
            max_group_bytes: 8 << 20,
            quota_bytes: None,
            quota_policy: QuotaPolicy::Block,
            block_timeout: Duration::from_secs(10),
            retention: Retention::default(),
        }
    }
}

impl LogConfig {
    /// Checks every field against its documented limits.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let bad = |field: &str, limits: &str| {
            Err(InvalidInput::Batch(format!(
                "config field {field} is out of range: {limits}"
            )))
        };
        if let Durability::Interval(p) = self.durability
            && !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&p)
        {
            return bad("durability interval", "1 ms to 60 s");
        }
        if !(64 << 10..=1 << 30).contains(&self.segment_max_bytes) {
            return bad("segment_max_bytes", "64 KiB to 1 GiB");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(7 * 86400))
            .contains(&self.segment_max_age)
        {
            return bad("segment_max_age", "1 s to 7 days");
        }
        if !(1..=19).contains(&self.zstd_level) {
            return bad("zstd_level", "1 to 19");
        }
        if !(64 << 10..=256 << 20).contains(&self.max_group_bytes) {
            return bad("max_group_bytes", "64 KiB to 256 MiB");
        }
        if self.quota_bytes.is_some_and(|q| q < 1 << 20) {
            return bad("quota_bytes", "at least 1 MiB");
        }
        if self.block_timeout > Duration::from_secs(3600) {
            return bad("block_timeout", "at most 1 h");
        }
        Ok(())
    }
}

/// Settings of a [`crate::Spool`].
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Root directory: `tenants/<id>/` holds each log, `keys/` the keyrings. Required.
    pub data_dir: PathBuf,
    /// The master key, loaded by the caller from a file or environment variable. Required.
    pub master_key: MasterKey,
    /// Log settings for every tenant not listed in `tenant_overrides`.
    pub log: LogConfig,
    /// Per-tenant log settings.
    pub tenant_overrides: Vec<(crate::TenantId, LogConfig)>,
    /// Disk quota over all tenants, in bytes. Default none. When full, each tenant's own
    /// policy applies.
    pub global_quota_bytes: Option<u64>,
}

impl SpoolConfig {
    /// Defaults for everything but the two required fields.
    pub fn new(data_dir: impl Into<PathBuf>, master_key: MasterKey) -> Self {
        Self {
            data_dir: data_dir.into(),
            master_key,
            log: LogConfig::default(),
            tenant_overrides: Vec::new(),
            global_quota_bytes: None,
        }
    }
}
