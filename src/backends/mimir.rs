//! Grafana Mimir, Cortex and Grafana Cloud: Prometheus remote write 1.0 (the encoder,
//! sender and classification of [`super::prometheus`]) plus the tenant in `X-Scope-OrgID`.
//!
//! Self-hosted Mimir/Cortex take the tenant from `X-Scope-OrgID`; by default the org id is
//! the spool's tenant id. Grafana Cloud takes it from the basic-auth user (the metrics
//! instance id) and needs no header: see [`MimirConfig::grafana_cloud`].
//!
//! Mimir ingests the valid samples of a request and answers 400 with the first soft error
//! (out of order, duplicate timestamp, too old): that 400 is classified as
//! [`super::RejectKind::Duplicate`].

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use super::http::Auth;
use super::prometheus::{self, ConfigError, RwSender};
use super::{Backend, BoxFuture, Outcome, RejectKind, SendRequest};
use crate::tenant::TenantId;

/// Mimir's push path, the default of [`MimirConfig::path`].
pub const DEFAULT_PATH: &str = "/api/v1/push";

/// Grafana Cloud's push path (also Cortex' legacy one).
pub const GRAFANA_CLOUD_PATH: &str = "/api/prom/push";

const ORG_ID: &str = "x-scope-orgid";

/// Configuration of a [`Mimir`] backend.
#[derive(Debug, Clone)]
pub struct MimirConfig {
    /// Base URL of the distributor or gateway, e.g. `http://mimir:8080`, or Grafana
    /// Cloud's `https://prometheus-prod-01-eu-west-0.grafana.net`. Required: no default.
    pub url: String,
    /// Path appended to `url`. Default [`DEFAULT_PATH`] (`/api/v1/push`); Grafana Cloud and
    /// legacy Cortex use [`GRAFANA_CLOUD_PATH`] (`/api/prom/push`).
    pub path: String,
    /// Org id sent in `X-Scope-OrgID` for each tenant. Default empty: a tenant missing from
    /// the map is sent under its own tenant id.
    pub org_ids: HashMap<TenantId, String>,
    /// Send `X-Scope-OrgID`. Default true; false for Grafana Cloud (the basic-auth user
    /// is the tenant) or a single-tenant Mimir behind an authenticating proxy.
    pub send_org_id: bool,
    /// Credentials. Default [`Auth::None`]; Grafana Cloud: [`Auth::Basic`] with the metrics
    /// instance id as user and an access-policy token (`metrics:write`) as password.
    pub auth: Auth,
    /// Extra headers sent with every request. Default none. The remote-write reserved
    /// headers and `X-Scope-OrgID` are refused (use `org_ids`), and `Authorization` when
    /// `auth` is set.
    pub headers: Vec<(String, String)>,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s.
    pub timeout: Duration,
    /// True when the tenants have an out-of-order window
    /// (`limits.out_of_order_time_window`), so the forwarder need not keep per-series order.
    /// Default false.
    pub out_of_order_window: bool,
}

impl MimirConfig {
    /// Self-hosted Mimir or Cortex at `url`, every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            path: DEFAULT_PATH.to_owned(),
            org_ids: HashMap::new(),
            send_org_id: true,
            auth: Auth::None,
            headers: Vec::new(),
            timeout: prometheus::DEFAULT_TIMEOUT,
            out_of_order_window: false,
        }
    }

    /// Grafana Cloud: `url` is the stack's Prometheus host (without `/api/prom/push`), the
    /// path is [`GRAFANA_CLOUD_PATH`], no `X-Scope-OrgID`, basic auth with the instance id
    /// and token.
    pub fn grafana_cloud(
        url: impl Into<String>,
        instance_id: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            path: GRAFANA_CLOUD_PATH.to_owned(),
            send_org_id: false,
            auth: Auth::Basic {
                user: instance_id.into(),
                password: token.into(),
            },
            ..Self::new(url)
        }
    }
}

