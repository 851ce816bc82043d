//! Self-monitoring: `/metrics` in OpenMetrics text (prometheus-client).
//!
//! Request-path counters and histograms are updated as requests run; the log and forwarder
//! figures are read from the spool and the forwarders at scrape time, so they are never stale.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::forward::Forwarding;
use crate::latency::LatencySnapshot;
use crate::spool::Spool;
use prometheus_client::encoding::NoLabelSet;
use prometheus_client::metrics::MetricType;

/// `{tenant, format}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantFormat {
    /// Tenant id (or `unknown` before authentication).
    pub tenant: String,
    /// `remote_write`, `influx`, `json`.
    pub format: &'static str,
}

/// `{tenant, format, code}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Tenant id (or `unknown`).
    pub tenant: String,
    /// Ingest format.
    pub format: &'static str,
    /// HTTP status code.
    pub code: u16,
}

/// `{tenant, reason}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Tenant id (or `unknown`).
    pub tenant: String,
    /// `unauthorized`, `forbidden`, `bad_request`, `too_large`, `rate_limited`, `quota`,
    /// `unavailable`.
    pub reason: &'static str,
}

/// `{tenant}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// Tenant id.
    pub tenant: String,
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Ingest requests by tenant, format and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Samples accepted (stored) by tenant and format.
    pub samples: Family<TenantFormat, Counter>,
    /// Request body bytes received (as sent, before decompression).
    pub bytes: Family<TenantFormat, Counter>,
    /// Requests refused, by reason.
    pub rejections: Family<RejectLabels, Counter>,
    /// Time from handing a batch to the log until it is acknowledged (includes the fsync
    /// under `durability = "fsync"`).
    pub append_seconds: Family<TenantLabel, Histogram>,
}

impl Metrics {
    /// Registers everything; the collector reads the spool and forwarders at scrape time.
    pub fn new(spool: Spool, forwarding: Arc<Forwarding>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("metricspool");
        let requests = Family::<RequestLabels, Counter>::default();
        let samples = Family::<TenantFormat, Counter>::default();
        let bytes = Family::<TenantFormat, Counter>::default();
        let rejections = Family::<RejectLabels, Counter>::default();
        let append_seconds = Family::<TenantLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "ingest_requests",
            "Ingest requests by tenant, format and status code",
            requests.clone(),
        );
        registry.register(
            "ingest_samples",
            "Samples accepted and stored, by tenant and format",
            samples.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Request body bytes received, by tenant and format",
            bytes.clone(),
        );
        registry.register(
            "ingest_rejections",
            "Ingest requests refused, by tenant and reason",
            rejections.clone(),
        );
        registry.register(
            "append_seconds",
            "Time until an append is acknowledged (includes fsync under durability=fsync)",
            append_seconds.clone(),
        );
        registry.register_collector(Box::new(LiveStats { spool, forwarding }));
        Arc::new(Self {
            registry,
            requests,
            samples,
            bytes,
            rejections,
            append_seconds,
        })
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a refused request.
    pub fn reject(&self, tenant: &str, format: &'static str, reason: &'static str, code: u16) {
        self.rejections
            .get_or_create(&RejectLabels {
                tenant: tenant.to_owned(),
                reason,
            })
            .inc();
        self.request(tenant, format, code);
    }

    /// Counts a request by status code.
    pub fn request(&self, tenant: &str, format: &'static str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                tenant: tenant.to_owned(),
                format,
                code,
            })
            .inc();
    }
}

/// Log and forwarder figures, read at scrape time.
#[derive(Debug)]
struct LiveStats {
    spool: Spool,
    forwarding: Arc<Forwarding>,
}

type Labels = Vec<(&'static str, String)>;

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
    counter: bool,
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    if counter {
        let kind = ConstCounter::new(0.0f64).metric_type();
        let mut m = enc.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in rows {
            ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
        }
    } else {
        let kind = ConstGauge::new(0.0f64).metric_type();
        let mut m = enc.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in rows {
            ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
        }
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Labels, LatencySnapshot)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        // The encoder wants per-bucket counts (it sums them), +Inf last.
        let mut prev = 0;
        let mut per: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .map(|&(b, c)| (b, c - std::mem::replace(&mut prev, c)))
            .collect();
        per.push((f64::INFINITY, h.count - prev));
        m.encode_family(labels)?
            .encode_histogram::<NoLabelSet>(h.sum, h.count, &per, None)?;
    }
    Ok(())
}

