//! InfluxDB line protocol: v1 `POST /write?db=&rp=&precision=ms` and v2
//! `POST /api/v2/write?org=&bucket=&precision=ms`, gzip-compressed.
//!
//! Encoding, a pure function of the batch (a resend is byte-identical, and InfluxDB
//! overwrites a point with the same measurement, tags and timestamp, so it is harmless):
//! - one line per sample, in batch order: measurement = metric name, tags = labels (sorted
//!   by name, as the series keeps them; labels with an empty value are left out, InfluxDB
//!   refuses empty tag values), one float field `value`, and the timestamp in milliseconds,
//!   always written (without it the server would use its own clock);
//! - the value uses Rust's shortest round-trip formatting without exponent (`1`, `0.1`,
//!   `-0`, `1000000000000000000000`), which parses back to the same `f64`; a bare number is
//!   a float in line protocol (integers need an `i` suffix);
//! - NaN and ±Inf cannot be stored in InfluxDB: those samples are left out and counted in
//!   [`Outcome::Delivered`]'s `skipped`;
//! - escaping: `,` and space in the measurement; `,`, `=` and space in tag keys and values.
//!   Line protocol cannot carry a line break: `\n` and `\r` are written as the two
//!   characters `\n`, `\r`. InfluxDB's parser takes a backslash as escaping the next
//!   character, so a run of an odd number of backslashes right before an escaped character
//!   or at the end of a value gets one more backslash: the line still parses, but InfluxDB
//!   then stores that value with one extra backslash (line protocol cannot express it
//!   exactly). Other backslashes are written as they are and read back unchanged.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::http::{self, Answer, Auth};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RejectKind, SendRequest};
use crate::sample::{Batch, Series};
use crate::tenant::TenantId;

/// Default request timeout: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers this backend sets itself.
const RESERVED: [&str; 3] = ["content-encoding", "content-type", "content-length"];

/// How a v1 server is authenticated.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum V1Auth {
    /// No credentials. The default.
    #[default]
    None,
    /// `u` and `p` query parameters.
    Query {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// HTTP basic auth.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for V1Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "V1Auth::None",
            Self::Query { .. } => "V1Auth::Query(..)",
            Self::Basic { .. } => "V1Auth::Basic(..)",
        })
    }
}

/// Which write API, with its credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum InfluxApi {
    /// InfluxDB 1.x `/write` (also served by 2.x as a compatibility API).
    V1 {
        /// `rp` parameter. Default `None`: the database's default retention policy.
        retention_policy: Option<String>,
        /// Credentials. Default [`V1Auth::None`].
        auth: V1Auth,
    },
    /// InfluxDB 2.x `/api/v2/write` with `Authorization: Token <token>`.
    V2 {
        /// Organization name or id (`org` parameter). Required.
        org: String,
        /// API token with write access to the buckets. Required.
        token: String,
    },
}

impl std::fmt::Debug for InfluxApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V1 {
                retention_policy,
                auth,
            } => f
                .debug_struct("V1")
                .field("retention_policy", retention_policy)
                .field("auth", auth)
                .finish(),
            Self::V2 { org, .. } => f
                .debug_struct("V2")
                .field("org", org)
                .finish_non_exhaustive(),
        }
    }
}

/// Configuration of an [`Influx`] backend.
#[derive(Debug, Clone)]
pub struct InfluxConfig {
    /// Base URL of the server, e.g. `http://influxdb:8086`. Required: no default.
    pub url: String,
    /// Write API and credentials. [`InfluxConfig::v1`] starts from v1 without credentials.
    pub api: InfluxApi,
    /// Database (v1) or bucket (v2) of each tenant. Default empty: a tenant missing from the
    /// map writes to the database or bucket named like its tenant id.
    pub databases: HashMap<TenantId, String>,
    /// Extra headers sent with every request. Default none. `Content-Encoding`,
    /// `Content-Type` and `Content-Length` are refused, and `Authorization` when the API's
    /// credentials set it (v1 basic, v2).
    pub headers: Vec<(String, String)>,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s.
    pub timeout: Duration,
}

impl InfluxConfig {
    /// InfluxDB 1.x at `url`, no credentials, default retention policy.
    pub fn v1(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api: InfluxApi::V1 {
                retention_policy: None,
                auth: V1Auth::None,
            },
            databases: HashMap::new(),
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// InfluxDB 2.x at `url` with an organization and a token.
    pub fn v2(url: impl Into<String>, org: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            api: InfluxApi::V2 {
                org: org.into(),
                token: token.into(),
            },
            ..Self::v1(url)
        }
    }
}

