//! Elasticsearch / OpenSearch bulk API: `POST {url}/_bulk` with
//! `Content-Type: application/x-ndjson`, gzip-compressed by default.
//!
//! # Documents
//!
//! One `create` action per sample, then its document, in batch order:
//!
//! ```text
//! {"create":{"_index":"metrics-t1-2026.12.04","_id":"<40 hex digits>"}}
//! {"@timestamp":"2026-12-04T10:00:00.000Z","metric":{"name":"cpu","kind":"gauge","value":12.5},"labels":{"host":"a"},"tenant":"t1"}
//! ```
//!
//! - `@timestamp` is RFC 3339 UTC with milliseconds (Kibana / Dashboards pick it as the time
//!   field); `metric.value` is the `f64` in serde_json's shortest round-trip form; labels
//!   with an empty value are left out (an empty value means "no such label");
//! - NaN and ±Inf cannot be written in JSON: those samples are left out and counted in
//!   [`Outcome::Delivered`]'s `skipped`;
//! - the index is a template ([`DEFAULT_INDEX`]): `{tenant}` and `{date}` (the UTC day of the
//!   sample, `YYYY.MM.DD`). A rendered name Elasticsearch would refuse (upper case, `*`, ...)
//!   makes the whole request a permanent rejection, named in the reason; it is never
//!   lower-cased, which could merge two tenants.
//!
//! # Why a resend is harmless
//!
//! The `_id` is the first 20 bytes of a SHA-256 (40 hex digits) of the sample's identity
//! ([`document_id`]), and `create` answers 409 `version_conflict_engine_exception` for a
//! document already stored, which counts as delivered: exactly once in effect. What the
//! identity is, is chosen by [`IdScope`]:
//!
//! - [`IdScope::Series`] (default): tenant, series (name and labels) and timestamp, as a
//!   TSDB (and an Elasticsearch TSDS) identifies a sample. Any resend of a sample is
//!   harmless, whatever the batch boundaries: a crash, a timeout, a re-driven dead letter,
//!   a changed `max_samples` or shard count, a replay of old segments. The price: when the
//!   log holds two samples of one series with the same timestamp, Elasticsearch keeps the
//!   first one sent (Prometheus refuses the second as a "duplicate sample").
//! - [`IdScope::Batch`]: also the start of the batch's log offset range and the occurrence
//!   of the (series, timestamp) in the request, so every sample of the log becomes its own
//!   document. A resend of the same batch (crash, timeout, re-driven dead letter) is
//!   harmless; a replay cut into different batches is not.
//!
//! The request part (shard or split half) is deliberately in neither: re-driving a
//! dead-lettered half, or changing the shard count between a crash and the restart, must
//! not change a sample's id.
//!
//! # Answers
//!
//! - HTTP 200: the per-item results decide (bounded read of at most [`MAX_RESPONSE`] bytes,
//!   trimmed by `filter_path`, parsed into minimal structs). 2xx and 409 items are
//!   delivered. 429 and 5xx items are sent again, alone, inside the same call, up to
//!   `item_retries` times with a doubling pause from `item_retry_backoff` (this backend's
//!   one exception to "a backend does not retry": only the refused items are resent); if
//!   some still fail, the answer is [`Outcome::Retry`] and the forwarder resends the whole
//!   batch later, which the 409s make harmless. Any other item error (400
//!   `mapper_parsing_exception`, 404 ...) is permanent: when other items were stored the
//!   answer is [`RejectKind::Partial`], else [`RejectKind::Permanent`]. The forwarder's
//!   dead-letter log keeps the whole request (an [`Outcome`] cannot carry a subset); its
//!   reason names the refused items, and re-driving it is harmless for the stored ones
//!   (409).
//! - HTTP 413 → [`RejectKind::TooLarge`] (the forwarder splits); 429 and 5xx →
//!   [`Outcome::Retry`] with `Retry-After`; 400, 401, 403 and every other status →
//!   [`RejectKind::Permanent`].
//!
//! Elasticsearch stores samples in any time order ([`Backend::accepts_out_of_order`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::http::{self, Auth, field_error};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::sample::Series;
use crate::secret::Secret;
use crate::tenant::TenantId;