impl Collector for LiveStats {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut bytes = Vec::new();
        let mut segments = Vec::new();
        let mut quota = Vec::new();
        let mut end = Vec::new();
        let mut drops = Vec::new();
        let mut retained = Vec::new();
        let mut fsyncs = Vec::new();
        for id in self.spool.tenants() {
            let Ok(t) = self.spool.tenant(&id) else {
                continue;
            };
            let s = t.stats();
            let l = || vec![("tenant", id.to_string())];
            fsyncs.push((l(), t.wal().fsync_latency()));
            bytes.push((l(), s.disk_bytes as f64));
            segments.push((l(), s.segments as f64));
            end.push((l(), s.end_offset as f64));
            if let Some(q) = t.config().quota_bytes {
                quota.push((l(), s.disk_bytes as f64 / q as f64));
            }
            retained.push((l(), s.retained_segments_deleted_for_quota as f64));
            for (reason, n) in s.dropped {
                let mut labels = l();
                labels.push(("reason", reason.as_str().to_owned()));
                drops.push((labels, n as f64));
            }
        }
        gauge(
            &mut enc,
            "log_bytes",
            "Bytes of the tenant's log on disk",
            &bytes,
            false,
        )?;
        gauge(
            &mut enc,
            "log_segments",
            "Segments of the tenant's log",
            &segments,
            false,
        )?;
        gauge(
            &mut enc,
            "log_end_offset",
            "One past the newest acknowledged offset",
            &end,
            false,
        )?;
        gauge(
            &mut enc,
            "quota_used_ratio",
            "Log bytes over the tenant's quota",
            &quota,
            false,
        )?;
        histogram(
            &mut enc,
            "fsync_seconds",
            "Time of one data fsync of the tenant's log",
            &fsyncs,
        )?;
        gauge(
            &mut enc,
            "dropped_samples",
            "Samples dropped, by reason",
            &drops,
            true,
        )?;
        gauge(
            &mut enc,
            "retained_segments_deleted_for_quota",
            "Delivered segments kept for replay that the quota deleted",
            &retained,
            true,
        )?;
        self.encode_forwarders(&mut enc)
    }
}

impl LiveStats {
    fn encode_forwarders(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.forwarding.stats();
        let l = |s: &crate::forward::ForwarderStatsSnapshot| {
            vec![
                ("tenant", s.tenant.to_string()),
                ("backend", s.name.clone()),
                ("type", s.kind.to_owned()),
            ]
        };
        let rows_i = |f: fn(&crate::forward::ForwarderStatsSnapshot) -> f64| {
            stats.iter().map(|s| (l(s), f(s))).collect::<Vec<_>>()
        };
        let rows_u = |f: fn(&crate::forward::ForwarderStatsSnapshot) -> f64| {
            stats.iter().map(|s| (l(s), f(s))).collect::<Vec<_>>()
        };
        gauge(
            enc,
            "forward_committed_offset",
            "Committed cursor offset",
            &rows_i(|s| s.committed as f64),
            false,
        )?;
        gauge(
            enc,
            "forward_lag_samples",
            "Samples not yet delivered",
            &rows_i(|s| s.lag_samples as f64),
            false,
        )?;
        let lag_s: Vec<_> = stats.iter().map(|s| (l(s), s.lag_seconds)).collect();
        gauge(
            enc,
            "forward_lag_seconds",
            "Age of the oldest undelivered sample being sent",
            &lag_s,
            false,
        )?;
        gauge(
            enc,
            "forward_up",
            "1 after a successful send, 0 after a failed one",
            &rows_i(|s| f64::from(u8::from(s.up))),
            false,
        )?;
        gauge(
            enc,
            "forward_sends",
            "Requests sent, every attempt",
            &rows_u(|s| s.sends as f64),
            true,
        )?;
        gauge(
            enc,
            "forward_delivered_samples",
            "Samples acknowledged by the backend",
            &rows_u(|s| s.delivered_samples as f64),
            true,
        )?;
        gauge(
            enc,
            "forward_bytes",
            "Request bytes acknowledged",
            &rows_u(|s| s.bytes_sent as f64),
            true,
        )?;
        gauge(
            enc,
            "forward_dead_letter_samples",
            "Samples moved to the dead-letter log",
            &rows_u(|s| s.dead_letter_samples as f64),
            true,
        )?;
        gauge(
            enc,
            "forward_unsupported_samples",
            "Samples the backend cannot represent, left out",
            &rows_u(|s| s.unsupported_samples as f64),
            true,
        )?;
        gauge(
            enc,
            "forward_too_old_samples",
            "Samples older than the backend's max_age, not sent",
            &rows_u(|s| s.too_old_samples as f64),
            true,
        )?;
        let retries: Vec<_> = stats
            .iter()
            .flat_map(|s| {
                s.retries.iter().map(move |(r, n)| {
                    let mut labels = l(s);
                    labels.push(("reason", r.as_str().to_owned()));
                    (labels, *n as f64)
                })
            })
            .collect();
        gauge(enc, "forward_retries", "Retries by reason", &retries, true)?;
        let sends: Vec<_> = stats
            .iter()
            .map(|s| (l(s), s.send_latency.clone()))
            .collect();
        histogram(
            enc,
            "forward_send_seconds",
            "Time of one send to the backend, request and answer",
            &sends,
        )
    }
}
