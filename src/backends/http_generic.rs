//! Generic HTTP: a fixed JSON or NDJSON layout posted (or put) to a URL templated per
//! tenant, for receivers of your own (a webhook, a queue's HTTP gateway, a serverless
//! function).
//!
//! # Layout
//!
//! [`HttpFormat::Json`] (`Content-Type: application/json`), one object per request:
//!
//! ```json
//! {"tenant":"t1","batch_id":"t1-0-2-0of1","samples":[
//!   {"name":"cpu","labels":{"host":"a"},"kind":"gauge","timestamp_ms":1700000000000,"value":12.5}]}
//! ```
//!
//! [`HttpFormat::Ndjson`] (`Content-Type: application/x-ndjson`): the sample objects alone,
//! one per line, each line ending in `\n`.
//!
//! - samples in batch order; labels sorted by name, empty values left out; `kind` is
//!   `unknown`, `gauge`, `counter`, `histogram` or `summary`; `value` in serde_json's
//!   shortest round-trip form (`1.0`, `-0.0`, `1e300`);
//! - NaN and ±Inf cannot be written in JSON: those samples are left out and counted in
//!   [`Outcome::Delivered`]'s `skipped`; a request with nothing left is not sent;
//! - every request carries `Idempotency-Key: <batch_id>` ([`SendRequest::batch_id`]:
//!   tenant, offset range and part), the same on every resend of the same request.
//!
//! # Delivery guarantee
//!
//! At least once: a resend after a crash or an ambiguous failure (timeout, connection lost
//! after sending) is byte-identical and carries the same `Idempotency-Key`; the receiver
//! gets exactly once in effect only if it remembers the keys it has processed.
//!
//! Requests of one tenant may arrive out of order: the forwarder keeps up to
//! `max_in_flight` batches under way ([`Backend::accepts_out_of_order`] is true); order by
//! `timestamp_ms`, not by arrival.
//!
//! # Answers
//!
//! A status in `success_status` (default 2xx) is delivered; 413 → [`RejectKind::TooLarge`]
//! (the forwarder splits; a split half has its own batch id); a status in `retry_status`
//! (default 408, 429, 500 and 502–599: 501 "Not Implemented" will not change) →
//! [`Outcome::Retry`] with `Retry-After`; any other → [`RejectKind::Permanent`].

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::http::{self, Auth, field_error};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::sample::{Batch, Series};
use crate::secret::Secret;

/// Default request timeout: 30 s, as every HTTP backend.
pub const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;

/// Headers this backend sets itself.
const RESERVED: [&str; 4] = [
    "content-type",
    "content-encoding",
    "content-length",
    "idempotency-key",
];

/// The body layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// One JSON object with `tenant`, `batch_id` and `samples`. The default.
    #[default]
    Json,
    /// One sample object per line.
    Ndjson,
}

/// The HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `POST`. The default.
    #[default]
    #[serde(alias = "post")]
    Post,
    /// `PUT`.
    #[serde(alias = "put")]
    Put,
}

/// Credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// HTTP basic auth.
    Basic {
        /// User name (not a secret).
        user: String,
        /// Password.
        password: Secret,
    },
    /// A header of your choice whose whole value is a secret (e.g. `X-Api-Key`).
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: Secret,
    },
}

/// A set of HTTP statuses: a number (`404`) or a range (`"500-599"`, `"5xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// One status.
    One(u16),
    /// `"lo-hi"` (inclusive) or `"Nxx"`.
    Range(String),
}

impl StatusSpec {
    /// The inclusive range, or why the spec is invalid.
    fn range(&self) -> Result<(u16, u16), String> {
        let (lo, hi) = match self {
            Self::One(s) => (*s, *s),
            Self::Range(r) => parse_range(r.trim())
                .ok_or_else(|| format!("{r:?} is not a status, \"lo-hi\" or \"Nxx\""))?,
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(format!(
                "{lo}-{hi} is not a range of HTTP statuses (100 to 599)"
            ));
        }
        Ok((lo, hi))
    }
}

