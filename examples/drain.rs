//! Drain benchmark: how fast one forwarder empties a backlog into a real backend.
//!
//! ```text
//! cargo run --release --example drain -- [--samples N] [--backend prometheus|victoriametrics|influxdb|all]
//!                                        [--shards 1,2] [--breakdown]
//! ```
//!
//! For each backend (default `all`) and each shard count (default: 1, and 1 and 2 for
//! VictoriaMetrics):
//!
//! 1. starts the backend on a free 127.0.0.1 port with a temp dir (Prometheus 2.42 with the
//!    remote-write receiver and `out_of_order_time_window: 30d`; VictoriaMetrics 1.79;
//!    InfluxDB 1.6 with its own config file, then `CREATE DATABASE`);
//! 2. builds a backlog of N samples (default 1,000,000) in a fresh [`Spool`] in a temp dir:
//!    the benchmark workload (`benches/workload/mod.rs`: 100k series of 5–8 labels, GPU
//!    inference and node metrics, 10k-sample batches, every (series, timestamp) unique),
//!    timestamps shifted to end an hour before now;
//! 3. spawns one forwarder (streaming, `max_samples` 10,000, `StartAt::Earliest`) and measures
//!    the time from spawn to the first acknowledged sample, the drain rate until the cursor
//!    reaches the end, and the CPU time of this process and of the backend process
//!    (`/proc/.../stat` utime+stime) over the drain, printed as cores used;
//! 4. counts the samples in the backend and prints the count next to N.
//!
//! `--breakdown` also times the forwarder's stages on their own, single-threaded, over the
//! same backlog: reading (decrypt, decompress, decode), encoding the request body for the
//! backend, and the rest of a send (HTTP round trip and the backend's work).

#[path = "shared/http.rs"]
mod http;
#[path = "../benches/workload/mod.rs"]
mod workload;

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metricspool::backends::influx::{Influx, InfluxConfig};
use metricspool::backends::prometheus::{RemoteWrite, RemoteWriteConfig};
use metricspool::backends::victoriametrics::{VictoriaMetrics, VictoriaMetricsConfig};
use metricspool::backends::{Backend, BoxFuture, Outcome, SendRequest};
use metricspool::forward::{BatchMode, Forwarder, ForwarderConfig};
use metricspool::{
    Batch, Durability, MasterKey, ReadLimits, Spool, SpoolConfig, StartAt, Tenant, TenantId,
};
use workload::{DEFAULT_SEED, Workload};

const TENANT: &str = "drain";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prometheus,
    VictoriaMetrics,
    Influx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Prometheus => "prometheus",
            Self::VictoriaMetrics => "victoriametrics",
            Self::Influx => "influxdb",
        }
    }
}

struct Args {
    samples: u64,
    backends: Vec<Kind>,
    shards: Option<Vec<usize>>,
    breakdown: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        samples: 1_000_000,
        backends: vec![Kind::Prometheus, Kind::VictoriaMetrics, Kind::Influx],
        shards: None,
        breakdown: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--samples" => {
                let v = it.next().expect("--samples needs a number");
                a.samples = v.replace('_', "").parse().expect("--samples: a number");
                assert!(a.samples > 0, "--samples must be positive");
            }
            "--backend" => {
                a.backends = match it.next().expect("--backend needs a name").as_str() {
                    "prometheus" | "prom" => vec![Kind::Prometheus],
                    "victoriametrics" | "vm" => vec![Kind::VictoriaMetrics],
                    "influxdb" | "influx" => vec![Kind::Influx],
                    "all" => vec![Kind::Prometheus, Kind::VictoriaMetrics, Kind::Influx],
                    b => {
                        panic!("unknown backend {b}: prometheus, victoriametrics, influxdb or all")
                    }
                };
            }
            "--shards" => {
                let v = it.next().expect("--shards needs a list such as 1,2");
                a.shards = Some(
                    v.split(',')
                        .map(|s| s.parse().expect("--shards: numbers"))
                        .collect(),
                );
            }
            "--breakdown" => a.breakdown = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: drain [--samples N] [--backend prometheus|victoriametrics|influxdb|all] [--shards 1,2] [--breakdown]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

