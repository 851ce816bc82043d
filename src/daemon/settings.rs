//! The daemon's TOML configuration: parsing with field paths and line numbers, environment
//! overrides, semantic checks, and the embedded defaults `metricspool serve` runs on when no
//! file is given.
//!
//! Every field is documented on its struct below with its default and limits; `docs/config.md`
//! shows a complete file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Durability, LogConfig, QuotaPolicy, Retention};
use crate::privacy::PrivacyRule;
use crate::secret::Secret;
use crate::tenant::TenantId;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener, limits, shutdown.
    #[serde(default)]
    pub server: ServerSettings,
    /// Log output of the daemon itself.
    #[serde(default)]
    pub logging: LoggingSettings,
    /// The data directory and the log's defaults for every tenant.
    #[serde(default)]
    pub storage: StorageSettings,
    /// Where the master key comes from.
    #[serde(default)]
    pub keys: KeySettings,
    /// The operator API.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Tenants by id: tokens, quotas, rate limits, privacy rules, retention.
    #[serde(default)]
    pub tenants: BTreeMap<String, Spanned<TenantSettings>>,
    /// Backends by name: `type` plus the backend's own fields, and the forwarding fields
    /// shared by all types (`tenants`, `start`, `batch`, `rate_limit`, `backoff`).
    #[serde(default)]
    pub backends: BTreeMap<String, Spanned<toml::Table>>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address for ingest, `/metrics`, health and the admin API. Default `127.0.0.1:9465`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS certificate and key (PEM files). Default none: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Largest request body after decompression, bytes. Default 32 MiB; 1 KiB to 1 GiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most samples in one request. Default 1,000,000; 1 to 10,000,000.
    #[serde(default = "default_max_samples")]
    pub max_samples_per_request: usize,
    /// How long shutdown waits for in-flight requests and forwarders. Default 10 s; ≤ 5 min.
    #[serde(default = "default_shutdown", with = "crate::secret::duration")]
    pub shutdown_timeout: Duration,
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[logging]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` (default) or `metricspool=debug,info`.
    #[serde(default = "default_level")]
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// The data directory. Default `./metricspool-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `[storage.log]`: write-ahead log defaults for every tenant (a tenant's own
    /// `[tenants.<id>.log]` fields override them).
    #[serde(default)]
    pub log: LogSettings,
    /// Disk quota over all tenants, bytes. Default none.
    #[serde(default)]
    pub global_quota_bytes: Option<u64>,
}

/// Write-ahead log fields: `[storage.log]` and `[tenants.<id>.log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// When an append is acknowledged: `fsync` (default: after fsync, group commit),
    /// `interval` (fsync every `fsync_interval`), `none` (the OS decides).
    pub durability: Option<DurabilityName>,
    /// For `durability = "interval"`: 1 ms to 60 s. Default 100 ms.
    #[serde(default, with = "crate::secret::opt_duration")]
    pub fsync_interval: Option<Duration>,
    /// Segment size before rolling, bytes: 64 KiB to 1 GiB. Default 64 MiB.
    pub segment_max_bytes: Option<u64>,
    /// Segment age before rolling: 1 s to 7 days. Default 1 h.
    #[serde(default, with = "crate::secret::opt_duration")]
    pub segment_max_age: Option<Duration>,
    /// zstd level 1–19. Default 3.
    pub zstd_level: Option<i32>,
    /// Disk quota of one tenant's log, bytes (≥ 1 MiB). Default none.
    pub quota_bytes: Option<u64>,
    /// What a full quota does: `block` (default: wait up to `block_timeout`, then 429),
    /// `drop_oldest` (delete the oldest segments, counted), `reject` (429 at once).
    pub quota_policy: Option<QuotaPolicyName>,
    /// How long `block` waits: ≤ 1 h. Default 10 s.
    #[serde(default, with = "crate::secret::opt_duration")]
    pub block_timeout: Option<Duration>,
    /// Keep delivered segments this long for replay. Default 0 (delete once delivered).
    #[serde(default, with = "crate::secret::opt_duration")]
    pub retention_keep_for: Option<Duration>,
    /// Cap on retained (delivered) bytes. Default none.
    pub retention_keep_max_bytes: Option<u64>,
}

/// `durability` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityName {
    /// fsync before acknowledging.
    Fsync,
    /// fsync on a timer.
    Interval,
    /// Never fsync.
    None,
}

/// `quota_policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPolicyName {
    /// Wait, then refuse.
    Block,
    /// Delete oldest segments.
    DropOldest,
    /// Refuse at once.
    Reject,
}

