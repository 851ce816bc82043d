//! Datadog metrics API v2: `POST {base}/api/v2/series` with a JSON `MetricPayload`,
//! compressed with zstd (`Content-Encoding: zstd1`, Datadog's name for it) or gzip, and the
//! API key in `DD-API-KEY`. The base is `https://api.<site>` unless `url` overrides it.
//!
//! Encoding, a pure function of the batch and the clock (see "Time window"):
//! - one entry in `series` per series (entries of one series merged, in order of first
//!   appearance), its points sorted by timestamp (stable);
//! - `type`: 3 (gauge) for gauges **and for counters, histogram and summary series**, 0
//!   (unspecified) for unknown kinds. Our counters are Prometheus-style cumulative totals;
//!   Datadog's `count` (1) is the number of events *in an interval* and is summed when
//!   rolled up, so sending a running total as `count` would add totals together and be
//!   wrong by orders of magnitude. As gauges the totals are stored as they are; take
//!   rates in Datadog (`.as_rate()`, `per_second()`);
//! - timestamps in whole seconds (milliseconds truncated towards −∞). Two samples of one
//!   series in the same second are both sent; which one Datadog keeps is not documented
//!   (Historical Metrics Ingestion keeps the last submitted);
//! - `tags`: `<tenant_tag>:<tenant>` first, then `name:value` for every label with a
//!   non-empty value, in label-name order. A label named like the tenant tag is sent as
//!   `exported_<name>` so that data cannot claim another tenant;
//! - the label named `host_label` (default `host`) becomes the `resources` entry
//!   `{"name": <value>, "type": "host"}` instead of a tag;
//! - NaN and ±Inf cannot be written in JSON: those samples are left out and counted in
//!   [`Outcome::Delivered`]'s `skipped`.
//!
//! # Time window
//!
//! Datadog does not ingest points more than 1 h old or more than 10 min in the future
//! (unless Historical Metrics Ingestion is enabled for the metric); it answers 202 and drops
//! them. Such points are left out of the request and counted as `skipped` (the forwarder
//! logs them and counts them as unsupported), so a backlog older than `max_age` after an
//! outage is *counted* data loss, never silent. Because the window depends on the clock, a
//! resend much later than the first attempt may leave out more points.
//!
//! # Limits
//!
//! A body over 512,000 bytes (compressed) or 5,242,880 bytes (uncompressed JSON) is not
//! sent: the batch is returned as [`RejectKind::TooLarge`] and the forwarder sends it in
//! halves. One point alone over the limit is [`RejectKind::Permanent`].
//!
//! # Delivery
//!
//! At-least-once: Datadog has no idempotency key, and its handling of a resent point (same
//! metric, tags and timestamp) is documented only for Historical Metrics Ingestion (the last
//! value wins). 202 means "accepted for processing": errors after it are not reported.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::http::{self, RawAnswer};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::sample::{Batch, MetricKind, Series};
use crate::secret::Secret;
use crate::tenant::TenantId;

/// Largest request body Datadog accepts (after compression): 512,000 bytes.
pub const MAX_PAYLOAD_BYTES: usize = 512_000;
/// Compressed payloads must decompress to less than this: 5,242,880 bytes.
pub const MAX_DECOMPRESSED_BYTES: usize = 5_242_880;
/// Default oldest point sent: 1 h, Datadog's window without Historical Metrics Ingestion.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest `max_age`: 465 days (15 months, Datadog's default retention).
pub const MAX_MAX_AGE: Duration = Duration::from_secs(465 * 86_400);
/// Points further ahead of the local clock than this are not sent: 10 min.
pub const MAX_AHEAD: Duration = Duration::from_secs(600);
/// Default request timeout: 30 s, as every HTTP backend.
pub const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;

/// The intake types of the v2 API (`MetricIntakeType`).
const TYPE_UNSPECIFIED: u8 = 0;
const TYPE_GAUGE: u8 = 3;

