//! NATS JetStream: each batch is published to the tenant's subject (default
//! `metrics.{tenant}`) as one message (the JSON layout of [`super::message`]), with header
//! `Nats-Msg-Id: <batch id>`, and the send waits for the stream's PubAck.
//!
//! # Delivery guarantee
//!
//! Exactly-once in effect **within the stream's duplicate window** (JetStream's default is
//! 2 minutes): the server drops a second message with the same `Nats-Msg-Id` that arrives
//! inside the window and answers `"duplicate": true`, which counts as delivered. A resend
//! after a longer outage or a crash older than the window is stored a second time, so
//! consumers that need exactly-once beyond the window dedupe by the `batch_id` in the body
//! (or the operator raises the stream's `duplicate_window`). When a resend happens and the
//! backend saw the batch's first attempt longer ago than the window, it logs a warning.
//!
//! # Answers
//!
//! | answer | outcome |
//! | --- | --- |
//! | PubAck (also `duplicate: true`) | delivered |
//! | no PubAck within `timeout` | retry (timeout; ambiguous: resent with the same id) |
//! | not connected, connection lost | retry (network) |
//! | "no responders": no stream captures the subject | retry (server error): an operator may create the stream later; the detail says so |
//! | JetStream API error 503 / other 5xx | retry (server error) |
//! | JetStream API error 4xx (e.g. stream sealed, message too large for the stream) | rejected (permanent) |
//! | message larger than `max_message_bytes` or the server's `max_payload` | rejected (too large: the forwarder splits it) |
//!
//! # Connection
//!
//! The connection is made on the first send (not in [`Nats::new`]); when it fails the send
//! returns a network retry and the next send tries again. Once connected, async-nats
//! reconnects by itself after a failure (every 100 ms doubling to 2 s); a send while it is
//! disconnected returns a network retry at once instead of being buffered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use serde::Deserialize;

use super::message::{
    self, Compression, ConfigError, check_duration, field, rejected, retry, too_large,
};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::secret::Secret;

/// JetStream's default duplicate window.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Batches whose first attempt time is remembered (for the resend warning).
const MAX_REMEMBERED: usize = 4096;

fn default_subject() -> String {
    "metrics.{tenant}".to_owned()
}
fn default_stream() -> String {
    "METRICS".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_duplicate_window() -> Duration {
    DEFAULT_DUPLICATE_WINDOW
}
fn default_max_message_bytes() -> usize {
    1 << 20
}

/// Configuration of a [`Nats`] backend, as in the daemon's TOML:
///
/// ```toml
/// url = "nats://127.0.0.1:4222"
/// subject = "metrics.{tenant}"
/// user = "metricspool"
/// password = { env = "NATS_PASSWORD" }
/// timeout = "5s"
/// connect_timeout = "5s"
/// max_message_bytes = 1048576
/// compression = "zstd"
/// create_stream = true
/// stream = "METRICS"
/// stream_subjects = ["metrics.>"]
/// duplicate_window = "2m"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, `nats://host:port` (`tls://` for TLS with the system's roots). Required.
    pub url: String,
    /// Subject template; `{tenant}` is replaced by the tenant id. Default
    /// `metrics.{tenant}`. A tenant id may hold `.`, which adds subject tokens
    /// (`metrics.a.b`); a stream on `metrics.>` captures them.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// User name, with `password`. Default none.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for `user`. Default none; required when `user` is set.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Token authentication (instead of user and password). Default none.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Longest wait for the PubAck (also for the publish to be handed to the connection).
    /// Default 5 s; 10 ms to 10 min.
    #[serde(default = "default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
    /// Longest wait for a connection. Default 5 s; 10 ms to 10 min.
    #[serde(default = "default_timeout", with = "crate::secret::duration")]
    pub connect_timeout: Duration,
    /// Largest message (headers plus body) to publish; a larger batch is refused as too
    /// large and split by the forwarder. The server's `max_payload` (1 MiB by default) also
    /// applies. Default 1 MiB; 1 KiB to 64 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Body compression. Default none.
    #[serde(default)]
    pub compression: Compression,
    /// Create the stream (file storage, `stream_subjects`, `duplicate_window`) on the first
    /// connection if it does not exist. An existing stream is left as it is. Default false.
    #[serde(default)]
    pub create_stream: bool,
    /// Stream name for `create_stream`. Default `METRICS`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subjects of the stream `create_stream` makes. Default: the subject template with
    /// `{tenant}` replaced by `>` (which needs `{tenant}` at the end of the template).
    #[serde(default)]
    pub stream_subjects: Option<Vec<String>>,
    /// The stream's duplicate window: set on a stream `create_stream` makes; otherwise tell
    /// the backend the existing stream's window, for the resend warning. Default 2 min
    /// (JetStream's default); 1 s to 7 days.
    #[serde(default = "default_duplicate_window", with = "crate::secret::duration")]
    pub duplicate_window: Duration,
}

