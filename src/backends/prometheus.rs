//! Prometheus remote write 1.0: a protobuf `WriteRequest`, snappy block format, POSTed to
//! any receiver (Prometheus with `--web.enable-remote-write-receiver`, Thanos, ...).
//!
//! This file also holds what the other remote-write backends ([`super::mimir`],
//! [`super::victoriametrics`]) share: the encoder, the sender and the status classification,
//! plus the configuration checks every HTTP backend uses ([`ConfigError`]).
//!
//! Encoding is a pure function of the batch, so a resend is byte-identical:
//! - labels are `__name__` plus the series labels, sorted by name in byte order (uppercase
//!   names sort before `__name__`, lowercase ones after); labels with an empty value are
//!   left out (an empty value means "no such label" in Prometheus);
//! - entries of one series are merged into one `TimeSeries`, its samples sorted by timestamp
//!   (stable: equal timestamps keep batch order); series are ordered by first appearance;
//! - values are written bit for bit (NaN payloads such as the staleness marker, and -0.0:
//!   the value field is always written, even when it is zero).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::http::{self, Answer, Auth};
use super::{Backend, BoxFuture, Outcome, RejectKind, SendRequest};
use crate::sample::{Batch, Series};

/// Largest decompressed `WriteRequest` [`decode_write_request`] accepts: 64 MiB.
pub const MAX_DECODED_LEN: usize = 64 << 20;

/// Default request timeout of every remote-write backend: 30 s (Prometheus' `remote_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers the remote-write spec reserves: users must not override them.
const RESERVED: [&str; 5] = [
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "x-prometheus-remote-write-version",
];

const USER_AGENT: &str = concat!("metricspool/", env!("CARGO_PKG_VERSION"));

// ---------------------------------------------------------------------------------------
// Wire messages (prometheus/prompb/types.proto and remote.proto, version 1.0)
// ---------------------------------------------------------------------------------------

/// `prometheus.WriteRequest`: the body of a remote-write 1.0 request, before snappy.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: one label set and its samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
///
/// `value` is marked `required` so it is written even when it compares equal to zero: a
/// proto3 scalar equal to its default is otherwise left out, which would turn -0.0 into
/// +0.0. A receiver reads an explicitly written default like any other value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value, bit for bit.
    #[prost(double, required, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding
// ---------------------------------------------------------------------------------------

/// Why a batch could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The protobuf is larger than a snappy block can hold (4 GiB): split the batch.
    #[error(
        "the encoded write request ({bytes} bytes) is larger than snappy can compress; split the batch"
    )]
    TooLarge {
        /// Size of the uncompressed protobuf.
        bytes: usize,
    },
}

/// Why a remote-write body could not be decoded. Nothing was read from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The snappy header announces more than [`MAX_DECODED_LEN`] bytes (an ingest endpoint
    /// answers 413).
    #[error("the write request decompresses to {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Announced decompressed size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not valid snappy block format.
    #[error("the body is not snappy block-compressed data: {0}")]
    Snappy(String),
    /// The decompressed bytes are not a valid `prometheus.WriteRequest`.
    #[error("the body is not a valid prometheus.WriteRequest: {0}")]
    Protobuf(String),
}

/// Builds the `WriteRequest` for a batch (see the module docs for the exact rules).
pub fn write_request(batch: &Batch) -> WriteRequest {
    let mut index: HashMap<Vec<Label>, usize> = HashMap::new();
    let mut timeseries: Vec<TimeSeries> = Vec::new();
    for entry in batch.entries() {
        let labels = labels_of(&entry.series);
        let samples = entry.samples.iter().map(|s| Sample {
            value: s.value,
            timestamp: s.timestamp_ms,
        });
        if let Some(&i) = index.get(&labels) {
            timeseries[i].samples.extend(samples);
        } else {
            index.insert(labels.clone(), timeseries.len());
            timeseries.push(TimeSeries {
                labels,
                samples: samples.collect(),
            });
        }
    }
    for ts in &mut timeseries {
        // `sort_by_key` is stable: equal timestamps keep their batch order.
        ts.samples.sort_by_key(|s| s.timestamp);
    }
    WriteRequest { timeseries }
}

