//! The HTTP side: ingest endpoints, authentication, limits, `/metrics`, health, admin API.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/v1/write` | Prometheus remote write 1.0 (snappy protobuf) |
//! | `POST /write` | Influx line protocol, v1 parameters (`precision`, `u`/`p`) |
//! | `POST /api/v2/write` | Influx line protocol, v2 parameters (`org`, `bucket`, `precision`) |
//! | `POST /api/v1/push` | application JSON (see `crate::ingest`) |
//! | `GET /metrics` | OpenMetrics self-metrics |
//! | `GET /healthz`, `GET /readyz` | process alive; logs open and not poisoned |
//! | `/admin/...` | operator API (admin token); replay jobs in `replay_api.rs` |
//!
//! A request is acknowledged (2xx) only after its samples are durable under the tenant's
//! durability policy. Every refusal changes nothing and says why in a text body.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::metrics::{Metrics, TenantFormat, TenantLabel};
use super::settings::token_hash;
use crate::error::Error;
use crate::forward::Forwarding;
use crate::ingest::{self, IngestError, IngestLimits, Precision};
use crate::privacy::Privacy;
use crate::sample::Batch;
use crate::spool::{Spool, Tenant};
use crate::tenant::TenantId;

/// Everything a tenant's requests need, resolved once at start.
pub struct TenantCtx {
    /// The tenant.
    pub id: TenantId,
    /// Its log.
    pub log: Arc<Tenant>,
    /// Its privacy rules.
    pub privacy: Privacy,
    /// Its ingest rate limit and burst, if any.
    pub limiter: Option<(DefaultDirectRateLimiter, u32)>,
}

impl std::fmt::Debug for TenantCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCtx")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TenantCtx {
    /// A rate limiter of `per_second` samples with `burst` capacity.
    pub fn limiter(per_second: u32, burst: Option<u32>) -> Option<(DefaultDirectRateLimiter, u32)> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Some((
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            burst.get(),
        ))
    }
}

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct AppState {
    /// The logs.
    pub spool: Spool,
    /// Tenants by the SHA-256 (hex) of each of their tokens.
    pub by_token: HashMap<String, Arc<TenantCtx>>,
    /// SHA-256 (hex) of the admin token; `None` turns the admin API off.
    pub admin_token: Option<String>,
    /// Request limits.
    pub limits: IngestLimits,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// The forwarders.
    pub forwarding: Arc<Forwarding>,
    /// False once shutdown began: new requests get 503.
    pub accepting: AtomicBool,
}