/// The line protocol of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProtocol {
    /// The lines, each ending in `\n`.
    pub text: String,
    /// Number of lines (samples written).
    pub lines: u64,
    /// Samples left out because their value is NaN or infinite.
    pub skipped: u64,
}

/// Encodes a batch as line protocol (see the module docs for the exact rules).
pub fn line_protocol(batch: &Batch) -> LineProtocol {
    let mut out = LineProtocol {
        text: String::new(),
        lines: 0,
        skipped: 0,
    };
    for entry in batch.entries() {
        let key = series_key(&entry.series);
        for s in &entry.samples {
            if !s.value.is_finite() {
                out.skipped += 1;
                continue;
            }
            out.lines += 1;
            // Display of f64 is the shortest string that parses back to the same value.
            let _ = writeln!(out.text, "{key} value={} {}", s.value, s.timestamp_ms);
        }
    }
    out
}

/// `measurement[,tag=value...]` of a series.
fn series_key(series: &Series) -> String {
    let mut key = String::new();
    escape(&mut key, series.name(), &[',', ' ']);
    for label in series.labels().iter().filter(|l| !l.value.is_empty()) {
        key.push(',');
        escape(&mut key, &label.name, &[',', '=', ' ']);
        key.push('=');
        escape(&mut key, &label.value, &[',', '=', ' ']);
    }
    key
}

