//! OTLP/HTTP metrics: `POST {url}/v1/metrics` with a binary protobuf
//! `ExportMetricsServiceRequest` (`Content-Type: application/x-protobuf`), gzip-compressed
//! unless configured otherwise, to an OpenTelemetry Collector or any backend that speaks
//! OTLP (Prometheus `/api/v1/otlp`, Mimir `/otlp`, VictoriaMetrics `/opentelemetry`: give
//! that prefix as `url`).
//!
//! The protobuf messages are written here by hand with prost's derive, from
//! `opentelemetry-proto` (`collector/metrics/v1/metrics_service.proto`,
//! `metrics/v1/metrics.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`); only
//! the fields this backend writes or reads are declared (prost skips unknown fields when
//! decoding).
//!
//! Encoding, a pure function of the batch (a resend is byte-identical):
//! - one `ResourceMetrics` per request: resource attributes `service.name` (`service_name`),
//!   the tenant (`tenant_attribute`), then `resource_attributes` sorted by key; one
//!   `ScopeMetrics` with scope `metricspool` and the crate version;
//! - one `Metric` per metric name and data type, in order of first appearance; counters are a
//!   `Sum` with `is_monotonic = true` and `aggregation_temporality = CUMULATIVE` (they are
//!   running totals; no `start_time_unix_nano`: the spool does not know when a counter
//!   started); gauges, unknown kinds and the series of histograms and summaries (already
//!   flattened into `_bucket`/`_sum`/`_count`/quantile series) are a `Gauge`;
//! - one `NumberDataPoint` per sample: `attributes` = the labels with a non-empty value
//!   (sorted by name), `time_unix_nano` = the millisecond timestamp × 10^6, `as_double` =
//!   the value bit for bit (NaN and -0.0 included). Points of one series are grouped, in
//!   timestamp order (stable); series in order of first appearance;
//! - samples with a negative timestamp (before 1970, which `fixed64` cannot carry) are left
//!   out and counted as `skipped`.
//!
//! # Answers (OTLP specification, "OTLP/HTTP Response")
//!
//! 200 with no `partial_success` (or zero rejected points) is delivered. 200 with
//! `partial_success.rejected_data_points > 0` must not be retried: the batch goes to the
//! dead-letter log as [`RejectKind::Partial`] with the server's message. The server does
//! not say *which* points it refused, so the whole batch is dead-lettered; re-driving it
//! resends the accepted points too. 429, 502, 503 and 504 are retried (`Retry-After`
//! honoured); 413 is split by the forwarder; a 400 naming an out-of-order or duplicate
//! sample (Prometheus, Mimir) is [`RejectKind::Duplicate`] (already stored, on a resend);
//! every other status is permanent (the spec:
//! "all other 4xx or 5xx … MUST NOT be retried"), with the `google.rpc.Status` message
//! as the reason. A lost connection is retried. Response bodies are read up to 256 KiB;
//! a 200 whose body cannot be read counts as delivered.
//!
//! # Delivery
//!
//! At-least-once. OTLP has no idempotency key; the specification accepts duplicates after
//! a retry ("a deliberate choice"). What a resend does depends on the receiver: Prometheus
//! and Mimir ignore an identical newest sample and refuse an older one as out of order
//! (counted as already delivered on a resend); the Collector forwards it again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use prost::Message as _;
use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::datadog::check_duration;
use super::http::{self, RawAnswer};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::sample::{Batch, MetricKind, Series};
use crate::secret::Secret;
use crate::tenant::TenantId;

/// Default base URL: a local Collector's OTLP/HTTP port.
pub const DEFAULT_URL: &str = "http://localhost:4318";
/// Default largest request (uncompressed protobuf): 20 MiB, the limit the specification
/// recommends to servers.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 20 << 20;
/// Smallest `max_request_bytes`: 1 KiB.
pub const MIN_MAX_REQUEST_BYTES: usize = 1 << 10;
/// Default request timeout: 30 s, as every HTTP backend.
pub const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;
/// Instrumentation scope name of every request.
pub const SCOPE_NAME: &str = "metricspool";

/// Most bytes of an answer read.
const MAX_ANSWER: usize = 256 << 10;

/// Headers this backend sets itself.
const RESERVED: [&str; 3] = ["content-encoding", "content-type", "content-length"];

// ---------------------------------------------------------------------------------------
// Wire messages (opentelemetry-proto, v1)
// ---------------------------------------------------------------------------------------

/// `opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsServiceRequest {
    /// Metrics by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

