//! Splunk HTTP Event Collector, metrics: `POST {url}/services/collector` (or
//! `/services/collector/event`) with `Authorization: Splunk <token>`, optionally with
//! indexer acknowledgement.
//!
//! # Events
//!
//! Metric events in the multiple-measurement form (Splunk 8.0+), concatenated in one body
//! (HEC reads a stream of JSON objects):
//!
//! ```json
//! {"time":1700000000.000,"event":"metric","index":"metrics_t1","fields":{"host":"a","metric_name:cpu":12.5,"metric_name:mem":3.1}}
//! ```
//!
//! - samples with the same labels and timestamp share one event, one `metric_name:<name>`
//!   field each (a name already in the event starts a new event); events are in the order
//!   of their first sample, so the body is a pure function of the batch;
//! - labels become dimensions (empty values left out); `time` is seconds with three
//!   decimals; `host`, `index`, `source` and `sourcetype` are written when configured
//!   (templates with `{tenant}`), else HEC applies the token's defaults;
//! - NaN and ±Inf cannot be written in JSON: those samples are left out and counted in
//!   [`Outcome::Delivered`]'s `skipped`.
//!
//! # Delivery guarantee
//!
//! At least once. HEC has no idempotency key: a resend is indexed again, and a metric
//! stored twice doubles a `sum`. Without acknowledgement, a 200 only means HEC received the
//! events, not that they were indexed. With `ack` configured, every request carries
//! `X-Splunk-Request-Channel` (a GUID derived from `ack.channel` and the tenant), HEC
//! answers an `ackId`, and the send polls `POST {url}/services/collector/ack?channel=...`
//! with `{"acks":[id]}` until `{"acks":{"<id>":true}}` (indexed and replicated): only then
//! is the batch delivered. No `true` within `ack.timeout` gives [`Outcome::Retry`]
//! (reason timeout, so the forwarder flags the resend): the events may still have been
//! indexed, so acknowledgement narrows the window for duplicates but cannot close it.
//!
//! # Answers
//!
//! 200 → delivered (or acknowledged, see above); 400 (HEC codes 5, 6, 7, 10–16: bad data,
//! index not allowed, channel problems), 401 and 403 (token) → [`RejectKind::Permanent`];
//! 413 → [`RejectKind::TooLarge`]; 429, 500 (code 8) and 503 (codes 9, 18–20: busy,
//! unhealthy) → [`Outcome::Retry`] with `Retry-After`. The HEC `text` and `code` are kept
//! in the reason.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::http::{self, Auth, field_error};
use super::prometheus::{self, ConfigError};
use super::{Backend, BoxFuture, Outcome, RetryReason, SendRequest};
use crate::sample::{Batch, Label};
use crate::secret::Secret;
use crate::tenant::TenantId;

/// Default request timeout: 30 s, as every HTTP backend.
pub const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;

/// Default pause between acknowledgement polls: 1 s.
pub const DEFAULT_ACK_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Default wait for an acknowledgement: 5 min (Splunk's advice before treating events as
/// lost).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest HEC answer read (they are a few dozen bytes).
const MAX_ANSWER: usize = 64 << 10;

/// Which HEC endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HecEndpoint {
    /// `/services/collector`. The default.
    #[default]
    Collector,
    /// `/services/collector/event`.
    Event,
}

fn default_poll() -> Duration {
    DEFAULT_ACK_POLL_INTERVAL
}

fn default_ack_timeout() -> Duration {
    DEFAULT_ACK_TIMEOUT
}

fn default_channel() -> String {
    "metricspool".to_owned()
}

/// Indexer acknowledgement settings (the HEC token must have `useACK` enabled).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckConfig {
    /// Pause between polls. Default 1 s; 10 ms to 1 min.
    #[serde(default = "default_poll", with = "crate::secret::duration")]
    pub poll_interval: Duration,
    /// How long to wait for `true` before the batch is retried. Default 5 min; 1 ms to 1 h.
    #[serde(default = "default_ack_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
    /// Seed of the channel GUIDs (one per tenant). Default `"metricspool"`. Give each
    /// metricspool instance sending to the same HEC its own seed.
    #[serde(default = "default_channel")]
    pub channel: String,
}