/// `__name__` plus the non-empty labels of `series`, sorted by name in byte order.
fn labels_of(series: &Series) -> Vec<Label> {
    let rest = series.labels().iter().filter(|l| !l.value.is_empty());
    let mut labels: Vec<Label> = rest
        .map(|l| Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect();
    // Series labels are sorted and never named `__name__`; insert it in its byte-order place.
    let at = labels.partition_point(|l| l.name.as_str() < "__name__");
    labels.insert(
        at,
        Label {
            name: "__name__".to_owned(),
            value: series.name().to_owned(),
        },
    );
    labels
}

/// The snappy-compressed (block format) protobuf body for a batch. Deterministic: the same
/// batch always gives the same bytes.
pub fn encode(batch: &Batch) -> Result<Vec<u8>, EncodeError> {
    let raw = encode_raw(batch);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|_| EncodeError::TooLarge { bytes: raw.len() })
}

/// A series compared and hashed by the label set it is sent with: name plus the non-empty
/// labels (two series that differ only in empty-valued labels are one remote-write series).
struct LabelSetKey<'a>(&'a Series);

impl LabelSetKey<'_> {
    fn sent_labels(&self) -> impl Iterator<Item = &crate::sample::Label> {
        self.0.labels().iter().filter(|l| !l.value.is_empty())
    }
}

impl PartialEq for LabelSetKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name() && self.sent_labels().eq(other.sent_labels())
    }
}

impl Eq for LabelSetKey<'_> {}

impl std::hash::Hash for LabelSetKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.name().hash(h);
        for l in self.sent_labels() {
            l.name.hash(h);
            l.value.hash(h);
        }
    }
}

/// The protobuf of [`write_request`]`(batch)`, byte for byte what prost writes for it, but
/// written straight from the batch: no `Label` strings are cloned and no `WriteRequest` is
/// built (building it cost several allocations per label and was the forwarder's hot spot).
fn encode_raw(batch: &Batch) -> Vec<u8> {
    let entries = batch.entries();
    // Entries grouped by label set, groups in order of first appearance; `next` chains the
    // later entries of a group.
    let mut index: HashMap<LabelSetKey<'_>, usize> = HashMap::with_capacity(entries.len());
    let mut heads: Vec<usize> = Vec::with_capacity(entries.len());
    let mut tails: Vec<usize> = Vec::with_capacity(entries.len());
    let mut next: Vec<usize> = vec![usize::MAX; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        match index.entry(LabelSetKey(&e.series)) {
            std::collections::hash_map::Entry::Occupied(g) => {
                let g = *g.get();
                next[tails[g]] = i;
                tails[g] = i;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(heads.len());
                heads.push(i);
                tails.push(i);
            }
        }
    }
    drop(index);

    let mut out = Vec::with_capacity(batch.sample_count() * 24 + entries.len() * 160);
    let mut merged: Vec<crate::sample::Sample> = Vec::new();
    for &head in &heads {
        let series = &entries[head].series;
        let samples: &[crate::sample::Sample] = if next[head] == usize::MAX
            && entries[head].samples.is_sorted_by_key(|s| s.timestamp_ms)
        {
            &entries[head].samples
        } else {
            merged.clear();
            let mut i = head;
            while i != usize::MAX {
                merged.extend_from_slice(&entries[i].samples);
                i = next[i];
            }
            // Stable: equal timestamps keep their batch order, as in `write_request`.
            merged.sort_by_key(|s| s.timestamp_ms);
            &merged
        };
        // `__name__` goes in its byte-order place among the sorted, non-empty labels (found
        // once: comparing every label name with it was a tenth of the encoding time).
        let all = series.labels();
        let split = all.partition_point(|l| l.name.as_str() < "__name__");
        let (lo, hi) = all.split_at(split);
        let before = || lo.iter().filter(|l| !l.value.is_empty());
        let after = || hi.iter().filter(|l| !l.value.is_empty());
        let body_len = before()
            .chain(after())
            .map(|l| field_len(label_len(&l.name, &l.value)))
            .sum::<usize>()
            + field_len(label_len("__name__", series.name()))
            + samples
                .iter()
                .map(|s| field_len(sample_len(s.timestamp_ms)))
                .sum::<usize>();
        out.push(0x0a); // WriteRequest.timeseries
        put_varint(&mut out, body_len as u64);
        for l in before() {
            put_label(&mut out, &l.name, &l.value);
        }
        put_label(&mut out, "__name__", series.name());
        for l in after() {
            put_label(&mut out, &l.name, &l.value);
        }
        for s in samples {
            out.push(0x12); // TimeSeries.samples
            put_varint(&mut out, sample_len(s.timestamp_ms) as u64);
            out.push(0x09); // Sample.value, always written (`required`)
            out.extend_from_slice(&s.value.to_bits().to_le_bytes());
            if s.timestamp_ms != 0 {
                out.push(0x10); // Sample.timestamp, left out when 0 (proto3)
                put_varint(&mut out, s.timestamp_ms as u64);
            }
        }
    }
    out
}