// ---------------------------------------------------------------------------------------
// CPU time from /proc.

fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is f[0], so utime (14) is f[11] and stime (15) f[12].
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / clk_tck()
}

// ---------------------------------------------------------------------------------------
// Backend servers.

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct Server {
    kind: Kind,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(kind: Kind) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("metricspool-drain-backend-")
            .tempdir()
            .expect("a temp dir");
        let d = dir.path();
        let port = free_port();
        let (program, args, ready): (&str, Vec<String>, &str) = match kind {
            Kind::Prometheus => {
                let cfg = d.join("prometheus.yml");
                std::fs::write(
                    &cfg,
                    "global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 30d\nscrape_configs: []\n",
                )
                .expect("write prometheus.yml");
                (
                    "prometheus",
                    vec![
                        format!("--config.file={}", cfg.display()),
                        format!("--storage.tsdb.path={}", d.join("prom").display()),
                        format!("--web.listen-address=127.0.0.1:{port}"),
                        "--web.enable-remote-write-receiver".into(),
                        "--storage.tsdb.retention.time=90d".into(),
                        "--log.level=warn".into(),
                    ],
                    "/-/ready",
                )
            }
            Kind::VictoriaMetrics => (
                "victoria-metrics",
                vec![
                    format!("-httpListenAddr=127.0.0.1:{port}"),
                    format!("-storageDataPath={}", d.join("vm").display()),
                    "-retentionPeriod=100y".into(),
                    "-search.latencyOffset=0s".into(),
                    "-search.disableCache".into(),
                    "-loggerLevel=WARN".into(),
                ],
                "/health",
            ),
            Kind::Influx => {
                let cfg = d.join("influxdb.conf");
                let data = d.join("influx");
                std::fs::write(
                    &cfg,
                    format!(
                        "reporting-disabled = true\n\
                         bind-address = \"127.0.0.1:{rpc}\"\n\
                         [meta]\n  dir = \"{data}/meta\"\n\
                         [data]\n  dir = \"{data}/data\"\n  wal-dir = \"{data}/wal\"\n  query-log-enabled = false\n  max-series-per-database = 0\n  max-values-per-tag = 0\n\
                         [monitor]\n  store-enabled = false\n\
                         [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  max-row-limit = 0\n\
                         [logging]\n  level = \"warn\"\n",
                        rpc = free_port(),
                        data = data.display(),
                    ),
                )
                .expect("write influxdb.conf");
                (
                    "influxd",
                    vec!["run".into(), "-config".into(), cfg.display().to_string()],
                    "/ping",
                )
            }
        };
        let log = File::create(d.join("server.log")).expect("create the server log");
        let child = Command::new(program)
            .args(&args)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{program} does not start (is it installed?): {e}"));
        let mut s = Server {
            kind,
            port,
            child,
            dir,
        };
        let t0 = Instant::now();
        loop {
            if let Ok((st, _)) = http_get(port, ready)
                && (200..300).contains(&st)
            {
                break;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{program} exited with {status}:\n{}", s.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{program} not ready after 30 s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if kind == Kind::Influx {
            let (st, body) = http_post(
                port,
                &format!("/query?q={}", enc(&format!("CREATE DATABASE {TENANT}"))),
            )
            .expect("InfluxDB answers");
            assert_eq!(st, 200, "CREATE DATABASE: {body}");
        }
        // Let the backend settle (Prometheus loads its WAL, VM starts its background workers).
        std::thread::sleep(Duration::from_millis(300));
        s
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM by pid (no libc: unsafe code is forbidden in this package), SIGKILL after 15 s.
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client for readiness checks and read-back queries.

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http::http_request("GET", port, path, "", Duration::from_secs(300))
}

fn http_post(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http::http_request("POST", port, path, "", Duration::from_secs(300))
}

/// Every number that follows `key` in a JSON text (`"value":[1700000000,"42"]` gives 42 for
/// key `"value":[`, skipping the timestamp; `"values":[["1970-...",42]]` likewise).
fn numbers_after(body: &str, key: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        // Skip the first element (timestamp or time string) up to the comma.
        let Some(comma) = rest.find(',') else { break };
        let v = rest[comma + 1..].trim_start().trim_start_matches('"');
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '+' || c == '-'))
            .unwrap_or(v.len());
        if let Ok(x) = v[..end].parse() {
            out.push(x);
        }
    }
    out
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Samples stored in the backend (and, where cheap, series).
fn backend_count(s: &Server) -> (Option<u64>, String) {
    match s.kind {
        Kind::Prometheus | Kind::VictoriaMetrics => {
            if s.kind == Kind::VictoriaMetrics {
                let _ = http_get(s.port, "/internal/force_flush");
            }
            let q = |expr: &str| {
                let path = format!(
                    "/api/v1/query?query={}&time={}&nocache=1",
                    enc(expr),
                    now_s()
                );
                match http_get(s.port, &path) {
                    Ok((200, body)) => numbers_after(&body, "\"value\":[")
                        .first()
                        .map(|x| *x as u64),
                    Ok((st, body)) => {
                        eprintln!(
                            "  query {expr}: HTTP {st}: {}",
                            &body[..body.len().min(300)]
                        );
                        None
                    }
                    Err(e) => {
                        eprintln!("  query {expr}: {e}");
                        None
                    }
                }
            };
            if s.kind == Kind::VictoriaMetrics {
                let samples = q("sum(count_over_time({__name__=~\".+\"}[2d]))");
                let series = q("count(count_over_time({__name__=~\".+\"}[2d]))");
                return (
                    samples,
                    format!("{} series", series.map_or("?".into(), |n| n.to_string())),
                );
            }
            // Prometheus drops the metric name in count_over_time and then refuses a result
            // with two equal label sets ("vector cannot contain metrics with the same
            // labelset"): count metric by metric.
            let names = match http_get(s.port, "/api/v1/label/__name__/values") {
                Ok((200, body)) => body
                    .split_once("\"data\":[")
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .map(|(list, _)| {
                        list.split(',')
                            .map(|n| n.trim().trim_matches('"').to_owned())
                            .filter(|n| !n.is_empty())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let (mut samples, mut series) = (Some(0u64), Some(0u64));
            for name in &names {
                let sel = format!("{{__name__=\"{name}\"}}[2d]");
                samples = samples
                    .zip(q(&format!("sum(count_over_time({sel}))")))
                    .map(|(a, b)| a + b);
                series = series
                    .zip(q(&format!("count(count_over_time({sel}))")))
                    .map(|(a, b)| a + b);
            }
            (
                samples,
                format!(
                    "{} series, {} names",
                    series.map_or("?".into(), |n| n.to_string()),
                    names.len()
                ),
            )
        }
        Kind::Influx => {
            let path = format!(
                "/query?db={TENANT}&q={}",
                enc("SELECT count(value) FROM /.*/")
            );
            match http_get(s.port, &path) {
                Ok((200, body)) => {
                    let counts = numbers_after(&body, "\"values\":[[");
                    let measurements = counts.len();
                    (
                        Some(counts.iter().sum::<f64>() as u64),
                        format!("{measurements} measurements"),
                    )
                }
                Ok((st, body)) => (None, format!("HTTP {st}: {}", &body[..body.len().min(300)])),
                Err(e) => (None, e.to_string()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The backlog.

/// A fresh spool in `dir` holding `n` workload samples whose timestamps end an hour ago.
fn build_backlog(dir: &Path, n: u64) -> (Spool, Arc<Tenant>, f64) {
    let mut cfg = SpoolConfig::new(dir, MasterKey::generate().expect("a random key"));
    // Only building the backlog is faster with it; the drain reads the same bytes.
    cfg.log.durability = Durability::None;
    let spool = Spool::open(cfg).expect("the spool opens");
    let tenant = spool
        .tenant(&TenantId::new(TENANT).expect("valid tenant"))
        .expect("the tenant opens");
    let rounds = n.div_ceil(workload::SERIES as u64) as i64;
    let span_ms = rounds * workload::SCRAPE_INTERVAL_MS;
    let now_ms = (now_s() * 1000) as i64;
    let shift = (now_ms - 3_600_000 - span_ms) / 1000 * 1000 - workload::START_MS;
    let mut w = Workload::new(DEFAULT_SEED);
    let mut left = n;
    let t0 = Instant::now();
    while left > 0 {
        let b = w.next_batch();
        let take = (b.sample_count() as u64).min(left) as usize;
        let mut shifted = Batch::new();
        for e in b.slice(0, take).into_entries() {
            let samples = e
                .samples
                .into_iter()
                .map(|mut s| {
                    s.timestamp_ms += shift;
                    s
                })
                .collect();
            shifted.push(e.series, e.kind, samples);
        }
        tenant.append_blocking(&shifted).expect("append");
        left -= take as u64;
    }
    tenant.wal().sync_blocking().expect("sync");
    (spool, tenant, t0.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// A wrapper backend that records when the first sample was acknowledged and how long sends
// take (encoding + HTTP round trip + the backend's work).

#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Backend>,
    first_ack: OnceLock<Instant>,
    send_ns: AtomicU64,
    /// (samples, seconds, when done) of every delivered send, in completion order.
    sends: std::sync::Mutex<Vec<(usize, f64, Instant)>>,
}

impl Backend for Timed {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn accepts_out_of_order(&self) -> bool {
        self.inner.accepts_out_of_order()
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let t = Instant::now();
            let samples = req.batch.sample_count();
            let out = self.inner.send(req).await;
            let took = t.elapsed();
            self.send_ns
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            if matches!(out, Outcome::Delivered { .. }) {
                let _ = self.first_ack.set(Instant::now());
                self.sends.lock().unwrap_or_else(|p| p.into_inner()).push((
                    samples,
                    took.as_secs_f64(),
                    Instant::now(),
                ));
            }
            out
        })
    }
}

fn make_backend(s: &Server) -> Arc<dyn Backend> {
    match s.kind {
        Kind::Prometheus => {
            let mut c = RemoteWriteConfig::new(format!("{}/api/v1/write", s.url()));
            c.out_of_order_window = true;
            Arc::new(RemoteWrite::new(c).expect("valid config"))
        }
        Kind::VictoriaMetrics => Arc::new(
            VictoriaMetrics::new(VictoriaMetricsConfig::new(s.url())).expect("valid config"),
        ),
        Kind::Influx => Arc::new(Influx::new(InfluxConfig::v1(s.url())).expect("valid config")),
    }
}

// ---------------------------------------------------------------------------------------
// One drain.

struct Row {
    backend: &'static str,
    shards: usize,
    samples: u64,
    first_ack_ms: f64,
    secs: f64,
    steady: Option<f64>,
    rate: f64,
    ours: f64,
    theirs: f64,
    send_share: f64,
    count: Option<u64>,
    count_note: String,
    problems: String,
    rss: f64,
}

fn drain(rt: &tokio::runtime::Runtime, kind: Kind, n: u64, shards: usize, breakdown: bool) -> Row {
    let server = Server::start(kind);
    let spool_dir = tempfile::Builder::new()
        .prefix("metricspool-drain-spool-")
        .tempdir()
        .expect("a temp dir");
    let (spool, tenant, build_s) = build_backlog(spool_dir.path(), n);
    let end = tenant.wal().end_offset();
    assert_eq!(end, n);
    eprintln!(
        "{} shards={shards}: backlog of {n} samples built in {build_s:.1} s ({:.1} MB on disk); draining...",
        kind.name(),
        tenant.wal().disk_bytes() as f64 / 1e6
    );

    let timed = Arc::new(Timed {
        inner: make_backend(&server),
        first_ack: OnceLock::new(),
        send_ns: AtomicU64::new(0),
        sends: std::sync::Mutex::new(Vec::new()),
    });
    let mut fc = ForwarderConfig::new(format!("{}-s{shards}", kind.name()));
    fc.mode = BatchMode::Streaming;
    fc.max_samples = 10_000;
    fc.shards = shards;
    fc.start = StartAt::Earliest;

    let pid = server.pid();
    let (ours0, theirs0) = (cpu_seconds("self"), cpu_seconds(&pid));
    let t0 = Instant::now();
    let (stats, t_end) = rt.block_on(async {
        let fwd = Forwarder::spawn(Arc::clone(&tenant), timed.clone(), fc).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let s = fwd.stats();
            if s.committed >= end {
                let t_end = Instant::now();
                fwd.shutdown(Duration::from_secs(5)).await;
                return (s, t_end);
            }
            assert!(
                Instant::now() < deadline,
                "the drain did not finish in an hour: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let secs = (t_end - t0).as_secs_f64();
    let (ours1, theirs1) = (cpu_seconds("self"), cpu_seconds(&pid));
    let first_ack_ms = timed
        .first_ack
        .get()
        .map_or(f64::NAN, |t| (*t - t0).as_secs_f64() * 1000.0);
    let send_s = timed.send_ns.load(Ordering::Relaxed) as f64 / 1e9;

    let mut problems = Vec::new();
    let retries: u64 = stats.retries.iter().map(|(_, n)| n).sum();
    if retries > 0 {
        problems.push(format!("{retries} retries ({:?})", stats.last_error));
    }
    if stats.dead_letter_samples > 0 {
        problems.push(format!(
            "{} samples dead-lettered",
            stats.dead_letter_samples
        ));
    }
    if stats.delivered_samples != n {
        problems.push(format!("delivered {} of {n}", stats.delivered_samples));
    }
    eprintln!(
        "  {} requests, {:.1} B/sample on the wire",
        stats.sends,
        stats.bytes_sent as f64 / n as f64
    );
    // Send latency while the backend meets the series for the first time (the first 100k
    // samples, one per series) and afterwards; the drain rate after the first round.
    let mut steady = None;
    {
        let sends = timed.sends.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = 0usize;
        let (mut first, mut later) = (Vec::new(), Vec::new());
        for &(k, secs, done) in sends.iter() {
            if acc < workload::SERIES {
                first.push(secs);
            } else {
                later.push(secs);
            }
            acc += k;
            if acc >= workload::SERIES && steady.is_none() && (n as usize) > acc {
                steady = Some((n - acc as u64) as f64 / (t_end - done).as_secs_f64());
            }
        }
        let ms = |v: &mut Vec<f64>| {
            if v.is_empty() {
                return "-".to_owned();
            }
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            format!(
                "mean {:.0} ms, median {:.0} ms, max {:.0} ms over {}",
                mean * 1e3,
                v[v.len() / 2] * 1e3,
                v[v.len() - 1] * 1e3,
                v.len()
            )
        };
        eprintln!(
            "  send latency (encode + HTTP + backend): new series {}; known series {}",
            ms(&mut first),
            ms(&mut later)
        );
    }
    let (count, count_note) = backend_count(&server);
    if breakdown {
        stage_breakdown(rt, &tenant, &server, n);
    }
    let rss = server.rss_mib();
    drop(server);
    spool.close().expect("close the spool");
    Row {
        backend: kind.name(),
        shards,
        samples: n,
        first_ack_ms,
        secs,
        steady,
        rate: n as f64 / secs,
        ours: (ours1 - ours0) / secs,
        theirs: (theirs1 - theirs0) / secs,
        send_share: send_s / shards as f64 / secs,
        count,
        count_note,
        problems: problems.join("; "),
        rss,
    }
}

/// Times each stage of the forwarder alone, on one thread, over (part of) the backlog: the
/// read (decrypt, decompress, decode), the request encoding, a cursor `begin_batch` +
/// `commit` pair, and whole sends (encode + HTTP + the backend's work). Runs after the count
/// check: its sends store duplicates.
fn stage_breakdown(rt: &tokio::runtime::Runtime, tenant: &Arc<Tenant>, server: &Server, n: u64) {
    let limits = ReadLimits {
        max_samples: 10_000,
        max_bytes: 4 << 20,
    };
    let mut batches = Vec::new();
    let (read_wall, read_cpu) = measure(|| {
        let mut off = 0;
        while off < n && batches.len() < 50 {
            let r = tenant.read_from(off, limits).expect("read");
            off = r.end;
            batches.push(r.batch);
        }
    });
    let samples: usize = batches.iter().map(Batch::sample_count).sum();
    let mut parts = vec![("read", read_wall, read_cpu)];
    match server.kind {
        Kind::Influx => {
            use std::io::Write;
            let mut lps = Vec::new();
            let (w, c) = measure(|| {
                lps = batches
                    .iter()
                    .map(metricspool::backends::influx::line_protocol)
                    .collect();
            });
            parts.push(("line protocol", w, c));
            let (w, c) = measure(|| {
                for lp in &lps {
                    let mut z =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    z.write_all(lp.text.as_bytes()).expect("vec");
                    z.finish().expect("vec");
                }
            });
            parts.push(("gzip (level 6)", w, c));
        }
        _ => {
            use metricspool::backends::prometheus;
            let mut wrs = Vec::new();
            let (w, c) = measure(|| wrs = batches.iter().map(prometheus::write_request).collect());
            parts.push(("WriteRequest structs", w, c));
            let mut raws: Vec<Vec<u8>> = Vec::new();
            let (w, c) = measure(|| raws = wrs.iter().map(prost::Message::encode_to_vec).collect());
            parts.push(("prost encode", w, c));
            let (w, c) = measure(|| drop(std::mem::take(&mut wrs)));
            parts.push(("drop structs", w, c));
            let (w, c) = measure(|| {
                for r in &raws {
                    snap::raw::Encoder::new().compress_vec(r).expect("snappy");
                }
            });
            parts.push(("snappy", w, c));
            let (w, c) = measure(|| {
                for b in &batches {
                    prometheus::encode(b).expect("encodes");
                }
            });
            parts.push(("encode() now", w, c));
        }
    }
    // What `Wal::read_from` spends besides decoding when a read covers whole records: it
    // copies each decoded record with `Batch::slice` and drops the original.
    let (w, c) = measure(|| {
        for b in &batches {
            drop(b.slice(0, b.sample_count()));
        }
    });
    parts.push(("(slice copy + drop)", w, c));
    let (w, c) = measure(|| drop(std::mem::take(&mut batches)));
    parts.push(("drop batch", w, c));
    let batches: Vec<Batch> = {
        let mut v = Vec::new();
        let mut off = 0;
        while off < n && v.len() < 10 {
            let r = tenant.read_from(off, limits).expect("read");
            off = r.end;
            v.push(r.batch);
        }
        v
    };

    let probe = "drain-probe";
    tenant
        .register_consumer(probe, StartAt::Earliest)
        .expect("register");
    let mut at = 0;
    let (cursor_wall, _) = measure(|| {
        for b in &batches {
            at += b.sample_count() as u64;
            tenant.begin_batch(probe, at).expect("begin");
            tenant.commit(probe, at).expect("commit");
        }
    });
    let cursor_ms = cursor_wall * 1000.0 / batches.len() as f64;

    let backend = make_backend(server);
    let id = TenantId::new(TENANT).expect("valid");
    let t = Instant::now();
    let mut cum = 0u64;
    rt.block_on(async {
        for b in &batches {
            let req = SendRequest {
                tenant: &id,
                batch: b,
                offsets: cum..cum + b.sample_count() as u64,
                part: (0, 1),
                resend: false,
            };
            cum += b.sample_count() as u64;
            let out = backend.send(req).await;
            assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
        }
    });
    let send_ms = t.elapsed().as_secs_f64() * 1000.0 / batches.len() as f64;
    eprintln!("  stages alone, one thread, {samples} samples (wall k samples/s; CPU ns/sample):");
    for (name, wall, cpu) in parts {
        eprintln!(
            "    {name:<22} {:>7.0} k/s {:>7.0} ns/sample",
            samples as f64 / wall / 1e3,
            cpu * 1e9 / samples as f64
        );
    }
    eprintln!(
        "    cursor begin+commit {cursor_ms:.1} ms/batch (two durable redb transactions); whole send again (series known) {send_ms:.0} ms/batch"
    );
}

/// Wall and CPU seconds of `f` on this thread (CPU from /proc/thread-self/schedstat, in ns).
fn measure(f: impl FnOnce()) -> (f64, f64) {
    let cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |ns| ns / 1e9)
    };
    let (c0, t0) = (cpu(), Instant::now());
    f();
    (t0.elapsed().as_secs_f64(), cpu() - c0)
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "{cores} cores, load average {} (other processes share the CPU: figures are provisional)",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut rows = Vec::new();
    for &kind in &args.backends {
        let shards = args.shards.clone().unwrap_or_else(|| match kind {
            Kind::VictoriaMetrics => vec![1, 2],
            _ => vec![1],
        });
        for s in shards {
            let row = drain(&rt, kind, args.samples, s, args.breakdown);
            eprintln!(
                "  -> {:.0} samples/s, first ack after {:.0} ms, ours {:.2} cores, backend {:.2} cores, count {} / {}",
                row.rate,
                row.first_ack_ms,
                row.ours,
                row.theirs,
                row.count.map_or("?".into(), |c| c.to_string()),
                row.samples
            );
            rows.push(row);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "| backend | shards | samples | first ack | drain | samples/s | after 1st round | our cores | backend cores | in send | backend peak RSS | count in backend | check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let check = match r.count {
            Some(c) if c == r.samples => "ok".to_owned(),
            Some(c) => format!("MISMATCH ({:+})", c as i64 - r.samples as i64),
            None => "unknown".to_owned(),
        };
        let problems = if r.problems.is_empty() {
            String::new()
        } else {
            format!(" — {}", r.problems)
        };
        println!(
            "| {} | {} | {} | {:.0} ms | {:.2} s | {:.0} | {} | {:.2} | {:.2} | {:.0} % | {:.0} MiB | {} ({}) | {}{} |",
            r.backend,
            r.shards,
            r.samples,
            r.first_ack_ms,
            r.secs,
            r.rate,
            r.steady.map_or("-".into(), |x| format!("{x:.0}")),
            r.ours,
            r.theirs,
            r.send_share * 100.0,
            r.rss,
            r.count.map_or("?".into(), |c| c.to_string()),
            r.count_note,
            check,
            problems
        );
    }
    println!(
        "\n{cores} cores; load average at the end {} — the CPU is shared with other work, figures are provisional.",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "\"after 1st round\": drain rate once every series was sent once (the backend creates 100k series in the first round)."
    );
    println!(
        "\"in send\": share of the drain each shard spent inside Backend::send (encode + HTTP + backend work)."
    );
}