/// A refusal: status, reason label for metrics, message for the body.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl Reject {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    fn into_response(self) -> Response {
        let mut r = (self.status, format!("{}\n", self.message)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/write", post(influx))
        .route("/api/v2/write", post(influx))
        .route("/api/v1/push", post(json_push))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/status", get(admin_status))
        .route("/admin/tenants/{tenant}/dlq/{backend}", get(admin_dlq_list))
        .route(
            "/admin/tenants/{tenant}/dlq/{backend}/redrive",
            post(admin_dlq_redrive),
        )
        .route(
            "/admin/tenants/{tenant}/keys/rotate",
            post(admin_rotate_key),
        )
        .route(
            "/admin/tenants/{tenant}/replay",
            get(super::replay_api::list).post(super::replay_api::submit),
        )
        .route(
            "/admin/tenants/{tenant}/replay/{name}/cancel",
            post(super::replay_api::cancel),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

pub(super) type Params = Query<HashMap<String, String>>;

async fn remote_write(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Params,
    body: Bytes,
) -> Response {
    let encoding = header_str(&headers, header::CONTENT_ENCODING);
    ingest(&s, "remote_write", &headers, &q, body, move |b, l| {
        if !matches!(encoding.as_str(), "" | "snappy") {
            return Err(IngestError::UnsupportedEncoding(format!(
                "{encoding} (remote write bodies are snappy-compressed protobuf)"
            )));
        }
        ingest::decode_remote_write(b, l)
    })
    .await
}

/// `/write` (v1) and `/api/v2/write` (v2): the parameters that matter to us are the same.
async fn influx(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Params,
    body: Bytes,
) -> Response {
    let precision = q.get("precision").cloned().unwrap_or_default();
    let now = crate::now_ms();
    let encoding = header_str(&headers, header::CONTENT_ENCODING);
    ingest(&s, "influx", &headers, &q, body, move |b, l| {
        let precision = match precision.as_str() {
            "" => Precision::Ns,
            p => Precision::parse(p).ok_or_else(|| IngestError::Malformed {
                format: "line protocol",
                message: format!("unknown precision {p:?}: use ns, us, ms, s, m or h"),
            })?,
        };
        let raw = ingest::decompress(b, &encoding, l.max_body_bytes)?;
        ingest::decode_line_protocol(&raw, precision, now, l)
    })
    .await
}

async fn json_push(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Params,
    body: Bytes,
) -> Response {
    let now = crate::now_ms();
    let encoding = header_str(&headers, header::CONTENT_ENCODING);
    ingest(&s, "json", &headers, &q, body, move |b, l| {
        let raw = ingest::decompress(b, &encoding, l.max_body_bytes)?;
        ingest::decode_json_push(&raw, now, l)
    })
    .await
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Authenticates, decodes, applies limits and privacy rules, appends; answers 204 once the
/// samples are durable.
async fn ingest<F>(
    s: &Arc<AppState>,
    format: &'static str,
    headers: &HeaderMap,
    q: &Params,
    body: Bytes,
    decode: F,
) -> Response
where
    F: FnOnce(&[u8], &IngestLimits) -> Result<Batch, IngestError> + Send + 'static,
{
    let tenant = match authenticate(s, headers, q) {
        Ok(t) => t,
        Err(r) => return finish(s, None, format, Err(r)),
    };
    let received = body.len() as u64;
    let result = accept(s, &tenant, format, body, decode).await;
    if result.is_ok() {
        s.metrics
            .bytes
            .get_or_create(&TenantFormat {
                tenant: tenant.id.to_string(),
                format,
            })
            .inc_by(received);
    }
    finish(s, Some(&tenant), format, result)
}

async fn accept<F>(
    s: &Arc<AppState>,
    t: &Arc<TenantCtx>,
    format: &'static str,
    body: Bytes,
    decode: F,
) -> Result<u64, Reject>
where
    F: FnOnce(&[u8], &IngestLimits) -> Result<Batch, IngestError> + Send + 'static,
{
    if !s.accepting.load(Ordering::Acquire) {
        return Err(Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        ));
    }
    let limits = s.limits;
    // Decoding a large body takes milliseconds of CPU: keep it off the async workers.
    let batch = tokio::task::spawn_blocking(move || decode(&body, &limits))
        .await
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            };
            Reject::new(status, reason, e.to_string())
        })?;
    let n = batch.sample_count() as u64;
    if n == 0 {
        return Ok(0);
    }
    if let Some((limiter, burst)) = &t.limiter {
        rate_limit(limiter, *burst, n)?;
    }
    let batch = t.privacy.apply(batch);
    let started = Instant::now();
    let appended = t.log.append(&batch).await;
    s.metrics
        .append_seconds
        .get_or_create(&TenantLabel {
            tenant: t.id.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    appended.map_err(append_error)?;
    s.metrics
        .samples
        .get_or_create(&TenantFormat {
            tenant: t.id.to_string(),
            format,
        })
        .inc_by(n);
    Ok(n)
}

fn rate_limit(limiter: &DefaultDirectRateLimiter, burst: u32, n: u64) -> Result<(), Reject> {
    let cells = u32::try_from(n).ok().and_then(NonZeroU32::new);
    let too_big = || {
        Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request has {n} samples, more than the tenant's rate-limit burst of {burst}: send smaller requests"
            ),
        )
    };
    let Some(cells) = cells else {
        return Err(too_big());
    };
    match limiter.check_n(cells) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut r = Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "tenant rate limit exceeded; retry in {} ms",
                    wait.as_millis()
                ),
            );
            r.retry_after = Some(wait.as_secs().max(1));
            Err(r)
        }
        Err(_) => Err(too_big()),
    }
}

fn append_error(e: Error) -> Reject {
    match e {
        Error::QuotaExceeded { .. } => {
            let mut r = Reject::new(StatusCode::TOO_MANY_REQUESTS, "quota", e.to_string());
            r.retry_after = Some(5);
            r
        }
        Error::InvalidInput(e) => {
            Reject::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        other => {
            let mut r = Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("cannot store: {other}"),
            );
            r.retry_after = Some(10);
            r
        }
    }
}

fn finish(
    s: &AppState,
    tenant: Option<&Arc<TenantCtx>>,
    format: &'static str,
    result: Result<u64, Reject>,
) -> Response {
    let name = tenant.map_or_else(|| "unknown".to_owned(), |t| t.id.to_string());
    match result {
        Ok(_) => {
            s.metrics.request(&name, format, 204);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => {
            if r.status.is_server_error() {
                tracing::warn!(tenant = %name, format, status = r.status.as_u16(), "{}", r.message);
            } else {
                tracing::debug!(tenant = %name, format, status = r.status.as_u16(), "{}", r.message);
            }
            s.metrics.reject(&name, format, r.reason, r.status.as_u16());
            r.into_response()
        }
    }
}

/// The token decides the tenant. Accepted forms: `Authorization: Bearer <token>`,
/// `Authorization: Token <token>` (InfluxDB v2 clients), basic auth with the token as the
/// password, and InfluxDB v1's `p=<token>` parameter. A tenant named by the request
/// (`X-Scope-OrgID`, `X-Metricspool-Tenant`, `tenant=`, basic-auth user name) must be the
/// token's tenant.
fn authenticate(s: &AppState, headers: &HeaderMap, q: &Params) -> Result<Arc<TenantCtx>, Reject> {
    let unauthorized = |m: &str| Reject::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let (token, user) = presented_token(headers, q);
    let Some(token) = token else {
        return Err(unauthorized(
            "missing token: send Authorization: Bearer <token>",
        ));
    };
    let Some(t) = s.by_token.get(&token_hash(&token)) else {
        return Err(unauthorized("invalid token"));
    };
    let claims = [
        headers
            .get("x-scope-orgid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers
            .get("x-metricspool-tenant")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        q.get("tenant").cloned(),
        user.filter(|u| !u.is_empty()),
    ];
    if let Some(other) = claims
        .into_iter()
        .flatten()
        .find(|c| c.trim() != t.id.as_str())
    {
        return Err(Reject::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token writes as tenant {}, not {other:?}", t.id),
        ));
    }
    Ok(t.clone())
}

fn presented_token(headers: &HeaderMap, q: &Params) -> (Option<String>, Option<String>) {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" | "token" if !rest.is_empty() => return (Some(rest.to_owned()), None),
            "basic" => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                    return (Some(pass.to_owned()), Some(user.to_owned()));
                }
                return (None, None);
            }
            _ => return (None, None),
        }
    }
    (q.get("p").cloned(), q.get("u").cloned())
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let body = tokio::task::spawn_blocking(move || s.metrics.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if !s.accepting.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    for id in s.spool.tenants() {
        match s.spool.tenant(&id) {
            Ok(t) => {
                if let Some(cause) = t.wal().poisoned_cause() {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("log of tenant {id} is poisoned: {cause}\n"),
                    )
                        .into_response();
                }
            }
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("tenant {id}: {e}\n"),
                )
                    .into_response();
            }
        }
    }
    "ready\n".into_response()
}