/// Default index template: one index per tenant and UTC day.
pub const DEFAULT_INDEX: &str = "metrics-{tenant}-{date}";

/// Default request timeout: 30 s, as every HTTP backend.
pub const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;

/// Largest bulk response read: 64 MiB. With `filter_path` an item takes about 40 bytes
/// when it succeeded and about 250 when it failed, so this covers 250,000 failed items.
pub const MAX_RESPONSE: usize = 64 << 20;

/// Default number of inner resends of items refused with 429 or 5xx: 3.
pub const DEFAULT_ITEM_RETRIES: u32 = 3;

/// Default first pause before resending refused items: 200 ms (doubles each time).
pub const DEFAULT_ITEM_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Longest pause between inner resends.
const MAX_ITEM_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps only what classification needs from the bulk response.
const FILTER_PATH: &str = "errors,items.*.status,items.*.error.type,items.*.error.reason";

/// Refused items quoted in a dead-letter reason.
const QUOTED_ITEMS: usize = 5;

/// Credentials for Elasticsearch / OpenSearch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum EsAuth {
    /// `Authorization: ApiKey <value>`, where the value is the API key's `encoded` form
    /// (base64 of `id:api_key`, as Elasticsearch and Kibana show it).
    ApiKey(Secret),
    /// HTTP basic auth.
    Basic {
        /// User name (not a secret).
        user: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>` (OAuth / service tokens).
    Bearer(Secret),
}

fn default_index() -> String {
    DEFAULT_INDEX.to_owned()
}

fn default_true() -> bool {
    true
}

fn default_item_retries() -> u32 {
    DEFAULT_ITEM_RETRIES
}

fn default_item_retry_backoff() -> Duration {
    DEFAULT_ITEM_RETRY_BACKOFF
}

/// What a document id identifies (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdScope {
    /// Tenant, series and timestamp: one document per (series, timestamp). The default.
    #[default]
    Series,
    /// Tenant, series, timestamp, batch start offset and occurrence in the request: one
    /// document per sample of the log.
    Batch,
}

/// Configuration of an [`Elasticsearch`] backend (TOML: see `docs/backends/elasticsearch.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URL of the cluster, e.g. `https://es:9200` (a path prefix is kept: the bulk URL
    /// is `<url>/_bulk`). Required: no default.
    pub url: String,
    /// Index (or data stream) name template: `{tenant}`, and `{date}` (UTC `YYYY.MM.DD` of
    /// each sample) unless `data_stream` is set. Default [`DEFAULT_INDEX`]. The rendered
    /// name must be a valid index name (lower case, at most 255 bytes).
    #[serde(default = "default_index")]
    pub index: String,
    /// The target is a data stream (it rolls over by itself, so `{date}` is refused). Data
    /// streams accept only `create`, which this backend always uses. Default false.
    #[serde(default)]
    pub data_stream: bool,
    /// What a document id identifies. Default [`IdScope::Series`].
    #[serde(default)]
    pub document_id: IdScope,
    /// Credentials. Default none.
    #[serde(default)]
    pub auth: Option<EsAuth>,
    /// Gzip request bodies (`Content-Encoding: gzip`). Default true.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s;
    /// 1 ms to 1 h.
    #[serde(default = "http::default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
    /// How often items refused with 429 or 5xx are resent inside one send before the
    /// forwarder's own retry takes over. Default 3; 0 to 10.
    #[serde(default = "default_item_retries")]
    pub item_retries: u32,
    /// First pause before such a resend; doubles each time, at most 5 s. Default 200 ms.
    #[serde(
        default = "default_item_retry_backoff",
        with = "crate::secret::duration"
    )]
    pub item_retry_backoff: Duration,
}

