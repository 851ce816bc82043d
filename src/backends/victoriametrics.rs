//! VictoriaMetrics: Prometheus remote write 1.0 (the encoder, sender and classification of
//! [`super::prometheus`]) to a single node (`<url>/api/v1/write`) or to a cluster's vminsert
//! (`<url>/insert/<accountID>:<projectID>/prometheus/api/v1/write`, one VictoriaMetrics
//! tenant per spool tenant).
//!
//! VictoriaMetrics stores samples in any time order, so the forwarder need not keep
//! per-series order. It does not deduplicate by default: a resend stores the samples twice
//! unless the operator runs it with `-dedup.minScrapeInterval` (1 ms is enough for exact
//! duplicates).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Url;

use super::http::Auth;
use super::prometheus::{self, ConfigError, RwSender};
use super::{Backend, BoxFuture, Outcome, RejectKind, SendRequest};
use crate::tenant::TenantId;

/// A VictoriaMetrics cluster tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmTenant {
    /// `accountID`.
    pub account_id: u32,
    /// `projectID` (VictoriaMetrics' default is 0).
    pub project_id: u32,
}

/// Single node or cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum VmMode {
    /// Single-node VictoriaMetrics: every tenant goes to `<url>/api/v1/write`. The default.
    #[default]
    Single,
    /// Cluster: each spool tenant goes to its VictoriaMetrics tenant through vminsert. A spool
    /// tenant missing from the map is refused ([`RejectKind::Permanent`]): sending it to some
    /// default tenant would mix tenants' data.
    Cluster {
        /// Spool tenant → VictoriaMetrics tenant.
        tenants: HashMap<TenantId, VmTenant>,
    },
}

/// Configuration of a [`VictoriaMetrics`] backend.
#[derive(Debug, Clone)]
pub struct VictoriaMetricsConfig {
    /// Base URL: single node e.g. `http://vm:8428`, cluster: vminsert e.g.
    /// `http://vminsert:8480` (or vmauth in front). Required: no default.
    pub url: String,
    /// Single node or cluster. Default [`VmMode::Single`].
    pub mode: VmMode,
    /// Credentials (for vmauth or a proxy in front). Default [`Auth::None`].
    pub auth: Auth,
    /// Extra headers sent with every request. Default none. The remote-write reserved
    /// headers are refused, and `Authorization` when `auth` is set.
    pub headers: Vec<(String, String)>,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s; keep
    /// it above vminsert's `-insert.maxQueueDuration` (1 min) to get its 503 rather than a
    /// timeout under load.
    pub timeout: Duration,
}

impl VictoriaMetricsConfig {
    /// A single-node configuration for `url`, every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            mode: VmMode::Single,
            auth: Auth::None,
            headers: Vec::new(),
            timeout: prometheus::DEFAULT_TIMEOUT,
        }
    }

    /// A cluster configuration for vminsert at `url` with the given tenant mapping.
    pub fn cluster(url: impl Into<String>, tenants: HashMap<TenantId, VmTenant>) -> Self {
        Self {
            mode: VmMode::Cluster { tenants },
            ..Self::new(url)
        }
    }
}

/// Where requests go, resolved at construction.
#[derive(Debug)]
enum Target {
    Single(Url),
    Cluster(HashMap<TenantId, Url>),
}

/// Remote write to VictoriaMetrics, single node or cluster.
#[derive(Debug)]
pub struct VictoriaMetrics {
    target: Target,
    sender: RwSender,
}

impl VictoriaMetrics {
    /// Checks the configuration, resolves every tenant's URL and builds the HTTP client.
    pub fn new(config: VictoriaMetricsConfig) -> Result<Self, ConfigError> {
        let base = prometheus::parse_url(&config.url)?;
        let target = match &config.mode {
            VmMode::Single => Target::Single(prometheus::join_path(&base, "api/v1/write")),
            VmMode::Cluster { tenants } => Target::Cluster(
                tenants
                    .iter()
                    .map(|(t, vm)| (t.clone(), cluster_url(&base, *vm)))
                    .collect(),
            ),
        };
        Ok(Self {
            target,
            sender: RwSender::new(config.auth, &config.headers, &[], config.timeout)?,
        })
    }

    fn url_for(&self, tenant: &TenantId) -> Result<&Url, Outcome> {
        match &self.target {
            Target::Single(url) => Ok(url),
            Target::Cluster(urls) => urls.get(tenant).ok_or_else(|| Outcome::Rejected {
                kind: RejectKind::Permanent,
                status: None,
                reason: format!(
                    "no VictoriaMetrics cluster tenant (accountID:projectID) is configured for tenant {tenant}"
                ),
            }),
        }
    }
}