#[allow(clippy::result_large_err, reason = "the error is the response itself")]
pub(super) fn admin(s: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(want) = &s.admin_token else {
        return Err((
            StatusCode::NOT_FOUND,
            "the admin API is off: set admin.token_sha256\n",
        )
            .into_response());
    };
    let (token, _) = presented_token(headers, &Query(HashMap::new()));
    match token {
        Some(t) if token_hash(&t) == want.to_ascii_lowercase() => Ok(()),
        Some(_) => Err((StatusCode::UNAUTHORIZED, "invalid admin token\n").into_response()),
        None => Err((StatusCode::UNAUTHORIZED, "missing admin token\n").into_response()),
    }
}

/// The admin token checked, then the tenant looked up.
#[allow(clippy::result_large_err, reason = "the error is the response itself")]
pub(super) fn admin_tenant(
    s: &AppState,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Arc<Tenant>, Response> {
    admin(s, headers)?;
    tenant_of(s, tenant)
}

#[allow(clippy::result_large_err, reason = "the error is the response itself")]
pub(super) fn tenant_of(s: &AppState, tenant: &str) -> Result<Arc<Tenant>, Response> {
    let id = TenantId::new(tenant)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())?;
    if !s.spool.tenants().contains(&id) {
        return Err((StatusCode::NOT_FOUND, format!("no tenant {id}\n")).into_response());
    }
    s.spool
        .tenant(&id)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response())
}

async fn admin_status(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return r;
    }
    let status = super::status::collect(&s.spool, &s.forwarding.stats());
    axum::Json(status).into_response()
}

async fn admin_dlq_list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, backend)): Path<(String, String)>,
) -> Response {
    let t = match admin_tenant(&s, &headers, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let listed =
        tokio::task::spawn_blocking(move || t.dead_letters(&backend).and_then(|d| d.list())).await;
    match listed {
        Ok(Ok(list)) => axum::Json(
            list.iter()
                .map(super::status::dead_letter_json)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn admin_dlq_redrive(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, backend)): Path<(String, String)>,
    q: Params,
) -> Response {
    let t = match admin_tenant(&s, &headers, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(fwd) = s.forwarding.get(t.id(), &backend) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no backend {backend} for tenant {tenant}\n"),
        )
            .into_response();
    };
    let ids: Vec<u64> = match q.get("id").map(|v| v.parse::<u64>()) {
        Some(Ok(id)) => vec![id],
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "id must be a number\n").into_response(),
        None => {
            let d = t.clone();
            let b = backend.clone();
            match tokio::task::spawn_blocking(move || d.dead_letters(&b).and_then(|d| d.list()))
                .await
            {
                Ok(Ok(list)) => list.iter().filter(|d| !d.redriven).map(|d| d.id).collect(),
                Ok(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
                }
            }
        }
    };
    let mut redriven = Vec::new();
    for id in ids {
        match fwd.redrive(id).await {
            Ok(true) => redriven.push(id),
            Ok(false) => {
                return (StatusCode::NOT_FOUND, format!("no dead letter {id}\n")).into_response();
            }
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        }
    }
    axum::Json(serde_json::json!({ "redriven": redriven })).into_response()
}

async fn admin_rotate_key(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let t = match admin_tenant(&s, &headers, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let spool = s.spool.clone();
    match tokio::task::spawn_blocking(move || spool.rotate_key(t.id())).await {
        Ok(Ok(key_id)) => {
            axum::Json(serde_json::json!({ "tenant": tenant, "key_id": key_id })).into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// How long shutdown waits for in-flight requests, at most.
pub const DRAIN_REQUESTS: Duration = Duration::from_secs(5);
