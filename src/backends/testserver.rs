//! Local HTTP/1.1 servers for backend protocol tests: they record the request line, headers
//! and body, and answer canned statuses ([`serve_once`] for one request, [`serve_script`] for
//! a sequence). Enough for reqwest with a `Content-Length` body; not a general server. Also
//! a small harness to drive a real [`Forwarder`] over a spool in a temp dir.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig};
use crate::{
    Batch, Durability, MasterKey, MetricKind, Sample, Series, Spool, SpoolConfig, StartAt, Tenant,
    TenantId,
};

/// Longest request the server reads (headers plus body).
const MAX_REQUEST: usize = 16 << 20;

/// What the server received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// `POST`, `GET`...
    pub method: String,
    /// The request target: path and query, e.g. `/write?db=x`.
    pub target: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body bytes as sent (still compressed).
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }

    /// The query pairs of the target, decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let url =
            reqwest::Url::parse(&format!("http://x{}", self.target)).expect("a request target");
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A server waiting for its one request.
pub(crate) struct Server {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    handle: JoinHandle<Recorded>,
}

impl Server {
    /// Waits for the request to have been read and answered, and returns it.
    pub async fn request(self) -> Recorded {
        self.handle.await.expect("the test server task ran")
    }
}

/// Starts a server on 127.0.0.1 that answers one request with `status`, the extra
/// `headers` and `body`.
pub(crate) async fn serve_once(status: u16, headers: &[(&str, &str)], body: &str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    let mut response = format!(
        "HTTP/1.1 {status} Canned\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    let handle = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("a connection");
        let recorded = read_request(&mut stream).await;
        stream
            .write_all(response.as_bytes())
            .await
            .expect("write the answer");
        stream.shutdown().await.expect("close");
        recorded
    });
    Server { url, handle }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Recorded {
    try_read_request(stream)
        .await
        .expect("the client closed the connection mid-request")
}

/// Reads one request; `None` when the client closes the connection before it is complete.
async fn try_read_request(stream: &mut tokio::net::TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        read_more(stream, &mut buf).await?;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII request head");
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().expect("a request line").split(' ');
    let method = request_line.next().expect("a method").to_owned();
    let target = request_line.next().expect("a target").to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a numeric content-length"));
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        read_more(stream, &mut buf).await?;
    }
    Some(Recorded {
        method,
        target,
        headers,
        body: buf[body_start..body_start + len].to_vec(),
    })
}

async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    assert!(
        buf.len() <= MAX_REQUEST,
        "request larger than the test server reads"
    );
    Some(())
}

// ---------------------------------------------------------------------------------------
// A scripted server: many requests, answered in turn
// ---------------------------------------------------------------------------------------

/// One answer of a [`ScriptServer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Canned {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When set, the answer is held until the semaphore has a permit (the request is recorded
    /// as soon as it is read): a backend that hangs until the test lets it go.
    pub gate: Option<Arc<Semaphore>>,
}

impl Canned {
    /// An answer with `status`, no extra header and an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Holds the answer until `gate` has a permit.
    pub fn gated(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} Canned\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.status,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A request as a [`ScriptServer`] saw it, with its arrival time.
#[derive(Debug, Clone)]
pub(crate) struct Arrived {
    /// When the whole request had been read.
    pub at: Instant,
    /// The request.
    pub request: Recorded,
}

/// A server on 127.0.0.1 that answers the n-th request with the n-th answer of its script
/// (the last one again for every later request), one connection at a time or many at once.
pub(crate) struct ScriptServer {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    log: Arc<Mutex<Vec<Arrived>>>,
    task: JoinHandle<()>,
}

impl ScriptServer {
    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<Arrived> {
        self.log.lock().expect("the log lock").clone()
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`ScriptServer`]; `script` must not be empty.
pub(crate) async fn serve_script(script: Vec<Canned>) -> ScriptServer {
    assert!(!script.is_empty(), "a script needs at least one answer");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    let log: Arc<Mutex<Vec<Arrived>>> = Arc::default();
    let script = Arc::new(script);
    let task = tokio::spawn({
        let log = Arc::clone(&log);
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer_one(stream, Arc::clone(&script), Arc::clone(&log)));
            }
        }
    });
    ScriptServer { url, log, task }
}

