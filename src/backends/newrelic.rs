//! New Relic Metric API: `POST https://metric-api.newrelic.com/metric/v1` (EU accounts:
//! `metric-api.eu.newrelic.com`), a gzip-compressed JSON array, the license or ingest key in
//! `Api-Key`.
//!
//! Encoding, a pure function of the batch and the clock (see "Time window"):
//! - one block `[{"common": {"attributes": {"<tenant_attribute>": <tenant>}}, "metrics":
//!   [...]}]`; without a tenant attribute, no `common`;
//! - one metric per sample, in batch order: `name`, `type`, `value`, `timestamp` (ms) and
//!   `attributes` = the labels with a non-empty value (sorted by name; left out when there
//!   are none). A label named like the tenant attribute is sent as `exported_<name>`:
//!   metric attributes override common ones in New Relic, and data must not claim another
//!   tenant;
//! - `type` is always `gauge`. New Relic's `count` is the number of events in the interval
//!   `interval.ms` (a delta) and `summary` needs count/sum/min/max of an interval; our
//!   counters are cumulative totals, which as `count` would be summed into nonsense. As
//!   gauges the totals are stored as they are; take rates in NRQL (`rate()`, `derivative()`);
//! - NaN and ±Inf are dropped by New Relic: they are left out and counted as `skipped`.
//!
//! # Time window
//!
//! New Relic drops points more than 48 h old or more than 24 h in the future, after
//! answering 202. Those points are left out and counted as `skipped` (logged and counted by
//! the forwarder), so an outage longer than `max_age` is counted data loss, never silent.
//! Because the window depends on the clock, a late resend may leave out more points.
//!
//! # Limits
//!
//! A body over 10^6 bytes (compressed) is not sent: the batch is returned as
//! [`RejectKind::TooLarge`] and the forwarder sends it in halves; one point alone over the
//! limit is [`RejectKind::Permanent`]. New Relic also limits a metric to 100 attributes,
//! names to 255 characters and attribute values to 4096 characters; points beyond those are
//! refused after the 202.
//!
//! # Delivery
//!
//! At-least-once. New Relic documents no deduplication: a resend after an ambiguous failure
//! stores the points twice (a gauge then shows a duplicate point at the same timestamp).
//! 202 means "passed basic validation": later errors appear only as `NrIntegrationError`
//! events in the account (query them with NRQL), never here.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::datadog::check_duration;
use super::http::{self, RawAnswer};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::sample::Batch;
use crate::secret::Secret;
use crate::tenant::TenantId;

/// Largest request body New Relic accepts (after compression): 10^6 bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1_000_000;
/// Default and largest `max_age`: 48 h, New Relic's window.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
/// Points further ahead of the local clock than this are not sent: 24 h.
pub const MAX_AHEAD: Duration = Duration::from_secs(24 * 3600);
/// Default request timeout: 30 s, as every HTTP backend.
pub const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;

/// Bytes of an answer read (`{"requestId": ...}` or a short error).
const MAX_ANSWER: usize = 64 << 10;

/// Which New Relic data center the account lives in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewRelicRegion {
    /// `https://metric-api.newrelic.com`. The default.
    #[default]
    Us,
    /// `https://metric-api.eu.newrelic.com`.
    Eu,
}

/// Configuration of a [`NewRelic`] backend, as read from the daemon's TOML:
///
/// ```toml
/// api_key = { env = "NEW_RELIC_LICENSE_KEY" }
/// region = "eu"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelicConfig {
    /// License key or ingest key of the account (`Api-Key` header), from
    /// `{ env = "..." }` or `{ file = "..." }`; read when the backend is built. Required. It
    /// selects the account.
    pub api_key: Secret,
    /// Data center of the account: `us` (default) or `eu`.
    #[serde(default)]
    pub region: NewRelicRegion,
    /// Base URL overriding the region's (a proxy, FedRAMP
    /// `https://gov-metric-api.newrelic.com`, or a local server in tests); `/metric/v1` is
    /// appended. Default none.
    #[serde(default)]
    pub url: Option<String>,
    /// Common attribute carrying the spool tenant id. Default `"tenant"`; empty: none.
    #[serde(default = "http::default_tenant_label")]
    pub tenant_attribute: String,
    /// Points older than this are not sent (counted as skipped). Default 48 h, New Relic's
    /// window; 1 s to 48 h.
    #[serde(default = "default_max_age", with = "crate::secret::duration")]
    pub max_age: Duration,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s;
    /// more than zero.
    #[serde(default = "http::default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
}

fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

impl NewRelicConfig {
    /// A configuration with `api_key` and every other field at its default.
    pub fn new(api_key: Secret) -> Self {
        Self {
            api_key,
            region: NewRelicRegion::Us,
            url: None,
            tenant_attribute: http::default_tenant_label(),
            max_age: DEFAULT_MAX_AGE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Serialize)]
struct Block<'a, 'b> {
    #[serde(skip_serializing_if = "Option::is_none")]
    common: Option<Common<'a>>,
    metrics: Vec<Metric<'a, 'b>>,
}

#[derive(Serialize)]
struct Common<'a> {
    attributes: BTreeMap<&'a str, &'a str>,
}

/// A metric's attributes: label name (or `exported_<name>`) to value, sorted by name.
type Attributes<'a> = BTreeMap<Cow<'a, str>, &'a str>;

#[derive(Serialize)]
struct Metric<'a, 'b> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: f64,
    timestamp: i64,
    #[serde(skip_serializing_if = "no_attributes")]
    attributes: &'b Attributes<'a>,
}

fn no_attributes(a: &&Attributes<'_>) -> bool {
    a.is_empty()
}

/// A JSON body and what went into it.
#[derive(Debug)]
struct Json {
    bytes: Vec<u8>,
    points: u64,
    skipped: u64,
}

/// What the encoder needs of the configuration.
#[derive(Debug, Clone)]
struct Shape {
    tenant_attribute: String,
    max_age_ms: i64,
}

impl Shape {
    /// The JSON body of `batch` for `tenant` at `now_ms` (see the module docs).
    fn encode(&self, batch: &Batch, tenant: &TenantId, now_ms: i64) -> Json {
        let oldest = now_ms.saturating_sub(self.max_age_ms);
        let newest = now_ms.saturating_add(MAX_AHEAD.as_millis() as i64);
        // One attribute map per entry, shared by its samples.
        let attributes: Vec<Attributes<'_>> = batch
            .entries()
            .iter()
            .map(|e| self.attributes(&e.series))
            .collect();
        let mut metrics = Vec::new();
        let mut skipped = 0u64;
        for (entry, attributes) in batch.entries().iter().zip(&attributes) {
            for s in &entry.samples {
                if !s.value.is_finite() || !(oldest..=newest).contains(&s.timestamp_ms) {
                    skipped += 1;
                    continue;
                }
                metrics.push(Metric {
                    name: entry.series.name(),
                    kind: "gauge",
                    value: s.value,
                    timestamp: s.timestamp_ms,
                    attributes,
                });
            }
        }
        let points = metrics.len() as u64;
        let common = (!self.tenant_attribute.is_empty()).then(|| Common {
            attributes: BTreeMap::from([(self.tenant_attribute.as_str(), tenant.as_str())]),
        });
        let bytes = serde_json::to_vec(&[Block { common, metrics }])
            .expect("plain structs with string keys always serialize");
        Json {
            bytes,
            points,
            skipped,
        }
    }

    fn attributes<'a>(&self, series: &'a crate::sample::Series) -> Attributes<'a> {
        series
            .labels()
            .iter()
            .filter(|l| !l.value.is_empty())
            .map(|l| {
                let name = if *l.name == *self.tenant_attribute {
                    Cow::Owned(format!("exported_{}", l.name))
                } else {
                    Cow::Borrowed(&*l.name)
                };
                (name, &*l.value)
            })
            .collect()
    }
}