/// Bytes of an answer read (errors are short JSON).
const MAX_ANSWER: usize = 64 << 10;

/// How the request body is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatadogCompression {
    /// zstd level 3, `Content-Encoding: zstd1`. The default.
    #[default]
    Zstd,
    /// gzip (fast level), `Content-Encoding: gzip`.
    Gzip,
}

/// Configuration of a [`Datadog`] backend, as read from the daemon's TOML:
///
/// ```toml
/// api_key = { env = "DD_API_KEY" }
/// site = "datadoghq.eu"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    /// The API key (`DD-API-KEY`), from `{ env = "..." }` or `{ file = "..." }`; read when
    /// the backend is built. Required. It selects the organization, and works only on the
    /// organization's site.
    pub api_key: Secret,
    /// The Datadog site: `datadoghq.com` (default, US1), `us3.datadoghq.com`,
    /// `us5.datadoghq.com`, `datadoghq.eu`, `ap1.datadoghq.com`, `ap2.datadoghq.com`,
    /// `uk1.datadoghq.com`, `ddog-gov.com`, `us2.ddog-gov.com`. Requests go to
    /// `https://api.<site>`. A host name: no scheme, no path.
    #[serde(default = "default_site")]
    pub site: String,
    /// Base URL overriding the one derived from `site` (a proxy, or a local server in
    /// tests), e.g. `http://127.0.0.1:8080`; `/api/v2/series` is appended. Default none.
    #[serde(default)]
    pub url: Option<String>,
    /// Body compression. Default `zstd`.
    #[serde(default)]
    pub compression: DatadogCompression,
    /// Tag carrying the spool tenant id (`tenant:<id>`). Default `"tenant"`; empty: no
    /// tenant tag.
    #[serde(default = "http::default_tenant_label")]
    pub tenant_tag: String,
    /// Label whose value becomes the point's host resource. Default `"host"`; empty: every
    /// label is a tag.
    #[serde(default = "default_host_label")]
    pub host_label: String,
    /// Points older than this are not sent (counted as skipped). Default 1 h (Datadog's
    /// window); raise it only for metrics with Historical Metrics Ingestion enabled.
    /// 1 s to 465 days.
    #[serde(default = "default_max_age", with = "crate::secret::duration")]
    pub max_age: Duration,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s;
    /// more than zero.
    #[serde(default = "http::default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
}

fn default_site() -> String {
    "datadoghq.com".to_owned()
}

fn default_host_label() -> String {
    "host".to_owned()
}

fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