/// Remote write to Mimir, Cortex or Grafana Cloud, with the tenant as `X-Scope-OrgID`.
#[derive(Debug)]
pub struct Mimir {
    url: Url,
    org_ids: HashMap<TenantId, HeaderValue>,
    send_org_id: bool,
    out_of_order_window: bool,
    sender: RwSender,
}

impl Mimir {
    /// Checks the configuration (URL, org ids, headers) and builds the HTTP client.
    pub fn new(config: MimirConfig) -> Result<Self, ConfigError> {
        let base = prometheus::parse_url(&config.url)?;
        let org_ids = config
            .org_ids
            .iter()
            .map(|(tenant, org)| Ok((tenant.clone(), org_id_value(tenant, org)?)))
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            url: prometheus::join_path(&base, &config.path),
            org_ids,
            send_org_id: config.send_org_id,
            out_of_order_window: config.out_of_order_window,
            sender: RwSender::new(config.auth, &config.headers, &[ORG_ID], config.timeout)?,
        })
    }

    /// The `X-Scope-OrgID` value for `tenant`.
    fn org_id(&self, tenant: &TenantId) -> Result<HeaderValue, Outcome> {
        if let Some(v) = self.org_ids.get(tenant) {
            return Ok(v.clone());
        }
        // Tenant ids are `[A-Za-z0-9_.-]`, always a valid header value; refuse rather than
        // panic should that rule ever change.
        HeaderValue::from_str(tenant.as_str()).map_err(|_| Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: None,
            reason: format!("tenant id {tenant} is not a valid X-Scope-OrgID value"),
        })
    }
}

fn org_id_value(tenant: &TenantId, org: &str) -> Result<HeaderValue, ConfigError> {
    let bad = |reason: &str| ConfigError::Field {
        field: "org_ids",
        reason: format!("org id {org:?} of tenant {tenant}: {reason}"),
    };
    if org.is_empty() {
        return Err(bad("it is empty"));
    }
    if org.contains('|') {
        // Mimir reads `a|b` as several tenants, which it refuses for writes.
        return Err(bad(
            "'|' separates tenants in Mimir and cannot be used in a write",
        ));
    }
    HeaderValue::from_str(org).map_err(|_| bad("not a valid header value"))
}

