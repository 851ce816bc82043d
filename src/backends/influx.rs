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
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::backends::prometheus::tests::{request, series};
    use crate::backends::{RetryReason, testserver};
    use crate::sample::{MetricKind, Sample};

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).expect("valid tenant")
    }

    fn one(series: Series, samples: &[(i64, f64)]) -> Batch {
        let mut b = Batch::new();
        let samples = samples.iter().map(|&(t, v)| Sample::new(t, v)).collect();
        b.push(series, MetricKind::Gauge, samples);
        b
    }

    fn lines(batch: &Batch) -> String {
        line_protocol(batch).text
    }

    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .expect("a gzip body");
        text
    }

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape(&mut out, s, &[',', '=', ' ']);
        out
    }

    #[test]
    fn a_line_has_measurement_sorted_tags_float_value_and_ms_timestamp() {
        let s = series("cpu_seconds_total", &[("tenant", "t1"), ("host", "a")]);
        let b = one(s, &[(1_700_000_000_000, 12.5), (1_700_000_015_000, 1.0)]);
        assert_eq!(
            lines(&b),
            "cpu_seconds_total,host=a,tenant=t1 value=12.5 1700000000000\n\
             cpu_seconds_total,host=a,tenant=t1 value=1 1700000015000\n"
        );
        // A timestamp is written even for the epoch and before it.
        let b = one(series("up", &[]), &[(0, 0.0), (-5, -0.0)]);
        assert_eq!(lines(&b), "up value=0 0\nup value=-0 -5\n");
    }

    #[test]
    fn tag_values_are_escaped() {
        let s = series(
            "m",
            &[
                ("a", "with space"),
                ("b", "x,y=z"),
                ("c", "say \"hi\""),
                ("d", "zürich ☃"),
                ("e", ""),
                ("f", "two\nlines"),
            ],
        );
        assert_eq!(
            lines(&one(s, &[(1, 2.0)])),
            "m,a=with\\ space,b=x\\,y\\=z,c=say\\ \"hi\",d=zürich\\ ☃,f=two\\nlines value=2 1\n"
        );
    }

    #[test]
    fn measurement_and_keys_escape_their_special_characters() {
        let mut m = String::new();
        escape(&mut m, "my measure,x=1", &[',', ' ']);
        assert_eq!(
            m, "my\\ measure\\,x=1",
            "`=` needs no escape in a measurement"
        );
        assert_eq!(escaped("k=y"), "k\\=y");
    }

    #[test]
    fn backslashes_never_swallow_a_separator() {
        assert_eq!(
            escaped("C:\\dir\\x"),
            "C:\\dir\\x",
            "kept as is, read back unchanged"
        );
        assert_eq!(
            escaped("C:\\"),
            "C:\\\\",
            "a trailing odd run gets one more"
        );
        assert_eq!(escaped("a\\\\"), "a\\\\", "an even run is left alone");
        assert_eq!(escaped("a\\,b"), "a\\\\\\,b");
        assert_eq!(escaped("a\\\\ b"), "a\\\\\\ b");
    }

    #[test]
    fn values_parse_back_to_the_same_bits() {
        let values = [
            0.1,
            -0.0,
            1e300,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            123_456_789.123_456_78,
            -2.5e-7,
        ];
        let b = one(series("m", &[]), &values.map(|v| (1, v)));
        for (line, v) in lines(&b).lines().zip(values) {
            let field = line.split(' ').nth(1).expect("a field");
            let text = field.strip_prefix("value=").expect("the value field");
            assert!(!text.contains(['e', 'E', 'i']), "{text}");
            assert_eq!(text.parse::<f64>().expect("a float").to_bits(), v.to_bits());
        }
    }

    #[test]
    fn nan_and_infinities_are_left_out_and_counted() {
        let b = one(
            series("m", &[]),
            &[
                (1, f64::NAN),
                (2, 1.5),
                (3, f64::INFINITY),
                (4, f64::NEG_INFINITY),
            ],
        );
        let lp = line_protocol(&b);
        assert_eq!(lp.text, "m value=1.5 2\n");
        assert_eq!((lp.lines, lp.skipped), (1, 3));
    }

    #[test]
    fn encoding_is_deterministic() {
        let b = one(series("m", &[("a", "1")]), &[(1, 1.0), (2, 2.0)]);
        let first = gzip(lines(&b).as_bytes());
        assert_eq!(gzip(lines(&b).as_bytes()), first);
        assert_eq!(gunzip(&first), lines(&b));
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    #[test]
    fn statuses_are_classified_as_influxdb_documents() {
        assert_eq!(
            classify(&answer(204, ""), 10, 2),
            Outcome::Delivered {
                bytes: 10,
                skipped: 2
            }
        );
        let partial = r#"{"error":"partial write: field type conflict: input field \"value\" is type float, already exists as type integer dropped=1"}"#;
        assert!(matches!(
            classify(&answer(400, partial), 1, 0),
            Outcome::Rejected {
                kind: RejectKind::Partial,
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            classify(
                &answer(
                    422,
                    r#"{"code":"unprocessable entity","message":"failure writing points"}"#
                ),
                1,
                0
            ),
            Outcome::Rejected {
                kind: RejectKind::Partial,
                status: Some(422),
                ..
            }
        ));
        for s in [400, 401, 403, 404] {
            assert!(matches!(
                classify(&answer(s, "unable to parse"), 1, 0),
                Outcome::Rejected {
                    kind: RejectKind::Permanent,
                    ..
                }
            ));
        }
        assert!(matches!(
            classify(&answer(413, ""), 1, 0),
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                ..
            }
        ));
        assert!(matches!(
            classify(
                &answer(500, r#"{"error":"retention policy not found: weekly"}"#),
                1,
                0
            ),
            Outcome::Rejected {
                kind: RejectKind::Permanent,
                ..
            }
        ));
        assert!(matches!(
            classify(&answer(500, "internal error"), 1, 0),
            Outcome::Retry {
                reason: RetryReason::ServerError,
                ..
            }
        ));
        for (status, reason) in [
            (429, RetryReason::RateLimited),
            (503, RetryReason::ServerError),
        ] {
            let mut a = answer(status, "");
            a.retry_after = Some(Duration::from_secs(30));
            assert!(matches!(
                classify(&a, 1, 0),
                Outcome::Retry { reason: r, retry_after: Some(d), .. } if r == reason && d == Duration::from_secs(30)
            ));
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(matches!(
            Influx::new(InfluxConfig::v2("http://i:8086", "", "tok")),
            Err(ConfigError::Field { field: "org", .. })
        ));
        assert!(matches!(
            Influx::new(InfluxConfig::v2("http://i:8086", "org", "")),
            Err(ConfigError::Field { field: "token", .. })
        ));
        let mut c = InfluxConfig::v2("http://i:8086", "org", "tok");
        c.headers = vec![("Authorization".to_owned(), "Token other".to_owned())];
        assert!(matches!(
            Influx::new(c),
            Err(ConfigError::ReservedHeader { .. })
        ));
        let mut c = InfluxConfig::v1("http://i:8086");
        c.headers = vec![("content-encoding".to_owned(), "identity".to_owned())];
        assert!(matches!(
            Influx::new(c),
            Err(ConfigError::ReservedHeader { .. })
        ));
        let mut c = InfluxConfig::v1("http://i:8086");
        c.databases.insert(tenant("t"), String::new());
        assert!(matches!(
            Influx::new(c),
            Err(ConfigError::Field {
                field: "databases",
                ..
            })
        ));
    }

    fn mixed_batch() -> Batch {
        let mut b = one(
            series("temp", &[("room", "living room")]),
            &[(1000, 21.5), (2000, f64::NAN)],
        );
        b.push_one(
            series("hum", &[]),
            MetricKind::Gauge,
            Sample::new(1000, 40.0),
        );
        b
    }

    #[tokio::test]
    async fn v1_writes_to_write_with_db_rp_precision_and_query_credentials() {
        let server = testserver::serve_once(204, &[], "").await;
        let mut c = InfluxConfig::v1(server.url.clone());
        c.api = InfluxApi::V1 {
            retention_policy: Some("autogen".to_owned()),
            auth: V1Auth::Query {
                user: "writer".to_owned(),
                password: "p&ss word".to_owned(),
            },
        };
        c.databases
            .insert(tenant("edge-1"), "metrics db".to_owned());
        let influx = Influx::new(c).expect("valid");
        let (t, batch) = (tenant("edge-1"), mixed_batch());
        let out = influx.send(request(&t, &batch)).await;
        let got = server.request().await;
        assert_eq!(
            out,
            Outcome::Delivered {
                bytes: got.body.len() as u64,
                skipped: 1
            }
        );
        assert_eq!(got.method, "POST");
        assert_eq!(got.path(), "/write");
        let q: Vec<(String, String)> = got.query();
        let expected = [
            ("db", "metrics db"),
            ("rp", "autogen"),
            ("precision", "ms"),
            ("u", "writer"),
            ("p", "p&ss word"),
        ];
        assert_eq!(q, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(got.header("content-encoding"), Some("gzip"));
        assert_eq!(
            got.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(got.header("authorization"), None);
        assert_eq!(
            gunzip(&got.body),
            "temp,room=living\\ room value=21.5 1000\nhum value=40 1000\n"
        );
    }

    #[tokio::test]
    async fn v1_basic_auth_and_the_tenant_as_default_database() {
        let server = testserver::serve_once(204, &[], "").await;
        let mut c = InfluxConfig::v1(format!("{}/influx/", server.url));
        c.api = InfluxApi::V1 {
            retention_policy: None,
            auth: V1Auth::Basic {
                user: "u".to_owned(),
                password: "p".to_owned(),
            },
        };
        let influx = Influx::new(c).expect("valid");
        let (t, batch) = (tenant("edge-2"), mixed_batch());
        influx.send(request(&t, &batch)).await;
        let got = server.request().await;
        assert_eq!(got.target, "/influx/write?db=edge-2&precision=ms");
        assert_eq!(got.header("authorization"), Some("Basic dTpw"));
    }

    #[tokio::test]
    async fn v2_writes_to_api_v2_write_with_org_bucket_and_token() {
        let server = testserver::serve_once(204, &[], "").await;
        let mut c = InfluxConfig::v2(server.url.clone(), "my-org", "s3cret");
        c.databases.insert(tenant("edge-1"), "bucket-a".to_owned());
        let influx = Influx::new(c).expect("valid");
        let (t, batch) = (tenant("edge-1"), mixed_batch());
        let out = influx.send(request(&t, &batch)).await;
        let got = server.request().await;
        assert!(matches!(out, Outcome::Delivered { skipped: 1, .. }));
        assert_eq!(
            got.target,
            "/api/v2/write?org=my-org&bucket=bucket-a&precision=ms"
        );
        assert_eq!(got.header("authorization"), Some("Token s3cret"));
        assert_eq!(got.header("content-encoding"), Some("gzip"));
        assert_eq!(gunzip(&got.body), line_protocol(&batch).text);
    }

    #[tokio::test]
    async fn a_v2_partial_write_and_a_throttled_write_are_classified() {
        let server = testserver::serve_once(
            422,
            &[],
            r#"{"code":"unprocessable entity","message":"partial write: dropped 1 points"}"#,
        )
        .await;
        let influx = Influx::new(InfluxConfig::v2(server.url.clone(), "o", "t")).expect("valid");
        let (t, batch) = (tenant("a"), mixed_batch());
        let out = influx.send(request(&t, &batch)).await;
        server.request().await;
        assert!(matches!(
            out,
            Outcome::Rejected {
                kind: RejectKind::Partial,
                status: Some(422),
                ..
            }
        ));

        let server = testserver::serve_once(503, &[("Retry-After", "9")], "").await;
        let influx = Influx::new(InfluxConfig::v2(server.url.clone(), "o", "t")).expect("valid");
        let out = influx.send(request(&t, &batch)).await;
        server.request().await;
        assert!(matches!(
            out,
            Outcome::Retry { reason: RetryReason::ServerError, retry_after: Some(d), .. } if d == Duration::from_secs(9)
        ));
    }

    #[tokio::test]
    async fn a_batch_of_only_nan_is_not_sent() {
        // Nothing listens on port 1: a request would come back as a network retry.
        let influx = Influx::new(InfluxConfig::v1("http://127.0.0.1:1")).expect("valid");
        let (t, batch) = (
            tenant("a"),
            one(series("m", &[]), &[(1, f64::NAN), (2, f64::INFINITY)]),
        );
        let out = influx.send(request(&t, &batch)).await;
        assert_eq!(
            out,
            Outcome::Delivered {
                bytes: 0,
                skipped: 2
            }
        );
    }

    #[tokio::test]
    async fn a_transport_error_does_not_reveal_the_query_password() {
        let mut c = InfluxConfig::v1("http://127.0.0.1:1");
        c.api = InfluxApi::V1 {
            retention_policy: None,
            auth: V1Auth::Query {
                user: "u".to_owned(),
                password: "hunter2/+".to_owned(),
            },
        };
        let influx = Influx::new(c).expect("valid");
        let (t, batch) = (tenant("a"), mixed_batch());
        let out = influx.send(request(&t, &batch)).await;
        let Outcome::Retry {
            reason: RetryReason::Network,
            detail,
            ..
        } = out
        else {
            panic!("expected a network retry, got {out:?}");
        };
        assert!(!detail.contains("hunter2"), "{detail}");
    }
}