impl DatadogConfig {
    /// A configuration with `api_key` and every other field at its default.
    pub fn new(api_key: Secret) -> Self {
        Self {
            api_key,
            site: default_site(),
            url: None,
            compression: DatadogCompression::default(),
            tenant_tag: http::default_tenant_label(),
            host_label: default_host_label(),
            max_age: DEFAULT_MAX_AGE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the encoder needs of the configuration.
#[derive(Debug, Clone)]
struct Shape {
    tenant_tag: String,
    host_label: String,
    max_age_ms: i64,
}

/// A JSON body and what went into it.
#[derive(Debug)]
struct Json {
    bytes: Vec<u8>,
    points: u64,
    skipped: u64,
}

#[derive(Serialize)]
struct Payload<'a> {
    series: Vec<SeriesOut<'a>>,
}

#[derive(Serialize)]
struct SeriesOut<'a> {
    metric: &'a str,
    #[serde(rename = "type")]
    kind: u8,
    points: Vec<Point>,
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<Resource<'a>>,
}

#[derive(Serialize)]
struct Point {
    timestamp: i64,
    value: f64,
}

#[derive(Serialize)]
struct Resource<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

fn intake_type(kind: MetricKind) -> u8 {
    match kind {
        MetricKind::Unknown => TYPE_UNSPECIFIED,
        // Cumulative totals are gauges to Datadog (see the module docs).
        MetricKind::Gauge | MetricKind::Counter | MetricKind::Histogram | MetricKind::Summary => {
            TYPE_GAUGE
        }
    }
}

impl Shape {
    /// The JSON payload of `batch` for `tenant` at `now_ms` (see the module docs).
    fn encode(&self, batch: &Batch, tenant: &TenantId, now_ms: i64) -> Json {
        let oldest = now_ms.saturating_sub(self.max_age_ms);
        let newest = now_ms.saturating_add(MAX_AHEAD.as_millis() as i64);
        let mut index: HashMap<&Series, usize> = HashMap::new();
        let mut series: Vec<SeriesOut<'_>> = Vec::new();
        let (mut points, mut skipped) = (0u64, 0u64);
        for entry in batch.entries() {
            let kept = entry
                .samples
                .iter()
                .filter(|s| s.value.is_finite() && (oldest..=newest).contains(&s.timestamp_ms));
            let kept: Vec<Point> = kept
                .map(|s| Point {
                    timestamp: s.timestamp_ms.div_euclid(1000),
                    value: s.value,
                })
                .collect();
            skipped += (entry.samples.len() - kept.len()) as u64;
            points += kept.len() as u64;
            if kept.is_empty() {
                continue;
            }
            match index.get(&entry.series) {
                Some(&i) => series[i].points.extend(kept),
                None => {
                    index.insert(&entry.series, series.len());
                    series.push(self.series_out(&entry.series, entry.kind, tenant, kept));
                }
            }
        }
        for s in &mut series {
            // Stable: points in the same second keep their batch order.
            s.points.sort_by_key(|p| p.timestamp);
        }
        let bytes = serde_json::to_vec(&Payload { series })
            .expect("plain structs with string keys always serialize");
        Json {
            bytes,
            points,
            skipped,
        }
    }

    fn series_out<'a>(
        &self,
        series: &'a Series,
        kind: MetricKind,
        tenant: &TenantId,
        points: Vec<Point>,
    ) -> SeriesOut<'a> {
        let mut tags = Vec::with_capacity(series.labels().len() + 1);
        if !self.tenant_tag.is_empty() {
            tags.push(format!("{}:{tenant}", self.tenant_tag));
        }
        let mut resources = Vec::new();
        for l in series.labels().iter().filter(|l| !l.value.is_empty()) {
            if !self.host_label.is_empty() && *l.name == *self.host_label {
                resources.push(Resource {
                    name: &l.value,
                    kind: "host",
                });
            } else if *l.name == *self.tenant_tag {
                tags.push(format!("exported_{}:{}", l.name, l.value));
            } else {
                tags.push(format!("{}:{}", l.name, l.value));
            }
        }
        SeriesOut {
            metric: series.name(),
            kind: intake_type(kind),
            points,
            tags,
            resources,
        }
    }
}

/// Datadog classification: 2xx delivered; 408, 429 and 5xx retried (`Retry-After`, else
/// Datadog's `X-RateLimit-Reset`); 413 too large; everything else (400 bad payload, 403 bad
/// API key...) permanent, with the body as the reason.
fn classify(a: &RawAnswer, bytes: u64, skipped: u64) -> Outcome {
    let detail = || format!("HTTP {}: {}", a.status, a.text());
    let retry = |reason| Outcome::Retry {
        reason,
        retry_after: a.retry_after().or_else(|| rate_limit_reset(&a.headers)),
        detail: detail(),
    };
    match a.status {
        200..=299 => Outcome::Delivered { bytes, skipped },
        429 => retry(RetryReason::RateLimited),
        // 408: Datadog did not get the whole request in time; nothing was processed.
        408 | 500..=599 => retry(RetryReason::ServerError),
        413 => Outcome::Rejected {
            kind: RejectKind::TooLarge,
            status: Some(413),
            reason: detail(),
        },
        403 => Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: Some(403),
            reason: format!(
                "{} (check api_key: a key works only on its organization's site)",
                detail()
            ),
        },
        status => Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: Some(status),
            reason: detail(),
        },
    }
}