impl Backend for Mimir {
    fn kind(&self) -> &'static str {
        "mimir"
    }

    fn accepts_out_of_order(&self) -> bool {
        self.out_of_order_window
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let header = if self.send_org_id {
                match self.org_id(req.tenant) {
                    Ok(v) => Some((HeaderName::from_static(ORG_ID), v)),
                    Err(rejected) => return rejected,
                }
            } else {
                None
            };
            self.sender.send(&self.url, header, req.batch).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::prometheus::tests::{request, tricky_batch};
    use crate::backends::prometheus::{decode_write_request, encode};
    use crate::backends::{RetryReason, testserver};

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).expect("valid tenant")
    }

    #[tokio::test]
    async fn the_tenant_goes_in_x_scope_orgid_on_the_push_path() {
        let server = testserver::serve_once(200, &[], "").await;
        let mut c = MimirConfig::new(format!("{}/", server.url));
        c.org_ids.insert(tenant("edge-1"), "org-42".to_owned());
        let mimir = Mimir::new(c).expect("valid");
        let (t, batch) = (tenant("edge-1"), tricky_batch());
        let out = mimir.send(request(&t, &batch)).await;
        let got = server.request().await;
        let expected = encode(&batch).expect("encodes");
        assert_eq!(
            out,
            Outcome::Delivered {
                bytes: expected.len() as u64,
                skipped: 0
            }
        );
        assert_eq!(got.target, "/api/v1/push");
        assert_eq!(got.header("x-scope-orgid"), Some("org-42"));
        assert_eq!(got.header("content-encoding"), Some("snappy"));
        assert_eq!(
            got.header("x-prometheus-remote-write-version"),
            Some("0.1.0")
        );
        assert_eq!(got.body, expected);
        assert_eq!(
            decode_write_request(&got.body)
                .expect("decodes")
                .timeseries
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn an_unmapped_tenant_is_sent_under_its_own_id() {
        let server = testserver::serve_once(204, &[], "").await;
        let mimir = Mimir::new(MimirConfig::new(server.url.clone())).expect("valid");
        let (t, batch) = (tenant("edge-2"), tricky_batch());
        mimir.send(request(&t, &batch)).await;
        assert_eq!(
            server.request().await.header("x-scope-orgid"),
            Some("edge-2")
        );
    }

    #[tokio::test]
    async fn grafana_cloud_uses_basic_auth_and_no_org_header() {
        let server = testserver::serve_once(429, &[("Retry-After", "12")], "rate limited").await;
        let mimir = Mimir::new(MimirConfig::grafana_cloud(
            server.url.clone(),
            "123456",
            "glc_tok",
        ))
        .expect("valid");
        let (t, batch) = (tenant("edge-1"), tricky_batch());
        let out = mimir.send(request(&t, &batch)).await;
        let got = server.request().await;
        assert_eq!(got.target, "/api/prom/push");
        assert_eq!(got.header("x-scope-orgid"), None);
        // base64("123456:glc_tok")
        assert_eq!(
            got.header("authorization"),
            Some("Basic MTIzNDU2OmdsY190b2s=")
        );
        assert!(matches!(
            out,
            Outcome::Retry { reason: RetryReason::RateLimited, retry_after: Some(d), .. }
                if d == Duration::from_secs(12)
        ));
    }

    #[tokio::test]
    async fn a_soft_error_400_is_a_duplicate() {
        let body = "failed pushing to ingester: user=edge-1: the sample has been rejected because \
                    another sample with a more recent timestamp has already been ingested and \
                    out-of-order samples are not allowed (err-mimir-sample-out-of-order)";
        let server = testserver::serve_once(400, &[], body).await;
        let mimir = Mimir::new(MimirConfig::new(server.url.clone())).expect("valid");
        let (t, batch) = (tenant("edge-1"), tricky_batch());
        let out = mimir.send(request(&t, &batch)).await;
        server.request().await;
        assert!(matches!(
            out,
            Outcome::Rejected {
                kind: RejectKind::Duplicate,
                status: Some(400),
                ..
            }
        ));
    }

    #[test]
    fn the_org_header_and_bad_org_ids_are_refused() {
        let mut c = MimirConfig::new("http://mimir:8080");
        c.headers = vec![("X-Scope-OrgID".to_owned(), "other".to_owned())];
        assert!(matches!(
            Mimir::new(c),
            Err(ConfigError::ReservedHeader { .. })
        ));
        let mut c = MimirConfig::new("http://mimir:8080");
        c.headers = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
        assert!(matches!(
            Mimir::new(c),
            Err(ConfigError::ReservedHeader { .. })
        ));
        for org in ["", "a|b", "bad\nvalue"] {
            let mut c = MimirConfig::new("http://mimir:8080");
            c.org_ids.insert(tenant("t"), org.to_owned());
            assert!(
                matches!(Mimir::new(c), Err(ConfigError::Field { .. })),
                "{org:?}"
            );
        }
    }

    #[test]
    fn the_path_is_joined_to_the_base_url() {
        for base in [
            "http://m:8080",
            "http://m:8080/",
            "http://m:8080/prefix",
            "http://m:8080/prefix/",
        ] {
            let m = Mimir::new(MimirConfig::new(base)).expect("valid");
            let expected = if base.contains("prefix") {
                "/prefix/api/v1/push"
            } else {
                "/api/v1/push"
            };
            assert_eq!(m.url.path(), expected, "{base}");
        }
    }
}
