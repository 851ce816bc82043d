//! MQTT 5: each batch is published with QoS 1 to the tenant's topic (default
//! `metrics/{tenant}`) as one message (the JSON layout of [`super::message`]), with user
//! properties `batch_id` ([`SendRequest::batch_id`]) and `tenant`, and the send waits for
//! the broker's PUBACK.
//!
//! # Delivery guarantee
//!
//! **At-least-once.** A batch whose PUBACK did not come back (timeout, connection lost) is
//! resent by the forwarder, possibly after a restart, and the broker delivers it again:
//! MQTT has no end-to-end deduplication (a packet identifier only means something within
//! one session on one hop). Consumers dedupe by the `batch_id` user property, which is the
//! same on every resend of a batch (the body is byte-identical too).
//!
//! # Sessions
//!
//! The backend connects with Clean Start = 1 and Session Expiry Interval = 0: no MQTT session
//! outlives a connection, and the client never redelivers on its own. The forwarder's
//! durable in-flight record already resends every unacknowledged batch, across reconnects
//! *and* process restarts; a persistent session would add a second, weaker resend path
//! (lost with the process's memory) and more duplicates, not more safety. Hence the client
//! id need not be stable: the default is `metricspool-<pid>-<random>`; set `client_id` for
//! brokers whose ACLs name client ids (one connection per backend instance, shared by all
//! tenants; two daemons must not share a client id, or the broker disconnects one of them).
//!
//! # Answers
//!
//! | answer | outcome |
//! | --- | --- |
//! | PUBACK 0x00 success, 0x10 no matching subscribers | delivered |
//! | no PUBACK within `timeout` | retry (timeout); the connection is dropped, so a late PUBACK can never be taken for another message's |
//! | cannot connect, connection lost | retry (network) |
//! | PUBACK 0x97 quota exceeded | retry (rate limited) |
//! | PUBACK 0x91 packet identifier in use | retry (server error) |
//! | PUBACK 0x95 packet too large (mosquitto's answer over `message_size_limit`), body over `max_message_bytes` or the broker's Maximum Packet Size | rejected (too large: the forwarder splits it) |
//! | PUBACK 0x87 not authorized, 0x90 topic name invalid, 0x99 payload format invalid, any other code ≥ 0x80 | rejected (permanent) |
//! | CONNACK bad user name or password, not authorized, banned, client id not valid | rejected (permanent) |
//!
//! # Implementation
//!
//! rumqttc's `AsyncClient` assigns packet identifiers inside its event loop and does not
//! return them from `publish`, so a PUBACK could only be matched to a send by the order of
//! events, which breaks when a connection fails between handing a publish over and
//! writing it. This backend therefore uses rumqttc's MQTT 5 codec over its own TCP
//! connection: it picks each packet identifier itself, a reader task matches PUBACKs to
//! waiting sends through oneshot channels, and a pinger task keeps the connection alive.
//! Frames from the broker are bounded ([`MAX_INCOMING`], announced as the client's Maximum
//! Packet Size) and decoded without panicking. Plain TCP only: rumqttc's TLS feature pulls
//! rustls-webpki 0.102 and rustls-pemfile, which this project does not take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Login, Packet, PingReq, Publish,
    PublishProperties,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::AbortHandle;

use super::message::{
    self, Compression, ConfigError, check_duration, field, rejected, retry, too_large,
};
use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::secret::Secret;

/// Largest packet accepted from the broker (acks, CONNACK, DISCONNECT): 64 KiB.
pub const MAX_INCOMING: u32 = 64 << 10;

/// MQTT's largest packet (the remaining length is at most 268,435,455).
const MQTT_MAX_PACKET: usize = 268_435_455;