async fn answer_one(
    mut stream: tokio::net::TcpStream,
    script: Arc<Vec<Canned>>,
    log: Arc<Mutex<Vec<Arrived>>>,
) {
    let Some(request) = try_read_request(&mut stream).await else {
        return;
    };
    let n = {
        let mut log = log.lock().expect("the log lock");
        log.push(Arrived {
            at: Instant::now(),
            request,
        });
        log.len() - 1
    };
    let canned = &script[n.min(script.len() - 1)];
    if let Some(gate) = &canned.gate {
        let _permit = gate.acquire().await;
    }
    let _ = stream.write_all(&canned.bytes()).await;
    let _ = stream.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Driving a real forwarder over a spool in a temp dir
// ---------------------------------------------------------------------------------------

/// A spool in a temp dir with one tenant; dropped with the test.
pub(crate) struct Harness {
    /// The tenant (`t` unless named otherwise).
    pub tenant: Arc<Tenant>,
    /// The spool, for more tenants.
    pub spool: Spool,
    _dir: tempfile::TempDir,
}

/// A spool in a fresh temp dir, durability `none` (fast; nothing here crashes), and tenant
/// `tenant`.
pub(crate) fn harness(tenant: &str) -> Harness {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = SpoolConfig::new(dir.path(), MasterKey::from_bytes([9; 32]));
    config.log.durability = Durability::None;
    let spool = Spool::open(config).expect("the spool opens");
    let tenant = spool
        .tenant(&TenantId::new(tenant).expect("a valid tenant id"))
        .expect("the tenant opens");
    Harness {
        tenant,
        spool,
        _dir: dir,
    }
}

/// A forwarder config for tests: streaming from the earliest offset, quick retries (5 to
/// 50 ms), `Retry-After` obeyed up to 10 s.
pub(crate) fn forwarder_config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.mode = BatchMode::Streaming;
    c.start = StartAt::Earliest;
    c.backoff = BackoffConfig {
        min: Duration::from_millis(5),
        max: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(10),
    };
    c
}

/// Waits (up to 30 s) until the forwarder committed `end`.
pub(crate) async fn wait_committed(f: &Forwarder, end: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.stats().committed < end {
        assert!(Instant::now() < deadline, "stuck: {:?}", f.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends ten gauges `m{i="0".."9"}`, one sample each at `ts_ms`, and forwards them as
/// [`forward_batch`] does.
pub(crate) async fn forward_ten<B: super::Backend + 'static>(
    script: Vec<Canned>,
    name: &str,
    ts_ms: i64,
    backend: impl FnOnce(&str) -> B,
) -> (ScriptServer, Forwarder, Harness) {
    let mut batch = Batch::new();
    for i in 0..10 {
        let s = Series::new("m", [("i", i.to_string())]).expect("a valid series");
        batch.push_one(s, MetricKind::Gauge, Sample::new(ts_ms, f64::from(i)));
    }
    forward_batch(script, name, &batch, backend).await
}

/// Appends `batch` to a fresh harness tenant `t`; forwards it as `name` through the backend
/// `backend` builds for the URL of a server answering `script`; waits until all of it is
/// committed.
pub(crate) async fn forward_batch<B: super::Backend + 'static>(
    script: Vec<Canned>,
    name: &str,
    batch: &Batch,
    backend: impl FnOnce(&str) -> B,
) -> (ScriptServer, Forwarder, Harness) {
    let server = serve_script(script).await;
    let h = harness("t");
    let end = h.tenant.append(batch).await.expect("append").end;
    let f = Forwarder::spawn(
        Arc::clone(&h.tenant),
        Arc::new(backend(&server.url)),
        forwarder_config(name),
    )
    .expect("spawn");
    wait_committed(&f, end).await;
    (server, f, h)
}

/// The word a status table names `out` by: `delivered`, `retry` (after checking it carries
/// `retry_after`), `too large`, or `permanent` (after checking its reason quotes `body`).
/// Any other outcome fails the test.
pub(crate) fn outcome_word(
    out: &super::Outcome,
    retry_after: Duration,
    body: &str,
) -> &'static str {
    use super::{Outcome, RejectKind};
    match out {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Retry {
            retry_after: got, ..
        } => {
            assert_eq!(*got, Some(retry_after));
            "retry"
        }
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        } => "too large",
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            reason,
            ..
        } => {
            assert!(reason.contains(body), "{reason}");
            "permanent"
        }
        other => panic!("{other:?}"),
    }
}

/// A tenant id the test knows to be valid.
pub(crate) fn tenant(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant")
}

/// The bytes inside a gzip body.
pub(crate) fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// Retries the forwarder counted for `reason`.
pub(crate) fn retries(f: &Forwarder, reason: crate::backends::RetryReason) -> u64 {
    f.stats()
        .retries
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

/// `series` gauges `big{s="<i>", noise="<noise_len random alphanumerics>"}`, one sample
/// each at `ts_ms` with value `i`: a batch that compresses badly, for size-limit tests.
pub(crate) fn incompressible_batch(series: usize, noise_len: usize, ts_ms: i64) -> Batch {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut batch = Batch::new();
    for i in 0..series {
        let noise: String = (0..noise_len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ALPHABET[(rng % ALPHABET.len() as u64) as usize] as char
            })
            .collect();
        let s =
            Series::new("big", [("s", i.to_string()), ("noise", noise)]).expect("a valid series");
        batch.push_one(s, MetricKind::Gauge, Sample::new(ts_ms, i as f64));
    }
    batch
}