/// `opentelemetry.proto.metrics.v1.ResourceMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceMetrics {
    /// The resource the metrics describe.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Metrics by instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
    /// Schema URL of the resource (unused: empty).
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Resource attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender (always 0 here).
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

/// `opentelemetry.proto.metrics.v1.ScopeMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeMetrics {
    /// The instrumentation scope.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Schema URL of the scope (unused: empty).
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `opentelemetry.proto.common.v1.InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    /// Scope name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Scope version.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `opentelemetry.proto.metrics.v1.Metric` (gauge and sum data only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Metric name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Description (unused: empty).
    #[prost(string, tag = "2")]
    pub description: String,
    /// Unit (unused: empty).
    #[prost(string, tag = "3")]
    pub unit: String,
    /// The data points, by type.
    #[prost(oneof = "metric::Data", tags = "5, 7")]
    pub data: Option<metric::Data>,
}

/// Nested types of [`Metric`].
pub mod metric {
    /// `Metric.data`: the types this backend writes.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// A gauge.
        #[prost(message, tag = "5")]
        Gauge(super::Gauge),
        /// A sum.
        #[prost(message, tag = "7")]
        Sum(super::Sum),
    }
}

/// `opentelemetry.proto.metrics.v1.Gauge`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
}

/// `opentelemetry.proto.metrics.v1.Sum`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sum {
    /// The points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    /// An [`AggregationTemporality`] value.
    #[prost(enumeration = "AggregationTemporality", tag = "2")]
    pub aggregation_temporality: i32,
    /// True for a sum that only grows (a counter).
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `opentelemetry.proto.metrics.v1.AggregationTemporality`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AggregationTemporality {
    /// Not set; invalid for a sum.
    Unspecified = 0,
    /// Each point covers the interval since the previous one.
    Delta = 1,
    /// Each point is the total since a fixed start.
    Cumulative = 2,
}

/// `opentelemetry.proto.metrics.v1.NumberDataPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NumberDataPoint {
    /// The point's attributes (our labels).
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    /// Start of the cumulative interval, ns since the epoch; 0 = unknown (always, here).
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// Time of the point, ns since the epoch.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// The value.
    #[prost(oneof = "number_data_point::Value", tags = "4, 6")]
    pub value: Option<number_data_point::Value>,
    /// Flags (none set).
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

/// Nested types of [`NumberDataPoint`].
pub mod number_data_point {
    /// `NumberDataPoint.value`.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A double (the only kind written here; a oneof field is written even when 0).
        #[prost(double, tag = "4")]
        AsDouble(f64),
        /// An integer.
        #[prost(sfixed64, tag = "6")]
        AsInt(i64),
    }
}

/// `opentelemetry.proto.common.v1.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `opentelemetry.proto.common.v1.AnyValue` (scalar values only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// The value.
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 7")]
    pub value: Option<any_value::Value>,
}

/// Nested types of [`AnyValue`].
pub mod any_value {
    /// `AnyValue.value` (arrays and key-value lists left out).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A string (every attribute written here).
        #[prost(string, tag = "1")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// An integer.
        #[prost(int64, tag = "3")]
        IntValue(i64),
        /// A double.
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        /// Bytes.
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
    }
}

/// `opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsServiceResponse {
    /// Set when part of the request was refused.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportMetricsPartialSuccess>,
}

/// `opentelemetry.proto.collector.metrics.v1.ExportMetricsPartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsPartialSuccess {
    /// Data points refused; 0 with a message is a warning.
    #[prost(int64, tag = "1")]
    pub rejected_data_points: i64,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `google.rpc.Status`, the body of an OTLP error answer (`details` left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// How the request body is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// gzip (fast level), `Content-Encoding: gzip`. The default.
    #[default]
    Gzip,
    /// No compression.
    None,
}

/// A header value: plain text (`"abc"`) for values that are not secret, or a [`Secret`]
/// (`{ env = "..." }`, `{ file = "..." }`) for credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderSource {
    /// A value written in the config.
    Plain(String),
    /// A value read from the environment or a file when the backend is built.
    Secret(Secret),
}