/// `[keys]`: never a key inline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// File holding the 32-byte master key as 64 hex digits. Default: `metricspool.key`
    /// beside the data directory, generated (mode 0600) on first start when the data
    /// directory is empty.
    pub master_key_file: Option<PathBuf>,
    /// Environment variable holding the master key instead of a file.
    pub master_key_env: Option<String>,
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// SHA-256 (hex) of the operator token for `/admin/*`. Default none: the admin API is
    /// off. `metricspool token` prints a new token and its hash.
    pub token_sha256: Option<String>,
}

/// `[tenants.<id>]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// SHA-256 (hex) of each bearer token that writes as this tenant. At least one.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Ingest rate limit. Default none.
    #[serde(default)]
    pub rate_limit: Option<IngestRateLimit>,
    /// Privacy rules applied before anything is stored.
    #[serde(default)]
    pub privacy: Vec<PrivacyRule>,
    /// `[tenants.<id>.log]`: log settings overriding `[storage.log]`.
    #[serde(default)]
    pub log: LogSettings,
}

/// `rate_limit = { samples_per_second = 100000, burst = 200000 }`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRateLimit {
    /// Sustained samples per second (≥ 1).
    pub samples_per_second: u32,
    /// Largest burst in samples. Default: one second's worth, and at least one request's
    /// worth is needed for any request to pass.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}
fn default_max_body() -> usize {
    32 << 20
}
fn default_max_samples() -> usize {
    1_000_000
}
fn default_shutdown() -> Duration {
    Duration::from_secs(10)
}
fn default_level() -> String {
    "info".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("metricspool-data")
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            max_body_bytes: default_max_body(),
            max_samples_per_request: default_max_samples(),
            shutdown_timeout: default_shutdown(),
        }
    }
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            log: LogSettings::default(),
            global_quota_bytes: None,
        }
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `tenants.edge-1.quota_policy`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Problems found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

/// The 1-based line of a byte offset.
pub fn line_of(src: &str, at: usize) -> usize {
    src.as_bytes()[..at.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of `key = ...` in the table that starts at `span` (up to the next `[header]`),
/// or the table's own line.
pub fn key_line(src: &str, span: &std::ops::Range<usize>, key: &str) -> usize {
    let start = span.start.min(src.len());
    let text = src.get(start..).unwrap_or("");
    let mut at = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') && !span.contains(&(start + at)) {
            break;
        }
        if let Some(rest) = t.strip_prefix(key)
            && !key.is_empty()
            && rest.trim_start().starts_with('=')
        {
            return line_of(src, start + at);
        }
        at += line.len();
    }
    line_of(src, start)
}

