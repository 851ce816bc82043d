//! The processes under test: metricspool or vmagent (the agent), VictoriaMetrics (the
//! backend), and what `/proc` says about them.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The bearer token of the benchmark tenant.
pub const TOKEN: &str = "vs-vmagent-bench-token";
/// The admin token.
pub const ADMIN: &str = "vs-vmagent-admin-token";

/// Which agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Metricspool,
    Vmagent,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metricspool => "metricspool",
            Kind::Vmagent => "vmagent",
        }
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// An agent process with its own temp dir; the backend it forwards to is `vm_port` (which
/// may have nothing listening: the outage).
pub struct Agent {
    pub kind: Kind,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    vm_port: u16,
    child: Option<Child>,
    spawned: Instant,
}

impl Agent {
    /// Prepares (config, key) and starts the agent; returns once `/health(z)` answers 200.
    pub fn start(kind: Kind, bin: &Path, vm_port: u16) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vs-vmagent-{}-", kind.name()))
            .tempdir()
            .expect("a temp dir");
        let mut a = Agent {
            kind,
            port: free_port(),
            dir,
            bin: bin.to_owned(),
            vm_port,
            child: None,
            spawned: Instant::now(),
        };
        if kind == Kind::Metricspool {
            a.write_config();
        }
        a.spawn();
        a.wait_for(a.health_path(), Duration::from_secs(120))
            .unwrap_or_else(|| panic!("{} not healthy:\n{}", kind.name(), a.log()));
        a
    }

    fn write_config(&self) {
        let key = self.dir.path().join("master.key");
        metricspool::MasterKey::generate()
            .expect("a random key")
            .write_new_file(&key)
            .expect("write the key file");
        let hash = metricspool::daemon::settings::token_hash;
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[logging]\nlevel = \"warn\"\n\n\
             [storage]\ndata_dir = \"{data}\"\n\n[storage.log]\ndurability = \"fsync\"\n\n\
             [keys]\nmaster_key_file = \"{key}\"\n\n[admin]\ntoken_sha256 = \"{admin}\"\n\n\
             [tenants.bench]\ntoken_sha256 = [\"{token}\"]\n\n\
             [backends.vm]\ntype = \"victoriametrics\"\nurl = \"http://127.0.0.1:{vm}\"\n\
             start = \"earliest\"\nbatch = {{ max_samples = 10000 }}\n",
            port = self.port,
            data = self.data_dir().display(),
            key = key.display(),
            admin = hash(ADMIN),
            token = hash(TOKEN),
            vm = self.vm_port,
        );
        std::fs::write(self.dir.path().join("metricspool.toml"), text).expect("write config");
    }

    /// The directory holding the agent's buffer.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn health_path(&self) -> &'static str {
        match self.kind {
            Kind::Metricspool => "/healthz",
            Kind::Vmagent => "/health",
        }
    }

    /// `/readyz` for metricspool; vmagent has no separate readiness endpoint.
    pub fn ready_path(&self) -> Option<&'static str> {
        (self.kind == Kind::Metricspool).then_some("/readyz")
    }

    pub fn ingest_path(&self) -> &'static str {
        "/api/v1/write"
    }

    pub fn auth(&self) -> Option<String> {
        (self.kind == Kind::Metricspool).then(|| format!("Bearer {TOKEN}"))
    }

    /// Spawns the process (again, after a stop or kill) over the same data dir.
    pub fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("open the agent log");
        let mut cmd = match self.kind {
            Kind::Metricspool => {
                let mut c = Command::new(&self.bin);
                c.args(["serve", "--config"])
                    .arg(self.dir.path().join("metricspool.toml"));
                c
            }
            Kind::Vmagent => {
                let mut c = Command::new("vmagent");
                c.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
                    .arg(format!(
                        "-remoteWrite.url=http://127.0.0.1:{}/api/v1/write",
                        self.vm_port
                    ))
                    .arg(format!(
                        "-remoteWrite.tmpDataPath={}",
                        self.data_dir().display()
                    ))
                    .arg("-loggerLevel=WARN");
                c
            }
        };
        self.spawned = Instant::now();
        let child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.kind.name()));
        self.child = Some(child);
    }

    /// Polls `path` every 5 ms until 200; the time since the last spawn, or `None` on
    /// timeout or exit.
    pub fn wait_for(&mut self, path: &str, timeout: Duration) -> Option<Duration> {
        while self.spawned.elapsed() < timeout {
            if let Ok((200, _)) = http_get(self.port, path) {
                return Some(self.spawned.elapsed());
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGTERM and wait; the time the exit took.
    pub fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            while t0.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = c.try_wait() {
                    return t0.elapsed();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        t0.elapsed()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        s[s.len().saturating_sub(3000)..].to_owned()
    }

    /// metricspool's forward lag from the admin API (samples not yet committed).
    pub fn lag(&self) -> Option<u64> {
        if self.kind != Kind::Metricspool {
            return None;
        }
        let body = crate::http::http_request(
            "GET",
            self.port,
            "/admin/status",
            &format!("Authorization: Bearer {ADMIN}\r\n"),
            Duration::from_secs(120),
        )
        .ok()?
        .1;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["tenants"].as_array()?.iter().try_fold(0u64, |acc, t| {
            let b = t["backends"].as_array()?;
            Some(
                acc + b
                    .iter()
                    .filter_map(|c| c["lag_samples"].as_u64())
                    .sum::<u64>(),
            )
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VictoriaMetrics on `port` with a temp dir.
pub struct Vm {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Starts it; the time until `/health` answered.
    pub fn start(port: u16) -> (Vm, Duration) {
        let dir = tempfile::Builder::new()
            .prefix("vs-vmagent-vm-")
            .tempdir()
            .expect("a temp dir");
        let log = File::create(dir.path().join("vm.log")).expect("vm log");
        let t0 = Instant::now();
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .args([
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=WARN",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("victoria-metrics starts (is the package installed?)");
        let vm = Vm {
            port,
            child,
            _dir: dir,
        };
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok((200, _)) = http_get(port, "/health") {
                return (vm, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("VictoriaMetrics not ready after 30 s");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rows received over remote write so far (its own counter; counts duplicates).
    pub fn rows_received(&self) -> u64 {
        let Ok((200, body)) = http_get(self.port, "/metrics") else {
            return 0;
        };
        body.lines()
            .filter(|l| l.starts_with("vm_rows_inserted_total{type=\"promremotewrite\"}"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Samples stored with timestamps in `[from_ms, to_ms)`, after a force flush.
    pub fn count(&self, from_ms: i64, to_ms: i64) -> Option<u64> {
        let window_s = (to_ms - from_ms) as f64 / 1000.0;
        let at = (to_ms - 1) as f64 / 1000.0;
        let q = format!("sum(count_over_time({{__name__=~\".+\"}}[{window_s}s]))");
        let path = format!("/api/v1/query?query={}&time={at:.3}&nocache=1", enc(&q));
        let (st, body) = http_get(self.port, &path).ok()?;
        if st != 200 {
            eprintln!(
                "  VM query {q}: HTTP {st}: {}",
                &body[..body.len().min(300)]
            );
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let r = &v["data"]["result"];
        if r.as_array().is_some_and(|a| a.is_empty()) {
            return Some(0);
        }
        r[0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()
            .map(|x| x as u64)
    }

    /// Samples per series (key: [`series_key`] of its labels, `__name__` included) with
    /// timestamps in `[from_ms, to_ms)`, from `/api/v1/export`.
    pub fn export_counts(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Option<std::collections::HashMap<String, u64>> {
        let path = format!(
            "/api/v1/export?match[]={}&start={:.3}&end={:.3}",
            enc("{__name__=~\".+\"}"),
            from_ms as f64 / 1000.0,
            (to_ms - 1) as f64 / 1000.0
        );
        let (st, body) = http_get(self.port, &path).ok()?;
        if st != 200 {
            return None;
        }
        let mut out = std::collections::HashMap::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let labels: Vec<(String, String)> = v["metric"]
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let n = v["timestamps"].as_array().map_or(0, |a| a.len() as u64);
            *out.entry(series_key(labels)).or_insert(0) += n;
        }
        Some(out)
    }

    pub fn flush(&self) {
        let _ = http_get(self.port, "/internal/force_flush");
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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

/// A canonical key of a label set: sorted `name=value` pairs, NUL-separated.
pub fn series_key(mut labels: Vec<(String, String)>) -> String {
    labels.sort();
    let mut k = String::new();
    for (n, v) in labels {
        k.push_str(&n);
        k.push('=');
        k.push_str(&v);
        k.push('\0');
    }
    k
}

// ---------------------------------------------------------------------------------------
// /proc

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

/// utime + stime of a process (all threads), seconds; `self` for this process.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clk_tck()
}

/// A `/proc/<pid>/status` field in kB (VmHWM, VmRSS), as MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (allocated bytes as `du` counts them, apparent bytes) under `dir`.
pub fn du(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut alloc, mut apparent) = (0, 0);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = du(&e.path());
            alloc += a;
            apparent += b;
        } else {
            alloc += m.blocks() * 512;
            apparent += m.len();
        }
    }
    (alloc, apparent)
}

// ---------------------------------------------------------------------------------------
// A small blocking HTTP client for health checks, status and queries.

pub fn enc(s: &str) -> String {
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

pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    crate::http::http_request("GET", port, path, "", Duration::from_secs(120))
}