impl Default for AckConfig {
    fn default() -> Self {
        Self {
            poll_interval: DEFAULT_ACK_POLL_INTERVAL,
            timeout: DEFAULT_ACK_TIMEOUT,
            channel: default_channel(),
        }
    }
}

/// Configuration of a [`Splunk`] backend (TOML: see `docs/backends/splunk.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkConfig {
    /// Base URL of HEC, e.g. `https://splunk:8088`. Required: no default.
    pub url: String,
    /// HEC token (`Authorization: Splunk <token>`). Required.
    pub token: Secret,
    /// Endpoint. Default [`HecEndpoint::Collector`].
    #[serde(default)]
    pub endpoint: HecEndpoint,
    /// Target metrics index template (`{tenant}`). Default none: the token's default index.
    #[serde(default)]
    pub index: Option<String>,
    /// `source` template. Default none.
    #[serde(default)]
    pub source: Option<String>,
    /// `sourcetype` template. Default none.
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// `host` template. Default none: HEC uses the sender's address.
    #[serde(default)]
    pub host: Option<String>,
    /// Gzip request bodies (`Content-Encoding: gzip`). Default false.
    #[serde(default)]
    pub gzip: bool,
    /// Request timeout (connect timeout: the smaller of this and 10 s). Default 30 s;
    /// 1 ms to 1 h.
    #[serde(default = "http::default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
    /// Indexer acknowledgement. Default none (a 200 is taken as delivered).
    #[serde(default)]
    pub ack: Option<AckConfig>,
}

impl SplunkConfig {
    /// A configuration for `url` and `token` with every other field at its default.
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        Self {
            url: url.into(),
            token,
            endpoint: HecEndpoint::Collector,
            index: None,
            source: None,
            sourcetype: None,
            host: None,
            gzip: false,
            timeout: DEFAULT_TIMEOUT,
            ack: None,
        }
    }
}

/// Metric events to Splunk HEC.
pub struct Splunk {
    send_url: Url,
    ack_url: Url,
    meta: Vec<(&'static str, String)>,
    client: reqwest::Client,
    auth: Auth,
    headers: HeaderMap,
    gzip: bool,
    ack: Option<AckConfig>,
}

impl std::fmt::Debug for Splunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splunk")
            .field("send_url", &self.send_url.as_str())
            .field("meta", &self.meta)
            .field("ack", &self.ack)
            .finish_non_exhaustive()
    }
}

fn check_duration(
    field: &'static str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if d < min || d > max {
        return Err(field_error(field, format!("it must be {min:?} to {max:?}")));
    }
    Ok(())
}

impl Splunk {
    /// Checks the configuration, reads the token and builds the HTTP client.
    pub fn new(config: SplunkConfig) -> Result<Self, ConfigError> {
        let base = prometheus::parse_url(&config.url)?;
        let token = config
            .token
            .resolve()
            .map_err(|e| field_error("token", e.to_string()))?;
        let mut meta = Vec::new();
        for (name, value) in [
            ("host", &config.host),
            ("index", &config.index),
            ("source", &config.source),
            ("sourcetype", &config.sourcetype),
        ] {
            let Some(v) = value else { continue };
            let unknown = http::unknown_placeholders(v, &["tenant"]);
            if !unknown.is_empty() || v.is_empty() {
                return Err(field_error(
                    name,
                    format!("empty or unknown placeholder(s) {}", unknown.join(", ")),
                ));
            }
            meta.push((name, v.clone()));
        }
        let ms = Duration::from_millis(1);
        check_duration("timeout", config.timeout, ms, Duration::from_secs(3600))?;
        if let Some(a) = &config.ack {
            check_duration(
                "ack.poll_interval",
                a.poll_interval,
                10 * ms,
                Duration::from_secs(60),
            )?;
            check_duration("ack.timeout", a.timeout, ms, Duration::from_secs(3600))?;
        }
        let headers = http::body_headers("application/json", config.gzip);
        let path = match config.endpoint {
            HecEndpoint::Collector => "services/collector",
            HecEndpoint::Event => "services/collector/event",
        };
        Ok(Self {
            send_url: prometheus::join_path(&base, path),
            ack_url: prometheus::join_path(&base, "services/collector/ack"),
            meta,
            client: http::client(config.timeout),
            auth: Auth::Scheme {
                scheme: "Splunk".to_owned(),
                token,
            },
            headers,
            gzip: config.gzip,
            ack: config.ack,
        })
    }