fn default_topic() -> String {
    "metrics/{tenant}".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_message_bytes() -> usize {
    1 << 20
}

/// Configuration of an [`Mqtt`] backend, as in the daemon's TOML:
///
/// ```toml
/// url = "mqtt://127.0.0.1:1883"
/// topic = "metrics/{tenant}"
/// client_id = "metricspool-edge-7"
/// user = "metricspool"
/// password = { file = "/etc/metricspool/mqtt.pw" }
/// timeout = "5s"
/// connect_timeout = "5s"
/// keep_alive = "30s"
/// max_message_bytes = 1048576
/// compression = "none"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker address, `mqtt://host[:port]` (port 1883 by default). Required. Plain TCP.
    pub url: String,
    /// Topic template; `{tenant}` is replaced by the tenant id. Default `metrics/{tenant}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Client identifier. Default `metricspool-<pid>-<random>` (see "Sessions" in the module
    /// docs); 1 to 128 bytes.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name. Default none.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for `user`. Default none.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Longest wait for the PUBACK (and for writing the message). Default 5 s; 10 ms to 10 min.
    #[serde(default = "default_timeout", with = "crate::secret::duration")]
    pub timeout: Duration,
    /// Longest wait for the TCP connection and the CONNACK. Default 5 s; 10 ms to 10 min.
    #[serde(default = "default_timeout", with = "crate::secret::duration")]
    pub connect_timeout: Duration,
    /// MQTT keep alive: a PINGREQ goes out every 3/4 of it. Default 30 s; 1 s to 18 h.
    #[serde(default = "default_keep_alive", with = "crate::secret::duration")]
    pub keep_alive: Duration,
    /// Largest message body to publish; a larger batch is refused as too large and split by
    /// the forwarder. The broker's own limits (Maximum Packet Size in its CONNACK,
    /// mosquitto's `message_size_limit`) also apply. Default 1 MiB; 1 KiB to 256 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Body compression. Default none.
    #[serde(default)]
    pub compression: Compression,
}

impl MqttConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            topic: default_topic(),
            client_id: None,
            user: None,
            password: None,
            timeout: default_timeout(),
            connect_timeout: default_timeout(),
            keep_alive: default_keep_alive(),
            max_message_bytes: default_max_message_bytes(),
            compression: Compression::None,
        }
    }
}

/// What the constructor resolved and checked.
struct Settings {
    host: String,
    port: u16,
    topic: String,
    client_id: String,
    login: Option<Login>,
    timeout: Duration,
    connect_timeout: Duration,
    keep_alive: Duration,
    max_message_bytes: usize,
    compression: Compression,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .field("user", &self.login.as_ref().map(|l| &l.username))
            .finish_non_exhaustive()
    }
}

/// Publishes batches to an MQTT 5 broker (see the module docs).
#[derive(Debug)]
pub struct Mqtt {
    settings: Settings,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

fn parse_url(url: &str) -> Result<(String, u16), ConfigError> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| field("url", "must start with mqtt://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| field("url", format!("bad port {p:?}")))?,
        ),
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(field("url", format!("{url:?} has no host")));
    }
    Ok((host.to_owned(), port))
}

fn check_topic(t: &str) -> Result<(), ConfigError> {
    if !t.contains("{tenant}") {
        return Err(field("topic", "must contain {tenant}"));
    }
    if t.contains(['+', '#', '\0']) || t.starts_with('$') || t.len() > 1024 {
        return Err(field(
            "topic",
            "must not hold wildcards (+ #), NUL or start with $, and be at most 1 KiB",
        ));
    }
    Ok(())
}