impl Settings {
    /// Parses a file's text. A syntax or type error comes back with its field path and line.
    pub fn parse(src: &str) -> Result<Settings, Problems> {
        let de = toml::Deserializer::parse(src).map_err(|e| {
            Problems(vec![Problem {
                path: String::new(),
                line: e.span().map(|s| line_of(src, s.start)),
                message: e.message().to_owned(),
            }])
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let line = e.inner().span().map(|s| line_of(src, s.start));
            let path = e.path().to_string();
            Problems(vec![Problem {
                path: if path == "." { String::new() } else { path },
                line,
                message: e.inner().message().to_owned(),
            }])
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<(Settings, String), Problems> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                path: path.display().to_string(),
                line: None,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Ok((Settings::parse(&src)?, src))
    }

    /// The embedded defaults: data in `./metricspool-data`, one tenant `default` whose token
    /// is generated into `metricspool.token` beside it, and a `file` backend writing JSON
    /// lines to `<data_dir>/export`.
    pub fn embedded() -> Settings {
        let mut backends = BTreeMap::new();
        let mut file = toml::Table::new();
        file.insert("type".into(), "file".into());
        backends.insert("file".to_owned(), Spanned::new(0..0, file));
        Settings {
            server: ServerSettings::default(),
            logging: LoggingSettings::default(),
            storage: StorageSettings::default(),
            keys: KeySettings::default(),
            admin: AdminSettings::default(),
            tenants: BTreeMap::new(),
            backends,
        }
    }

    /// Applies `METRICSPOOL_*` environment overrides of the common fields:
    /// `LISTEN`, `DATA_DIR`, `DURABILITY`, `MASTER_KEY_FILE`, `MASTER_KEY_ENV`, `LOG_FORMAT`,
    /// `LOG_LEVEL`, `ADMIN_TOKEN_SHA256`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), Problems> {
        let mut problems = Vec::new();
        let mut bad = |var: &str, message: String| {
            problems.push(Problem {
                path: format!("env METRICSPOOL_{var}"),
                line: None,
                message,
            })
        };
        let get = |var: &str| env(&format!("METRICSPOOL_{var}")).filter(|v| !v.is_empty());
        if let Some(v) = get("LISTEN") {
            match v.parse() {
                Ok(a) => self.server.listen = a,
                Err(e) => bad("LISTEN", format!("{v:?}: {e}")),
            }
        }
        if let Some(v) = get("DATA_DIR") {
            self.storage.data_dir = v.into();
        }
        if let Some(v) = get("DURABILITY") {
            match toml::Value::String(v.clone()).try_into() {
                Ok(d) => self.storage.log.durability = Some(d),
                Err(_) => bad("DURABILITY", format!("{v:?}: use fsync, interval or none")),
            }
        }
        if let Some(v) = get("MASTER_KEY_FILE") {
            self.keys.master_key_file = Some(v.into());
        }
        if let Some(v) = get("MASTER_KEY_ENV") {
            self.keys.master_key_env = Some(v);
        }
        if let Some(v) = get("LOG_FORMAT") {
            match v.as_str() {
                "text" => self.logging.format = LogFormat::Text,
                "json" => self.logging.format = LogFormat::Json,
                _ => bad("LOG_FORMAT", format!("{v:?}: use text or json")),
            }
        }
        if let Some(v) = get("LOG_LEVEL") {
            self.logging.level = v;
        }
        if let Some(v) = get("ADMIN_TOKEN_SHA256") {
            self.admin.token_sha256 = Some(v);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }

    /// The default master key file: `metricspool.key` beside the data directory.
    pub fn default_key_file(&self) -> PathBuf {
        sibling(&self.storage.data_dir, "metricspool.key")
    }

    /// Where the embedded defaults keep the generated token of tenant `default`.
    pub fn default_token_file(&self) -> PathBuf {
        sibling(&self.storage.data_dir, "metricspool.token")
    }

    /// Log settings of one tenant: `[storage]` overridden by the tenant's own fields.
    pub fn log_config(&self, tenant: Option<&TenantSettings>) -> Result<LogConfig, String> {
        let base = &self.storage.log;
        let over = tenant.map(|t| &t.log);
        let pick = |f: fn(&LogSettings) -> Option<Duration>| over.and_then(f).or(f(base));
        let mut c = LogConfig::default();
        let durability = over.and_then(|o| o.durability).or(base.durability);
        c.durability = match durability.unwrap_or(DurabilityName::Fsync) {
            DurabilityName::Fsync => Durability::Fsync,
            DurabilityName::None => Durability::None,
            DurabilityName::Interval => Durability::Interval(
                pick(|l| l.fsync_interval).unwrap_or(Duration::from_millis(100)),
            ),
        };
        if let Some(v) = over
            .and_then(|o| o.segment_max_bytes)
            .or(base.segment_max_bytes)
        {
            c.segment_max_bytes = v;
        }
        if let Some(v) = pick(|l| l.segment_max_age) {
            c.segment_max_age = v;
        }
        if let Some(v) = over.and_then(|o| o.zstd_level).or(base.zstd_level) {
            c.zstd_level = v;
        }
        c.quota_bytes = over.and_then(|o| o.quota_bytes).or(base.quota_bytes);
        if let Some(p) = over.and_then(|o| o.quota_policy).or(base.quota_policy) {
            c.quota_policy = match p {
                QuotaPolicyName::Block => QuotaPolicy::Block,
                QuotaPolicyName::DropOldest => QuotaPolicy::DropOldest,
                QuotaPolicyName::Reject => QuotaPolicy::Reject,
            };
        }
        if let Some(v) = pick(|l| l.block_timeout) {
            c.block_timeout = v;
        }
        c.retention = Retention {
            keep_for: pick(|l| l.retention_keep_for).unwrap_or_default(),
            keep_max_bytes: over
                .and_then(|o| o.retention_keep_max_bytes)
                .or(base.retention_keep_max_bytes),
        };
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Semantic checks beyond types: limits, tenant ids, token hashes, log settings, and
    /// every backend built for real (secrets resolved). `src` gives line numbers.
    pub fn check(&self, src: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |path: String, line: Option<usize>, message: String| {
            out.push(Problem {
                path,
                line,
                message,
            })
        };
        let s = &self.server;
        if !(1024..=1 << 30).contains(&s.max_body_bytes) {
            push(
                "server.max_body_bytes".into(),
                None,
                "must be 1 KiB to 1 GiB".into(),
            );
        }
        if !(1..=10_000_000).contains(&s.max_samples_per_request) {
            push(
                "server.max_samples_per_request".into(),
                None,
                "must be 1 to 10,000,000".into(),
            );
        }
        if s.shutdown_timeout > Duration::from_secs(300) {
            push(
                "server.shutdown_timeout".into(),
                None,
                "must be at most 5 min".into(),
            );
        }
        if let Err(e) = self.log_config(None) {
            push("storage.log".into(), None, e);
        }
        if self.keys.master_key_file.is_some() && self.keys.master_key_env.is_some() {
            push(
                "keys".into(),
                None,
                "set master_key_file or master_key_env, not both".into(),
            );
        }
        if let Some(h) = &self.admin.token_sha256
            && !is_sha256_hex(h)
        {
            push(
                "admin.token_sha256".into(),
                None,
                "must be 64 hex digits (sha256 of the token)".into(),
            );
        }
        let mut seen_tokens: BTreeMap<String, String> = BTreeMap::new();
        for (id, t) in &self.tenants {
            let span = t.span();
            let path = |field: &str| format!("tenants.{id}.{field}");
            let line = |field: &str| Some(key_line(src, &span, field));
            if let Err(e) = TenantId::new(id.as_str()) {
                push(format!("tenants.{id}"), line(""), e.to_string());
            }
            let t = t.get_ref();
            if t.token_sha256.is_empty() {
                push(
                    path("token_sha256"),
                    line("token_sha256"),
                    "a tenant needs at least one token hash".into(),
                );
            }
            for h in &t.token_sha256 {
                if !is_sha256_hex(h) {
                    push(
                        path("token_sha256"),
                        line("token_sha256"),
                        format!("{h:?} is not 64 hex digits (sha256 of the token)"),
                    );
                } else if let Some(other) = seen_tokens.insert(h.to_lowercase(), id.clone()) {
                    push(
                        path("token_sha256"),
                        line("token_sha256"),
                        format!("the same token hash is also given to tenant {other}"),
                    );
                }
            }
            if let Some(r) = t.rate_limit
                && (r.samples_per_second == 0 || r.burst == Some(0))
            {
                push(
                    path("rate_limit"),
                    line("rate_limit"),
                    "samples_per_second and burst must be at least 1".into(),
                );
            }
            if let Err(e) = self.log_config(Some(t)) {
                push(path("log"), line("log"), e);
            }
            if let Err(e) = crate::privacy::Privacy::new(&t.privacy, [0; 32]) {
                push(path("privacy"), line("privacy"), e.to_string());
            }
        }
        for (name, table) in &self.backends {
            if let Err(p) = super::backends::build(name, table, self, src) {
                out.push(p);
            }
        }
        out.sort_by_key(|p| p.line.unwrap_or(0));
        out
    }
}

/// True for 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case hex SHA-256 of a token, as `token_sha256` fields hold it.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sibling(dir: &Path, name: &str) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(name),
        _ => PathBuf::from(name),
    }
}

/// Reads a secret for `path`, as a problem when it cannot be read.
pub fn resolve_secret(
    secret: &Secret,
    path: String,
    line: Option<usize>,
) -> Result<String, Problem> {
    secret.resolve().map_err(|e| Problem {
        path,
        line,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<Problem> {
        match Settings::parse(src) {
            Ok(s) => s.check(src),
            Err(Problems(p)) => p,
        }
    }

    const HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn a_full_file_parses_and_checks_clean() {
        let src = format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1048576

[storage]
data_dir = "/tmp/x"

[storage.log]
durability = "interval"
fsync_interval = "50ms"
segment_max_bytes = 1048576

[tenants.edge-1]
token_sha256 = ["{HASH}"]
rate_limit = {{ samples_per_second = 1000 }}
privacy = [{{ label = "user_id", action = "hash" }}]
log = {{ quota_bytes = 10485760, quota_policy = "reject" }}

[backends.out]
type = "file"
path = "/tmp/x-export"
"#
        );
        let s = Settings::parse(&src).expect("test setup");
        assert_eq!(s.check(&src), vec![]);
        let t = s.tenants["edge-1"].get_ref();
        let c = s.log_config(Some(t)).expect("test setup");
        assert_eq!(
            c.durability,
            Durability::Interval(Duration::from_millis(50))
        );
        assert_eq!(c.quota_policy, QuotaPolicy::Reject);
        assert_eq!(c.segment_max_bytes, 1 << 20);
    }

    #[test]
    fn broken_files_name_the_field_and_line() {
        let cases: &[(&str, &str, usize)] = &[
            ("[server]\nlisten = 5\n", "server.listen", 2),
            (
                "[storage.log]\n\ndurability = \"sometimes\"\n",
                "storage.log.durability",
                3,
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
                "server",
                3,
            ),
            (
                "[tenants.a]\ntoken_sha256 = [\"abc\"]\n",
                "tenants.a.token_sha256",
                2,
            ),
            ("[tenants.a]\n", "tenants.a.token_sha256", 1),
            (
                "[storage.log]\nsegment_max_age = \"soon\"\n",
                "storage.log.segment_max_age",
                2,
            ),
            (
                &format!("[tenants.a]\ntoken_sha256 = [\"{HASH}\"]\nlog = {{ zstd_level = 40 }}\n"),
                "tenants.a.log",
                3,
            ),
            (
                &format!(
                    "[tenants.a]\ntoken_sha256 = [\"{HASH}\"]\n[tenants.b]\ntoken_sha256 = [\"{HASH}\"]\n"
                ),
                "tenants.b.token_sha256",
                4,
            ),
            ("[backends.x]\ntype = \"nope\"\n", "backends.x.type", 2),
            ("[backends.x]\npath = \"/tmp\"\n", "backends.x.type", 1),
            (
                "[backends.x]\ntype = \"file\"\npath = \"/tmp/q\"\nwhat = 1\n",
                "backends.x",
                4,
            ),
            (
                "[backends.x]\ntype = \"file\"\npath = \"/tmp/q\"\nbatch = { max_samples = 0 }\n",
                "backends.x.batch",
                4,
            ),
            (
                "[backends.x]\ntype = \"file\"\npath = \"/tmp/q\"\ntenants = [\"no such\"]\n",
                "backends.x.tenants",
                4,
            ),
        ];
        for (src, path, line) in cases {
            let p = problems(src);
            assert!(!p.is_empty(), "{src}: no problem found");
            assert!(
                p[0].path.starts_with(path),
                "{src}: path {:?}, expected {path}",
                p[0]
            );
            assert_eq!(p[0].line, Some(*line), "{src}: {:?}", p[0]);
        }
    }

    #[test]
    fn env_overrides_the_common_fields() {
        let mut s = Settings::embedded();
        let env = |k: &str| match k {
            "METRICSPOOL_LISTEN" => Some("127.0.0.1:1234".to_owned()),
            "METRICSPOOL_DATA_DIR" => Some("/var/lib/ms".to_owned()),
            "METRICSPOOL_DURABILITY" => Some("none".to_owned()),
            _ => None,
        };
        s.apply_env(env).expect("test setup");
        assert_eq!(s.server.listen.port(), 1234);
        assert_eq!(s.storage.data_dir, PathBuf::from("/var/lib/ms"));
        assert_eq!(
            s.default_key_file(),
            PathBuf::from("/var/lib/metricspool.key")
        );
        assert_eq!(
            s.log_config(None).expect("test setup").durability,
            Durability::None
        );
        let bad = |k: &str| (k == "METRICSPOOL_LOG_FORMAT").then(|| "xml".to_owned());
        assert!(s.apply_env(bad).is_err());
    }

    #[test]
    fn the_documented_example_parses_and_checks_clean() {
        let doc = include_str!("../../docs/config.md");
        let start = doc.find("```toml\n").expect("a toml block") + 8;
        let len = doc[start..].find("```").expect("its end");
        let src = &doc[start..start + len];
        let mut settings = Settings::parse(src).expect("the example parses");
        // Backends are built by `check`: keep their files out of /var.
        let dir = tempfile::tempdir().expect("dir");
        let mut archive = settings.backends["archive"].get_ref().clone();
        archive.insert("path".into(), dir.path().display().to_string().into());
        settings
            .backends
            .insert("archive".into(), Spanned::new(0..0, archive));
        assert_eq!(settings.check(src), vec![]);
        assert_eq!(settings.tenants.len(), 2);
        assert_eq!(settings.tenants["edge-1"].get_ref().privacy.len(), 2);
    }

    #[test]
    fn token_hashes() {
        assert_eq!(token_hash("foo"), HASH);
        assert!(is_sha256_hex(HASH));
    }
}