    async fn send_batch(&self, tenant: &TenantId, batch: &Batch) -> Outcome {
        let meta: Vec<(&str, String)> = self
            .meta
            .iter()
            .map(|(k, v)| (*k, http::render_tenant(v, tenant.as_str())))
            .collect();
        let events = encode(batch, &meta);
        if events.events == 0 {
            return Outcome::Delivered {
                bytes: 0,
                skipped: events.skipped,
            };
        }
        let body = if self.gzip {
            http::gzip(events.text.as_bytes())
        } else {
            events.text.into_bytes()
        };
        let bytes = body.len() as u64;
        let channel = self.ack.as_ref().map(|a| channel_id(&a.channel, tenant));
        let mut rb = self
            .client
            .post(self.send_url.clone())
            .headers(self.headers.clone())
            .body(body);
        if let Some(c) = &channel {
            rb = rb.header("x-splunk-request-channel", c);
        }
        let (status, retry_after, answer) = match self.exchange(rb).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        if status != 200 {
            let a = http::answer(status, retry_after, &answer);
            return http::classify(&a, bytes);
        }
        let delivered = Outcome::Delivered {
            bytes,
            skipped: events.skipped,
        };
        let (Some(ack), Some(channel)) = (&self.ack, channel) else {
            return delivered;
        };
        let parsed: HecAnswer = serde_json::from_slice(&answer).unwrap_or_default();
        let Some(id) = parsed.ack_id else {
            tracing::warn!(%tenant, "HEC answered 200 without an ackId although ack is configured (is useACK on for the token?); taking the 200 as delivered");
            return delivered;
        };
        if self.await_ack(ack, &channel, id).await {
            return delivered;
        }
        Outcome::Retry {
            reason: RetryReason::Timeout,
            retry_after: None,
            detail: format!(
                "no indexer acknowledgement for ackId {id} on channel {channel} within {:?}; the batch is resent and may be indexed twice",
                ack.timeout
            ),
        }
    }

    /// Sends a request with the token; returns status, `Retry-After` and the answer's start.
    async fn exchange(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), Outcome> {
        let resp = self
            .auth
            .apply(rb)
            .send()
            .await
            .map_err(http::transport_error)?;
        let (status, retry_after) = http::status_and_retry_after(&resp);
        let (body, _) = http::read_capped(resp, MAX_ANSWER).await?;
        Ok((status, retry_after, body))
    }

    /// Polls the ack endpoint until `id` is acknowledged (true) or the timeout (false).
    /// Poll failures (network, 5xx, malformed answers) just mean "not yet".
    async fn await_ack(&self, ack: &AckConfig, channel: &str, id: u64) -> bool {
        let deadline = tokio::time::Instant::now() + ack.timeout;
        let mut url = self.ack_url.clone();
        url.query_pairs_mut().append_pair("channel", channel);
        let body = format!("{{\"acks\":[{id}]}}");
        let key = id.to_string();
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(ack.poll_interval.min(deadline - now)).await;
            let rb = self
                .client
                .post(url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-splunk-request-channel", channel)
                .body(body.clone());
            if let Ok((200, _, answer)) = self.exchange(rb).await {
                let acks: AckAnswer = serde_json::from_slice(&answer).unwrap_or_default();
                if acks.acks.get(&key).copied().unwrap_or(false) {
                    return true;
                }
            }
        }
    }
}

