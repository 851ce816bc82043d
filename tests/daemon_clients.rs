//! Real clients push into the daemon and the data arrives in VictoriaMetrics with exact
//! counts: Prometheus 2.42 itself (scraping the daemon's own `/metrics` and remote-writing to
//! it), vmagent pushing remote write, and InfluxDB line protocol over HTTP.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::daemon::{DaemonProc, TOKEN_A};
use common::servers::{Server, free_port};
use common::{http, query, wait_until};

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
            matches!(self.0.try_wait(), Ok(Some(_)))
        });
    }
}

/// A daemon with tenant `a` forwarding to VictoriaMetrics.
fn daemon_to(vm: &Server) -> DaemonProc {
    let tenant = DaemonProc::tenant("a", TOKEN_A, "");
    let backend = format!(
        "[backends.vm]\ntype = \"victoriametrics\"\nurl = \"{}\"\nbatch = {{ linger = \"100ms\" }}\n",
        vm.url()
    );
    let mut d = DaemonProc::new(&format!("{tenant}\n{backend}"));
    d.start();
    d
}

/// Waits until tenant `a`'s forwarder to `vm` has nothing left to send.
fn drained(d: &DaemonProc) {
    let ok = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let s = d.status();
        let t = s.get("tenants").at(0);
        let end = t.get("end_offset").i64();
        let b = t.get("backends").at(0);
        end.is_some() && b.get("committed").i64() == end
    });
    assert!(ok.is_some(), "the forwarder did not drain: {}", d.log());
}

/// Total samples in VictoriaMetrics matching `selector` (export, after a flush).
fn vm_count(vm: &Server, selector: &str) -> usize {
    query::victoria_metrics(vm.port, selector, 2)
        .values()
        .map(Vec::len)
        .sum()
}

/// Samples of tenant `a` in the daemon's log (stopped daemon), split into real values
/// and Prometheus staleness markers (NaN).
fn logged(d: &DaemonProc) -> (usize, usize) {
    let (code, out, err) = d.cli(&["dump", "--tenant", "a"]);
    assert_eq!(code, 0, "{err}");
    let nan = out
        .lines()
        .filter(|l| l.contains("\"value\":\"NaN\""))
        .count();
    (out.lines().count() - nan, nan)
}

#[test]
fn prometheus_scrapes_the_daemon_and_remote_writes_into_it() {
    let mut vm = Server::victoria_metrics(false);
    vm.start();
    let mut d = daemon_to(&vm);
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: metricspool\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    authorization:\n      credentials: {TOKEN_A}\n    queue_config:\n      batch_send_deadline: 1s\n",
            port = d.port
        ),
    )
    .expect("prometheus.yml");
    let prom_port = free_port();
    let mut prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    // Several scrapes of the daemon's own metrics arrive through remote write.
    let scraped = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        http::get(d.port, "/metrics").is_ok_and(|r| {
            r.body.lines().any(|l| {
                l.starts_with(
                    "metricspool_ingest_samples_total{tenant=\"a\",format=\"remote_write\"}",
                ) && l
                    .split(' ')
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 500.0)
            })
        })
    });
    assert!(
        scraped.is_some(),
        "no remote write from Prometheus: {}",
        d.log()
    );
    prom.terminate();
    drained(&d);
    let sent = vm_count(&vm, "{__name__=~\".+\"}");
    assert!(d.terminate(Duration::from_secs(20)).success());
    let (values, stale) = logged(&d);
    // The scrape of the daemon's own metrics came back through it.
    assert!(
        query::victoria_metrics(vm.port, "metricspool_ingest_requests_total", 2)
            .keys()
            .any(|k| k.contains("remote_write"))
    );
    // Every sample Prometheus sent arrived once; VictoriaMetrics drops staleness markers.
    assert!(
        sent == values || sent == values + stale,
        "VictoriaMetrics holds {sent}, the log {values} values + {stale} staleness markers"
    );
}

#[test]
fn vmagent_pushes_remote_write_into_the_daemon() {
    let mut vm = Server::victoria_metrics(false);
    vm.start();
    let d = daemon_to(&vm);
    let dir = tempfile::tempdir().expect("dir");
    let agent_port = free_port();
    let _agent = Proc(
        Command::new("vmagent")
            .arg(format!("-httpListenAddr=127.0.0.1:{agent_port}"))
            .arg(format!(
                "-remoteWrite.url=http://127.0.0.1:{}/api/v1/write",
                d.port
            ))
            .arg(format!("-remoteWrite.bearerToken={TOKEN_A}"))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("q").display()
            ))
            .arg("-loggerLevel=WARN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vmagent"),
    );
    let ready = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        http::get(agent_port, "/health").is_ok_and(|r| r.status == 200)
    });
    assert!(ready.is_some());
    // 50 series × 100 timestamps, pushed in Prometheus text with explicit timestamps.
    let now = common::now_ms() - 3_600_000;
    for chunk in 0..10 {
        let body: String = (0..50)
            .flat_map(|s| (0..10).map(move |i| (s, chunk * 10 + i)))
            .map(|(s, i)| format!("vmagent_pushed{{series=\"s{s}\"}} {i} {}\n", now + i * 1000))
            .collect();
        let r =
            http::post(agent_port, "/api/v1/import/prometheus", body.as_bytes()).expect("vmagent");
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let all = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        vm_count(&vm, "vmagent_pushed") >= 5000
    });
    assert!(
        all.is_some(),
        "{} of 5000 arrived: {}",
        vm_count(&vm, "vmagent_pushed"),
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(vm_count(&vm, "vmagent_pushed"), 5000, "duplicates arrived");
}

#[test]
fn line_protocol_over_http_arrives_exactly() {
    let mut vm = Server::victoria_metrics(false);
    vm.start();
    let mut d = daemon_to(&vm);
    let now = common::now_ms() - 600_000;
    for batch in 0..6 {
        let body: String = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                format!(
                    "lp_cpu,host=h{},dc=eu usage={}.5,idle={n}i {}\n",
                    n % 7,
                    n,
                    now + n
                )
            })
            .collect();
        let r = d.post("/write?precision=ms", TOKEN_A, body.as_bytes());
        assert_eq!(r.status, 204, "{}", r.body);
    }
    drained(&d);
    assert_eq!(vm_count(&vm, "lp_cpu_usage"), 3000);
    assert_eq!(vm_count(&vm, "lp_cpu_idle"), 3000);
    assert!(d.terminate(Duration::from_secs(20)).success());
}
