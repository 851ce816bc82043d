//! The daemon: `metricspool serve`. Ingest endpoints over HTTP (axum), per-tenant tokens,
//! privacy rules, limits, self-metrics, the operator API, forwarders, graceful shutdown.
//!
//! Start-up: resolve the master key (generating one beside an empty data directory), lock the
//! data directory, open every tenant's log (recovery), start one forwarder per (tenant,
//! backend) from its durable cursor, then listen. SIGTERM or SIGINT: stop accepting, let
//! in-flight requests finish their appends (each is acknowledged only once durable), stop
//! the forwarders (an unfinished batch stays in flight and is resent after restart), close
//! the logs, exit 0 — all within `server.shutdown_timeout`.

pub mod backends;
pub mod metrics;
mod replay_api;
pub mod server;
pub mod settings;
pub mod status;
#[cfg(feature = "http")]
pub mod tls;

use std::collections::HashMap;
use std::fs::File;
use std::future::{Future, IntoFuture};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use self::server::{AppState, TenantCtx};
use self::settings::{Problems, Settings, token_hash};
use crate::config::SpoolConfig;
use crate::forward::Forwarding;
use crate::ingest::IngestLimits;
use crate::keys::MasterKey;
use crate::privacy::Privacy;
use crate::spool::Spool;
use crate::tenant::TenantId;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is wrong.
    #[error("configuration:\n{0}")]
    Config(#[from] Problems),
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] crate::Error),
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another metricspool process")]
    Locked(PathBuf),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// An exclusive lock on a data directory (`<dir>/LOCK`, flock), held while the value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, creating the directory if needed; fails at once if it is held.
    pub fn acquire(dir: &Path) -> Result<Self, DaemonError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::Locked(dir.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => Err(io(format!("lock {}", path.display()))(e)),
        }
    }
}

/// Loads the master key as configured; with no key configured, uses `metricspool.key` beside
/// the data directory, generating it (0600, with a loud warning) only while the data
/// directory holds no tenant yet.
pub fn master_key(settings: &Settings) -> Result<MasterKey, DaemonError> {
    if let Some(var) = &settings.keys.master_key_env {
        return Ok(MasterKey::from_env(var)?);
    }
    if let Some(path) = &settings.keys.master_key_file {
        return Ok(MasterKey::from_file(path)?);
    }
    let path = settings.default_key_file();
    if path.exists() {
        return Ok(MasterKey::from_file(&path)?);
    }
    let keys_dir = settings.storage.data_dir.join("keys");
    let has_data = std::fs::read_dir(&keys_dir).is_ok_and(|mut d| d.next().is_some());
    if has_data {
        return Err(crate::Error::MasterKey(format!(
            "{} is missing but {} holds tenant keyrings: restore the key file (a new key cannot read them)",
            path.display(),
            keys_dir.display()
        ))
        .into());
    }
    let key = MasterKey::generate()?;
    key.write_new_file(&path)?;
    tracing::warn!(
        path = %path.display(),
        "generated a new master key beside the data directory: move it somewhere safer \
         (another disk, a secret store) and point keys.master_key_file at it; \
         without it the data cannot be read"
    );
    Ok(key)
}

/// The token of the embedded default tenant: read from `metricspool.token` beside the data
/// directory, generated (0600) on first start.
fn default_token(settings: &Settings) -> Result<String, DaemonError> {
    let path = settings.default_token_file();
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw)
        .map_err(|e| io("random token")(std::io::Error::other(e.to_string())))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("create {}", path.display())))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(format!("write {}", path.display())))?;
    tracing::warn!(path = %path.display(), "no tenants configured: tenant \"default\" writes with the token in this file");
    Ok(token)
}

/// A new random token and its hash, for `metricspool token`.
pub fn new_token() -> Result<(String, String), DaemonError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw)
        .map_err(|e| io("random token")(std::io::Error::other(e.to_string())))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// The spool configuration the settings describe.
pub fn spool_config(settings: &Settings, key: MasterKey) -> Result<SpoolConfig, DaemonError> {
    let bad = |path: String, message: String| {
        DaemonError::Config(Problems(vec![settings::Problem {
            path,
            line: None,
            message,
        }]))
    };
    let mut c = SpoolConfig::new(&settings.storage.data_dir, key);
    c.log = settings
        .log_config(None)
        .map_err(|m| bad("storage.log".into(), m))?;
    c.global_quota_bytes = settings.storage.global_quota_bytes;
    for (id, t) in &settings.tenants {
        let tid =
            TenantId::new(id.as_str()).map_err(|e| bad(format!("tenants.{id}"), e.to_string()))?;
        let log = settings
            .log_config(Some(t.get_ref()))
            .map_err(|m| bad(format!("tenants.{id}.log"), m))?;
        c.tenant_overrides.push((tid, log));
    }
    Ok(c)
}

/// Pseudonym key of a tenant's privacy rules: HKDF-SHA256 of the master key.
fn pseudonym_key(key: &MasterKey, tenant: &TenantId) -> [u8; 32] {
    key.pseudonym_key(tenant)
}