impl NatsConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            subject: default_subject(),
            user: None,
            password: None,
            token: None,
            timeout: default_timeout(),
            connect_timeout: default_timeout(),
            max_message_bytes: default_max_message_bytes(),
            compression: Compression::None,
            create_stream: false,
            stream: default_stream(),
            stream_subjects: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

/// What the constructor resolved and checked.
#[derive(Debug)]
struct Settings {
    url: String,
    subject: String,
    auth: Auth,
    timeout: Duration,
    connect_timeout: Duration,
    max_message_bytes: usize,
    compression: Compression,
    stream: Option<jetstream::stream::Config>,
    duplicate_window: Duration,
}

enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::UserPassword(..) => "UserPassword(..)",
            Self::Token(_) => "Token(..)",
        })
    }
}

/// A live connection and its JetStream context.
#[derive(Debug, Clone)]
struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// Publishes batches to NATS JetStream (see the module docs).
#[derive(Debug)]
pub struct Nats {
    settings: Settings,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// First attempt of batches not yet settled, by batch id.
    first_attempts: std::sync::Mutex<HashMap<String, Instant>>,
}

fn secret(name: &'static str, s: &Secret) -> Result<String, ConfigError> {
    s.resolve().map_err(|source| ConfigError::Secret {
        field: name,
        source,
    })
}

impl Nats {
    /// Checks the configuration and reads its secrets. Does not connect.
    pub fn new(config: NatsConfig) -> Result<Self, ConfigError> {
        if !(config.url.starts_with("nats://") || config.url.starts_with("tls://")) {
            return Err(field("url", "must start with nats:// or tls://"));
        }
        check_subject(&config.subject)?;
        let (lo, hi) = (Duration::from_millis(10), Duration::from_secs(600));
        check_duration("timeout", config.timeout, lo, hi)?;
        check_duration("connect_timeout", config.connect_timeout, lo, hi)?;
        check_duration(
            "duplicate_window",
            config.duplicate_window,
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
        )?;
        if !(1024..=64 << 20).contains(&config.max_message_bytes) {
            return Err(field("max_message_bytes", "must be 1 KiB to 64 MiB"));
        }
        let auth = match (&config.user, &config.password, &config.token) {
            (None, None, None) => Auth::None,
            (Some(u), Some(p), None) => Auth::UserPassword(u.clone(), secret("password", p)?),
            (None, None, Some(t)) => Auth::Token(secret("token", t)?),
            (Some(_), None, _) => return Err(field("password", "user needs a password")),
            (None, Some(_), _) => return Err(field("user", "password needs a user")),
            _ => return Err(field("token", "use either token or user and password")),
        };
        let stream = config
            .create_stream
            .then(|| stream_config(&config))
            .transpose()?;
        Ok(Self {
            settings: Settings {
                url: config.url,
                subject: config.subject,
                auth,
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
                max_message_bytes: config.max_message_bytes,
                compression: config.compression,
                stream,
                duplicate_window: config.duplicate_window,
            },
            conn: tokio::sync::Mutex::new(None),
            first_attempts: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The connection, made now if there is none. Errors are the retry to return.
    async fn connection(&self) -> Result<Conn, Outcome> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let s = &self.settings;
        let mut opts = async_nats::ConnectOptions::new()
            .name("metricspool")
            .connection_timeout(s.connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                let shift = attempt.min(5) as u32;
                Duration::from_millis(100 << shift).min(Duration::from_secs(2))
            });
        opts = match &s.auth {
            Auth::None => opts,
            Auth::UserPassword(u, p) => opts.user_and_password(u.clone(), p.clone()),
            Auth::Token(t) => opts.token(t.clone()),
        };
        let client = tokio::time::timeout(s.connect_timeout, opts.connect(s.url.as_str()))
            .await
            .map_err(|_| retry(RetryReason::Network, "connecting to NATS timed out"))?
            .map_err(|e| retry(RetryReason::Network, format!("cannot connect to NATS: {e}")))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(s.timeout);
        if let Some(cfg) = &s.stream {
            let created = tokio::time::timeout(s.timeout, js.get_or_create_stream(cfg.clone()))
                .await
                .map_err(|_| retry(RetryReason::Timeout, "creating the stream timed out"))?;
            created.map_err(|e| {
                retry(
                    RetryReason::ServerError,
                    format!("cannot create or find stream {}: {e}", cfg.name),
                )
            })?;
        }
        let c = Conn { client, js };
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Remembers when a batch was first attempted and warns when a resend comes after the
    /// duplicate window.
    fn note_attempt(&self, req: &SendRequest<'_>, id: &str) {
        let Ok(mut seen) = self.first_attempts.lock() else {
            return;
        };
        let window = self.settings.duplicate_window;
        match seen.get(id) {
            Some(first) if req.resend && first.elapsed() > window => {
                tracing::warn!(tenant = %req.tenant, batch_id = id, first_attempt_ago = ?first.elapsed(), duplicate_window = ?window,
                    "resending a batch first sent longer ago than the stream's duplicate window: JetStream may store it twice (consumers can dedupe by batch_id)");
            }
            Some(_) => {}
            None => {
                if req.resend {
                    tracing::debug!(tenant = %req.tenant, batch_id = id, "resending a batch whose first attempt was before this process started; if that was longer ago than the duplicate window, JetStream may store it twice");
                }
                if seen.len() >= MAX_REMEMBERED {
                    seen.retain(|_, t| t.elapsed() <= window);
                }
                if seen.len() < MAX_REMEMBERED {
                    seen.insert(id.to_owned(), Instant::now());
                }
            }
        }
    }

    fn settled(&self, id: &str) {
        if let Ok(mut seen) = self.first_attempts.lock() {
            seen.remove(id);
        }
    }

    async fn publish(&self, req: &SendRequest<'_>, id: &str) -> Outcome {
        let s = &self.settings;
        let body = match message::encode(req.tenant, id, req.batch, s.compression) {
            Ok(b) => b,
            Err(e) => return rejected(RejectKind::Permanent, format!("cannot compress: {e}")),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert("Content-Type", message::CONTENT_TYPE);
        if let Some(enc) = s.compression.content_encoding() {
            headers.insert("Content-Encoding", enc);
        }
        let size = body.len() + headers_len(&headers);
        if size > s.max_message_bytes {
            return too_large(size, s.max_message_bytes);
        }
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(retry) => return retry,
        };
        if conn.client.connection_state() != State::Connected {
            return retry(RetryReason::Network, "not connected to NATS (reconnecting)");
        }
        let max_payload = conn.client.max_payload();
        if size > max_payload {
            return too_large(size, max_payload);
        }
        let bytes = body.len() as u64;
        let subject = message::expand(&s.subject, req.tenant);
        let ack = match conn
            .js
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
        {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(tenant = %req.tenant, batch_id = id, stream = %ack.stream, "JetStream had this batch already (duplicate)");
                }
                Outcome::Delivered { bytes, skipped: 0 }
            }
            Err(e) => classify(&e, &subject),
        }
    }
}