impl ElasticsearchConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            index: default_index(),
            data_stream: false,
            document_id: IdScope::Series,
            auth: None,
            gzip: true,
            timeout: DEFAULT_TIMEOUT,
            item_retries: DEFAULT_ITEM_RETRIES,
            item_retry_backoff: DEFAULT_ITEM_RETRY_BACKOFF,
        }
    }
}

/// Bulk writer to Elasticsearch or OpenSearch, one index (or data stream) per tenant.
pub struct Elasticsearch {
    bulk_url: Url,
    index: String,
    id_scope: IdScope,
    client: reqwest::Client,
    auth: Auth,
    headers: HeaderMap,
    gzip: bool,
    item_retries: u32,
    item_retry_backoff: Duration,
}

impl std::fmt::Debug for Elasticsearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elasticsearch")
            .field("bulk_url", &self.bulk_url.as_str())
            .field("index", &self.index)
            .field("auth", &self.auth)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

/// Resolves the configured credentials.
fn resolve_auth(auth: Option<&EsAuth>) -> Result<Auth, ConfigError> {
    let secret = |s: &Secret| s.resolve().map_err(|e| field_error("auth", e.to_string()));
    Ok(match auth {
        None => Auth::None,
        Some(EsAuth::ApiKey(s)) => Auth::Scheme {
            scheme: "ApiKey".to_owned(),
            token: secret(s)?,
        },
        Some(EsAuth::Basic { user, password }) => Auth::Basic {
            user: user.clone(),
            password: secret(password)?,
        },
        Some(EsAuth::Bearer(s)) => Auth::Bearer(secret(s)?),
    })
}

impl Elasticsearch {
    /// Checks the configuration, reads the secrets and builds the HTTP client.
    pub fn new(config: ElasticsearchConfig) -> Result<Self, ConfigError> {
        let base = prometheus::parse_url(&config.url)?;
        let allowed: &[&str] = if config.data_stream {
            &["tenant"]
        } else {
            &["tenant", "date"]
        };
        let unknown = http::unknown_placeholders(&config.index, allowed);
        if config.data_stream && unknown.iter().any(|p| p == "{date}") {
            return Err(field_error(
                "index",
                "a data stream rolls over by itself, so {date} has no place in its name (e.g. \"metrics-metricspool-{tenant}\")",
            ));
        }
        if !unknown.is_empty() {
            return Err(field_error(
                "index",
                format!(
                    "unknown placeholder(s) {} (allowed: {allowed:?})",
                    unknown.join(", ")
                ),
            ));
        }
        if let Err(reason) = check_index_name(&render_index(&config.index, "t", (2000, 1, 1))) {
            return Err(field_error("index", reason));
        }
        if config.timeout.is_zero() || config.timeout > Duration::from_secs(3600) {
            return Err(field_error("timeout", "it must be 1 ms to 1 h"));
        }
        if config.item_retries > 10 {
            return Err(field_error("item_retries", "it must be 0 to 10"));
        }
        let headers = http::body_headers("application/x-ndjson", config.gzip);
        let mut bulk_url = prometheus::join_path(&base, "_bulk");
        bulk_url
            .query_pairs_mut()
            .append_pair("filter_path", FILTER_PATH);
        Ok(Self {
            bulk_url,
            index: config.index,
            id_scope: config.document_id,
            client: http::client(config.timeout),
            auth: resolve_auth(config.auth.as_ref())?,
            headers,
            gzip: config.gzip,
            item_retries: config.item_retries,
            item_retry_backoff: config.item_retry_backoff,
        })
    }

