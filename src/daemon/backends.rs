//! `[backends.<name>]` tables → forwarding routes.
//!
//! A table holds `type`, the forwarding fields every type shares, and the backend's own
//! fields, which are checked by the backend's config type (unknown fields are errors):
//!
//! ```toml
//! [backends.vm]
//! type = "victoriametrics"                 # required
//! url = "http://127.0.0.1:8428"            # the backend's own fields
//! tenants = ["edge-1"]                     # default: every tenant
//! start = "earliest"                       # where a new cursor starts: now (default) |
//!                                          # earliest | an RFC 3339 time (time index)
//! max_age = "1h"                           # the backend's time window (docs/replay.md)
//! batch = { max_samples = 10000, linger = "1s" }
//! rate_limit = { samples_per_second = 50000 }
//! backoff = { min = "100ms", max = "5s" }
//! ```

#[cfg(feature = "http")]
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

#[cfg(feature = "http")]
use super::settings::resolve_secret;
use super::settings::{Problem, Settings, key_line};
use crate::backends::Backend;
use crate::backends::file::{FileBackend, FileConfig};
use crate::forward::{BackoffConfig, BatchMode, ForwarderConfig, RateLimit, Route, TenantSelector};
#[cfg(feature = "http")]
use crate::secret::Secret;
use crate::spool::StartAt;
use crate::tenant::TenantId;

/// The forwarding fields every backend table may hold.
const COMMON: [&str; 7] = [
    "type",
    "tenants",
    "start",
    "batch",
    "rate_limit",
    "backoff",
    "max_age",
];

/// Backend types `type` accepts.
pub const TYPES: &[&str] = &["file", "prometheus", "mimir", "victoriametrics", "influxdb"];

/// `batch = { ... }`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchSettings {
    /// Most samples per request: 1 to 1,000,000. Default 10,000.
    max_samples: Option<usize>,
    /// Most uncompressed bytes per request (≥ 1 KiB). Default 4 MiB.
    max_bytes: Option<u64>,
    /// How long to wait for a batch to fill: ≤ 1 min. Default 1 s.
    #[serde(default, with = "crate::secret::opt_duration")]
    linger: Option<Duration>,
    /// Send as soon as anything is read (no linger). Default false.
    #[serde(default)]
    streaming: bool,
    /// Parallel shards by series hash: 1 to 64. Default 1.
    shards: Option<usize>,
    /// Batches in flight at once for backends that accept out-of-order data: 1 to 64.
    /// Default 4.
    max_in_flight: Option<usize>,
    /// Lag in samples beyond which fresh data goes on a live lane while the backlog
    /// drains (out-of-order backends only). Default off.
    live_lane: Option<u64>,
}

/// `rate_limit = { samples_per_second = N }` or `{ bytes_per_second = N }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RateSettings {
    SamplesPerSecond(NonZeroU32),
    BytesPerSecond(NonZeroU32),
}

/// `backoff = { ... }`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffSettings {
    /// First retry delay. Default 100 ms.
    #[serde(default, with = "crate::secret::opt_duration")]
    min: Option<Duration>,
    /// Longest delay between retries. Default 5 s.
    #[serde(default, with = "crate::secret::opt_duration")]
    max: Option<Duration>,
    /// Longest `Retry-After` honoured. Default 5 min.
    #[serde(default, with = "crate::secret::opt_duration")]
    max_retry_after: Option<Duration>,
}

#[cfg(feature = "http")]
/// `auth = { basic = { user = "u", password = { env = "P" } } }` or
/// `auth = { bearer = { file = "/etc/token" } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum AuthSettings {
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

#[cfg(feature = "http")]
/// Prometheus remote write (`type = "prometheus"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusSettings {
    url: String,
    #[serde(default)]
    auth: Option<AuthSettings>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default, with = "crate::secret::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    out_of_order_window: bool,
}

#[cfg(feature = "http")]
/// Mimir / Cortex (`type = "mimir"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MimirSettings {
    url: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    org_ids: HashMap<String, String>,
    #[serde(default)]
    send_org_id: Option<bool>,
    #[serde(default)]
    auth: Option<AuthSettings>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default, with = "crate::secret::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    out_of_order_window: bool,
}

