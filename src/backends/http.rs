//! What every HTTP backend shares: the client (rustls with the ring provider), auth,
//! `Retry-After` parsing and the default status classification.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::prometheus::ConfigError;
use super::{Outcome, RejectKind, RetryReason};
use crate::secret::Secret;

/// Longest part of an error body kept for logs and dead letters.
const MAX_DETAIL: usize = 512;

/// Default request timeout of the HTTP backends.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Serde default of the HTTP backends' `timeout` fields: [`DEFAULT_TIMEOUT`].
pub(crate) fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// Serde default of the label, tag or attribute that carries the tenant id: `"tenant"`.
pub(crate) fn default_tenant_label() -> String {
    "tenant".to_owned()
}

/// A [`ConfigError::Field`] for `field`.
pub(crate) fn field_error(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

/// The fixed headers of a vendor JSON API that takes its key in a header of its own: the
/// key read from `api_key` (marked sensitive, so it never shows in debug output), a JSON
/// content type and `content_encoding`. Errors name the field `api_key`.
pub(crate) fn api_key_headers(
    key_header: &'static str,
    api_key: &Secret,
    content_encoding: &'static str,
) -> Result<HeaderMap, ConfigError> {
    let key = api_key
        .resolve()
        .map_err(|e| field_error("api_key", e.to_string()))?;
    let mut key = HeaderValue::from_str(&key)
        .map_err(|_| field_error("api_key", "it is not a valid HTTP header value"))?;
    key.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static(key_header), key);
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        reqwest::header::CONTENT_ENCODING,
        HeaderValue::from_static(content_encoding),
    );
    Ok(headers)
}

/// A request over a vendor's size limit: split the batch (`TooLarge`), unless it is one
/// point, which no split can make smaller (`Permanent`).
pub(crate) fn over_size_limit(points: u64, reason: String) -> Outcome {
    let kind = if points > 1 {
        RejectKind::TooLarge
    } else {
        RejectKind::Permanent
    };
    Outcome::Rejected {
        kind,
        status: None,
        reason,
    }
}

/// Credentials sent with every request.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic auth (Grafana Cloud: instance id and access-policy token).
    Basic {
        /// User name.
        user: String,
        /// Password or token.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: <scheme> <token>` for other schemes (`Token` for InfluxDB v2).
    Scheme {
        /// The scheme word.
        scheme: String,
        /// The credential.
        token: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Auth::None",
            Self::Basic { .. } => "Auth::Basic(..)",
            Self::Bearer(_) => "Auth::Bearer(..)",
            Self::Scheme { .. } => "Auth::Scheme(..)",
        })
    }
}

impl Auth {
    /// Adds the credentials to a request.
    pub fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => rb,
            Self::Basic { user, password } => rb.basic_auth(user, Some(password)),
            Self::Bearer(t) => rb.bearer_auth(t),
            Self::Scheme { scheme, token } => {
                rb.header(reqwest::header::AUTHORIZATION, format!("{scheme} {token}"))
            }
        }
    }
}

/// Builds an HTTP client with rustls (ring provider, webpki roots) and a request timeout.
pub fn client(timeout: Duration) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("metricspool/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with a preconfigured rustls config builds")
}

/// Parses extra headers given as `(name, value)` pairs; invalid ones are refused.
pub fn header_map(extra: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    for (k, v) in extra {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name {k:?}"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header {k:?}"))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The answer of a request, reduced to what classification needs.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The start of the body.
    pub body: String,
}

/// Sends a prepared request and reads the answer; transport failures become `Retry`.
pub async fn execute(rb: reqwest::RequestBuilder) -> Result<Answer, Outcome> {
    let resp = rb.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = resp.text().await.map_err(transport_error)?;
    Ok(Answer {
        status,
        retry_after,
        body: truncate(&body),
    })
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_DETAIL) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Maps a transport error to a retry. The URL is left out of the detail: it can hold
/// credentials (InfluxDB v1 `u`/`p` parameters).
pub fn transport_error(e: reqwest::Error) -> Outcome {
    let e = e.without_url();
    let reason = if e.is_timeout() {
        RetryReason::Timeout
    } else {
        RetryReason::Network
    };
    Outcome::Retry {
        reason,
        retry_after: None,
        detail: truncate(&e.to_string()),
    }
}

/// The default classification: 2xx delivered; 429 and 5xx retried; 413 too large; every
/// other status permanent.
pub fn classify(a: &Answer, body_bytes: u64) -> Outcome {
    let detail = || format!("HTTP {}: {}", a.status, a.body);
    match a.status {
        200..=299 => Outcome::Delivered {
            bytes: body_bytes,
            skipped: 0,
        },
        429 => Outcome::Retry {
            reason: RetryReason::RateLimited,
            retry_after: a.retry_after,
            detail: detail(),
        },
        500..=599 => Outcome::Retry {
            reason: RetryReason::ServerError,
            retry_after: a.retry_after,
            detail: detail(),
        },
        413 => Outcome::Rejected {
            kind: RejectKind::TooLarge,
            status: Some(413),
            reason: detail(),
        },
        s => Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: Some(s),
            reason: detail(),
        },
    }
}