fn parse_range(r: &str) -> Option<(u16, u16)> {
    if let Some(c) = r.strip_suffix("xx").filter(|c| c.len() == 1) {
        let d: u16 = c.parse().ok()?;
        return Some((d * 100, d * 100 + 99));
    }
    if let Some((lo, hi)) = r.split_once('-') {
        return Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?));
    }
    let s = r.parse().ok()?;
    Some((s, s))
}

fn default_success() -> Vec<StatusSpec> {
    vec![StatusSpec::Range("2xx".to_owned())]
}

fn default_retry() -> Vec<StatusSpec> {
    vec![
        StatusSpec::One(408),
        StatusSpec::One(429),
        StatusSpec::One(500),
        StatusSpec::Range("502-599".to_owned()),
    ]
}

/// Configuration of an [`HttpGeneric`] backend (TOML: see `docs/backends/http.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGenericConfig {
    /// URL, `http` or `https`; `{tenant}` is replaced by the tenant id (safe in a path or
    /// query as it is). Required: no default.
    pub url: String,
    /// Body layout. Default [`HttpFormat::Json`].
    #[serde(default)]
    pub format: HttpFormat,
    /// Method. Default [`HttpMethod::Post`].
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra headers; `{tenant}` in a value is replaced by the tenant id. Default none.
    /// `Content-Type`, `Content-Encoding`, `Content-Length` and `Idempotency-Key` are refused
    /// (the backend sets them), and `Authorization` when `auth` sets it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Credentials. Default none.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Gzip request bodies (`Content-Encoding: gzip`). Default false: not every receiver
    /// reads gzip.
    #[serde(default)]
    pub gzip: bool,
    /// Statuses that mean delivered. Default `["2xx"]`. Checked first.
    #[serde(default = "default_success")]
    pub success_status: Vec<StatusSpec>,
    /// Statuses that mean "try again later". Default `[408, 429, 500, "502-599"]`. 413 is
    /// always "too large" unless listed in `success_status`; every other status is a
    /// permanent refusal.
    #[serde(default = "default_retry")]
    pub retry_status: Vec<StatusSpec>,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s;
    /// 1 ms to 1 h.
    #[serde(default = "http::default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
}