/// Configuration of an [`Otlp`] backend, as read from the daemon's TOML:
///
/// ```toml
/// url = "https://otlp.example.com"
/// headers = { authorization = { env = "OTLP_AUTH" } }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Base URL; `/v1/metrics` is appended. Default `http://localhost:4318` (a local
    /// Collector). Prometheus: `http://prometheus:9090/api/v1/otlp`; Mimir:
    /// `http://mimir/otlp`; VictoriaMetrics: `http://vm:8428/opentelemetry`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Body compression: `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: OtlpCompression,
    /// Extra headers sent with every request (credentials as secrets). Default none.
    /// `Content-Type`, `Content-Encoding` and `Content-Length` are refused.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSource>,
    /// The `service.name` resource attribute. Default `"metricspool"`; not empty.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Resource attribute carrying the spool tenant id. Default `"tenant"`; empty: none.
    #[serde(default = "http::default_tenant_label")]
    pub tenant_attribute: String,
    /// More resource attributes (string values), sent sorted by key. Default none; may not
    /// name `service.name` or the tenant attribute.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// True when the receiver stores points older than ones it holds for the same series
    /// (a Collector, VictoriaMetrics; Prometheus or Mimir only with an out-of-order
    /// window): the forwarder may then have several batches in flight. Default false.
    #[serde(default)]
    pub out_of_order: bool,
    /// Largest request sent, in bytes of uncompressed protobuf; a larger batch is split by
    /// the forwarder before sending. Default 20 MiB; at least 1 KiB. Set it to the
    /// receiver's limit (Collector `max_request_body_size`, 20 MiB by default).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s;
    /// more than zero.
    #[serde(default = "http::default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
}

fn default_url() -> String {
    DEFAULT_URL.to_owned()
}

fn default_service_name() -> String {
    SCOPE_NAME.to_owned()
}

fn default_max_request_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            compression: OtlpCompression::default(),
            headers: BTreeMap::new(),
            service_name: default_service_name(),
            tenant_attribute: http::default_tenant_label(),
            resource_attributes: BTreeMap::new(),
            out_of_order: false,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl OtlpConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// What the encoder needs of the configuration.
#[derive(Debug, Clone)]
struct Shape {
    service_name: String,
    tenant_attribute: String,
    resource_attributes: BTreeMap<String, String>,
}

impl Shape {
    fn resource(&self, tenant: &TenantId) -> Resource {
        let mut attributes = vec![string_kv("service.name", &self.service_name)];
        if !self.tenant_attribute.is_empty() {
            attributes.push(string_kv(&self.tenant_attribute, tenant.as_str()));
        }
        attributes.extend(
            self.resource_attributes
                .iter()
                .map(|(k, v)| string_kv(k, v)),
        );
        Resource {
            attributes,
            dropped_attributes_count: 0,
        }
    }

    /// The request for `batch` and the samples left out (see the module docs).
    fn request(&self, batch: &Batch, tenant: &TenantId) -> (ExportMetricsServiceRequest, u64) {
        let (metrics, skipped) = metrics(batch);
        let scope = ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: SCOPE_NAME.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
            metrics,
            schema_url: String::new(),
        };
        let resource_metrics = vec![ResourceMetrics {
            resource: Some(self.resource(tenant)),
            scope_metrics: vec![scope],
            schema_url: String::new(),
        }];
        (ExportMetricsServiceRequest { resource_metrics }, skipped)
    }
}

fn is_sum(kind: MetricKind) -> bool {
    kind == MetricKind::Counter
}

/// A series' points `(time_unix_nano, value)` and the index of its `Metric`.
type Grouped<'a> = (usize, &'a Series, Vec<(u64, f64)>);

/// One `Metric` per (name, gauge or sum), points grouped by series, and the samples left
/// out for a negative timestamp.
fn metrics(batch: &Batch) -> (Vec<Metric>, u64) {
    // Series in order of first appearance, each with its metric slot and points.
    let mut series_index: HashMap<&Series, usize> = HashMap::new();
    let mut grouped: Vec<Grouped<'_>> = Vec::new();
    let mut metric_index: HashMap<(&str, bool), usize> = HashMap::new();
    let mut out: Vec<Metric> = Vec::new();
    let mut skipped = 0u64;
    for entry in batch.entries() {
        let points: Vec<(u64, f64)> = entry
            .samples
            .iter()
            .filter_map(|s| Some((time_unix_nano(s.timestamp_ms)?, s.value)))
            .collect();
        skipped += (entry.samples.len() - points.len()) as u64;
        if points.is_empty() {
            continue;
        }
        if let Some(&i) = series_index.get(&entry.series) {
            grouped[i].2.extend(points);
            continue;
        }
        let key = (entry.series.name(), is_sum(entry.kind));
        let m = *metric_index.entry(key).or_insert_with(|| {
            out.push(empty_metric(key.0, key.1));
            out.len() - 1
        });
        series_index.insert(&entry.series, grouped.len());
        grouped.push((m, &entry.series, points));
    }
    for (m, series, mut points) in grouped {
        // Stable: equal timestamps keep their batch order.
        points.sort_by_key(|p| p.0);
        let attributes: Vec<KeyValue> = series
            .labels()
            .iter()
            .filter(|l| !l.value.is_empty())
            .map(|l| string_kv(&l.name, &l.value))
            .collect();
        let data_points = data_points_of(&mut out[m]);
        data_points.extend(points.into_iter().map(|(t, v)| NumberDataPoint {
            attributes: attributes.clone(),
            start_time_unix_nano: 0,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            flags: 0,
        }));
    }
    (out, skipped)
}