/// `X-RateLimit-Reset`: seconds until the rate-limit period ends.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("x-ratelimit-reset")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Datadog metrics API v2 for every tenant of one organization (one API key).
#[derive(Debug)]
pub struct Datadog {
    url: Url,
    shape: Shape,
    compression: DatadogCompression,
    client: reqwest::Client,
    headers: HeaderMap,
}

impl Datadog {
    /// Reads the API key, checks the configuration and builds the HTTP client.
    pub fn new(config: DatadogConfig) -> Result<Self, ConfigError> {
        let base = match &config.url {
            Some(url) => prometheus::parse_url(url)?,
            None => site_url(&config.site)?,
        };
        check_duration("max_age", config.max_age, MAX_MAX_AGE)?;
        check_duration("timeout", config.timeout, Duration::MAX)?;
        let headers = http::api_key_headers(
            "dd-api-key",
            &config.api_key,
            match config.compression {
                DatadogCompression::Zstd => "zstd1",
                DatadogCompression::Gzip => "gzip",
            },
        )?;
        Ok(Self {
            url: prometheus::join_path(&base, "api/v2/series"),
            shape: Shape {
                tenant_tag: config.tenant_tag,
                host_label: config.host_label,
                max_age_ms: config.max_age.as_millis() as i64,
            },
            compression: config.compression,
            client: http::client(config.timeout),
            headers,
        })
    }

    fn compress(&self, json: &[u8]) -> Vec<u8> {
        match self.compression {
            DatadogCompression::Zstd => zstd::bulk::compress(json, 3)
                .expect("zstd compresses any input into a Vec at level 3"),
            DatadogCompression::Gzip => http::gzip(json),
        }
    }

    async fn send_batch(&self, tenant: &TenantId, batch: &Batch) -> Outcome {
        let json = self.shape.encode(batch, tenant, crate::now_ms());
        if json.points == 0 {
            // Nothing Datadog would store (empty, out of its window, or not finite).
            return Outcome::Delivered {
                bytes: 0,
                skipped: json.skipped,
            };
        }
        if json.bytes.len() >= MAX_DECOMPRESSED_BYTES {
            return too_large(json.points, format!("{} bytes of JSON", json.bytes.len()));
        }
        let body = self.compress(&json.bytes);
        if body.len() > MAX_PAYLOAD_BYTES {
            return too_large(json.points, format!("{} compressed bytes", body.len()));
        }
        let bytes = body.len() as u64;
        match http::post_bounded(&self.client, &self.url, &self.headers, body, MAX_ANSWER).await {
            Ok(answer) => classify(&answer, bytes, json.skipped),
            Err(outcome) => outcome,
        }
    }
}

/// Over Datadog's size limits: split the batch, unless it is one point.
fn too_large(points: u64, what: String) -> Outcome {
    let limits = "Datadog accepts 512,000 compressed and less than 5,242,880 uncompressed bytes";
    http::over_size_limit(
        points,
        format!("the request would be {what} with {points} point(s); {limits}"),
    )
}

/// `https://api.<site>` for a bare host name.
fn site_url(site: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::Field {
        field: "site",
        reason: format!("{site:?}: {reason}"),
    };
    let host_like = site
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if site.is_empty() || !host_like {
        return Err(bad("a site is a host name such as datadoghq.eu"));
    }
    Url::parse(&format!("https://api.{site}")).map_err(|e| bad(&e.to_string()))
}

/// Refuses zero and durations above `max`.
pub(crate) fn check_duration(
    field: &'static str,
    d: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if d.is_zero() || d > max {
        return Err(http::field_error(
            field,
            format!("{d:?} is out of range (more than zero, at most {max:?})"),
        ));
    }
    Ok(())
}

impl Backend for Datadog {
    fn kind(&self) -> &'static str {
        "datadog"
    }

    /// Datadog stores points in any time order within its window.
    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(req.tenant, req.batch))
    }
}

#[cfg(test)]
mod tests;