#[cfg(feature = "http")]
/// VictoriaMetrics (`type = "victoriametrics"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmSettings {
    url: String,
    /// Cluster mode: tenant → `{ account_id, project_id }`.
    #[serde(default)]
    cluster: Option<HashMap<String, VmTenantSettings>>,
    #[serde(default)]
    auth: Option<AuthSettings>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default, with = "crate::secret::opt_duration")]
    timeout: Option<Duration>,
}

#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmTenantSettings {
    account_id: u32,
    #[serde(default)]
    project_id: u32,
}

#[cfg(feature = "http")]
/// InfluxDB (`type = "influxdb"`): `version = 1` (default) or `2`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfluxSettings {
    url: String,
    #[serde(default = "one")]
    version: u8,
    /// Tenant → database (v1) or bucket (v2). Default: the tenant id.
    #[serde(default)]
    databases: HashMap<String, String>,
    #[serde(default)]
    retention_policy: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default, with = "crate::secret::opt_duration")]
    timeout: Option<Duration>,
}

#[cfg(feature = "http")]
fn one() -> u8 {
    1
}

/// Context for building one table: its name, span and the file text.
struct Ctx<'a> {
    name: &'a str,
    span: std::ops::Range<usize>,
    src: &'a str,
}

impl Ctx<'_> {
    fn problem(&self, field: &str, message: impl Into<String>) -> Problem {
        let key = field.split(['.', '[']).next().unwrap_or("");
        Problem {
            path: if field.is_empty() {
                format!("backends.{}", self.name)
            } else {
                format!("backends.{}.{field}", self.name)
            },
            line: Some(key_line(self.src, &self.span, key)),
            message: message.into(),
        }
    }

    /// Deserializes `value` as `T`, naming the failing field.
    fn parse<T: DeserializeOwned>(&self, field: &str, value: toml::Value) -> Result<T, Problem> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let sub = match (field.is_empty(), inner == ".") {
                (true, true) => String::new(),
                (true, false) => inner,
                (false, true) => field.to_owned(),
                (false, false) => format!("{field}.{inner}"),
            };
            let message = e.into_inner().to_string();
            // Unknown fields: point at the offending key.
            let key = unknown_field(&message).unwrap_or(&sub);
            let mut p = self.problem(&sub, message.trim().to_owned());
            p.line = Some(key_line(self.src, &self.span, key));
            p
        })
    }

    #[cfg(feature = "http")]
    fn secret(&self, field: &str, s: &Secret) -> Result<String, Problem> {
        resolve_secret(
            s,
            format!("backends.{}.{field}", self.name),
            Some(key_line(self.src, &self.span, field)),
        )
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.split("unknown field `").nth(1)?;
    rest.split('`').next()
}

/// Builds one backend table into a route, with every problem as a [`Problem`].
pub fn build(
    name: &str,
    table: &Spanned<toml::Table>,
    settings: &Settings,
    src: &str,
) -> Result<Route, Problem> {
    let ctx = Ctx {
        name,
        span: table.span(),
        src,
    };
    crate::cursor::check_name(name)
        .map_err(|e| ctx.problem("", format!("invalid backend name: {e}")))?;
    let mut rest = table.get_ref().clone();
    let mut common = toml::Table::new();
    for key in COMMON {
        if let Some(v) = rest.remove(key) {
            common.insert(key.to_owned(), v);
        }
    }
    let kind = match common.get("type") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return Err(ctx.problem("type", "must be a string")),
        None => {
            return Err(ctx.problem("type", format!("missing; one of {}", TYPES.join(", "))));
        }
    };
    let tenants = tenants(&ctx, &common, settings)?;
    let mut config = forwarder_config(&ctx, &common)?;
    let replay_max_age = match common.get("max_age") {
        Some(v) => max_age(&ctx, v)?,
        None => default_max_age(&kind, &rest),
    };
    // An explicit window applies to live forwarding too; the type's default only to replays
    // (live data is young, and what a backend refuses goes to the dead-letter log).
    if common.contains_key("max_age") {
        config.max_age = replay_max_age;
    }
    let backend = backend(&ctx, &kind, rest, settings)?;
    Ok(Route {
        backend,
        config,
        tenants,
        replay_max_age,
    })
}

