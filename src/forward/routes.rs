//! Which tenants go to which backend: a set of routes, each starting one forwarder per
//! matching tenant. Tenant-specific backend settings (tenant header, path, database,
//! credentials) live in each backend's own configuration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Forwarder, ForwarderConfig, ForwarderStatsSnapshot};
use crate::backends::Backend;
use crate::error::{Error, Result};
use crate::replay::{self, ReplayJob, ReplayRequest, ReplayRun, ReplayStatus};
use crate::spool::Spool;
use crate::tenant::TenantId;

/// The tenants a route applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSelector {
    /// Every tenant, including ones that appear later.
    All,
    /// Only these.
    Only(Vec<TenantId>),
}

impl TenantSelector {
    fn matches(&self, id: &TenantId) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(id),
        }
    }
}

/// One backend and the tenants it receives.
#[derive(Debug, Clone)]
pub struct Route {
    /// The backend (shared by every tenant of the route).
    pub backend: Arc<dyn Backend>,
    /// Forwarder settings; `name` names the cursor in every tenant.
    pub config: ForwarderConfig,
    /// Which tenants.
    pub tenants: TenantSelector,
    /// The backend's time window applied to replay jobs: samples older than this are
    /// counted and not sent. `None`: no window.
    pub replay_max_age: Option<Duration>,
}

/// Every running forwarder of a spool.
#[derive(Debug)]
pub struct Forwarding {
    spool: Spool,
    routes: Vec<Route>,
    running: Mutex<BTreeMap<(TenantId, String), Arc<Forwarder>>>,
    replays: Mutex<BTreeMap<(TenantId, String), RunningReplay>>,
}

/// A replay job's forwarder and the task that marks it done.
#[derive(Debug)]
struct RunningReplay {
    run: Arc<ReplayRun>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarding {
    /// Starts a forwarder for every (open tenant, route) pair that matches. Call within a
    /// tokio runtime.
    pub fn start(spool: Spool, routes: Vec<Route>) -> Result<Self> {
        let f = Self {
            spool,
            routes,
            running: Mutex::new(BTreeMap::new()),
            replays: Mutex::new(BTreeMap::new()),
        };
        for id in f.spool.tenants() {
            f.ensure_tenant(&id)?;
        }
        Ok(f)
    }

    /// Starts the forwarders a (possibly new) tenant is missing.
    pub fn ensure_tenant(&self, id: &TenantId) -> Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for r in self.routes.iter().filter(|r| r.tenants.matches(id)) {
            let key = (id.clone(), r.config.name.clone());
            if running.contains_key(&key) {
                continue;
            }
            let tenant = self.spool.tenant(id)?;
            let fwd = Forwarder::spawn(tenant, Arc::clone(&r.backend), r.config.clone())?;
            running.insert(key, Arc::new(fwd));
        }
        drop(running);
        self.resume_replays(id)
    }

    /// Resumes the tenant's unfinished replay jobs that are not running yet.
    fn resume_replays(&self, id: &TenantId) -> Result<()> {
        let tenant = self.spool.tenant(id)?;
        for job in replay::unfinished(&tenant)? {
            let key = (id.clone(), job.name.clone());
            if self.replays_lock().contains_key(&key) {
                continue;
            }
            tracing::info!(tenant = %id, job = %job.name, "resuming replay job");
            self.spawn_replay(id, job)?;
        }
        Ok(())
    }

    fn replays_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(TenantId, String), RunningReplay>> {
        self.replays.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.config.name == name)
    }

    fn spawn_replay(&self, id: &TenantId, job: ReplayJob) -> Result<()> {
        let tenant = self.spool.tenant(id)?;
        let route = self.route(&job.backend).ok_or_else(|| Error::Replay {
            tenant: id.to_string(),
            job: job.name.clone(),
            reason: format!("no backend named {} in the configuration", job.backend),
        })?;
        let key = (id.clone(), job.name.clone());
        let run = Arc::new(ReplayRun::start(
            tenant,
            Arc::clone(&route.backend),
            &route.config,
            job,
        )?);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let r = Arc::clone(&run);
        let task = tokio::spawn(async move {
            if let Err(e) = r.run_to_end(|_| {}, rx).await {
                tracing::error!(error = %e, "replay job failed; it resumes at the next start");
            }
        });
        self.replays_lock()
            .insert(key, RunningReplay { run, stop, task });
        Ok(())
    }

    /// Creates (or resumes, same name and range) a replay job and starts it. Blocking: it
    /// reads the time index and counts the samples too old for the backend.
    pub fn start_replay(&self, id: &TenantId, req: &ReplayRequest) -> Result<ReplayJob> {
        let tenant = self.spool.tenant(id)?;
        let route = self.route(&req.backend).ok_or_else(|| Error::Replay {
            tenant: id.to_string(),
            job: req.name.clone().unwrap_or_default(),
            reason: format!("no backend named {} in the configuration", req.backend),
        })?;
        let job = replay::create(&tenant, req, route.replay_max_age)?;
        let running = self
            .replays_lock()
            .get(&(id.clone(), job.name.clone()))
            .is_some_and(|r| !r.task.is_finished());
        if !running {
            self.spawn_replay(id, job.clone())?;
        }
        Ok(job)
    }

    /// Stops and cancels a replay job.
    pub async fn cancel_replay(&self, id: &TenantId, name: &str) -> Result<ReplayJob> {
        let running = self.replays_lock().remove(&(id.clone(), name.to_owned()));
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        let tenant = self.spool.tenant(id)?;
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || replay::cancel(&tenant, &name))
            .await
            .map_err(|_| Error::Closed)?
    }

    /// Every replay job of a tenant: live counters for the running ones.
    pub fn replay_status(&self, id: &TenantId) -> Result<Vec<ReplayStatus>> {
        let tenant = self.spool.tenant(id)?;
        let live = self.replays_lock();
        replay::list(&tenant)?
            .iter()
            .map(|job| match live.get(&(id.clone(), job.name.clone())) {
                Some(r) if !r.task.is_finished() => r.run.status(),
                _ => replay::status(&tenant, job),
            })
            .collect()
    }

    /// The forwarder of `tenant` named `name`, for stats and re-driving dead letters.
    pub fn get(&self, tenant: &TenantId, name: &str) -> Option<Arc<Forwarder>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(&(tenant.clone(), name.to_owned())).cloned()
    }

    /// Counters of every forwarder, by tenant then name.
    pub fn stats(&self) -> Vec<ForwarderStatsSnapshot> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.values().map(|f| f.stats()).collect()
    }

    /// Stops every forwarder at once, waiting at most `grace` in all: a send under way
    /// finishes, an unfinished batch stays in flight for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let replays = std::mem::take(&mut *self.replays_lock());
        for r in replays.values() {
            let _ = r.stop.send(true);
        }
        for (_, r) in replays {
            let _ = tokio::time::timeout(grace, r.task).await;
        }
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
        let mut waits = tokio::task::JoinSet::new();
        for (_, f) in running {
            match Arc::try_unwrap(f) {
                Ok(f) => {
                    waits.spawn(f.shutdown(grace));
                }
                Err(f) => f.stop(),
            }
        }
        while waits.join_next().await.is_some() {}
    }
}