impl Backend for Nats {
    fn kind(&self) -> &'static str {
        "nats"
    }

    /// A stream stores messages in any order of sample time.
    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let id = req.batch_id();
            self.note_attempt(&req, &id);
            let out = self.publish(&req, &id).await;
            if !matches!(out, Outcome::Retry { .. }) {
                self.settled(&id);
            }
            out
        })
    }
}

/// Classifies a failed JetStream publish.
fn classify(e: &jetstream::context::PublishError, subject: &str) -> Outcome {
    match e.kind() {
        PublishErrorKind::StreamNotFound => retry(
            RetryReason::ServerError,
            format!(
                "no JetStream stream captures subject {subject} (no responders); create the stream (or set create_stream = true)"
            ),
        ),
        PublishErrorKind::TimedOut => retry(RetryReason::Timeout, "no PubAck in time"),
        PublishErrorKind::BrokenPipe => retry(RetryReason::Network, "connection lost"),
        PublishErrorKind::MaxAckPending => retry(RetryReason::RateLimited, e.to_string()),
        PublishErrorKind::MaxPayloadExceeded => rejected(RejectKind::TooLarge, e.to_string()),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            rejected(RejectKind::Permanent, e.to_string())
        }
        _ => classify_api_error(e),
    }
}

/// An error in the PubAck (a JetStream API error) or a local one.
fn classify_api_error(e: &jetstream::context::PublishError) -> Outcome {
    let api = std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
    match api {
        Some(api) if (400..500).contains(&api.code()) => Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: u16::try_from(api.code()).ok(),
            reason: format!("JetStream refused the message: {api}"),
        },
        Some(api) => retry(
            RetryReason::ServerError,
            format!("JetStream error {}: {api}", api.code()),
        ),
        None => retry(RetryReason::Network, format!("publish failed: {e}")),
    }
}

