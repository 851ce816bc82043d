//! # metricspool
//!
//! An embedded, durable, multi-tenant metrics buffer with store-and-forward. Applications
//! hand it batches of samples; it writes them at once to an append-only, per-tenant log on
//! local disk (column-wise encoding, zstd, AES-256-GCM with a per-tenant key) and
//! acknowledges after fsync by default, with group commit. Consumers (the forwarders to each
//! backend) read deterministic batches and keep durable cursors, so a resend after a crash is
//! the same batch.
//!
//! What it is not (yet): this crate holds the storage layer only. Forwarders, the HTTP ingest
//! daemon and replay jobs are built on top of it.
//!
//! ## Limits
//!
//! - Tenant ids: 1–64 bytes of `[A-Za-z0-9_.-]`, not starting with `.`.
//! - Metric names `[a-zA-Z_:][a-zA-Z0-9_:]*` up to 256 bytes; label names
//!   `[a-zA-Z_][a-zA-Z0-9_]*` up to 256 bytes; values up to 4096 bytes; 128 labels.
//! - One append: at most 2^20 samples and 64 MiB compressed.
//!
//! ## Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use metricspool::{Batch, MasterKey, MetricKind, ReadLimits, Sample, Series, Spool, SpoolConfig, StartAt, TenantId};
//!
//! let dir = tempfile::tempdir()?;
//! let spool = Spool::open(SpoolConfig::new(dir.path(), MasterKey::generate()?))?;
//! let tenant = spool.tenant(&TenantId::new("edge-1")?)?;
//! tenant.register_consumer("prometheus", StartAt::Earliest)?;
//!
//! let mut batch = Batch::new();
//! let series = Series::new("tracks_generated", [("model", "rec-v2")])?;
//! batch.push_one(series, MetricKind::Counter, Sample::new(1_700_000_000_000, 125.0));
//! tenant.append_blocking(&batch)?; // durable when it returns
//!
//! // A forwarder: record the batch as in flight, send it, commit.
//! let cursor = tenant.cursors().get("prometheus")?.expect("registered");
//! let read = tenant.read_from(cursor.next_read(), ReadLimits::default())?;
//! tenant.begin_batch("prometheus", read.end)?;
//! // ... send read.batch to the backend ...
//! tenant.commit("prometheus", read.end)?;
//! spool.close()?;
//! # Ok(()) }
//! ```

pub mod backends;
pub mod config;
pub mod cursor;
pub mod daemon;
pub mod error;
pub mod forward;
pub mod ingest;
pub mod keys;
pub mod latency;
pub mod payload;
pub mod privacy;
pub mod replay;
pub mod sample;
pub mod seal;
pub mod secret;
mod spool;
pub mod tenant;
pub mod wal;

pub use config::{Durability, LogConfig, QuotaPolicy, Retention, SpoolConfig};
pub use cursor::{CursorState, CursorStore};
pub use error::{Corruption, Error, InvalidInput, Result};
pub use keys::{Keyring, MasterKey, TenantKeys};
pub use sample::{Batch, Label, MetricKind, Sample, Series, SeriesSamples};
pub use spool::{DropReason, Spool, StartAt, Tenant, TenantStats};
pub use tenant::TenantId;
pub use wal::{
    ReadBatch, ReadLimits, RecoveryEvent, RecoveryReport, SegmentInfo, SkipReason, Skipped, Wal,
};

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
