//! Per-(tenant, backend) counters, readable while the forwarder runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::backends::RetryReason;
use crate::tenant::TenantId;

/// Live counters of one forwarder.
#[derive(Debug)]
pub struct ForwarderStats {
    tenant: TenantId,
    name: String,
    kind: &'static str,
    committed: AtomicU64,
    sends: AtomicU64,
    delivered: AtomicU64,
    already_delivered: AtomicU64,
    bytes: AtomicU64,
    retries: [AtomicU64; 4],
    dead_letter_batches: AtomicU64,
    dead_letter_samples: AtomicU64,
    unsupported: AtomicU64,
    too_old: AtomicU64,
    oldest_unsent_ms: AtomicI64,
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
    send_latency: crate::latency::Latency,
}

/// A point-in-time copy of a forwarder's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderStatsSnapshot {
    /// Tenant.
    pub tenant: TenantId,
    /// Consumer name.
    pub name: String,
    /// Backend type.
    pub kind: &'static str,
    /// Committed offset.
    pub committed: u64,
    /// Samples readable but not yet committed.
    pub lag_samples: u64,
    /// Age of the oldest sample being sent, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Requests sent (every attempt).
    pub sends: u64,
    /// Samples acknowledged by the backend.
    pub delivered_samples: u64,
    /// Samples a resend found already delivered.
    pub already_delivered_samples: u64,
    /// Request body bytes acknowledged.
    pub bytes_sent: u64,
    /// Retries by reason.
    pub retries: Vec<(RetryReason, u64)>,
    /// Batches moved to the dead-letter log.
    pub dead_letter_batches: u64,
    /// Samples moved to the dead-letter log.
    pub dead_letter_samples: u64,
    /// Samples the backend cannot represent, left out (counted, logged).
    pub unsupported_samples: u64,
    /// Samples older than the backend's `max_age` at send time: not sent (counted, logged).
    pub too_old_samples: u64,
    /// False after a failed attempt, true after a success.
    pub up: bool,
    /// How long sends took (request and answer, every attempt).
    pub send_latency: crate::latency::LatencySnapshot,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl ForwarderStats {
    pub(crate) fn new(tenant: TenantId, name: String, kind: &'static str) -> Self {
        Self {
            tenant,
            name,
            kind,
            committed: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            already_delivered: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            retries: Default::default(),
            dead_letter_batches: AtomicU64::new(0),
            dead_letter_samples: AtomicU64::new(0),
            unsupported: AtomicU64::new(0),
            too_old: AtomicU64::new(0),
            oldest_unsent_ms: AtomicI64::new(i64::MIN),
            up: AtomicBool::new(true),
            last_error: Mutex::new(None),
            send_latency: crate::latency::Latency::default(),
        }
    }

    pub(crate) fn set_committed(&self, c: u64) {
        self.committed.store(c, Ordering::Relaxed);
    }
    pub(crate) fn sent(&self, took: std::time::Duration) {
        self.sends.fetch_add(1, Ordering::Relaxed);
        self.send_latency.observe(took);
    }

    /// How long each send (request and answer) took.
    pub fn send_latency(&self) -> crate::latency::LatencySnapshot {
        self.send_latency.snapshot()
    }
    pub(crate) fn delivered(&self, samples: u64, bytes: u64) {
        self.delivered.fetch_add(samples, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
    }
    pub(crate) fn already_delivered(&self, samples: u64) {
        self.already_delivered.fetch_add(samples, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
    }
    pub(crate) fn unsupported(&self, samples: u64) {
        self.unsupported.fetch_add(samples, Ordering::Relaxed);
    }
    pub(crate) fn too_old(&self, samples: u64) {
        self.too_old.fetch_add(samples, Ordering::Relaxed);
    }
    pub(crate) fn retry(&self, reason: RetryReason, detail: String) {
        let i = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.retries[i].fetch_add(1, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        self.set_error(detail);
    }
    pub(crate) fn dead_lettered(&self, samples: u64, reason: String) {
        self.dead_letter_batches.fetch_add(1, Ordering::Relaxed);
        self.dead_letter_samples
            .fetch_add(samples, Ordering::Relaxed);
        self.set_error(reason);
    }
    pub(crate) fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
    pub(crate) fn set_oldest_unsent(&self, ts: Option<i64>) {
        self.oldest_unsent_ms
            .store(ts.unwrap_or(i64::MIN), Ordering::Relaxed);
    }

    /// A snapshot; `end_offset` is the log's readable end.
    pub fn snapshot(&self, end_offset: u64) -> ForwarderStatsSnapshot {
        let committed = self.committed.load(Ordering::Relaxed);
        let oldest = self.oldest_unsent_ms.load(Ordering::Relaxed);
        let lag_seconds = if oldest == i64::MIN {
            0.0
        } else {
            (crate::now_ms().saturating_sub(oldest)).max(0) as f64 / 1000.0
        };
        ForwarderStatsSnapshot {
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            kind: self.kind,
            committed,
            lag_samples: end_offset.saturating_sub(committed),
            lag_seconds,
            sends: self.sends.load(Ordering::Relaxed),
            delivered_samples: self.delivered.load(Ordering::Relaxed),
            already_delivered_samples: self.already_delivered.load(Ordering::Relaxed),
            bytes_sent: self.bytes.load(Ordering::Relaxed),
            retries: RetryReason::ALL
                .iter()
                .zip(&self.retries)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            dead_letter_batches: self.dead_letter_batches.load(Ordering::Relaxed),
            dead_letter_samples: self.dead_letter_samples.load(Ordering::Relaxed),
            unsupported_samples: self.unsupported.load(Ordering::Relaxed),
            too_old_samples: self.too_old.load(Ordering::Relaxed),
            up: self.up.load(Ordering::Relaxed),
            send_latency: self.send_latency.snapshot(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