fn varint_len(v: u64) -> usize {
    // 7 bits per byte; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of a length-delimited field (tag, length, body) with a body of `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Length of a string field; proto3 leaves an empty string out.
fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

fn label_len(name: &str, value: &str) -> usize {
    string_field_len(name) + string_field_len(value)
}

fn sample_len(timestamp_ms: i64) -> usize {
    9 + if timestamp_ms == 0 {
        0
    } else {
        1 + varint_len(timestamp_ms as u64)
    }
}

fn put_string_field(out: &mut Vec<u8>, tag: u8, s: &str) {
    if !s.is_empty() {
        out.push(tag);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn put_label(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x0a); // TimeSeries.labels
    put_varint(out, label_len(name, value) as u64);
    put_string_field(out, 0x0a, name);
    put_string_field(out, 0x12, value);
}

/// Decodes a remote-write 1.0 body: snappy block format, then protobuf. The decompressed
/// size is checked against [`MAX_DECODED_LEN`] before anything is allocated for it.
pub fn decode_write_request(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    use prost::Message;
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > MAX_DECODED_LEN {
        return Err(DecodeError::TooLarge {
            len,
            limit: MAX_DECODED_LEN,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Configuration checks shared by the HTTP backends
// ---------------------------------------------------------------------------------------

/// A backend configuration that cannot work. Returned by the backends' constructors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse, or is not `http`/`https` with a host.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An extra header name or value is not valid HTTP.
    #[error("invalid extra header {name:?}: {reason}")]
    Header {
        /// The header name as configured.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An extra header the backend sets itself (content type, encoding, protocol version,
    /// tenant header...).
    #[error("extra header {name:?} is set by the backend itself and cannot be overridden")]
    ReservedHeader {
        /// The header name.
        name: String,
    },
    /// Any other field with a value the backend cannot use.
    #[error("invalid {field}: {reason}")]
    Field {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses an `http`/`https` URL with a host.
pub(crate) fn parse_url(url: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::Url {
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https".to_owned()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host".to_owned()));
    }
    Ok(parsed)
}

/// `base` with `suffix` appended to its path (one `/` between them); query kept.
pub(crate) fn join_path(base: &Url, suffix: &str) -> Url {
    let mut url = base.clone();
    let path = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        suffix.trim_start_matches('/')
    );
    url.set_path(&path);
    url
}

/// Parses extra headers, refusing `reserved` names (lower case) and, when the backend sends
/// credentials itself, `Authorization`. Values are marked sensitive so `Debug` hides them.
pub(crate) fn checked_headers(
    extra: &[(String, String)],
    reserved: &[&str],
    has_auth: bool,
) -> Result<HeaderMap, ConfigError> {
    let mut map = HeaderMap::new();
    for (name, value) in extra {
        let bad = |reason: &str| ConfigError::Header {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let hname =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a valid header name"))?;
        let reserved_here =
            reserved.contains(&hname.as_str()) || (has_auth && hname == header::AUTHORIZATION);
        if reserved_here {
            return Err(ConfigError::ReservedHeader { name: name.clone() });
        }
        let mut hvalue =
            HeaderValue::from_str(value).map_err(|_| bad("not a valid header value"))?;
        hvalue.set_sensitive(true);
        map.append(hname, hvalue);
    }
    Ok(map)
}

// ---------------------------------------------------------------------------------------
// The sender shared by the remote-write backends
// ---------------------------------------------------------------------------------------

/// Client, credentials and headers of a remote-write backend; encodes, posts and classifies.
pub(crate) struct RwSender {
    client: reqwest::Client,
    auth: Auth,
    headers: HeaderMap,
}

impl std::fmt::Debug for RwSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwSender")
            .field("auth", &self.auth)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl RwSender {
    /// Checks the extra headers (`also_reserved`: lower-case names the caller sets per
    /// request, such as `x-scope-orgid`) and builds the client.
    pub(crate) fn new(
        auth: Auth,
        extra: &[(String, String)],
        also_reserved: &[&str],
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let reserved: Vec<&str> = RESERVED.iter().chain(also_reserved).copied().collect();
        let mut headers = checked_headers(extra, &reserved, auth != Auth::None)?;
        // Inserted after the extra headers, which can no longer name them.
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static("0.1.0"),
        );
        Ok(Self {
            client: http::client(timeout),
            auth,
            headers,
        })
    }

    /// Encodes `batch`, posts it to `url` with the optional per-request header, and
    /// classifies the answer. An empty batch is delivered without a request.
    pub(crate) async fn send(
        &self,
        url: &Url,
        tenant_header: Option<(HeaderName, HeaderValue)>,
        batch: &Batch,
    ) -> Outcome {
        if batch.is_empty() {
            return Outcome::Delivered {
                bytes: 0,
                skipped: 0,
            };
        }
        let body = match encode(batch) {
            Ok(b) => b,
            Err(e) => return too_large(e),
        };
        let bytes = body.len() as u64;
        let mut rb = self.client.post(url.clone()).headers(self.headers.clone());
        if let Some((name, value)) = tenant_header {
            rb = rb.header(name, value);
        }
        match http::execute(self.auth.apply(rb).body(body)).await {
            Ok(answer) => classify(&answer, bytes),
            Err(outcome) => outcome,
        }
    }
}

fn too_large(e: EncodeError) -> Outcome {
    Outcome::Rejected {
        kind: RejectKind::TooLarge,
        status: None,
        reason: e.to_string(),
    }
}

/// Remote-write classification: [`http::classify`], except that a 400 naming an
/// out-of-order, duplicate, too-old or out-of-bounds sample is [`RejectKind::Duplicate`]
/// (on a resend it means the samples are already stored). So is Prometheus 2.42's
/// `500 too old sample` (a sample older than the out-of-order window; its write handler
/// maps only the other append errors to 400): retrying it can never succeed, and it held up
/// every later batch of the tenant.
pub(crate) fn classify(a: &Answer, body_bytes: u64) -> Outcome {
    let conflict = match a.status {
        400 => names_stored_sample_conflict(&a.body),
        500 => a.body.contains("too old sample"),
        _ => false,
    };
    if conflict {
        return Outcome::Rejected {
            kind: RejectKind::Duplicate,
            status: Some(a.status),
            reason: format!("HTTP {}: {}", a.status, a.body),
        };
    }
    http::classify(a, body_bytes)
}

/// True when an error body names a conflict with samples already stored. Prometheus says
/// "out of order sample", "duplicate sample for timestamp", "too old sample", "out of
/// bounds"; Mimir uses ids such as `err-mimir-sample-out-of-order`,
/// `err-mimir-sample-duplicate-timestamp`, `err-mimir-sample-timestamp-too-old`, hence the
/// folding of `-` and `_` to spaces.
fn names_stored_sample_conflict(body: &str) -> bool {
    const PHRASES: [&str; 5] = [
        "out of order",
        "duplicate sample",
        "duplicate timestamp",
        "too old",
        "out of bounds",
    ];
    let folded: String = body
        .chars()
        .map(|c| match c {
            '-' | '_' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    PHRASES.iter().any(|p| folded.contains(p))
}

// ---------------------------------------------------------------------------------------
// The Prometheus backend
// ---------------------------------------------------------------------------------------

/// Configuration of a [`RemoteWrite`] backend.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    /// The receiver's full write URL, e.g. `http://prometheus:9090/api/v1/write` (the spec
    /// lets the receiver choose any path). Required: no default.
    pub url: String,
    /// Credentials. Default [`Auth::None`]; basic or bearer are the usual ones.
    pub auth: Auth,
    /// Extra headers sent with every request. Default none. `Content-Encoding`,
    /// `Content-Type`, `Content-Length`, `User-Agent` and `X-Prometheus-Remote-Write-Version`
    /// are refused, and `Authorization` is refused when `auth` is set.
    pub headers: Vec<(String, String)>,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s.
    pub timeout: Duration,
    /// True when the receiver has an out-of-order window
    /// (`storage.tsdb.out_of_order_time_window`), so older samples of a series are
    /// accepted and the forwarder need not keep per-series order. Default false.
    pub out_of_order_window: bool,
}

impl RemoteWriteConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: Auth::None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            out_of_order_window: false,
        }
    }
}

/// Prometheus remote write 1.0 to one receiver. Single-tenant: every tenant's samples go to
/// the same URL (use one backend per tenant, or a tenant label, to keep them apart).
#[derive(Debug)]
pub struct RemoteWrite {
    url: Url,
    out_of_order_window: bool,
    sender: RwSender,
}

impl RemoteWrite {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: RemoteWriteConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            url: parse_url(&config.url)?,
            out_of_order_window: config.out_of_order_window,
            sender: RwSender::new(config.auth, &config.headers, &[], config.timeout)?,
        })
    }
}