/// Reads at most `cap` bytes of a response body, chunk by chunk, so a huge or endless
/// answer never becomes a huge allocation. Returns the bytes and whether more were left
/// unread.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), Outcome> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The status and parsed `Retry-After` of a response.
pub(crate) fn status_and_retry_after(resp: &reqwest::Response) -> (u16, Option<Duration>) {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    (resp.status().as_u16(), retry_after)
}

/// An [`Answer`] from a status, `Retry-After` and (the start of) a body.
pub(crate) fn answer(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Answer {
    Answer {
        status,
        retry_after,
        body: truncate(&String::from_utf8_lossy(body)),
    }
}

/// An answer with its headers and the start of its raw body, for backends that read more
/// than the status: protobuf bodies (OTLP partial success) or extra headers (Datadog's
/// `X-RateLimit-Reset`).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// At most the `limit` given to [`execute_bounded`] bytes of the body.
    pub body: Vec<u8>,
    /// True when the body was longer than the limit; the rest was not read.
    pub truncated: bool,
}

impl RawAnswer {
    /// The parsed `Retry-After` header, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    }

    /// The body as text (invalid UTF-8 replaced), cut to the length kept for logs.
    pub fn text(&self) -> String {
        truncate(&String::from_utf8_lossy(&self.body))
    }

    /// The [`Answer`] the default classification reads.
    pub fn answer(&self) -> Answer {
        Answer {
            status: self.status,
            retry_after: self.retry_after(),
            body: self.text(),
        }
    }
}

/// Sends a prepared request and reads the status, the headers and at most `limit` bytes of
/// the body (a larger body is cut, never buffered whole); transport failures become `Retry`.
pub async fn execute_bounded(
    rb: reqwest::RequestBuilder,
    limit: usize,
) -> Result<RawAnswer, Outcome> {
    let resp = rb.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let (body, truncated) = read_capped(resp, limit).await?;
    Ok(RawAnswer {
        status,
        headers,
        body,
        truncated,
    })
}

/// POSTs `body` with `headers` and reads the answer as [`execute_bounded`] does.
pub(crate) async fn post_bounded(
    client: &reqwest::Client,
    url: &reqwest::Url,
    headers: &HeaderMap,
    body: Vec<u8>,
    limit: usize,
) -> Result<RawAnswer, Outcome> {
    let rb = client.post(url.clone()).headers(headers.clone()).body(body);
    execute_bounded(rb, limit).await
}

/// The fixed headers of a backend that posts `content_type` bodies, gzipped when `gzip`.
pub(crate) fn body_headers(content_type: &'static str, gzip: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if gzip {
        headers.insert(
            reqwest::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    headers
}

/// Gzip of `data`, deterministic (no file name, mtime 0), at the fast level: the vendor
/// limits are on the compressed size, but at level 6 compression cost several times the
/// CPU for a body only slightly smaller.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Replaces `{tenant}` in a template. Tenant ids are `[A-Za-z0-9_.-]`, safe in URL paths,
/// queries and header values as they are.
pub(crate) fn render_tenant(template: &str, tenant: &str) -> String {
    template.replace("{tenant}", tenant)
}

/// The placeholders (`{name}`) of a template that are not in `allowed`.
pub(crate) fn unknown_placeholders(template: &str, allowed: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else {
            out.push(format!("{{{rest}"));
            break;
        };
        let name = &rest[..close];
        if !allowed.contains(&name) {
            out.push(format!("{{{name}}}"));
        }
        rest = &rest[close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn statuses_are_classified_as_the_backends_document() {
        let a = |status| Answer {
            status,
            retry_after: None,
            body: String::new(),
        };
        assert!(matches!(classify(&a(204), 1), Outcome::Delivered { .. }));
        assert!(matches!(
            classify(&a(429), 1),
            Outcome::Retry {
                reason: RetryReason::RateLimited,
                ..
            }
        ));
        assert!(matches!(
            classify(&a(503), 1),
            Outcome::Retry {
                reason: RetryReason::ServerError,
                ..
            }
        ));
        assert!(matches!(
            classify(&a(413), 1),
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                ..
            }
        ));
        for s in [400, 401, 403, 404, 415, 422] {
            assert!(matches!(
                classify(&a(s), 1),
                Outcome::Rejected {
                    kind: RejectKind::Permanent,
                    ..
                }
            ));
        }
    }
}
