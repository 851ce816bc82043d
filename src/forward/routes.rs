//! Which tenants go to which backend: a set of routes, each starting one forwarder per
//! matching tenant. Tenant-specific backend settings (tenant header, path, database,
//! credentials) live in each backend's own configuration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Forwarder, ForwarderConfig, ForwarderStatsSnapshot};
use crate::backends::Backend;
use crate::error::Result;
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
}

/// Every running forwarder of a spool.
#[derive(Debug)]
pub struct Forwarding {
    spool: Spool,
    routes: Vec<Route>,
    running: Mutex<BTreeMap<(TenantId, String), Arc<Forwarder>>>,
}

impl Forwarding {
    /// Starts a forwarder for every (open tenant, route) pair that matches. Call within a
    /// tokio runtime.
    pub fn start(spool: Spool, routes: Vec<Route>) -> Result<Self> {
        let f = Self {
            spool,
            routes,
            running: Mutex::new(BTreeMap::new()),
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
        Ok(())
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