impl Mqtt {
    /// Checks the configuration and reads its secrets. Does not connect.
    pub fn new(config: MqttConfig) -> Result<Self, ConfigError> {
        let (host, port) = parse_url(&config.url)?;
        check_topic(&config.topic)?;
        let (lo, hi) = (Duration::from_millis(10), Duration::from_secs(600));
        check_duration("timeout", config.timeout, lo, hi)?;
        check_duration("connect_timeout", config.connect_timeout, lo, hi)?;
        let max_keep_alive = Duration::from_secs(u64::from(u16::MAX));
        check_duration(
            "keep_alive",
            config.keep_alive,
            Duration::from_secs(1),
            max_keep_alive,
        )?;
        if !(1024..=256 << 20).contains(&config.max_message_bytes) {
            return Err(field("max_message_bytes", "must be 1 KiB to 256 MiB"));
        }
        let client_id = match config.client_id {
            Some(id) if (1..=128).contains(&id.len()) => id,
            Some(_) => return Err(field("client_id", "must be 1 to 128 bytes")),
            None => default_client_id(),
        };
        let login = match (config.user, &config.password) {
            (Some(u), Some(p)) => Some(Login::new(
                u,
                p.resolve().map_err(|source| ConfigError::Secret {
                    field: "password",
                    source,
                })?,
            )),
            (Some(u), None) => Some(Login::new(u, "")),
            (None, Some(_)) => return Err(field("user", "password needs a user")),
            (None, None) => None,
        };
        Ok(Self {
            settings: Settings {
                host,
                port,
                topic: config.topic,
                client_id,
                login,
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
                keep_alive: config.keep_alive,
                max_message_bytes: config.max_message_bytes,
                compression: config.compression,
            },
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The live connection, made now if there is none (or the last one failed).
    async fn connection(&self) -> Result<Arc<Conn>, Outcome> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && c.shared.is_open()
        {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let c = Arc::new(Conn::open(&self.settings).await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    fn publish_packet(&self, req: &SendRequest<'_>, id: &str, body: Vec<u8>) -> Publish {
        let s = &self.settings;
        let mut user_properties = vec![
            ("batch_id".to_owned(), id.to_owned()),
            ("tenant".to_owned(), req.tenant.as_str().to_owned()),
        ];
        if let Some(enc) = s.compression.content_encoding() {
            user_properties.push(("content-encoding".to_owned(), enc.to_owned()));
        }
        let props = PublishProperties {
            // 1: the payload is UTF-8 (plain JSON); compressed bodies are bytes.
            payload_format_indicator: s.compression.content_encoding().is_none().then_some(1),
            content_type: Some(message::CONTENT_TYPE.to_owned()),
            user_properties,
            ..Default::default()
        };
        let topic = message::expand(&s.topic, req.tenant);
        Publish::new(topic, QoS::AtLeastOnce, body, Some(props))
    }

    async fn publish(&self, req: &SendRequest<'_>) -> Outcome {
        let s = &self.settings;
        let id = req.batch_id();
        let body = match message::encode(req.tenant, &id, req.batch, s.compression) {
            Ok(b) => b,
            Err(e) => return rejected(RejectKind::Permanent, format!("cannot compress: {e}")),
        };
        if body.len() > s.max_message_bytes {
            return too_large(body.len(), s.max_message_bytes);
        }
        let bytes = body.len() as u64;
        let mut publish = self.publish_packet(req, &id, body);
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(out) => return out,
        };
        let size = Packet::Publish(publish.clone()).size();
        if size > conn.max_packet {
            return too_large(size, conn.max_packet);
        }
        match conn.publish(&mut publish, s.timeout).await {
            Ok(reason) => classify_puback(reason, bytes),
            Err(out) => out,
        }
    }
}

impl Backend for Mqtt {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    /// A broker passes messages on in any order of sample time.
    fn accepts_out_of_order(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { self.publish(&req).await })
    }
}

fn default_client_id() -> String {
    let mut r = [0u8; 4];
    // A random suffix only keeps two processes apart; without one the pid still does.
    let _ = getrandom::fill(&mut r);
    format!(
        "metricspool-{}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(r)
    )
}

/// Maps a PUBACK reason code to an outcome.
fn classify_puback(reason: u8, bytes: u64) -> Outcome {
    match reason {
        0x00 | 0x10 => Outcome::Delivered { bytes, skipped: 0 },
        0x97 => retry(RetryReason::RateLimited, "PUBACK 0x97 quota exceeded"),
        0x91 => retry(
            RetryReason::ServerError,
            "PUBACK 0x91 packet identifier in use",
        ),
        0x95 => Outcome::Rejected {
            kind: RejectKind::TooLarge,
            status: Some(0x95),
            reason: "PUBACK 0x95 packet too large".to_owned(),
        },
        r if r >= 0x80 => Outcome::Rejected {
            kind: RejectKind::Permanent,
            status: Some(u16::from(r)),
            reason: format!("PUBACK 0x{r:02x} {}", reason_name(r)),
        },
        // Codes below 0x80 other than the two above are not defined for PUBACK: the broker
        // said "not a failure".
        _ => Outcome::Delivered { bytes, skipped: 0 },
    }
}

fn reason_name(r: u8) -> &'static str {
    match r {
        0x80 => "unspecified error",
        0x83 => "implementation specific error",
        0x87 => "not authorized",
        0x90 => "topic name invalid",
        0x99 => "payload format invalid",
        _ => "refused",
    }
}

// ---------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------

/// What the reader tells a waiting send.
type AckTx = oneshot::Sender<u8>;

#[derive(Debug, Default)]
struct PendingAcks {
    waiting: HashMap<u16, AckTx>,
    last_pkid: u16,
    /// Why the connection ended, once it did.
    closed: Option<String>,
}

/// What the reader, the pinger and the sends share.
#[derive(Debug)]
struct Shared {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    acks: Mutex<PendingAcks>,
}

impl Shared {
    fn is_open(&self) -> bool {
        self.acks
            .lock()
            .map(|a| a.closed.is_none())
            .unwrap_or(false)
    }

    /// Marks the connection dead; every waiting send sees its channel close.
    fn close(&self, why: String) {
        if let Ok(mut a) = self.acks.lock() {
            if a.closed.is_none() {
                a.closed = Some(why);
            }
            a.waiting.clear();
        }
    }

    fn closed_reason(&self) -> String {
        self.acks
            .lock()
            .ok()
            .and_then(|a| a.closed.clone())
            .unwrap_or_else(|| "connection lost".to_owned())
    }

    /// A free packet identifier and the channel its PUBACK will come through.
    fn register(&self) -> Result<(u16, oneshot::Receiver<u8>), String> {
        let mut a = self.acks.lock().map_err(|_| "connection state poisoned")?;
        if let Some(why) = &a.closed {
            return Err(why.clone());
        }
        // At most receive-maximum (<= 65,535) ids are in use, so a free one exists.
        let mut pkid = a.last_pkid;
        loop {
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            if !a.waiting.contains_key(&pkid) {
                break;
            }
        }
        a.last_pkid = pkid;
        let (tx, rx) = oneshot::channel();
        a.waiting.insert(pkid, tx);
        Ok((pkid, rx))
    }

    fn acked(&self, pkid: u16, reason: u8) {
        let tx = self
            .acks
            .lock()
            .ok()
            .and_then(|mut a| a.waiting.remove(&pkid));
        match tx {
            Some(tx) => {
                let _ = tx.send(reason);
            }
            None => tracing::debug!(pkid, "PUBACK for no waiting message (ignored)"),
        }
    }

    async fn write(&self, packet: &Packet, max: usize) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(packet.size() + 8);
        let limit = u32::try_from(max).unwrap_or(u32::MAX);
        packet
            .write(&mut buf, Some(limit))
            .map_err(|e| format!("cannot encode: {e}"))?;
        let mut w = self.writer.lock().await;
        w.write_all(&buf)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }
}

/// One connection to the broker. Dropping it stops its tasks and closes the socket.
#[derive(Debug)]
struct Conn {
    shared: Arc<Shared>,
    /// The broker's Receive Maximum: QoS 1 messages it takes unacknowledged.
    permits: Semaphore,
    /// The broker's Maximum Packet Size (MQTT's maximum if it gave none).
    max_packet: usize,
    tasks: [AbortHandle; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conn {
    /// Connects, sends CONNECT, waits for a successful CONNACK, starts the tasks.
    async fn open(s: &Settings) -> Result<Conn, Outcome> {
        let connect = async {
            let stream = TcpStream::connect((s.host.as_str(), s.port))
                .await
                .map_err(|e| net(format!("cannot connect to {}:{}: {e}", s.host, s.port)))?;
            let _ = stream.set_nodelay(true);
            let (mut rd, mut wr) = stream.into_split();
            let mut buf = BytesMut::with_capacity(256);
            let packet = Packet::Connect(connect_packet(s), None, s.login.clone());
            packet
                .write(&mut buf, None)
                .map_err(|e| net(format!("cannot encode CONNECT: {e}")))?;
            wr.write_all(&buf)
                .await
                .map_err(|e| net(format!("cannot send CONNECT: {e}")))?;
            let mut rbuf = BytesMut::with_capacity(1024);
            match read_frame(&mut rd, &mut rbuf).await.map_err(net)? {
                Frame::Packet(p) => match *p {
                    Packet::ConnAck(ack) => Ok((rd, wr, rbuf, ack)),
                    other => Err(net(format!("expected CONNACK, got {other:?}"))),
                },
                other => Err(net(format!("expected CONNACK, got {other:?}"))),
            }
        };
        let (rd, wr, rbuf, ack) = tokio::time::timeout(s.connect_timeout, connect)
            .await
            .map_err(|_| net(format!("no CONNACK from {}:{} in time", s.host, s.port)))??;
        check_connack(&ack)?;
        let (receive_max, max_packet) = ack
            .properties
            .as_ref()
            .map_or((None, None), |p| (p.receive_max, p.max_packet_size));
        let shared = Arc::new(Shared {
            writer: tokio::sync::Mutex::new(wr),
            acks: Mutex::new(PendingAcks::default()),
        });
        let reader = tokio::spawn(read_loop(rd, rbuf, Arc::clone(&shared))).abort_handle();
        let every = s.keep_alive.mul_f64(0.75);
        let pinger = tokio::spawn(ping_loop(every, Arc::clone(&shared))).abort_handle();
        Ok(Conn {
            shared,
            permits: Semaphore::new(usize::from(receive_max.unwrap_or(u16::MAX).max(1))),
            max_packet: max_packet.map_or(MQTT_MAX_PACKET, |m| m as usize),
            tasks: [reader, pinger],
        })
    }

    /// Publishes and waits for the PUBACK's reason code. A timeout closes the connection:
    /// its packet identifier could otherwise be answered late and mistaken for another.
    async fn publish(&self, publish: &mut Publish, timeout: Duration) -> Result<u8, Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| {
                retry(
                    RetryReason::Timeout,
                    "too many messages awaiting PUBACK (broker's receive maximum)",
                )
            })?
            .map_err(|_| net("connection closed".to_owned()))?;
        let (pkid, rx) = self.shared.register().map_err(net)?;
        publish.pkid = pkid;
        let packet = Packet::Publish(publish.clone());
        let written =
            tokio::time::timeout_at(deadline, self.shared.write(&packet, self.max_packet)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.shared.close(e.clone());
                return Err(net(e));
            }
            Err(_) => {
                self.shared.close("write timed out".to_owned());
                return Err(retry(RetryReason::Timeout, "writing the message timed out"));
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reason)) => Ok(reason),
            Ok(Err(_)) => Err(net(format!(
                "connection lost before the PUBACK: {}",
                self.shared.closed_reason()
            ))),
            Err(_) => {
                self.shared.close("a PUBACK timed out".to_owned());
                Err(retry(RetryReason::Timeout, "no PUBACK in time"))
            }
        }
    }
}