/// HEC's answer to a send.
#[derive(Debug, Default, Deserialize)]
struct HecAnswer {
    #[serde(rename = "ackId", default)]
    ack_id: Option<u64>,
}

/// HEC's answer to an ack poll.
#[derive(Debug, Default, Deserialize)]
struct AckAnswer {
    #[serde(default)]
    acks: HashMap<String, bool>,
}

/// The channel GUID of a tenant: a version-4-shaped UUID from SHA-256 of the seed and the
/// tenant, stable across restarts.
pub fn channel_id(seed: &str, tenant: &TenantId) -> String {
    let mut h = Sha256::new();
    h.update(b"metricspool-splunk-channel\0");
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(tenant.as_str().as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// Encoded events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    /// Concatenated JSON objects, one per line.
    pub text: String,
    /// Number of events.
    pub events: u64,
    /// Samples left out (NaN, ±Inf).
    pub skipped: u64,
}

/// One event under construction.
struct Event<'a> {
    labels: &'a [Label],
    ts: i64,
    metrics: Vec<(&'a str, f64)>,
}

/// Encodes a batch as HEC metric events with the `meta` keys (`host`, `index`, `source`,
/// `sourcetype`, already rendered) on each; see the module docs.
pub fn encode(batch: &Batch, meta: &[(&str, String)]) -> Events {
    let mut events: Vec<Event<'_>> = Vec::new();
    let mut open: HashMap<(&[Label], i64), usize> = HashMap::new();
    let mut skipped = 0;
    for entry in batch.entries() {
        let name = entry.series.name();
        let labels = entry.series.labels();
        for s in &entry.samples {
            if !s.value.is_finite() {
                skipped += 1;
                continue;
            }
            let key = (labels, s.timestamp_ms);
            match open.get(&key) {
                Some(&i) if !events[i].metrics.iter().any(|(n, _)| *n == name) => {
                    events[i].metrics.push((name, s.value));
                }
                _ => {
                    open.insert(key, events.len());
                    events.push(Event {
                        labels,
                        ts: s.timestamp_ms,
                        metrics: vec![(name, s.value)],
                    });
                }
            }
        }
    }
    let mut text = String::new();
    let head: String = meta
        .iter()
        .map(|(k, v)| format!(",\"{k}\":{}", json_string(v)))
        .collect();
    for e in &events {
        let _ = write!(
            text,
            "{{\"time\":{},\"event\":\"metric\"{head},\"fields\":{{",
            seconds(e.ts)
        );
        let mut first = true;
        for l in e.labels.iter().filter(|l| !l.value.is_empty()) {
            if !first {
                text.push(',');
            }
            first = false;
            let _ = write!(text, "{}:{}", json_string(&l.name), json_string(&l.value));
        }
        for (name, value) in &e.metrics {
            if !first {
                text.push(',');
            }
            first = false;
            let v = serde_json::to_string(value).unwrap_or_else(|_| "0".to_owned());
            let _ = write!(text, "{}:{v}", json_string(&format!("metric_name:{name}")));
        }
        text.push_str("}}\n");
    }
    Events {
        text,
        events: events.len() as u64,
        skipped,
    }
}

/// Milliseconds as seconds with three decimals: `1700000000.123`, `-0.005`.
fn seconds(ts_ms: i64) -> String {
    let sign = if ts_ms < 0 { "-" } else { "" };
    let a = ts_ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl Backend for Splunk {
    fn kind(&self) -> &'static str {
        "splunk"
    }

    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(req.tenant, req.batch))
    }
}

#[cfg(test)]
mod tests;