/// New Relic classification: 2xx delivered; 408, 429 and 5xx retried (`Retry-After`
/// honoured: New Relic sends it with its per-minute limits); 413 too large; everything else
/// (400, 403, 404, 405, 411, 414, 415, 431) permanent, with the body as the reason.
fn classify(a: &RawAnswer, bytes: u64, skipped: u64) -> Outcome {
    let detail = || format!("HTTP {}: {}", a.status, a.text());
    let retry = |reason| Outcome::Retry {
        reason,
        retry_after: a.retry_after(),
        detail: detail(),
    };
    let rejected = |kind, reason| Outcome::Rejected {
        kind,
        status: Some(a.status),
        reason,
    };
    match a.status {
        200..=299 => Outcome::Delivered { bytes, skipped },
        429 => retry(RetryReason::RateLimited),
        408 | 500..=599 => retry(RetryReason::ServerError),
        413 => rejected(RejectKind::TooLarge, detail()),
        403 => rejected(
            RejectKind::Permanent,
            format!(
                "{} (check api_key: a license or ingest key of the account; EU accounts need region = \"eu\")",
                detail()
            ),
        ),
        _ => rejected(RejectKind::Permanent, detail()),
    }
}

/// New Relic Metric API for every tenant of one account (one key).
#[derive(Debug)]
pub struct NewRelic {
    url: Url,
    shape: Shape,
    client: reqwest::Client,
    headers: HeaderMap,
}

impl NewRelic {
    /// Reads the key, checks the configuration and builds the HTTP client.
    pub fn new(config: NewRelicConfig) -> Result<Self, ConfigError> {
        let base = match (&config.url, config.region) {
            (Some(url), _) => prometheus::parse_url(url)?,
            (None, NewRelicRegion::Us) => prometheus::parse_url("https://metric-api.newrelic.com")?,
            (None, NewRelicRegion::Eu) => {
                prometheus::parse_url("https://metric-api.eu.newrelic.com")?
            }
        };
        check_duration("max_age", config.max_age, DEFAULT_MAX_AGE)?;
        check_duration("timeout", config.timeout, Duration::MAX)?;
        let headers = http::api_key_headers("api-key", &config.api_key, "gzip")?;
        Ok(Self {
            url: prometheus::join_path(&base, "metric/v1"),
            shape: Shape {
                tenant_attribute: config.tenant_attribute,
                max_age_ms: config.max_age.as_millis() as i64,
            },
            client: http::client(config.timeout),
            headers,
        })
    }

    async fn send_batch(&self, tenant: &TenantId, batch: &Batch) -> Outcome {
        let json = self.shape.encode(batch, tenant, crate::now_ms());
        if json.points == 0 {
            return Outcome::Delivered {
                bytes: 0,
                skipped: json.skipped,
            };
        }
        let body = http::gzip(&json.bytes);
        if body.len() > MAX_PAYLOAD_BYTES {
            return too_large(json.points, body.len());
        }
        let bytes = body.len() as u64;
        match http::post_bounded(&self.client, &self.url, &self.headers, body, MAX_ANSWER).await {
            Ok(answer) => classify(&answer, bytes, json.skipped),
            Err(outcome) => outcome,
        }
    }
}

/// Over New Relic's size limit: split the batch, unless it is one point.
fn too_large(points: u64, bytes: usize) -> Outcome {
    http::over_size_limit(
        points,
        format!(
            "the request would be {bytes} compressed bytes with {points} point(s); New Relic accepts 1,000,000"
        ),
    )
}

impl Backend for NewRelic {
    fn kind(&self) -> &'static str {
        "newrelic"
    }

    /// New Relic stores points in any time order within its window.
    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(req.tenant, req.batch))
    }
}

#[cfg(test)]
mod tests;
