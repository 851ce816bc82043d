//! The daemon: `metricspool serve`. Ingest endpoints over HTTP (axum), per-tenant tokens,
//! privacy rules, limits, self-metrics, the operator API, forwarders, graceful shutdown.

pub mod backends;
pub mod settings;
pub mod metrics;