/// Milliseconds to nanoseconds; `None` before 1970.
fn time_unix_nano(ms: i64) -> Option<u64> {
    u64::try_from(ms).ok()?.checked_mul(1_000_000)
}

fn empty_metric(name: &str, sum: bool) -> Metric {
    let data = if sum {
        metric::Data::Sum(Sum {
            data_points: Vec::new(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })
    } else {
        metric::Data::Gauge(Gauge {
            data_points: Vec::new(),
        })
    };
    Metric {
        name: name.to_owned(),
        description: String::new(),
        unit: String::new(),
        data: Some(data),
    }
}

fn data_points_of(m: &mut Metric) -> &mut Vec<NumberDataPoint> {
    match m.data.get_or_insert_with(|| {
        metric::Data::Gauge(Gauge {
            data_points: Vec::new(),
        })
    }) {
        metric::Data::Gauge(g) => &mut g.data_points,
        metric::Data::Sum(s) => &mut s.data_points,
    }
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

/// OTLP/HTTP classification (see the module docs).
fn classify(a: &RawAnswer, bytes: u64, skipped: u64) -> Outcome {
    let retry = |reason| Outcome::Retry {
        reason,
        retry_after: a.retry_after(),
        detail: error_detail(a),
    };
    match a.status {
        200..=299 => match partial_success(a) {
            Some((rejected, message)) if rejected > 0 => Outcome::Rejected {
                kind: RejectKind::Partial,
                status: Some(a.status),
                reason: format!(
                    "OTLP partial success: the receiver refused {rejected} data point(s) (which ones is not reported): {message}"
                ),
            },
            _ => Outcome::Delivered { bytes, skipped },
        },
        429 => retry(RetryReason::RateLimited),
        502..=504 => retry(RetryReason::ServerError),
        413 => Outcome::Rejected {
            kind: RejectKind::TooLarge,
            status: Some(413),
            reason: error_detail(a),
        },
        // Prometheus and Mimir refuse a sample older than the newest of its series (a
        // resend after a crash) with 400 "out of order" / "duplicate sample": on a resend
        // that means already stored, as for remote write.
        400 if prometheus::names_stored_sample_conflict(&error_detail(a)) => Outcome::Rejected {
            kind: RejectKind::Duplicate,
            status: Some(400),
            reason: error_detail(a),
        },
        status => Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: Some(status),
            reason: error_detail(a),
        },
    }
}

fn is_json(a: &RawAnswer) -> bool {
    a.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// `(rejected_data_points, error_message)` of a success answer, if it has a readable
/// `partial_success` (binary protobuf, or proto-JSON when the server answered JSON).
fn partial_success(a: &RawAnswer) -> Option<(i64, String)> {
    if a.body.is_empty() {
        return None;
    }
    if a.truncated {
        tracing::warn!(
            "OTLP answer longer than {MAX_ANSWER} bytes; its partial_success was not read"
        );
        return None;
    }
    if is_json(a) {
        let v: serde_json::Value = serde_json::from_slice(&a.body).ok()?;
        let p = v.get("partialSuccess")?;
        let rejected = match p.get("rejectedDataPoints")? {
            serde_json::Value::String(s) => s.parse().ok()?,
            n => n.as_i64()?,
        };
        let message = p.get("errorMessage").and_then(|m| m.as_str()).unwrap_or("");
        return Some((rejected, message.to_owned()));
    }
    match ExportMetricsServiceResponse::decode(a.body.as_slice()) {
        Ok(r) => r
            .partial_success
            .map(|p| (p.rejected_data_points, p.error_message)),
        Err(e) => {
            tracing::warn!(error = %e, "OTLP answer is not an ExportMetricsServiceResponse; counted as delivered");
            None
        }
    }
}

/// Runs both answer decoders (protobuf and proto-JSON partial success, error detail) over
/// `body`; true when a partial success was read. For the fuzz target.
pub(crate) fn decode_answer(body: &[u8]) -> bool {
    let mut a = RawAnswer {
        status: 200,
        headers: reqwest::header::HeaderMap::new(),
        body: body.to_vec(),
        truncated: false,
    };
    let binary = partial_success(&a).is_some();
    let _ = error_detail(&a);
    a.headers.insert(
        header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    partial_success(&a).is_some() || binary
}

/// Status and reason of an error answer: the `google.rpc.Status` message of a protobuf
/// body, else the body as text.
fn error_detail(a: &RawAnswer) -> String {
    if !is_json(a)
        && !a.truncated
        && let Ok(s) = Status::decode(a.body.as_slice())
        && !s.message.is_empty()
    {
        return format!("HTTP {}: {} (code {})", a.status, s.message, s.code);
    }
    format!("HTTP {}: {}", a.status, a.text())
}

// ---------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------

/// OTLP/HTTP metrics exporter to one receiver, for every tenant (each request carries its
/// tenant as a resource attribute).
#[derive(Debug)]
pub struct Otlp {
    url: Url,
    shape: Shape,
    compression: OtlpCompression,
    out_of_order: bool,
    max_request_bytes: usize,
    client: reqwest::Client,
    headers: HeaderMap,
}

impl Otlp {
    /// Reads the secret headers, checks the configuration and builds the HTTP client.
    pub fn new(config: OtlpConfig) -> Result<Self, ConfigError> {
        let base = prometheus::parse_url(&config.url)?;
        check_config(&config)?;
        let mut extra = Vec::with_capacity(config.headers.len());
        for (name, source) in &config.headers {
            let value = match source {
                HeaderSource::Plain(v) => v.clone(),
                HeaderSource::Secret(s) => s.resolve().map_err(|e| ConfigError::Header {
                    name: name.clone(),
                    reason: e.to_string(),
                })?,
            };
            extra.push((name.clone(), value));
        }
        let mut headers = prometheus::checked_headers(&extra, &RESERVED, false)?;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if config.compression == OtlpCompression::Gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(Self {
            url: prometheus::join_path(&base, "v1/metrics"),
            shape: Shape {
                service_name: config.service_name,
                tenant_attribute: config.tenant_attribute,
                resource_attributes: config.resource_attributes,
            },
            compression: config.compression,
            out_of_order: config.out_of_order,
            max_request_bytes: config.max_request_bytes,
            client: http::client(config.timeout),
            headers,
        })
    }

    async fn send_batch(&self, tenant: &TenantId, batch: &Batch) -> Outcome {
        let (request, skipped) = self.shape.request(batch, tenant);
        let points = batch.sample_count() as u64 - skipped;
        if points == 0 {
            return Outcome::Delivered { bytes: 0, skipped };
        }
        let raw = request.encode_to_vec();
        if raw.len() > self.max_request_bytes {
            return self.too_large(points, raw.len());
        }
        let body = match self.compression {
            OtlpCompression::Gzip => http::gzip(&raw),
            OtlpCompression::None => raw,
        };
        let bytes = body.len() as u64;
        match http::post_bounded(&self.client, &self.url, &self.headers, body, MAX_ANSWER).await {
            Ok(answer) => classify(&answer, bytes, skipped),
            Err(outcome) => outcome,
        }
    }

    /// Over `max_request_bytes`: split the batch, unless it is one point.
    fn too_large(&self, points: u64, bytes: usize) -> Outcome {
        http::over_size_limit(
            points,
            format!(
                "the request would be {bytes} bytes with {points} point(s); max_request_bytes is {}",
                self.max_request_bytes
            ),
        )
    }
}

fn check_config(config: &OtlpConfig) -> Result<(), ConfigError> {
    let bad = |field, reason: String| Err(ConfigError::Field { field, reason });
    if config.service_name.is_empty() {
        return bad("service_name", "it must not be empty".to_owned());
    }
    let taken = ["service.name", config.tenant_attribute.as_str()];
    if let Some(k) = config
        .resource_attributes
        .keys()
        .find(|k| taken.contains(&k.as_str()))
    {
        return bad(
            "resource_attributes",
            format!("{k:?} is set by service_name or tenant_attribute"),
        );
    }
    if config.max_request_bytes < MIN_MAX_REQUEST_BYTES {
        return bad(
            "max_request_bytes",
            format!("{} is less than 1 KiB", config.max_request_bytes),
        );
    }
    check_duration("timeout", config.timeout, Duration::MAX)
}

impl Backend for Otlp {
    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn accepts_out_of_order(&self) -> bool {
        self.out_of_order
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(req.tenant, req.batch))
    }
}

#[cfg(test)]
mod tests;