/// Appends `s` with `special` characters backslash-escaped (see the module docs).
fn escape(out: &mut String, s: &str, special: &[char]) {
    // Backslashes written since the last other character: InfluxDB pairs them from the
    // left, so an odd run would escape the character that follows.
    let mut run = 0usize;
    for c in s.chars() {
        match c {
            '\\' => {
                run += 1;
                out.push('\\');
                continue;
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if special.contains(&c) => {
                if run % 2 == 1 {
                    out.push('\\');
                }
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        run = 0;
    }
    if run % 2 == 1 {
        out.push('\\');
    }
}

/// Gzip of `data`, deterministic (no file name, mtime 0). Level 1: at level 6 gzip cost more
/// CPU than every other step of forwarding to InfluxDB together (measured by
/// `examples/drain.rs --breakdown`), for a body only slightly smaller.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// InfluxDB classification (backends.md §4): 2xx delivered; 400 "partial write" and 422
/// partial; other 400 permanent; v1's 500 for a missing retention policy permanent;
/// otherwise [`http::classify`] (401/403/404 permanent, 413 too large, 429/5xx retried
/// with `Retry-After`).
pub(crate) fn classify(a: &Answer, body_bytes: u64, skipped: u64) -> Outcome {
    let body = a.body.to_ascii_lowercase();
    let rejected = |kind| Outcome::Rejected {
        kind,
        status: Some(a.status),
        reason: format!("HTTP {}: {}", a.status, a.body),
    };
    match a.status {
        400 if body.contains("partial write") => rejected(RejectKind::Partial),
        422 => rejected(RejectKind::Partial),
        500 if body.contains("retention policy not found") => rejected(RejectKind::Permanent),
        _ => match http::classify(a, body_bytes) {
            Outcome::Delivered { bytes, .. } => Outcome::Delivered { bytes, skipped },
            other => other,
        },
    }
}

/// Resolved API: what goes in the query string besides the database.
#[derive(Debug)]
enum Api {
    V1 {
        retention_policy: Option<String>,
        query_auth: Option<(String, String)>,
    },
    V2 {
        org: String,
    },
}

/// InfluxDB v1 or v2 writer, one database or bucket per tenant.
pub struct Influx {
    write_url: Url,
    api: Api,
    databases: HashMap<TenantId, String>,
    client: reqwest::Client,
    auth: Auth,
    headers: HeaderMap,
}

impl std::fmt::Debug for Influx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let api = match &self.api {
            Api::V1 { .. } => "v1",
            Api::V2 { .. } => "v2",
        };
        f.debug_struct("Influx")
            .field("write_url", &self.write_url.as_str())
            .field("api", &api)
            .field("databases", &self.databases)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Influx {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: InfluxConfig) -> Result<Self, ConfigError> {
        let base = prometheus::parse_url(&config.url)?;
        let (path, api, auth) = resolve_api(config.api)?;
        if let Some((tenant, _)) = config.databases.iter().find(|(_, db)| db.is_empty()) {
            return Err(ConfigError::Field {
                field: "databases",
                reason: format!("the database or bucket of tenant {tenant} is empty"),
            });
        }
        let mut headers =
            prometheus::checked_headers(&config.headers, &RESERVED, auth != Auth::None)?;
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(Self {
            write_url: prometheus::join_path(&base, path),
            api,
            databases: config.databases,
            client: http::client(config.timeout),
            auth,
            headers,
        })
    }

    /// The write URL of `tenant`, with every query parameter.
    fn url_for(&self, tenant: &TenantId) -> Url {
        let db = self
            .databases
            .get(tenant)
            .map_or(tenant.as_str(), String::as_str);
        let mut url = self.write_url.clone();
        {
            let mut q = url.query_pairs_mut();
            match &self.api {
                Api::V1 {
                    retention_policy,
                    query_auth,
                } => {
                    q.append_pair("db", db);
                    if let Some(rp) = retention_policy {
                        q.append_pair("rp", rp);
                    }
                    q.append_pair("precision", "ms");
                    if let Some((user, password)) = query_auth {
                        q.append_pair("u", user).append_pair("p", password);
                    }
                }
                Api::V2 { org } => {
                    q.append_pair("org", org)
                        .append_pair("bucket", db)
                        .append_pair("precision", "ms");
                }
            }
        }
        url
    }

    async fn send_batch(&self, tenant: &TenantId, batch: &Batch) -> Outcome {
        let lp = line_protocol(batch);
        if lp.lines == 0 {
            // Nothing InfluxDB can store (empty, or only NaN/±Inf): no request at all.
            return Outcome::Delivered {
                bytes: 0,
                skipped: lp.skipped,
            };
        }
        let body = gzip(lp.text.as_bytes());
        let bytes = body.len() as u64;
        let rb = self
            .client
            .post(self.url_for(tenant))
            .headers(self.headers.clone())
            .body(body);
        match http::execute(self.auth.apply(rb)).await {
            Ok(answer) => classify(&answer, bytes, lp.skipped),
            Err(outcome) => self.redact(outcome),
        }
    }

    /// Transport errors quote the request URL, which holds the v1 password in query mode.
    fn redact(&self, outcome: Outcome) -> Outcome {
        let Api::V1 {
            query_auth: Some((_, password)),
            ..
        } = &self.api
        else {
            return outcome;
        };
        match outcome {
            Outcome::Retry {
                reason,
                retry_after,
                detail,
            } => Outcome::Retry {
                reason,
                retry_after,
                detail: redact_password(&detail, password),
            },
            other => other,
        }
    }
}

/// Write path, resolved API and HTTP credentials of an [`InfluxApi`].
fn resolve_api(api: InfluxApi) -> Result<(&'static str, Api, Auth), ConfigError> {
    let required = |field, value: &str| {
        if value.is_empty() {
            Err(ConfigError::Field {
                field,
                reason: "it is required for the InfluxDB v2 API".to_owned(),
            })
        } else {
            Ok(())
        }
    };
    Ok(match api {
        InfluxApi::V1 {
            retention_policy,
            auth,
        } => {
            let (query_auth, auth) = match auth {
                V1Auth::None => (None, Auth::None),
                V1Auth::Query { user, password } => (Some((user, password)), Auth::None),
                V1Auth::Basic { user, password } => (None, Auth::Basic { user, password }),
            };
            let retention_policy = retention_policy.filter(|rp| !rp.is_empty());
            let api = Api::V1 {
                retention_policy,
                query_auth,
            };
            ("write", api, auth)
        }
        InfluxApi::V2 { org, token } => {
            required("org", &org)?;
            required("token", &token)?;
            let auth = Auth::Scheme {
                scheme: "Token".to_owned(),
                token,
            };
            ("api/v2/write", Api::V2 { org }, auth)
        }
    })
}

/// `detail` with `password` replaced, raw and as the URL query encodes it.
fn redact_password(detail: &str, password: &str) -> String {
    if password.is_empty() {
        return detail.to_owned();
    }
    let mut probe = Url::parse("http://x/").expect("a constant URL parses");
    probe.query_pairs_mut().append_pair("p", password);
    let encoded = probe
        .query()
        .unwrap_or_default()
        .trim_start_matches("p=")
        .to_owned();
    detail
        .replace(&encoded, "REDACTED")
        .replace(password, "REDACTED")
}

impl Backend for Influx {
    fn kind(&self) -> &'static str {
        "influxdb"
    }

    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(req.tenant, req.batch))
    }
}

#[cfg(test)]
mod tests;