    /// Sends the documents, resending items refused with 429/5xx, and classifies.
    async fn send_docs(&self, docs: Docs) -> Outcome {
        let mut pending: Vec<usize> = (0..docs.lines.len()).collect();
        let mut stored = 0usize;
        let mut refused: Vec<(usize, ItemResult)> = Vec::new();
        let mut bytes = 0u64;
        let mut pause = self.item_retry_backoff;
        let mut attempt = 0;
        loop {
            let (sent, results) = match self.post(&docs, &pending).await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            bytes += sent;
            let mut retry = Vec::new();
            for (&doc, result) in pending.iter().zip(results) {
                match result.verdict() {
                    Verdict::Stored => stored += 1,
                    Verdict::Retry => retry.push((doc, result)),
                    Verdict::Refused => refused.push((doc, result)),
                }
            }
            if retry.is_empty() {
                return finish(&docs, stored, &refused, bytes);
            }
            if attempt == self.item_retries {
                return retry_outcome(&docs, &retry);
            }
            attempt += 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_ITEM_RETRY_BACKOFF);
            pending = retry.into_iter().map(|(doc, _)| doc).collect();
        }
    }

    /// Posts the documents `which` and returns the body bytes sent and one result per
    /// document, or the outcome when the request as a whole did not succeed.
    async fn post(&self, docs: &Docs, which: &[usize]) -> Result<(u64, Vec<ItemResult>), Outcome> {
        let mut body = Vec::new();
        for &i in which {
            body.extend_from_slice(docs.lines[i].as_bytes());
        }
        if self.gzip {
            body = http::gzip(&body);
        }
        let sent = body.len() as u64;
        let rb = self
            .client
            .post(self.bulk_url.clone())
            .headers(self.headers.clone())
            .body(body);
        let resp = self
            .auth
            .apply(rb)
            .send()
            .await
            .map_err(http::transport_error)?;
        let (status, retry_after) = http::status_and_retry_after(&resp);
        if !(200..300).contains(&status) {
            let (body, _) = http::read_capped(resp, 4096).await?;
            return Err(http::classify(
                &http::answer(status, retry_after, &body),
                sent,
            ));
        }
        let (body, truncated) = http::read_capped(resp, MAX_RESPONSE).await?;
        if truncated {
            return Err(Outcome::Retry {
                reason: RetryReason::ServerError,
                retry_after: None,
                detail: format!(
                    "the bulk response is larger than {MAX_RESPONSE} bytes; send smaller batches"
                ),
            });
        }
        let results = parse_response(&body, which.len()).map_err(|detail| Outcome::Retry {
            reason: RetryReason::ServerError,
            retry_after: None,
            detail,
        })?;
        Ok((sent, results))
    }
}

/// The outcome once no item waits for a resend.
fn finish(docs: &Docs, stored: usize, refused: &[(usize, ItemResult)], bytes: u64) -> Outcome {
    if refused.is_empty() {
        return Outcome::Delivered {
            bytes,
            skipped: docs.skipped,
        };
    }
    let kind = if stored > 0 {
        RejectKind::Partial
    } else {
        RejectKind::Permanent
    };
    Outcome::Rejected {
        kind,
        status: refused.first().map(|(_, r)| r.status),
        reason: format!(
            "{} of {} documents refused: {}",
            refused.len(),
            docs.lines.len(),
            quote(docs, refused)
        ),
    }
}

/// [`Outcome::Retry`] for items that still fail with 429 or 5xx.
fn retry_outcome(docs: &Docs, retry: &[(usize, ItemResult)]) -> Outcome {
    let reason = if retry.iter().any(|(_, r)| r.status == 429) {
        RetryReason::RateLimited
    } else {
        RetryReason::ServerError
    };
    Outcome::Retry {
        reason,
        retry_after: None,
        detail: format!(
            "{} of {} documents still refused after resending them: {}",
            retry.len(),
            docs.lines.len(),
            quote(docs, retry)
        ),
    }
}