impl Backend for RemoteWrite {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn accepts_out_of_order(&self) -> bool {
        self.out_of_order_window
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.sender.send(&self.url, None, req.batch))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backends::RetryReason;
    use crate::backends::testserver;
    use crate::sample::{MetricKind, Sample as Point};
    use crate::tenant::TenantId;

    pub(crate) fn series(name: &str, labels: &[(&str, &str)]) -> Series {
        Series::new(name, labels.iter().copied()).expect("valid series")
    }

    /// A batch with the same series in two entries, out-of-order timestamps, a NaN with a
    /// payload, -0.0 and an empty-valued label.
    pub(crate) fn tricky_batch() -> Batch {
        let mut b = Batch::new();
        let up = series(
            "up",
            &[
                ("job", "api"),
                ("Zone", "eu"),
                ("__meta", "x"),
                ("empty", ""),
            ],
        );
        let other = series("other", &[("a", "1")]);
        b.push(
            up.clone(),
            MetricKind::Gauge,
            vec![Point::new(30, 1.0), Point::new(10, -0.0)],
        );
        b.push(other, MetricKind::Counter, vec![Point::new(5, 2.5)]);
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        b.push(
            up,
            MetricKind::Gauge,
            vec![Point::new(20, stale), Point::new(10, 7.0)],
        );
        b
    }

