//! Real backend servers from the Debian packages (and osmem-server, an OpenSearch-compatible
//! server from PyPI), each on 127.0.0.1 with a free port and a temp data dir. Dropping a [`Server`] kills the process and removes the dir. A server can
//! be stopped and started again on the same port over the same data (outage tests).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::{http, process};

/// The database [`Server::influx`] creates at start.
pub const INFLUX_DB: &str = "metricspool";

/// A free TCP port on 127.0.0.1 (bound, then released: another process could take it
/// before the server binds, which on a test machine practically never happens).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Which backend a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prometheus,
    VictoriaMetrics,
    Influx,
    /// osmem-server: in memory, so a restart loses everything (use the fault proxy for
    /// outages).
    OsMem,
}

/// A running (or stopped) backend server.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    program: String,
    args: Vec<String>,
    ready_path: &'static str,
    child: Option<Child>,
    dir: tempfile::TempDir,
    started: u32,
}

impl Server {
    fn new(kind: Kind, program: impl Into<String>, ready_path: &'static str) -> Self {
        Self {
            kind,
            port: free_port(),
            program: program.into(),
            args: Vec::new(),
            ready_path,
            child: None,
            dir: tempfile::Builder::new()
                .prefix("metricspool-backend-")
                .tempdir()
                .expect("a temp dir"),
            started: 0,
        }
    }

    /// Prometheus 2.42 with the remote-write receiver and a 30 d out-of-order window
    /// (a forwarder replays backlogs, and tests write timestamps from the last days).
    pub fn prometheus() -> Self {
        let mut s = Self::new(Kind::Prometheus, "prometheus", "/-/ready");
        let cfg = s.dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            "global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 30d\nscrape_configs: []\n",
        )
        .expect("write prometheus.yml");
        s.args = vec![
            format!("--config.file={}", cfg.display()),
            format!(
                "--storage.tsdb.path={}",
                s.dir.path().join("prom").display()
            ),
            format!("--web.listen-address=127.0.0.1:{}", s.port),
            "--web.enable-remote-write-receiver".into(),
            "--storage.tsdb.retention.time=90d".into(),
            "--log.level=warn".into(),
        ];
        s
    }

    /// Prometheus without an out-of-order window: it refuses samples older than about 1 h
    /// behind its newest.
    pub fn prometheus_without_ooo() -> Self {
        let s = Self::prometheus();
        let cfg = s.dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
        )
        .expect("write prometheus.yml");
        s
    }

    /// VictoriaMetrics 1.79; `dedup` adds `-dedup.minScrapeInterval=1ms`, which keeps one
    /// sample per (series, timestamp).
    pub fn victoria_metrics(dedup: bool) -> Self {
        let mut s = Self::new(Kind::VictoriaMetrics, "victoria-metrics", "/health");
        s.args = vec![
            format!("-httpListenAddr=127.0.0.1:{}", s.port),
            format!("-storageDataPath={}", s.dir.path().join("vm").display()),
            "-retentionPeriod=100y".into(),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=WARN".into(),
        ];
        if dedup {
            s.args.push("-dedup.minScrapeInterval=1ms".into());
        }
        s
    }

    /// InfluxDB 1.6 with its own config (both bind addresses on 127.0.0.1).
    pub fn influx() -> Self {
        let mut s = Self::new(Kind::Influx, "influxd", "/ping");
        let d = s.dir.path().join("influx");
        let cfg = s.dir.path().join("influxdb.conf");
        std::fs::write(
            &cfg,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[monitor]\n  store-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{p}\"\n  log-enabled = false\n  max-row-limit = 0\n[logging]\n  level = \"warn\"\n",
                rpc = free_port(),
                d = d.display(),
                p = s.port
            ),
        )
        .expect("write influxdb.conf");
        s.args = vec!["run".into(), "-config".into(), cfg.display().to_string()];
        s
    }

    /// osmem-server 0.1.6 (PyPI `osmem-server`, OpenSearch API), its binary found through
    /// the Python package.
    pub fn osmem() -> Self {
        let out = Command::new("python3")
            .args([
                "-c",
                "import osmem_server;print(osmem_server.resolve_binary())",
            ])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "osmem-server is not installed (python3 -m pip install --break-system-packages osmem-server): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let program = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut s = Self::new(Kind::OsMem, program, "/");
        s.args = vec![
            "-addr".into(),
            format!("127.0.0.1:{}", s.port),
            "-no-stdin-watch".into(),
            "-no-ja".into(),
        ];
        s
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.started))
    }

    /// Starts the process and waits until it answers its readiness check.
    pub fn start(&mut self) -> &mut Self {
        assert!(self.child.is_none(), "{:?} is already running", self.kind);
        self.started += 1;
        let log = self.log_path();
        let child = self.child.insert(process::spawn_logged(
            &self.program,
            &self.args,
            self.dir.path(),
            &log,
        ));
        let (port, ready_path) = (self.port, self.ready_path);
        process::wait_ready(&self.kind, child, &log, || {
            http::request("GET", port, ready_path, b"", Duration::from_secs(2))
                .is_ok_and(|r| (200..300).contains(&r.status))
        });
        if self.kind == Kind::Influx {
            self.influx_query_post(&format!("CREATE DATABASE {INFLUX_DB}"));
        }
        self
    }

    /// Stops the process with SIGTERM (SIGKILL after 15 s); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            process::terminate(child);
        }
    }

    /// True while the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The end of the current log, for failure messages.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log_path())
    }

    /// `POST /query?q=...` on InfluxDB (for statements that change state).
    pub fn influx_query_post(&self, q: &str) {
        let r = http::post(self.port, &format!("/query?q={}", http::enc(q)), b"")
            .expect("influx answers");
        assert_eq!(r.status, 200, "{q}: {}", r.body);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        process::kill(self.child.take());
    }
}