fn net(detail: String) -> Outcome {
    retry(RetryReason::Network, detail)
}

fn connect_packet(s: &Settings) -> Connect {
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(0);
    props.max_packet_size = Some(MAX_INCOMING);
    Connect {
        keep_alive: u16::try_from(s.keep_alive.as_secs()).unwrap_or(u16::MAX),
        client_id: s.client_id.clone(),
        clean_start: true,
        properties: Some(props),
    }
}

/// A refused CONNACK: credentials and identity problems are permanent, the rest retried.
fn check_connack(ack: &ConnAck) -> Result<(), Outcome> {
    use ConnectReturnCode as C;
    let detail = || {
        let why = ack
            .properties
            .as_ref()
            .and_then(|p| p.reason_string.clone())
            .unwrap_or_default();
        format!("the broker refused the connection: {:?} {why}", ack.code)
    };
    match ack.code {
        C::Success => Ok(()),
        C::BadUserNamePassword
        | C::NotAuthorized
        | C::Banned
        | C::BadAuthenticationMethod
        | C::ClientIdentifierNotValid
        | C::BadClientId
        | C::UnsupportedProtocolVersion
        | C::RefusedProtocolVersion => Err(rejected(RejectKind::Permanent, detail())),
        C::QuotaExceeded | C::ConnectionRateExceeded => {
            Err(retry(RetryReason::RateLimited, detail()))
        }
        _ => Err(retry(RetryReason::ServerError, detail())),
    }
}