    pub(crate) fn request<'a>(tenant: &'a TenantId, batch: &'a Batch) -> SendRequest<'a> {
        SendRequest {
            tenant,
            batch,
            offsets: 0..batch.sample_count() as u64,
            part: (0, 1),
            resend: false,
        }
    }

    fn names(ts: &TimeSeries) -> Vec<&str> {
        ts.labels.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn encoding_round_trips_with_sorted_labels_merged_series_and_exact_bits() {
        let body = encode(&tricky_batch()).expect("encodes");
        let wr = decode_write_request(&body).expect("decodes");
        assert_eq!(wr.timeseries.len(), 2, "the two `up` entries are merged");
        let up = &wr.timeseries[0];
        // Byte order: uppercase before `_`, `__meta` before `__name__`, lowercase after;
        // the empty-valued label is left out.
        assert_eq!(names(up), ["Zone", "__meta", "__name__", "job"]);
        assert_eq!(up.labels[2].value, "up");
        let ts: Vec<i64> = up.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(ts, [10, 10, 20, 30], "sorted by timestamp");
        // Stable sort: the -0.0 at t=10 came first in the batch, then 7.0.
        assert_eq!(up.samples[0].value.to_bits(), (-0.0f64).to_bits());
        assert_eq!(up.samples[1].value, 7.0);
        assert_eq!(up.samples[2].value.to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(names(&wr.timeseries[1]), ["__name__", "a"]);
        assert_eq!(
            wr.timeseries[1].samples,
            [Sample {
                value: 2.5,
                timestamp: 5
            }]
        );
    }

    #[test]
    fn a_zero_value_left_out_by_other_senders_decodes_as_zero() {
        // WriteRequest{timeseries: [{samples: [{timestamp: 5}]}]}: Go's proto3 encoders leave
        // out a value equal to 0, which is why ours marks it required (else -0.0 is lost).
        let raw = [0x0a, 0x04, 0x12, 0x02, 0x10, 0x05];
        let body = snap::raw::Encoder::new().compress_vec(&raw).expect("small");
        let wr = decode_write_request(&body).expect("decodes");
        let s = &wr.timeseries[0].samples[0];
        assert_eq!((s.value.to_bits(), s.timestamp), (0, 5));
    }

    /// The direct encoder writes exactly what prost writes for `write_request`.
    #[test]
    fn the_direct_encoder_matches_prost_byte_for_byte() {
        use prost::Message;
        let same = |b: &Batch| {
            assert_eq!(encode_raw(b), write_request(b).encode_to_vec(), "{b:?}");
        };
        same(&Batch::new());
        same(&tricky_batch());
        // Series that differ only in an empty-valued label are one remote-write series;
        // timestamps 0, negative and large; labels on both sides of `__name__`.
        let mut b = Batch::new();
        let a = series("m", &[("A", "x"), ("b", "y")]);
        let a_empty = series("m", &[("A", "x"), ("b", "y"), ("c", "")]);
        let long = series("m", &[("z", &"v".repeat(300)), ("_a", "é")]);
        b.push(
            a.clone(),
            MetricKind::Gauge,
            vec![Point::new(0, 0.0), Point::new(-5, 1.5)],
        );
        b.push(
            long.clone(),
            MetricKind::Counter,
            vec![Point::new(i64::MAX, 3.0)],
        );
        b.push(
            a_empty,
            MetricKind::Gauge,
            vec![Point::new(-5, 2.5), Point::new(i64::MIN, f64::NAN)],
        );
        b.push(long, MetricKind::Counter, vec![Point::new(1, -0.0)]);
        b.push(
            a,
            MetricKind::Gauge,
            vec![Point::new(1_750_000_000_000, 9.0)],
        );
        same(&b);
        // Many series, one sample each, as a scrape batch: a pseudo-random mix.
        let mut b = Batch::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..2000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let s = series(
                &format!("metric_{}", x % 7),
                &[
                    ("instance", &format!("node-{}", (x >> 8) % 50)),
                    ("job", if x & 1 == 0 { "node" } else { "" }),
                    ("Zone", &format!("{}", (x >> 20) % 3)),
                ],
            );
            let ts = 1_750_000_000_000 + ((x >> 30) % 100) as i64 * 15_000 - i as i64;
            b.push_one(s, MetricKind::Gauge, Point::new(ts, f64::from_bits(x >> 3)));
        }
        same(&b);
    }

    #[test]
    fn the_same_batch_always_encodes_to_the_same_bytes() {
        let a = encode(&tricky_batch()).expect("encodes");
        for _ in 0..20 {
            assert_eq!(encode(&tricky_batch()).expect("encodes"), a);
        }
    }

    #[test]
    fn the_body_is_snappy_block_format_not_framed() {
        let body = encode(&tricky_batch()).expect("encodes");
        // The framed format starts with a stream identifier chunk (0xff "sNaPpY").
        assert_ne!(body.first(), Some(&0xff));
        assert!(snap::raw::Decoder::new().decompress_vec(&body).is_ok());
    }

    #[test]
    fn decoding_refuses_a_body_announcing_more_than_64_mib() {
        // A snappy block starts with the decompressed length as a varint: announce 64 MiB + 1.
        let mut body = Vec::new();
        let mut n = (MAX_DECODED_LEN + 1) as u64;
        while n >= 0x80 {
            body.push((n as u8) | 0x80);
            n >>= 7;
        }
        body.push(n as u8);
        assert!(matches!(
            decode_write_request(&body),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_write_request(b"\x05abc"),
            Err(DecodeError::Snappy(_))
        ));
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(&[0xff; 8])
            .expect("small");
        assert!(matches!(
            decode_write_request(&not_proto),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn reserved_headers_cannot_be_overridden() {
        for name in [
            "Content-Encoding",
            "content-type",
            "User-Agent",
            "X-Prometheus-Remote-Write-Version",
        ] {
            let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
            c.headers = vec![(name.to_owned(), "x".to_owned())];
            assert!(
                matches!(RemoteWrite::new(c), Err(ConfigError::ReservedHeader { .. })),
                "{name}"
            );
        }
        let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
        c.auth = Auth::Bearer("t".to_owned());
        c.headers = vec![("Authorization".to_owned(), "Basic x".to_owned())];
        assert!(matches!(
            RemoteWrite::new(c),
            Err(ConfigError::ReservedHeader { .. })
        ));
        let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
        c.headers = vec![("X-Custom".to_owned(), "yes".to_owned())];
        assert!(RemoteWrite::new(c).is_ok());
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["not a url", "ftp://host/x", "unix:/tmp/sock"] {
            assert!(
                matches!(
                    RemoteWrite::new(RemoteWriteConfig::new(url)),
                    Err(ConfigError::Url { .. })
                ),
                "{url}"
            );
        }
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    #[test]
    fn a_400_naming_stored_samples_is_a_duplicate() {
        for body in [
            "out of order sample",
            "duplicate sample for timestamp",
            "too old sample",
            "out of bounds",
            "Out Of Order Sample",
            "failed pushing to ingester: user=t: the sample has been rejected (err-mimir-sample-duplicate-timestamp)",
            "err-mimir-sample-timestamp-too-old",
        ] {
            assert!(
                matches!(
                    classify(&answer(400, body), 1),
                    Outcome::Rejected {
                        kind: RejectKind::Duplicate,
                        status: Some(400),
                        ..
                    }
                ),
                "{body}"
            );
        }
        assert!(matches!(
            classify(&answer(400, "invalid metric name"), 1),
            Outcome::Rejected {
                kind: RejectKind::Permanent,
                ..
            }
        ));
        // Only a 400 means "already stored": a 500 saying "out of order" is still retried.
        assert!(matches!(
            classify(&answer(500, "out of order sample"), 1),
            Outcome::Retry {
                reason: RetryReason::ServerError,
                ..
            }
        ));
        // Except Prometheus 2.42's answer to a sample older than its out-of-order window.
        assert!(matches!(
            classify(&answer(500, "too old sample\n"), 1),
            Outcome::Rejected {
                kind: RejectKind::Duplicate,
                status: Some(500),
                ..
            }
        ));
    }

    #[test]
    fn other_statuses_follow_the_default_classification() {
        assert!(matches!(
            classify(&answer(204, ""), 9),
            Outcome::Delivered {
                bytes: 9,
                skipped: 0
            }
        ));
        let mut limited = answer(429, "slow down");
        limited.retry_after = Some(Duration::from_secs(3));
        assert!(matches!(
            classify(&limited, 1),
            Outcome::Retry { reason: RetryReason::RateLimited, retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(&answer(413, ""), 1),
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                ..
            }
        ));
        assert!(matches!(
            classify(&answer(401, ""), 1),
            Outcome::Rejected {
                kind: RejectKind::Permanent,
                ..
            }
        ));
    }

    #[test]
    fn out_of_order_is_accepted_only_with_a_window() {
        let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
        assert!(
            !RemoteWrite::new(c.clone())
                .expect("valid")
                .accepts_out_of_order()
        );
        c.out_of_order_window = true;
        assert!(RemoteWrite::new(c).expect("valid").accepts_out_of_order());
    }

    #[tokio::test]
    async fn a_request_carries_the_spec_headers_and_a_decodable_body() {
        let server = testserver::serve_once(204, &[], "").await;
        let mut c = RemoteWriteConfig::new(format!("{}/api/v1/write", server.url));
        c.auth = Auth::Basic {
            user: "u".to_owned(),
            password: "p".to_owned(),
        };
        c.headers = vec![("X-Extra".to_owned(), "1".to_owned())];
        let rw = RemoteWrite::new(c).expect("valid");
        let tenant = TenantId::new("t1").expect("valid");
        let batch = tricky_batch();
        let out = rw.send(request(&tenant, &batch)).await;
        let got = server.request().await;
        let expected = encode(&batch).expect("encodes");
        assert_eq!(
            out,
            Outcome::Delivered {
                bytes: expected.len() as u64,
                skipped: 0
            }
        );
        assert_eq!(got.method, "POST");
        assert_eq!(got.target, "/api/v1/write");
        assert_eq!(got.header("content-encoding"), Some("snappy"));
        assert_eq!(got.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(
            got.header("x-prometheus-remote-write-version"),
            Some("0.1.0")
        );
        assert_eq!(got.header("user-agent"), Some(USER_AGENT));
        assert_eq!(got.header("authorization"), Some("Basic dTpw"));
        assert_eq!(got.header("x-extra"), Some("1"));
        assert_eq!(got.body, expected);
        // NaN != NaN, so compare the decoded request by re-encoding it.
        let decoded = decode_write_request(&got.body).expect("decodes");
        assert_eq!(
            prost::Message::encode_to_vec(&decoded),
            prost::Message::encode_to_vec(&write_request(&batch))
        );
    }

    #[tokio::test]
    async fn a_duplicate_answer_from_the_receiver_is_classified() {
        let server =
            testserver::serve_once(400, &[], "out of order sample for series up{job=\"api\"}")
                .await;
        let rw = RemoteWrite::new(RemoteWriteConfig::new(server.url.clone())).expect("valid");
        let tenant = TenantId::new("t1").expect("valid");
        let batch = tricky_batch();
        let out = rw.send(request(&tenant, &batch)).await;
        assert!(matches!(
            out,
            Outcome::Rejected {
                kind: RejectKind::Duplicate,
                status: Some(400),
                ..
            }
        ));
        assert_eq!(server.request().await.target, "/");
    }
}
