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
            name: l.name.to_string(),
            value: l.value.to_string(),
        })
        .collect();
    // Series labels are sorted and never named `__name__`; insert it in its byte-order place.
    let at = labels.partition_point(|l| &*l.name < "__name__");
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
        let split = all.partition_point(|l| &*l.name < "__name__");
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
pub(crate) fn names_stored_sample_conflict(body: &str) -> bool {
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
pub(crate) mod tests;