/// `max_age = "1h"` (a duration) or `"none"`.
fn max_age(ctx: &Ctx<'_>, v: &toml::Value) -> Result<Option<Duration>, Problem> {
    match v.as_str() {
        Some("none") => Ok(None),
        Some(s) => humantime::parse_duration(s)
            .map(Some)
            .map_err(|e| ctx.problem("max_age", format!("{s:?}: {e}; a duration or \"none\""))),
        None => Err(ctx.problem("max_age", "a duration such as \"1h\", or \"none\"")),
    }
}

/// The documented time window of a backend type (docs/replay.md): Prometheus and Mimir
/// without an out-of-order window refuse samples about 1 h behind their newest; Datadog
/// refuses points older than 1 h (without historical ingestion); New Relic drops points
/// older than 48 h. The others have none we can state.
fn default_max_age(kind: &str, rest: &toml::Table) -> Option<Duration> {
    let ooo = rest
        .get("out_of_order_window")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    match kind {
        "prometheus" | "mimir" if !ooo => Some(Duration::from_secs(3600)),
        "datadog" => Some(Duration::from_secs(3600)),
        "newrelic" => Some(Duration::from_secs(48 * 3600)),
        _ => None,
    }
}

fn tenants(
    ctx: &Ctx<'_>,
    common: &toml::Table,
    settings: &Settings,
) -> Result<TenantSelector, Problem> {
    let Some(v) = common.get("tenants") else {
        return Ok(TenantSelector::All);
    };
    let list: Vec<String> = ctx.parse("tenants", v.clone())?;
    if list.iter().any(|t| t == "*") {
        return Ok(TenantSelector::All);
    }
    let mut ids = Vec::new();
    for t in list {
        let id = TenantId::new(t.as_str()).map_err(|e| ctx.problem("tenants", e.to_string()))?;
        if !settings.tenants.contains_key(&t) && !settings.tenants.is_empty() {
            return Err(ctx.problem("tenants", format!("no tenant {t} in [tenants]")));
        }
        ids.push(id);
    }
    Ok(TenantSelector::Only(ids))
}

fn forwarder_config(ctx: &Ctx<'_>, common: &toml::Table) -> Result<ForwarderConfig, Problem> {
    let mut c = ForwarderConfig::new(ctx.name);
    if let Some(v) = common.get("start") {
        c.start = match v.as_str() {
            Some("now") => StartAt::Now,
            Some("earliest") => StartAt::Earliest,
            Some(t) if humantime::parse_rfc3339_weak(t).is_ok() => {
                let ms = humantime::parse_rfc3339_weak(t)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .ok_or_else(|| ctx.problem("start", "a time after 1970"))?;
                StartAt::Time(ms)
            }
            _ => {
                return Err(
                    ctx.problem("start", "must be \"now\", \"earliest\" or an RFC 3339 time")
                );
            }
        };
    }
    if let Some(v) = common.get("batch") {
        let b: BatchSettings = ctx.parse("batch", v.clone())?;
        let bad = |m: &str| Err(ctx.problem("batch", m));
        if let Some(n) = b.max_samples {
            if !(1..=1_000_000).contains(&n) {
                return bad("max_samples must be 1 to 1,000,000");
            }
            c.max_samples = n;
        }
        if let Some(n) = b.max_bytes {
            if n < 1024 {
                return bad("max_bytes must be at least 1 KiB");
            }
            c.max_bytes = n;
        }
        if let Some(n) = b.shards {
            if !(1..=64).contains(&n) {
                return bad("shards must be 1 to 64");
            }
            c.shards = n;
        }
        if let Some(n) = b.max_in_flight {
            if !(1..=64).contains(&n) {
                return bad("max_in_flight must be 1 to 64");
            }
            c.max_in_flight = n;
        }
        let linger = b.linger.unwrap_or(Duration::from_secs(1));
        if linger > Duration::from_secs(60) {
            return bad("linger must be at most 1 min");
        }
        c.mode = if b.streaming {
            BatchMode::Streaming
        } else {
            BatchMode::Batch { linger }
        };
        c.live_lane = b.live_lane;
    }
    if let Some(v) = common.get("rate_limit") {
        c.rate_limit = Some(match ctx.parse::<RateSettings>("rate_limit", v.clone())? {
            RateSettings::SamplesPerSecond(n) => RateLimit::SamplesPerSecond(n),
            RateSettings::BytesPerSecond(n) => RateLimit::BytesPerSecond(n),
        });
    }
    if let Some(v) = common.get("backoff") {
        let b: BackoffSettings = ctx.parse("backoff", v.clone())?;
        let d = BackoffConfig::default();
        c.backoff = BackoffConfig {
            min: b.min.unwrap_or(d.min),
            max: b.max.unwrap_or(d.max),
            max_retry_after: b.max_retry_after.unwrap_or(d.max_retry_after),
        };
        if c.backoff.min > c.backoff.max || c.backoff.min.is_zero() {
            return Err(ctx.problem("backoff", "need 0 < min <= max"));
        }
    }
    Ok(c)
}