/// A [`Secret::File`](crate::secret::Secret::File) holding `value`, in a temp dir that lives
/// as long as the test process (secrets are read when a backend is built, maybe later than
/// the config is made).
pub(crate) fn secret_file(name: &str, value: &str) -> crate::secret::Secret {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir"));
    let path = dir.path().join(name);
    std::fs::write(&path, value).expect("write the secret file");
    crate::secret::Secret::File(path)
}

/// A canned answer of [`serve_seq`].
#[derive(Debug, Clone)]
pub(crate) struct SeqAnswer {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl SeqAnswer {
    /// `status` with `body` and no extra headers.
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 {} SeqAnswer\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.status,
            self.body.len()
        );
        for (name, value) in &self.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&self.body);
        response.into_bytes()
    }
}

/// A server answering a script of requests, one connection each, in order; once the script
/// is used up it repeats its last answer. It runs until dropped.
pub(crate) struct SeqServer {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, Recorded)>>>,
    handle: JoinHandle<()>,
}

impl SeqServer {
    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        let seen = self.seen.lock().expect("the lock is not poisoned");
        seen.iter().map(|(_, r)| r.clone()).collect()
    }

    /// When each request had been read, in order.
    pub fn times(&self) -> Vec<std::time::Instant> {
        let seen = self.seen.lock().expect("the lock is not poisoned");
        seen.iter().map(|(t, _)| *t).collect()
    }
}

impl Drop for SeqServer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Starts a [`SeqServer`] on 127.0.0.1 with the script `answers` (at least one).
pub(crate) async fn serve_seq(answers: Vec<SeqAnswer>) -> SeqServer {
    assert!(!answers.is_empty(), "a script needs at least one answer");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    let handle = tokio::spawn(async move {
        for i in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let recorded = read_request(&mut stream).await;
            log.lock()
                .expect("the lock is not poisoned")
                .push((std::time::Instant::now(), recorded));
            let answer = &answers[i.min(answers.len() - 1)];
            let _ = stream.write_all(&answer.bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    SeqServer { url, seen, handle }
}

/// A spool in a temp dir with one tenant `t1` and a forwarder (from the start of the log,
/// 20 ms linger, 20–200 ms backoff) to `backend`, for tests of how the forwarder treats a
/// backend's outcomes.
pub(crate) struct Forwarding {
    /// The tenant.
    pub tenant: std::sync::Arc<crate::Tenant>,
    /// The forwarder, named `fwd`.
    pub forwarder: crate::forward::Forwarder,
    _spool: crate::Spool,
    _dir: tempfile::TempDir,
}

impl Forwarding {
    /// Starts the forwarder.
    pub fn start(backend: std::sync::Arc<dyn super::Backend>) -> Self {
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut c = crate::SpoolConfig::new(dir.path(), crate::MasterKey::from_bytes([7; 32]));
        c.log.durability = crate::Durability::None;
        let spool = crate::Spool::open(c).expect("the spool opens");
        let tenant = spool
            .tenant(&crate::TenantId::new("t1").expect("valid"))
            .expect("the tenant opens");
        let mut fc = crate::forward::ForwarderConfig::new("fwd");
        fc.start = crate::StartAt::Earliest;
        fc.mode = crate::forward::BatchMode::Batch {
            linger: Duration::from_millis(20),
        };
        fc.backoff = crate::forward::BackoffConfig {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(30),
        };
        let forwarder =
            crate::forward::Forwarder::spawn(std::sync::Arc::clone(&tenant), backend, fc)
                .expect("the forwarder starts");
        Self {
            tenant,
            forwarder,
            _spool: spool,
            _dir: dir,
        }
    }

    /// Appends `batch` and waits (at most 30 s) until the forwarder committed it.
    pub async fn append_and_settle(&self, batch: &crate::Batch) {
        let offsets = self
            .tenant
            .append(batch)
            .await
            .expect("the append is acknowledged");
        let t0 = std::time::Instant::now();
        while self.forwarder.stats().committed < offsets.end {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "the forwarder did not settle the batch: {:?}",
                self.forwarder.stats()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The dead letters of the forwarder.
    pub fn dead_letters(&self) -> Vec<crate::forward::dlq::DeadLetter> {
        self.tenant
            .dead_letters("fwd")
            .expect("the dead-letter log opens")
            .list()
            .expect("the dead letters list")
    }
}