fn cluster_url(base: &Url, vm: VmTenant) -> Url {
    let suffix = format!(
        "insert/{}:{}/prometheus/api/v1/write",
        vm.account_id, vm.project_id
    );
    prometheus::join_path(base, &suffix)
}

impl Backend for VictoriaMetrics {
    fn kind(&self) -> &'static str {
        "victoriametrics"
    }

    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.url_for(req.tenant) {
                Ok(url) => self.sender.send(url, None, req.batch).await,
                Err(rejected) => rejected,
            }
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
    async fn single_node_writes_to_api_v1_write() {
        let server = testserver::serve_once(204, &[], "").await;
        let vm =
            VictoriaMetrics::new(VictoriaMetricsConfig::new(server.url.clone())).expect("valid");
        let (t, batch) = (tenant("a"), tricky_batch());
        let out = vm.send(request(&t, &batch)).await;
        let got = server.request().await;
        let expected = encode(&batch).expect("encodes");
        assert_eq!(
            out,
            Outcome::Delivered {
                bytes: expected.len() as u64,
                skipped: 0
            }
        );
        assert_eq!(got.target, "/api/v1/write");
        assert_eq!(got.header("content-encoding"), Some("snappy"));
        assert_eq!(got.header("content-type"), Some("application/x-protobuf"));
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
    async fn cluster_writes_to_the_tenants_insert_path() {
        let server = testserver::serve_once(204, &[], "").await;
        let tenants = HashMap::from([(
            tenant("edge-1"),
            VmTenant {
                account_id: 42,
                project_id: 7,
            },
        )]);
        let vm = VictoriaMetrics::new(VictoriaMetricsConfig::cluster(
            format!("{}/", server.url),
            tenants,
        ))
        .expect("valid");
        let (t, batch) = (tenant("edge-1"), tricky_batch());
        let out = vm.send(request(&t, &batch)).await;
        let got = server.request().await;
        assert!(matches!(out, Outcome::Delivered { .. }));
        assert_eq!(got.target, "/insert/42:7/prometheus/api/v1/write");
        assert_eq!(got.body, encode(&batch).expect("encodes"));
    }

    #[tokio::test]
    async fn an_unmapped_cluster_tenant_is_refused_without_a_request() {
        let vm = VictoriaMetrics::new(VictoriaMetricsConfig::cluster(
            "http://127.0.0.1:1",
            HashMap::new(),
        ))
        .expect("valid");
        let (t, batch) = (tenant("nobody"), tricky_batch());
        let out = vm.send(request(&t, &batch)).await;
        assert!(matches!(
            &out,
            Outcome::Rejected { kind: RejectKind::Permanent, status: None, reason } if reason.contains("nobody")
        ));
    }

    #[tokio::test]
    async fn a_busy_vminsert_503_is_retried_after_its_delay() {
        let server = testserver::serve_once(
            503,
            &[("Retry-After", "5")],
            "cannot process insert request",
        )
        .await;
        let vm =
            VictoriaMetrics::new(VictoriaMetricsConfig::new(server.url.clone())).expect("valid");
        let (t, batch) = (tenant("a"), tricky_batch());
        let out = vm.send(request(&t, &batch)).await;
        server.request().await;
        assert!(matches!(
            out,
            Outcome::Retry { reason: RetryReason::ServerError, retry_after: Some(d), .. }
                if d == Duration::from_secs(5)
        ));
    }

    #[test]
    fn statuses_are_classified_and_out_of_order_is_accepted() {
        use crate::backends::http::Answer;
        let a = |status, body: &str| Answer {
            status,
            retry_after: None,
            body: body.to_owned(),
        };
        assert!(matches!(
            prometheus::classify(&a(400, "cannot parse"), 1),
            Outcome::Rejected {
                kind: RejectKind::Permanent,
                ..
            }
        ));
        assert!(matches!(
            prometheus::classify(&a(413, ""), 1),
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                ..
            }
        ));
        let vm = VictoriaMetrics::new(VictoriaMetricsConfig::new("http://vm:8428")).expect("valid");
        assert!(vm.accepts_out_of_order());
        assert_eq!(vm.kind(), "victoriametrics");
    }

    #[test]
    fn reserved_headers_are_refused() {
        let mut c = VictoriaMetricsConfig::new("http://vm:8428");
        c.headers = vec![("Content-Encoding".to_owned(), "zstd".to_owned())];
        assert!(matches!(
            VictoriaMetrics::new(c),
            Err(ConfigError::ReservedHeader { .. })
        ));
    }
}