/// A started daemon, before it serves.
pub struct Daemon {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    #[cfg(feature = "http")]
    tls_config: Option<rustls::ServerConfig>,
    settings: Settings,
    _lock: DataDirLock,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Checks the settings, opens the logs, starts the forwarders and binds the listener.
    /// `src` is the configuration file's text (for line numbers; empty for the defaults).
    pub async fn start(settings: Settings, src: &str) -> Result<Daemon, DaemonError> {
        let problems = settings.check(src);
        if !problems.is_empty() {
            return Err(Problems(problems).into());
        }
        #[cfg(feature = "http")]
        let tls_config = match &settings.server.tls {
            Some(t) => Some(tls::server_config(&t.cert, &t.key).map_err(|message| {
                Problems(vec![settings::Problem {
                    path: "server.tls".into(),
                    line: None,
                    message,
                }])
            })?),
            None => None,
        };
        #[cfg(not(feature = "http"))]
        if settings.server.tls.is_some() {
            return Err(Problems(vec![settings::Problem {
                path: "server.tls".into(),
                line: None,
                message: "this build has no TLS (feature http is off)".into(),
            }])
            .into());
        }
        let lock = DataDirLock::acquire(&settings.storage.data_dir)?;
        let key = master_key(&settings)?;
        let config = spool_config(&settings, key.clone())?;
        let spool = tokio::task::spawn_blocking(move || Spool::open(config))
            .await
            .map_err(|e| io("open the data directory")(std::io::Error::other(e)))??;
        for r in spool.recovery_reports() {
            tracing::info!(report = ?r, "recovered");
        }
        let by_token = tenants(&settings, &spool, &key)?;
        let routes = settings
            .backends
            .iter()
            .map(|(name, t)| backends::build(name, t, &settings, src))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| Problems(vec![p]))?;
        let forwarding = Arc::new(Forwarding::start(spool.clone(), routes)?);
        for t in by_token.values() {
            forwarding.ensure_tenant(&t.id)?;
        }
        let metrics = metrics::Metrics::new(spool.clone(), Arc::clone(&forwarding));
        let state = Arc::new(AppState {
            spool,
            by_token,
            admin_token: settings.admin.token_sha256.clone(),
            limits: IngestLimits {
                max_body_bytes: settings.server.max_body_bytes,
                max_samples: settings.server.max_samples_per_request,
            },
            metrics,
            forwarding,
            accepting: AtomicBool::new(true),
        });
        let listener = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .map_err(io(format!("listen on {}", settings.server.listen)))?;
        Ok(Daemon {
            state,
            listener,
            #[cfg(feature = "http")]
            tls_config,
            settings,
            _lock: lock,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then shuts down in order (see the module docs).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let Daemon {
            state,
            listener,
            #[cfg(feature = "http")]
            tls_config,
            settings,
            _lock,
        } = self;
        let grace = settings.server.shutdown_timeout;
        tracing::info!(addr = %listener.local_addr().map_err(io("local address"))?, "listening");
        let retention = tokio::spawn(retention_loop(state.spool.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let st = Arc::clone(&state);
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests; finishing in-flight appends");
            st.accepting.store(false, Ordering::Release);
            let _ = stop_tx.send(true);
        };
        let app = server::router(Arc::clone(&state));
        #[cfg(feature = "http")]
        let server = match tls_config {
            Some(config) => {
                let tls = tls::TlsListener::new(listener, config).map_err(io("TLS listener"))?;
                tracing::info!("TLS on");
                tokio::spawn(
                    axum::serve(tls, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
            None => tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .into_future(),
            ),
        };
        #[cfg(not(feature = "http"))]
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future(),
        );
        let mut stopped = stop_rx.clone();
        // Bound the wait for in-flight requests once shutdown began.
        let _ = stopped.wait_for(|s| *s).await;
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the shutdown timeout")
            }
        }
        retention.abort();
        state.forwarding.shutdown(grace).await;
        let spool = state.spool.clone();
        tokio::task::spawn_blocking(move || spool.close())
            .await
            .map_err(|e| io("close")(std::io::Error::other(e)))??;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Tenants from the settings (or the embedded `default` tenant), by token hash.
fn tenants(
    settings: &Settings,
    spool: &Spool,
    key: &MasterKey,
) -> Result<HashMap<String, Arc<TenantCtx>>, DaemonError> {
    let mut by_token = HashMap::new();
    if settings.tenants.is_empty() {
        let token = default_token(settings)?;
        let id = TenantId::new("default").map_err(crate::Error::from)?;
        let ctx = Arc::new(TenantCtx {
            log: spool.tenant(&id)?,
            privacy: Privacy::new(&[], pseudonym_key(key, &id)).map_err(crate::Error::from)?,
            limiter: None,
            id,
        });
        by_token.insert(token_hash(&token), ctx);
        return Ok(by_token);
    }
    for (name, t) in &settings.tenants {
        let t = t.get_ref();
        let id = TenantId::new(name.as_str()).map_err(crate::Error::from)?;
        let ctx = Arc::new(TenantCtx {
            log: spool.tenant(&id)?,
            privacy: Privacy::new(&t.privacy, pseudonym_key(key, &id))
                .map_err(crate::Error::from)?,
            limiter: t
                .rate_limit
                .and_then(|r| TenantCtx::limiter(r.samples_per_second, r.burst)),
            id,
        });
        for h in &t.token_sha256 {
            by_token.insert(h.to_ascii_lowercase(), Arc::clone(&ctx));
        }
    }
    Ok(by_token)
}

/// Deletes delivered segments past their retention, every 10 s.
async fn retention_loop(spool: Spool) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.enforce_retention()).await {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => tracing::debug!(segments = n, "retention deleted delivered segments"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