async fn read_loop(mut rd: OwnedReadHalf, mut buf: BytesMut, shared: Arc<Shared>) {
    let why = loop {
        match read_frame(&mut rd, &mut buf).await {
            Ok(Frame::PubAck { pkid, reason }) => shared.acked(pkid, reason),
            Ok(Frame::Packet(p)) => {
                if let Packet::Disconnect(d) = *p {
                    break format!("the broker disconnected: {:?}", d.reason_code);
                }
                // PINGRESP, and packets a publish-only client does not expect: ignored.
            }
            Err(e) => break e,
        }
    };
    tracing::debug!(reason = %why, "MQTT connection ended");
    shared.close(why);
}

async fn ping_loop(every: Duration, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = shared
            .write(&Packet::PingReq(PingReq), MQTT_MAX_PACKET)
            .await
        {
            shared.close(e);
            return;
        }
    }
}

/// One packet from the broker.
#[derive(Debug)]
enum Frame {
    /// A PUBACK, decoded here: rumqttc's codec has no variant for some codes brokers send
    /// (mosquitto answers 0x95 "packet too large").
    PubAck { pkid: u16, reason: u8 },
    /// Anything else, decoded by rumqttc's codec.
    Packet(Box<Packet>),
}

/// Reads one whole frame, at most [`MAX_INCOMING`] bytes.
async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Frame, String> {
    loop {
        if let Some(frame) = decode_frame(buf)? {
            return Ok(frame);
        }
        let n = rd
            .read_buf(buf)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the broker closed the connection".to_owned());
        }
    }
}