/// The first refused items, for logs and dead letters.
fn quote(docs: &Docs, items: &[(usize, ItemResult)]) -> String {
    let mut out = String::new();
    for (doc, r) in items.iter().take(QUOTED_ITEMS) {
        let (ty, reason) = r
            .error
            .as_ref()
            .map_or(("", ""), |e| (e.kind.as_str(), e.reason.as_str()));
        let reason: String = reason.chars().take(200).collect();
        let _ = write!(
            out,
            "[sample {} id {}: {} {ty}: {reason}] ",
            docs.sample_index[*doc], docs.ids[*doc], r.status
        );
    }
    if items.len() > QUOTED_ITEMS {
        let _ = write!(out, "and {} more", items.len() - QUOTED_ITEMS);
    }
    out.trim_end().to_owned()
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// The bulk lines of a request: one action and document pair per sample.
#[derive(Debug, Clone, Default)]
struct Docs {
    /// Action line and document line, each ending in `\n`.
    lines: Vec<String>,
    /// The `_id` of each document.
    ids: Vec<String>,
    /// The position of each document's sample in the batch.
    sample_index: Vec<usize>,
    /// Samples left out (NaN, ±Inf).
    skipped: u64,
}

/// A deterministic document id: hex of the first 20 bytes of SHA-256 over the tenant, the
/// series, the timestamp and, for [`IdScope::Batch`], `position`: the batch's first log
/// offset and the occurrence of this (series, timestamp) in the request (0 unless the
/// request repeats it).
pub fn document_id(
    tenant: &TenantId,
    series: &Series,
    timestamp_ms: i64,
    position: Option<(u64, u32)>,
) -> String {
    let mut h = Sha256::new();
    h.update(match position {
        None => b"metricspool-es-id-series-v1\0".as_slice(),
        Some(_) => b"metricspool-es-id-batch-v1\0".as_slice(),
    });
    h.update(tenant.as_str().as_bytes());
    h.update([0]);
    h.update(series.name().as_bytes());
    h.update([0]);
    for l in series.labels() {
        h.update(l.name.as_bytes());
        h.update([0]);
        h.update(l.value.as_bytes());
        h.update([0]);
    }
    h.update([1]);
    h.update(timestamp_ms.to_le_bytes());
    if let Some((offset_start, occurrence)) = position {
        h.update(offset_start.to_le_bytes());
        h.update(occurrence.to_le_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(40);
    for b in &digest[..20] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Encodes a request's samples as bulk lines, or refuses it when an index name is invalid.
fn encode(index: &str, scope: IdScope, req: &SendRequest<'_>) -> Result<Docs, Outcome> {
    let mut docs = Docs::default();
    let tenant = req.tenant.as_str();
    let tenant_json = json_string(tenant);
    let mut names: HashMap<(i32, u32, u32), String> = HashMap::new();
    let mut seen: HashMap<(&Series, i64), u32> = HashMap::new();
    let mut position = 0usize;
    for entry in req.batch.entries() {
        let labels = labels_json(&entry.series);
        let metric = format!(
            "{{\"name\":{},\"kind\":\"{}\",\"value\":",
            json_string(entry.series.name()),
            entry.kind.as_str()
        );
        for s in &entry.samples {
            position += 1;
            if !s.value.is_finite() {
                docs.skipped += 1;
                continue;
            }
            let day = civil_date(s.timestamp_ms);
            let name = match names.get(&day) {
                Some(n) => n.clone(),
                None => {
                    let n = render_index(index, tenant, day);
                    check_index_name(&n).map_err(|reason| Outcome::Rejected {
                        kind: RejectKind::Permanent,
                        status: None,
                        reason: format!("tenant {tenant}: {reason}"),
                    })?;
                    names.insert(day, n.clone());
                    n
                }
            };
            let place = match scope {
                IdScope::Series => None,
                IdScope::Batch => {
                    let occurrence = seen.entry((&entry.series, s.timestamp_ms)).or_insert(0);
                    *occurrence += 1;
                    Some((req.offsets.start, *occurrence - 1))
                }
            };
            let id = document_id(req.tenant, &entry.series, s.timestamp_ms, place);
            let value = serde_json::to_string(&s.value).unwrap_or_else(|_| "0".to_owned());
            let line = format!(
                "{{\"create\":{{\"_index\":{},\"_id\":\"{id}\"}}}}\n{{\"@timestamp\":\"{}\",\"metric\":{metric}{value}}},\"labels\":{labels},\"tenant\":{tenant_json}}}\n",
                json_string(&name),
                rfc3339_ms(s.timestamp_ms),
            );
            docs.lines.push(line);
            docs.ids.push(id);
            docs.sample_index.push(position - 1);
        }
    }
    Ok(docs)
}

/// `{"name":"value",...}` of a series' labels (sorted by name; empty values left out).
fn labels_json(series: &Series) -> String {
    let mut out = String::from("{");
    for l in series.labels().iter().filter(|l| !l.value.is_empty()) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&json_string(&l.name));
        out.push(':');
        out.push_str(&json_string(&l.value));
    }
    out.push('}');
    out
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The index template with `{tenant}` and `{date}` filled in.
fn render_index(template: &str, tenant: &str, (y, m, d): (i32, u32, u32)) -> String {
    http::render_tenant(template, tenant).replace("{date}", &format!("{y:04}.{m:02}.{d:02}"))
}

/// Elasticsearch's index name rules (also OpenSearch's).
fn check_index_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("index name {name:?} is not valid: {why}"));
    if name.is_empty() || name == "." || name == ".." {
        return bad("it is empty, `.` or `..`");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    if name.starts_with(['-', '_', '+']) {
        return bad("it starts with `-`, `_` or `+`");
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return bad("it has upper-case letters (use lower-case tenant ids)");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return bad("it has one of \\ / * ? \" < > | space , # :");
    }
    Ok(())
}

/// The UTC calendar day of a millisecond timestamp (proleptic Gregorian).
fn civil_date(ts_ms: i64) -> (i32, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = ts_ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        m,
        d,
    )
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-12-04T10:00:00.000Z`.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let (y, m, d) = civil_date(ts_ms);
    let ms_of_day = ts_ms.rem_euclid(86_400_000);
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

// ---------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, ItemResult>>,
}

/// One item of a bulk response.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Debug, Clone, Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

enum Verdict {
    Stored,
    Retry,
    Refused,
}

impl ItemResult {
    fn verdict(&self) -> Verdict {
        match self.status {
            // 409 on `create`: a document with this deterministic id exists, i.e. this
            // sample was stored by an earlier send.
            200..=299 | 409 => Verdict::Stored,
            429 | 500..=599 => Verdict::Retry,
            _ => Verdict::Refused,
        }
    }
}

/// One result per document sent, in order. `errors: false` means every item succeeded
/// (its items need not be read).
pub(crate) fn parse_response(body: &[u8], sent: usize) -> Result<Vec<ItemResult>, String> {
    let r: BulkResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the bulk response is not the JSON expected: {e}"))?;
    let ok = ItemResult {
        status: 201,
        error: None,
    };
    if !r.errors {
        return Ok(vec![ok; sent]);
    }
    if r.items.len() != sent {
        return Err(format!(
            "the bulk response has {} items for {sent} documents",
            r.items.len()
        ));
    }
    r.items
        .into_iter()
        .map(|mut item| {
            item.pop_first()
                .map(|(_, v)| v)
                .ok_or_else(|| "an empty item in the bulk response".to_owned())
        })
        .collect()
}

impl Backend for Elasticsearch {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let docs = match encode(&self.index, self.id_scope, &req) {
                Ok(d) => d,
                Err(outcome) => return outcome,
            };
            if docs.lines.is_empty() {
                return Outcome::Delivered {
                    bytes: 0,
                    skipped: docs.skipped,
                };
            }
            self.send_docs(docs).await
        })
    }
}

#[cfg(test)]
mod tests;