fn backend(
    ctx: &Ctx<'_>,
    kind: &str,
    mut rest: toml::Table,
    settings: &Settings,
) -> Result<Arc<dyn Backend>, Problem> {
    let table = |rest: toml::Table| toml::Value::Table(rest);
    let built: Arc<dyn Backend> = match kind {
        "file" => {
            if !rest.contains_key("path") {
                let dir = settings.storage.data_dir.join("export");
                rest.insert("path".into(), dir.display().to_string().into());
            }
            let c: FileConfig = ctx.parse("", table(rest))?;
            Arc::new(FileBackend::new(c).map_err(|e| ctx.problem("path", e.to_string()))?)
        }
        #[cfg(feature = "http")]
        "prometheus" | "mimir" | "victoriametrics" | "influxdb" => http_backend(ctx, kind, rest)?,
        #[cfg(feature = "http")]
        "elasticsearch" => {
            use crate::backends::elasticsearch::Elasticsearch;
            typed(ctx, rest, Elasticsearch::new)?
        }
        #[cfg(feature = "http")]
        "http" => typed(ctx, rest, crate::backends::http_generic::HttpGeneric::new)?,
        #[cfg(feature = "http")]
        "splunk" => typed(ctx, rest, crate::backends::splunk::Splunk::new)?,
        #[cfg(feature = "http")]
        "datadog" => typed(ctx, rest, crate::backends::datadog::Datadog::new)?,
        #[cfg(feature = "http")]
        "newrelic" => typed(ctx, rest, crate::backends::newrelic::NewRelic::new)?,
        #[cfg(feature = "http")]
        "otlp" => typed(ctx, rest, crate::backends::otlp::Otlp::new)?,
        #[cfg(feature = "nats")]
        "nats" => typed(ctx, rest, crate::backends::nats::Nats::new)?,
        #[cfg(feature = "mqtt")]
        "mqtt" => typed(ctx, rest, crate::backends::mqtt::Mqtt::new)?,
        other => {
            return Err(ctx.problem(
                "type",
                format!(
                    "unknown backend type {other:?}; one of {}",
                    TYPES.join(", ")
                ),
            ));
        }
    };
    Ok(built)
}

/// A backend whose config type deserializes straight from the table.
#[allow(dead_code, reason = "unused when every network backend feature is off")]
fn typed<C, B, E>(
    ctx: &Ctx<'_>,
    rest: toml::Table,
    new: impl FnOnce(C) -> Result<B, E>,
) -> Result<Arc<dyn Backend>, Problem>
where
    C: DeserializeOwned,
    B: Backend,
    E: std::fmt::Display,
{
    let config: C = ctx.parse("", toml::Value::Table(rest))?;
    Ok(Arc::new(
        new(config).map_err(|e| ctx.problem("", e.to_string()))?,
    ))
}

