//! Admin API for replay jobs (docs/replay.md), merged into the router by `server.rs`:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /admin/tenants/{tenant}/replay?backend=B&from=F&until=U&name=N` | create (or resume) a job |
//! | `GET /admin/tenants/{tenant}/replay` | every job with its progress |
//! | `POST /admin/tenants/{tenant}/replay/{name}/cancel` | stop and cancel a job |
//!
//! `from`/`until` are offsets (digits) or RFC 3339 times; both are optional.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::server::{AppState, Params, admin_tenant};
use crate::replay::{Bound, ReplayRequest};

fn bad(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

fn bound(q: &Params, key: &str) -> Result<Option<Bound>, String> {
    q.get(key)
        .map(|v| Bound::parse(v).map_err(|e| format!("{key}: {e}")))
        .transpose()
}

/// `POST /admin/tenants/{tenant}/replay`
pub(super) async fn submit(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    q: Params,
) -> Response {
    let t = match admin_tenant(&s, &headers, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(backend) = q.get("backend").cloned() else {
        return bad("backend is required");
    };
    let req = match (bound(&q, "from"), bound(&q, "until")) {
        (Ok(from), Ok(until)) => ReplayRequest {
            name: q.get("name").cloned(),
            backend,
            from,
            until,
        },
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let f = Arc::clone(&s.forwarding);
    let id = t.id().clone();
    let started = tokio::task::spawn_blocking(move || {
        let job = f.start_replay(&id, &req)?;
        crate::replay::status(&t, &job)
    })
    .await;
    match started {
        Ok(Ok(st)) => axum::Json(st).into_response(),
        Ok(Err(e)) => bad(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `GET /admin/tenants/{tenant}/replay`
pub(super) async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let t = match admin_tenant(&s, &headers, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match s.forwarding.replay_status(t.id()) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// `POST /admin/tenants/{tenant}/replay/{name}/cancel`
pub(super) async fn cancel(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Response {
    let t = match admin_tenant(&s, &headers, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match s.forwarding.cancel_replay(t.id(), &name).await {
        Ok(job) => axum::Json(job).into_response(),
        Err(e) => bad(e),
    }
}