/// Splits one frame off the front of `buf` and decodes it; `None` when more bytes are needed.
/// Never panics and never reads past the frame; frames over [`MAX_INCOMING`] are an error.
fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    let Some((header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = header_len + remaining;
    if total > MAX_INCOMING as usize {
        return Err(format!(
            "the broker sent a {total}-byte packet, more than {MAX_INCOMING}"
        ));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    if frame.first().map(|b| b >> 4) == Some(4) {
        let body = frame.get(header_len..).unwrap_or_default();
        return match body {
            [hi, lo, rest @ ..] => Ok(Some(Frame::PubAck {
                pkid: (u16::from(*hi) << 8) | u16::from(*lo),
                reason: rest.first().copied().unwrap_or(0),
            })),
            _ => Err("malformed PUBACK".to_owned()),
        };
    }
    Packet::read(&mut frame, Some(MAX_INCOMING))
        .map(|p| Some(Frame::Packet(Box::new(p))))
        .map_err(|e| format!("malformed packet from the broker: {e}"))
}

/// Decodes every whole frame in `bytes`, as the reader task would; the count of frames
/// decoded before the first error or the end. For the fuzz target.
pub(crate) fn decode_all(bytes: &[u8]) -> usize {
    let mut buf = BytesMut::from(bytes);
    let mut n = 0;
    while let Ok(Some(_)) = decode_frame(&mut buf) {
        n += 1;
    }
    n
}

/// The fixed header's length and the remaining length, once enough bytes are there.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err("malformed remaining length from the broker".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_toml_config_parses_and_bad_fields_are_named() {
        let c: MqttConfig = toml::from_str(
            r#"
            url = "mqtt://broker:1884"
            topic = "m/{tenant}/x"
            client_id = "c1"
            user = "u"
            timeout = "2s"
            connect_timeout = "1s"
            keep_alive = "10s"
            max_message_bytes = 4096
            compression = "zstd"
            "#,
        )
        .expect("parses");
        let m = Mqtt::new(c).expect("valid");
        assert_eq!(
            (m.settings.host.as_str(), m.settings.port),
            ("broker", 1884)
        );
        let d: MqttConfig = toml::from_str(r#"url = "mqtt://h""#).expect("parses");
        assert_eq!(d, MqttConfig::new("mqtt://h"));
        assert_eq!(
            parse_url("mqtt://h").expect("valid"),
            ("h".to_owned(), 1883)
        );
        assert!(toml::from_str::<MqttConfig>("url = \"mqtt://h\"\ntopik = \"x\"").is_err());
        let bad = |f: fn(&mut MqttConfig), name: &str| {
            let mut c = MqttConfig::new("mqtt://127.0.0.1:1");
            f(&mut c);
            match Mqtt::new(c) {
                Err(ConfigError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        };
        bad(|c| c.url = "tcp://h".into(), "url");
        bad(|c| c.url = "mqtt://h:x".into(), "url");
        bad(|c| c.topic = "metrics/#".into(), "topic");
        bad(|c| c.topic = "metrics".into(), "topic");
        bad(|c| c.keep_alive = Duration::ZERO, "keep_alive");
        bad(|c| c.client_id = Some(String::new()), "client_id");
        bad(|c| c.max_message_bytes = 1, "max_message_bytes");
    }

    #[test]
    fn puback_codes_are_classified() {
        let d = |o: &Outcome| matches!(o, Outcome::Delivered { bytes: 9, .. });
        assert!(d(&classify_puback(0x00, 9)));
        assert!(d(&classify_puback(0x10, 9)));
        assert!(matches!(
            classify_puback(0x97, 9),
            Outcome::Retry {
                reason: RetryReason::RateLimited,
                ..
            }
        ));
        assert!(matches!(
            classify_puback(0x95, 9),
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                ..
            }
        ));
        for code in [0x80, 0x83, 0x87, 0x90, 0x99] {
            assert!(matches!(
                classify_puback(code, 9),
                Outcome::Rejected { kind: RejectKind::Permanent, status: Some(s), .. } if s == u16::from(code)
            ));
        }
    }

    #[test]
    fn frames_are_decoded_bounded_and_in_pieces() {
        // PUBACK pkid 0x0102 reason 0x87, no properties.
        let mut b = BytesMut::from(&[0x40, 0x03, 0x01][..]);
        assert!(matches!(decode_frame(&mut b), Ok(None)));
        b.extend_from_slice(&[0x02, 0x87, 0xd0]);
        assert!(matches!(
            decode_frame(&mut b),
            Ok(Some(Frame::PubAck {
                pkid: 0x0102,
                reason: 0x87
            }))
        ));
        assert_eq!(&b[..], &[0xd0]);
        b.extend_from_slice(&[0x00]);
        assert!(matches!(
            decode_frame(&mut b),
            Ok(Some(Frame::Packet(p))) if matches!(*p, Packet::PingResp(_))
        ));
        // A short PUBACK (pkid only) means success.
        let mut b = BytesMut::from(&[0x40, 0x02, 0x00, 0x07][..]);
        assert!(matches!(
            decode_frame(&mut b),
            Ok(Some(Frame::PubAck { pkid: 7, reason: 0 }))
        ));
        // Oversized, malformed length, malformed PUBACK: errors, no panic.
        let mut big = BytesMut::from(&[0x30, 0xff, 0xff, 0x7f][..]);
        assert!(decode_frame(&mut big).is_err());
        let mut endless = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(decode_frame(&mut endless).is_err());
        let mut short = BytesMut::from(&[0x40, 0x01, 0x00][..]);
        assert!(decode_frame(&mut short).is_err());
        let mut junk = BytesMut::from(&[0x00, 0x01, 0x00][..]);
        assert!(decode_frame(&mut junk).is_err());
    }

    #[test]
    fn every_byte_string_decodes_without_panicking() {
        // A small exhaustive-ish sweep over short inputs (the fuzz target's poor cousin).
        for a in 0..=255u8 {
            for len in 0..4u8 {
                let mut b = BytesMut::from(&[a, len, 0x01, 0x02, 0x03][..]);
                let _ = decode_frame(&mut b);
            }
        }
    }
}