#[cfg(feature = "http")]
fn http_backend(ctx: &Ctx<'_>, kind: &str, rest: toml::Table) -> Result<Arc<dyn Backend>, Problem> {
    use crate::backends::http::Auth;
    use crate::backends::influx::{Influx, InfluxApi, InfluxConfig, V1Auth};
    use crate::backends::mimir::{Mimir, MimirConfig};
    use crate::backends::prometheus::{RemoteWrite, RemoteWriteConfig};
    use crate::backends::victoriametrics::{
        VictoriaMetrics, VictoriaMetricsConfig, VmMode, VmTenant,
    };

    let value = toml::Value::Table(rest);
    let auth = |a: &Option<AuthSettings>| -> Result<Auth, Problem> {
        Ok(match a {
            None => Auth::None,
            Some(AuthSettings::Basic { user, password }) => Auth::Basic {
                user: user.clone(),
                password: ctx.secret("auth", password)?,
            },
            Some(AuthSettings::Bearer(s)) => Auth::Bearer(ctx.secret("auth", s)?),
        })
    };
    let headers = |h: HashMap<String, String>| h.into_iter().collect::<Vec<_>>();
    let tenant_map =
        |m: HashMap<String, String>, field: &str| -> Result<HashMap<TenantId, String>, Problem> {
            m.into_iter()
                .map(|(k, v)| {
                    Ok((
                        TenantId::new(k.as_str()).map_err(|e| ctx.problem(field, e.to_string()))?,
                        v,
                    ))
                })
                .collect()
        };
    let invalid = |e: crate::backends::prometheus::ConfigError| ctx.problem("", e.to_string());
    let backend: Arc<dyn Backend> = match kind {
        "prometheus" => {
            let s: PrometheusSettings = ctx.parse("", value)?;
            let mut c = RemoteWriteConfig::new(s.url);
            c.auth = auth(&s.auth)?;
            c.headers = headers(s.headers);
            c.timeout = s.timeout.unwrap_or(c.timeout);
            c.out_of_order_window = s.out_of_order_window;
            Arc::new(RemoteWrite::new(c).map_err(invalid)?)
        }
        "mimir" => {
            let s: MimirSettings = ctx.parse("", value)?;
            let mut c = MimirConfig::new(s.url);
            if let Some(p) = s.path {
                c.path = p;
            }
            c.org_ids = tenant_map(s.org_ids, "org_ids")?;
            c.send_org_id = s.send_org_id.unwrap_or(c.send_org_id);
            c.auth = auth(&s.auth)?;
            c.headers = headers(s.headers);
            c.timeout = s.timeout.unwrap_or(c.timeout);
            c.out_of_order_window = s.out_of_order_window;
            Arc::new(Mimir::new(c).map_err(invalid)?)
        }
        "victoriametrics" => {
            let s: VmSettings = ctx.parse("", value)?;
            let mut c = VictoriaMetricsConfig::new(s.url);
            if let Some(cluster) = s.cluster {
                let mut tenants = HashMap::new();
                for (k, v) in cluster {
                    let id = TenantId::new(k.as_str())
                        .map_err(|e| ctx.problem("cluster", e.to_string()))?;
                    tenants.insert(
                        id,
                        VmTenant {
                            account_id: v.account_id,
                            project_id: v.project_id,
                        },
                    );
                }
                c.mode = VmMode::Cluster { tenants };
            }
            c.auth = auth(&s.auth)?;
            c.headers = headers(s.headers);
            c.timeout = s.timeout.unwrap_or(c.timeout);
            Arc::new(VictoriaMetrics::new(c).map_err(invalid)?)
        }
        _ => {
            let s: InfluxSettings = ctx.parse("", value)?;
            let mut c = InfluxConfig::v1(s.url);
            c.api = match s.version {
                1 => InfluxApi::V1 {
                    retention_policy: s.retention_policy,
                    auth: match (s.user, s.password) {
                        (Some(user), Some(p)) => V1Auth::Basic {
                            user,
                            password: ctx.secret("password", &p)?,
                        },
                        (None, None) => V1Auth::None,
                        _ => return Err(ctx.problem("user", "user and password go together")),
                    },
                },
                2 => InfluxApi::V2 {
                    org: s
                        .org
                        .ok_or_else(|| ctx.problem("org", "required for version 2"))?,
                    token: match &s.token {
                        Some(t) => ctx.secret("token", t)?,
                        None => return Err(ctx.problem("token", "required for version 2")),
                    },
                },
                v => return Err(ctx.problem("version", format!("{v}: use 1 or 2"))),
            };
            c.databases = tenant_map(s.databases, "databases")?;
            c.headers = headers(s.headers);
            c.timeout = s.timeout.unwrap_or(c.timeout);
            Arc::new(Influx::new(c).map_err(invalid)?)
        }
    };
    Ok(backend)
}