/// Size of the headers on the wire (`NATS/1.0\r\n`, `name: value\r\n`..., `\r\n`).
fn headers_len(h: &HeaderMap) -> usize {
    let fields: usize = h
        .iter()
        .map(|(n, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(n).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + fields + 2
}

/// A subject template must have `{tenant}` and otherwise only valid subject characters.
fn check_subject(t: &str) -> Result<(), ConfigError> {
    if !t.contains("{tenant}") {
        return Err(field("subject", "must contain {tenant}"));
    }
    let rest = t.replace("{tenant}", "x");
    let bad = rest.is_empty()
        || rest.starts_with('.')
        || rest.ends_with('.')
        || rest.contains("..")
        || rest
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '*' | '>' | '{' | '}'));
    if bad {
        return Err(field(
            "subject",
            format!("{t:?} is not a valid subject (dot-separated tokens, no wildcards)"),
        ));
    }
    Ok(())
}

fn stream_config(c: &NatsConfig) -> Result<jetstream::stream::Config, ConfigError> {
    if c.stream.is_empty()
        || c.stream
            .chars()
            .any(|ch| ch.is_whitespace() || matches!(ch, '.' | '*' | '>'))
    {
        return Err(field(
            "stream",
            "must be a name without spaces, '.', '*' or '>'",
        ));
    }
    let subjects = match &c.stream_subjects {
        Some(s) if !s.is_empty() => s.clone(),
        Some(_) => return Err(field("stream_subjects", "must not be empty")),
        None => match c.subject.strip_suffix("{tenant}") {
            Some(prefix) if !prefix.contains("{tenant}") => vec![format!("{prefix}>")],
            _ => {
                return Err(field(
                    "stream_subjects",
                    "set it when the subject template does not end with {tenant}",
                ));
            }
        },
    };
    Ok(jetstream::stream::Config {
        name: c.stream.clone(),
        subjects,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: c.duplicate_window,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Batch, MetricKind, Sample, Series};
    use crate::tenant::TenantId;

    fn from_toml(s: &str) -> Result<NatsConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn a_full_toml_config_parses_and_defaults_apply() {
        let c = from_toml(
            r#"
            url = "nats://127.0.0.1:4222"
            subject = "m.{tenant}"
            token = { env = "X" }
            timeout = "2s"
            connect_timeout = "1s"
            max_message_bytes = 4096
            compression = "zstd"
            create_stream = true
            stream = "S"
            stream_subjects = ["m.>"]
            duplicate_window = "10m"
            "#,
        )
        .expect("parses");
        assert_eq!(c.duplicate_window, Duration::from_secs(600));
        assert_eq!(c.compression, Compression::Zstd);
        let d = from_toml(r#"url = "nats://h:1""#).expect("parses");
        assert_eq!(d, NatsConfig::new("nats://h:1"));
        assert!(from_toml("url = \"nats://h:1\"\nsubjekt = \"x\"").is_err());
        assert!(from_toml("url = \"nats://h:1\"\ntoken = \"inline\"").is_err());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |f: fn(&mut NatsConfig), name: &str| {
            let mut c = NatsConfig::new("nats://127.0.0.1:1");
            f(&mut c);
            match Nats::new(c) {
                Err(ConfigError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        };
        bad(|c| c.url = "http://x".into(), "url");
        bad(|c| c.subject = "metrics".into(), "subject");
        bad(|c| c.subject = "metrics.*.{tenant}".into(), "subject");
        bad(|c| c.timeout = Duration::ZERO, "timeout");
        bad(|c| c.max_message_bytes = 10, "max_message_bytes");
        bad(|c| c.user = Some("u".into()), "password");
        bad(
            |c| {
                c.create_stream = true;
                c.subject = "{tenant}.metrics".into();
            },
            "stream_subjects",
        );
        let mut c = NatsConfig::new("nats://127.0.0.1:1");
        c.create_stream = true;
        let s = stream_config(&c).expect("valid");
        assert_eq!(s.subjects, vec!["metrics.>".to_owned()]);
        assert_eq!(s.duplicate_window, DEFAULT_DUPLICATE_WINDOW);
        c.password = Some(Secret::Env("METRICSPOOL_TEST_UNSET_NATS_PW".into()));
        c.user = Some("u".into());
        assert!(matches!(
            Nats::new(c),
            Err(ConfigError::Secret {
                field: "password",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_send_to_a_closed_port_is_a_prompt_network_retry() {
        let mut c = NatsConfig::new("nats://127.0.0.1:1");
        c.connect_timeout = Duration::from_millis(500);
        let nats = Nats::new(c).expect("valid");
        let t = TenantId::new("t").expect("valid");
        let mut b = Batch::new();
        b.push_one(
            Series::new("m", Vec::<(&str, &str)>::new()).expect("valid"),
            MetricKind::Gauge,
            Sample::new(1, 1.0),
        );
        let req = SendRequest {
            tenant: &t,
            batch: &b,
            offsets: 0..1,
            part: (0, 1),
            resend: false,
        };
        let t0 = Instant::now();
        let out = nats.send(req).await;
        assert!(
            matches!(
                out,
                Outcome::Retry {
                    reason: RetryReason::Network,
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}