impl HttpGenericConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            format: HttpFormat::Json,
            method: HttpMethod::Post,
            headers: BTreeMap::new(),
            auth: None,
            gzip: false,
            success_status: default_success(),
            retry_status: default_retry(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// JSON or NDJSON to an HTTP endpoint of your own.
pub struct HttpGeneric {
    url: String,
    format: HttpFormat,
    method: reqwest::Method,
    headers: Vec<(HeaderName, String)>,
    fixed: HeaderMap,
    auth: Auth,
    gzip: bool,
    success: Vec<(u16, u16)>,
    retry: Vec<(u16, u16)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpGeneric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGeneric")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("method", &self.method)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

fn ranges(field: &'static str, specs: &[StatusSpec]) -> Result<Vec<(u16, u16)>, ConfigError> {
    specs
        .iter()
        .map(|s| s.range().map_err(|r| field_error(field, r)))
        .collect()
}

/// Credentials as [`Auth`], plus a secret header when that is the kind.
fn resolve_auth(
    auth: Option<&HttpAuth>,
) -> Result<(Auth, Option<(HeaderName, HeaderValue)>), ConfigError> {
    let secret = |s: &Secret| s.resolve().map_err(|e| field_error("auth", e.to_string()));
    Ok(match auth {
        None => (Auth::None, None),
        Some(HttpAuth::Bearer(s)) => (Auth::Bearer(secret(s)?), None),
        Some(HttpAuth::Basic { user, password }) => (
            Auth::Basic {
                user: user.clone(),
                password: secret(password)?,
            },
            None,
        ),
        Some(HttpAuth::Header { name, value }) => {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| field_error("auth", format!("{name:?} is not a header name")))?;
            if RESERVED.contains(&n.as_str()) {
                return Err(ConfigError::ReservedHeader { name: name.clone() });
            }
            let mut v = HeaderValue::from_str(&secret(value)?)
                .map_err(|_| field_error("auth", "the secret is not a valid header value"))?;
            v.set_sensitive(true);
            (Auth::None, Some((n, v)))
        }
    })
}

impl HttpGeneric {
    /// Checks the configuration, reads the secrets and builds the HTTP client.
    pub fn new(config: HttpGenericConfig) -> Result<Self, ConfigError> {
        let unknown = http::unknown_placeholders(&config.url, &["tenant"]);
        if !unknown.is_empty() {
            return Err(field_error(
                "url",
                format!("unknown placeholder(s) {}", unknown.join(", ")),
            ));
        }
        prometheus::parse_url(&http::render_tenant(&config.url, "t"))?;
        if config.timeout.is_zero() || config.timeout > Duration::from_secs(3600) {
            return Err(field_error("timeout", "it must be 1 ms to 1 h"));
        }
        let (auth, secret_header) = resolve_auth(config.auth.as_ref())?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let pairs = [(name.clone(), http::render_tenant(value, "t"))];
            let checked = prometheus::checked_headers(&pairs, &RESERVED, auth != Auth::None)?;
            let Some(hname) = checked.keys().next().cloned() else {
                continue;
            };
            if secret_header.as_ref().is_some_and(|(n, _)| *n == hname) {
                return Err(ConfigError::ReservedHeader { name: name.clone() });
            }
            let unknown = http::unknown_placeholders(value, &["tenant"]);
            if !unknown.is_empty() {
                return Err(ConfigError::Header {
                    name: name.clone(),
                    reason: format!("unknown placeholder(s) {}", unknown.join(", ")),
                });
            }
            headers.push((hname, value.clone()));
        }
        let mut fixed = HeaderMap::new();
        let content_type = match config.format {
            HttpFormat::Json => "application/json",
            HttpFormat::Ndjson => "application/x-ndjson",
        };
        fixed.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if config.gzip {
            fixed.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some((n, v)) = secret_header {
            fixed.insert(n, v);
        }
        Ok(Self {
            url: config.url,
            format: config.format,
            method: match config.method {
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Put => reqwest::Method::PUT,
            },
            headers,
            fixed,
            auth,
            gzip: config.gzip,
            success: ranges("success_status", &config.success_status)?,
            retry: ranges("retry_status", &config.retry_status)?,
            client: http::client(config.timeout),
        })
    }

    /// Classifies a status (see the module docs).
    fn classify(&self, a: &http::Answer, bytes: u64, skipped: u64) -> Outcome {
        let within = |set: &[(u16, u16)]| set.iter().any(|&(lo, hi)| (lo..=hi).contains(&a.status));
        let detail = || format!("HTTP {}: {}", a.status, a.body);
        if within(&self.success) {
            return Outcome::Delivered { bytes, skipped };
        }
        if a.status == 413 {
            return Outcome::Rejected {
                kind: RejectKind::TooLarge,
                status: Some(413),
                reason: detail(),
            };
        }
        if within(&self.retry) {
            let reason = match a.status {
                429 => RetryReason::RateLimited,
                408 => RetryReason::Timeout,
                _ => RetryReason::ServerError,
            };
            return Outcome::Retry {
                reason,
                retry_after: a.retry_after,
                detail: detail(),
            };
        }
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: Some(a.status),
            reason: detail(),
        }
    }

    /// The URL and headers of `tenant`'s requests.
    fn request_for(&self, tenant: &str) -> Result<(Url, HeaderMap), Outcome> {
        let url =
            Url::parse(&http::render_tenant(&self.url, tenant)).map_err(|e| Outcome::Rejected {
                kind: RejectKind::Permanent,
                status: None,
                reason: format!("the URL of tenant {tenant} does not parse: {e}"),
            })?;
        let mut headers = self.fixed.clone();
        for (name, template) in &self.headers {
            let value =
                HeaderValue::from_str(&http::render_tenant(template, tenant)).map_err(|_| {
                    Outcome::Rejected {
                        kind: RejectKind::Permanent,
                        status: None,
                        reason: format!("header {name} of tenant {tenant} is not a valid value"),
                    }
                })?;
            headers.insert(name.clone(), value);
        }
        Ok((url, headers))
    }

    async fn send_request(&self, req: SendRequest<'_>) -> Outcome {
        let batch_id = req.batch_id();
        let body = encode(self.format, req.tenant.as_str(), &batch_id, req.batch);
        if body.samples == 0 {
            return Outcome::Delivered {
                bytes: 0,
                skipped: body.skipped,
            };
        }
        let (url, mut headers) = match self.request_for(req.tenant.as_str()) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        // A batch id is a tenant id, digits, `-` and `of`: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&batch_id) {
            headers.insert("idempotency-key", v);
        }
        let bytes = if self.gzip {
            http::gzip(body.text.as_bytes())
        } else {
            body.text.into_bytes()
        };
        let sent = bytes.len() as u64;
        let rb = self
            .client
            .request(self.method.clone(), url)
            .headers(headers)
            .body(bytes);
        let resp = match self.auth.apply(rb).send().await {
            Ok(r) => r,
            Err(e) => return http::transport_error(e),
        };
        let (status, retry_after) = http::status_and_retry_after(&resp);
        // Only the start of the answer is kept, for logs: a receiver's body is never parsed.
        match http::read_capped(resp, 4096).await {
            Ok((text, _)) => self.classify(
                &http::answer(status, retry_after, &text),
                sent,
                body.skipped,
            ),
            Err(outcome) => outcome,
        }
    }
}

/// An encoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The JSON or NDJSON text.
    pub text: String,
    /// Samples written.
    pub samples: u64,
    /// Samples left out (NaN, ±Inf).
    pub skipped: u64,
}

/// Encodes a batch in `format` (see the module docs for the exact layout).
pub fn encode(format: HttpFormat, tenant: &str, batch_id: &str, batch: &Batch) -> Body {
    let mut objects = Vec::with_capacity(batch.sample_count());
    let mut skipped = 0;
    for entry in batch.entries() {
        let head = format!(
            "{{\"name\":{},\"labels\":{},\"kind\":\"{}\",\"timestamp_ms\":",
            json_string(entry.series.name()),
            labels_json(&entry.series),
            entry.kind.as_str()
        );
        for s in &entry.samples {
            if !s.value.is_finite() {
                skipped += 1;
                continue;
            }
            let value = serde_json::to_string(&s.value).unwrap_or_else(|_| "0".to_owned());
            objects.push(format!("{head}{},\"value\":{value}}}", s.timestamp_ms));
        }
    }
    let samples = objects.len() as u64;
    let text = match format {
        HttpFormat::Json => format!(
            "{{\"tenant\":{},\"batch_id\":{},\"samples\":[{}]}}",
            json_string(tenant),
            json_string(batch_id),
            objects.join(",")
        ),
        HttpFormat::Ndjson => {
            let mut t = objects.join("\n");
            if !t.is_empty() {
                t.push('\n');
            }
            t
        }
    };
    Body {
        text,
        samples,
        skipped,
    }
}

/// `{"name":"value",...}` of a series' labels (sorted by name; empty values left out).
fn labels_json(series: &Series) -> String {
    let map: serde_json::Map<String, serde_json::Value> = series
        .labels()
        .iter()
        .filter(|l| !l.value.is_empty())
        .map(|l| (l.name.to_string(), serde_json::Value::from(&*l.value)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl Backend for HttpGeneric {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_request(req))
    }
}

#[cfg(test)]
mod tests;
