//! Replay jobs, backfill and erase against real servers started by the test: VictoriaMetrics
//! (with and without dedup) and Prometheus without an out-of-order window. The binary is run
//! for the crash test (SIGKILL) and for `tenant erase`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::Server;
use common::{DataSet, blocking, query};
use metricspool::backends::Backend;
use metricspool::backends::victoriametrics::{VictoriaMetrics, VictoriaMetricsConfig};
use metricspool::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig};
use metricspool::replay::{self, Bound, JobState, ReplayRequest, ReplayRun};
use metricspool::{MasterKey, Spool, SpoolConfig, StartAt, Tenant, TenantId};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// 10 series, one sample a minute for 3 days, ending an hour ago: 43,200 samples, appended
/// an hour of every series per record (so the time index can skip records).
fn three_days(metric: &str, tenant: &str) -> DataSet {
    let mut s = DataSet::new(metric, tenant, 10, 3 * 24 * 60);
    s.step_ms = MINUTE;
    s.start_ms = (common::now_ms() - 73 * HOUR) / MINUTE * MINUTE;
    s
}

fn append(t: &Tenant, set: &DataSet) {
    for b in set.batches(set.series * 60) {
        t.append_blocking(&b).expect("the append is acknowledged");
    }
}

/// [`append`], with a new segment every 6 hours of data.
fn append_rolling(t: &Tenant, set: &DataSet) {
    for (i, b) in set.batches(set.series * 60).iter().enumerate() {
        t.append_blocking(b).expect("append");
        if i % 6 == 5 {
            t.wal().roll_blocking().expect("roll");
        }
    }
}

fn vm_backend(url: &str) -> Arc<dyn Backend> {
    Arc::new(VictoriaMetrics::new(VictoriaMetricsConfig::new(url)).expect("a valid config"))
}

fn fwd_config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.mode = BatchMode::Batch {
        linger: Duration::from_millis(20),
    };
    c.backoff = BackoffConfig {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(5),
    };
    c
}

/// (series, timestamp) pairs, to compare sets whatever the duplicates.
fn points(s: &common::Samples) -> BTreeSet<(String, i64)> {
    s.iter()
        .flat_map(|(k, v)| v.iter().map(move |(t, _)| (k.clone(), *t)))
        .collect()
}

async fn run_job(
    t: &Arc<Tenant>,
    backend: Arc<dyn Backend>,
    job: replay::ReplayJob,
) -> replay::ReplayJob {
    let run = ReplayRun::start(Arc::clone(t), backend, &fwd_config("live"), job)
        .expect("the replay starts");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(Duration::from_secs(120), run.run_to_end(|_| {}, rx))
        .await
        .expect("the replay finishes in time")
        .expect("the replay runs")
        .expect("the replay is done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_a_new_backend_from_earliest_sends_three_days_exactly_once() {
    let vm = blocking(|| {
        let mut v = Server::victoria_metrics(false);
        v.start();
        v
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("tenant");
    let set = three_days("backfill_samples", "t1");
    let t2 = Arc::clone(&t);
    let s2 = set.clone();
    blocking(move || append(&t2, &s2)).await;

    let mut c = fwd_config("vm-new");
    c.start = StartAt::Earliest;
    c.max_samples = 5_000;
    let f = Forwarder::spawn(Arc::clone(&t), vm_backend(&vm.url()), c).expect("spawn");
    let end = t.wal().end_offset();
    let done =
        common::wait_until_async(Duration::from_secs(120), Duration::from_millis(100), || {
            f.stats().committed == end
        })
        .await;
    assert!(done.is_some(), "backfill stuck at {:?}", f.stats());
    f.shutdown(Duration::from_secs(5)).await;

    let (port, sel) = (vm.port, set.selector(None));
    let got = blocking(move || query::victoria_metrics(port, &sel, 4)).await;
    assert_eq!(
        query::total(&got),
        set.len(),
        "every sample once (dedup off)"
    );
    assert!(query::diff(&set.expected(), &got).is_exact());
    blocking(move || spool.close().expect("close")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_range_replay_sends_exactly_the_two_hour_window_and_leaves_the_live_cursor() {
    let vm = blocking(|| {
        let mut v = Server::victoria_metrics(false);
        v.start();
        v
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = small_segments(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("tenant");
    let set = three_days("window_samples", "t1");
    let t2 = Arc::clone(&t);
    let s2 = set.clone();
    blocking(move || append_rolling(&t2, &s2)).await;
    // The backend's live cursor, somewhere in the middle: the replay must not move it.
    t.register_consumer("live", StartAt::Offset(1234))
        .expect("register");

    let (lo, hi) = (set.ts(2000), set.ts(2000) + 2 * HOUR);
    let req = ReplayRequest {
        name: Some("two-hours".into()),
        backend: "live".into(),
        from: Some(Bound::Time(lo)),
        until: Some(Bound::Time(hi)),
    };
    let job = replay::create(&t, &req, None).expect("the job is created");
    assert!(
        job.from > 0 && job.until < t.wal().end_offset(),
        "the time index narrowed the offsets to the segments of the window: {:?}",
        job.range()
    );
    let job = run_job(&t, vm_backend(&vm.url()), job).await;

    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.sent_samples, 120 * 10);
    assert_eq!(
        t.cursors()
            .get("live")
            .expect("get")
            .expect("kept")
            .committed,
        1234
    );
    assert!(
        t.cursors().get("replay.two-hours").expect("get").is_none(),
        "the job's cursor is gone"
    );
    let (port, sel) = (vm.port, set.selector(None));
    let got = blocking(move || query::victoria_metrics(port, &sel, 4)).await;
    assert_eq!(query::total(&got), 1200, "exactly the window, once");
    for (series, samples) in &got {
        let first = samples.iter().map(|s| s.0).min().expect("samples");
        let last = samples.iter().map(|s| s.0).max().expect("samples");
        assert_eq!((first, last), (lo, hi - MINUTE), "{series}");
        assert_eq!(samples.len(), 120, "{series}");
    }
    blocking(move || spool.close().expect("close")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_prometheus_counts_data_older_than_its_window_up_front_and_sends_the_rest() {
    let prom = blocking(|| {
        let mut p = Server::prometheus_without_ooo();
        p.start();
        p
    })
    .await;
    // The daemon's default window for Prometheus without an out-of-order window: 1 h.
    let settings = metricspool::daemon::settings::Settings::embedded();
    let src = format!(
        "[backends.prom]\ntype = \"prometheus\"\nurl = \"{}/api/v1/write\"\n",
        prom.url()
    );
    let parsed: toml::Table = src.parse().expect("toml");
    let table = toml::Spanned::new(
        0..src.len(),
        parsed["backends"]["prom"]
            .as_table()
            .expect("table")
            .clone(),
    );
    let route =
        metricspool::daemon::backends::build("prom", &table, &settings, &src).expect("route");
    assert_eq!(route.replay_max_age, Some(Duration::from_secs(3600)));

    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("tenant");
    let mut old = DataSet::new("window_old", "t1", 10, 100);
    old.step_ms = MINUTE;
    old.start_ms = (common::now_ms() - 72 * HOUR) / MINUTE * MINUTE;
    let mut recent = DataSet::new("window_recent", "t1", 10, 30);
    recent.step_ms = MINUTE;
    recent.start_ms = (common::now_ms() - 40 * MINUTE) / MINUTE * MINUTE;
    let (t2, o2, r2) = (Arc::clone(&t), old.clone(), recent.clone());
    blocking(move || {
        append(&t2, &o2);
        append(&t2, &r2);
    })
    .await;

    let req = ReplayRequest {
        name: Some("prom-all".into()),
        backend: "prom".into(),
        from: None,
        until: None,
    };
    let job = replay::create(&t, &req, route.replay_max_age).expect("created");
    assert_eq!(job.too_old_at_start, 1000, "reported up front");
    assert_eq!(
        job.too_old_range,
        Some((old.ts(0), old.ts(99))),
        "with its time range"
    );
    let t0 = Instant::now();
    let job = run_job(&t, Arc::clone(&route.backend), job).await;
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "not retried forever"
    );
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.sent_samples, 300);
    assert_eq!(
        job.dead_letter_samples, 0,
        "nothing refused: the old data was never sent"
    );

    let (port, sel_r, sel_o) = (prom.port, recent.selector(None), old.selector(None));
    let (got_r, got_o) = blocking(move || {
        (
            query::prometheus(port, &sel_r, "2h"),
            query::prometheus(port, &sel_o, "5d"),
        )
    })
    .await;
    assert!(query::diff(&recent.expected(), &got_r).is_exact());
    assert_eq!(query::total(&got_o), 0);
    blocking(move || spool.close().expect("close")).await;
}

/// A data directory with a master key file and a config naming `backends`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(backends: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let key = dir.path().join("master.key");
        MasterKey::generate()
            .expect("key")
            .write_new_file(&key)
            .expect("write key");
        let config = dir.path().join("metricspool.toml");
        let text = format!(
            "[logging]\nlevel = \"warn\"\n[storage]\ndata_dir = \"{}\"\n[keys]\nmaster_key_file = \"{}\"\n{backends}\n",
            dir.path().join("data").display(),
            key.display()
        );
        std::fs::write(&config, text).expect("write config");
        Self { dir, config }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spool(&self) -> Spool {
        let key = MasterKey::from_file(&self.dir.path().join("master.key")).expect("key");
        Spool::open(SpoolConfig::new(self.data(), key)).expect("open")
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        common::daemon::run_cli(args, Some(&self.config))
    }
}

fn committed_of(status_line: &str) -> u64 {
    let j = common::json::Json::parse(status_line.trim()).expect("a JSON status line");
    j.get("committed").i64().expect("committed") as u64
}

#[test]
fn replay_killed_three_times_resumes_without_gaps_or_duplicates() {
    let mut vm = Server::victoria_metrics(true);
    vm.start();
    let setup = Setup::new(&format!(
        "[backends.vm]\ntype = \"victoriametrics\"\nurl = \"{}\"\nbatch = {{ max_samples = 500, linger = \"10ms\" }}\nrate_limit = {{ samples_per_second = 2000 }}\n",
        vm.url()
    ));
    let set = three_days("kill9_samples", "t1");
    let end = {
        let spool = setup.spool();
        let t = spool
            .tenant(&TenantId::new("t1").expect("valid"))
            .expect("tenant");
        append(&t, &set);
        let end = t.wal().end_offset();
        drop(t);
        spool.close().expect("close");
        end
    };
    let until = end.to_string();
    let args = [
        "replay",
        "--tenant",
        "t1",
        "--to",
        "vm",
        "--from",
        "0",
        "--until",
        until.as_str(),
        "--name",
        "k9",
    ];
    let mut last = 0;
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_metricspool"))
            .args(args)
            .arg("--config")
            .arg(&setup.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run metricspool replay");
        std::thread::sleep(Duration::from_millis(2500));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let (code, out, err) = setup.cli(&["replay", "status", "--tenant", "t1"]);
        assert_eq!(code, 0, "{err}");
        let committed = committed_of(out.lines().next().expect("one job"));
        assert!(
            committed >= last,
            "round {round}: a cursor never moves back"
        );
        assert!(
            committed < end,
            "round {round}: killed before the end ({committed})"
        );
        last = committed;
    }
    assert!(last > 0, "progress was made between kills");
    let (code, out, err) = setup.cli(&args);
    assert_eq!(code, 0, "the resumed replay completes: {err}");
    assert!(out.contains("\"state\":\"done\""), "{out}");

    let sel = set.selector(None);
    let got = query::victoria_metrics(vm.port, &sel, 4);
    let want = points(&set.expected());
    assert_eq!(points(&got), want, "no gaps, nothing extra");
    assert_eq!(
        query::count_over_time(vm.port, &sel, "4d"),
        set.len() as u64,
        "no duplicates after dedup"
    );
}

fn contains(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(contains(&p, needle));
        } else if std::fs::read(&p)
            .expect("read")
            .windows(needle.len())
            .any(|w| w == needle)
        {
            hits.push(p);
        }
    }
    hits
}

#[test]
fn tenant_erase_leaves_no_plaintext_and_dump_says_the_key_was_erased() {
    let setup = Setup::new("[backends.export]\ntype = \"file\"\n");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    {
        let spool = setup.spool();
        let t = spool
            .tenant(&TenantId::new("t1").expect("valid"))
            .expect("tenant");
        let set = DataSet::new("secret_metric_name", "t1", 3, 50);
        append(&t, &set);
        // The file backend's export: plaintext under the data directory.
        let backend = Arc::new(
            metricspool::backends::file::FileBackend::new(
                metricspool::backends::file::FileConfig::new(setup.data().join("export")),
            )
            .expect("file backend"),
        );
        let mut c = fwd_config("export");
        c.start = StartAt::Earliest;
        let end = t.wal().end_offset();
        rt.block_on(async {
            let f = Forwarder::spawn(Arc::clone(&t), backend, c).expect("spawn");
            let done = common::wait_until_async(
                Duration::from_secs(30),
                Duration::from_millis(20),
                || f.stats().committed == end,
            )
            .await;
            assert!(done.is_some());
            f.shutdown(Duration::from_secs(5)).await;
        });
        drop(t);
        spool.close().expect("close");
    }
    let needles: [&[u8]; 2] = [b"secret_metric_name", b"\"s\":\"2\""];
    assert!(
        !contains(&setup.data(), needles[0]).is_empty(),
        "the export holds plaintext before"
    );
    let (code, out, _) = setup.cli(&["dump", "--tenant", "t1"]);
    assert_eq!(code, 0);
    assert!(out.contains("secret_metric_name"));

    let (code, out, err) = setup.cli(&["tenant", "erase", "t1"]);
    assert_eq!(code, 0, "{out}{err}");
    for n in needles {
        assert_eq!(
            contains(&setup.data(), n),
            Vec::<PathBuf>::new(),
            "{}",
            String::from_utf8_lossy(n)
        );
    }
    let (code, _, err) = setup.cli(&["dump", "--tenant", "t1"]);
    assert_ne!(code, 0);
    assert!(err.contains("key of tenant t1 was erased"), "{err}");
}

#[test]
fn daemon_runs_a_submitted_replay_and_resumes_it_after_sigkill() {
    use common::daemon::{DaemonProc, TOKEN_A, TOKEN_ADMIN};
    let mut vm = Server::victoria_metrics(true);
    vm.start();
    let mut d = DaemonProc::new(&format!(
        "{}\n[backends.vm]\ntype = \"victoriametrics\"\nurl = \"{}\"\nbatch = {{ max_samples = 200, linger = \"10ms\" }}\nrate_limit = {{ samples_per_second = 2000 }}\n",
        DaemonProc::tenant("a", TOKEN_A, "[tenants.a.log]\nretention_keep_for = \"7d\""),
        vm.url()
    ));
    let mut set = DataSet::new("daemon_replay", "a", 10, 600);
    set.step_ms = MINUTE;
    set.start_ms = (common::now_ms() - 20 * HOUR) / MINUTE * MINUTE;
    let end = {
        let key = MasterKey::from_file(&d.dir.path().join("master.key")).expect("key");
        let spool = Spool::open(SpoolConfig::new(d.data(), key)).expect("open");
        let t = spool
            .tenant(&TenantId::new("a").expect("valid"))
            .expect("tenant");
        append(&t, &set);
        let end = t.wal().end_offset();
        drop(t);
        spool.close().expect("close");
        end
    };
    d.start();
    let url = format!("http://127.0.0.1:{}", d.port);
    let until = end.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_metricspool"))
        .args([
            "replay", "--url", &url, "--tenant", "a", "--to", "vm", "--from", "0",
        ])
        .args(["--until", &until, "--name", "d1"])
        .env("METRICSPOOL_ADMIN_TOKEN", TOKEN_ADMIN)
        .output()
        .expect("run metricspool replay --url");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(800));
    let auth = format!("Bearer {TOKEN_ADMIN}");
    let before = d.req(
        "GET",
        "/admin/tenants/a/replay",
        &[("authorization", &auth)],
        b"",
    );
    d.kill();
    assert!(
        before.body.contains("\"state\":\"running\""),
        "killed mid-job: {}",
        before.body
    );
    d.start();
    let done = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let r = d.req(
            "GET",
            "/admin/tenants/a/replay",
            &[("authorization", &auth)],
            b"",
        );
        r.status == 200 && r.body.contains("\"state\":\"done\"")
    });
    assert!(done.is_some(), "the resumed job finishes: {}", d.log());
    let r = d.req(
        "GET",
        "/admin/tenants/a/replay",
        &[("authorization", &auth)],
        b"",
    );
    let sel = set.selector(None);
    let got = points(&query::victoria_metrics(vm.port, &sel, 2));
    assert!(
        got == points(&set.expected()),
        "{} of {} points: {}",
        got.len(),
        set.len(),
        r.body
    );
    assert_eq!(
        query::count_over_time(vm.port, &sel, "2d"),
        set.len() as u64
    );
}

/// A spool whose segments roll every 64 KiB, so the time index has several entries.
fn small_segments(dir: &Path) -> Spool {
    let mut c = SpoolConfig::new(dir, MasterKey::from_bytes([7; 32]));
    c.log.durability = metricspool::Durability::None;
    c.log.segment_max_bytes = 64 << 10;
    Spool::open(c).expect("the spool opens")
}

#[test]
fn start_at_a_time_uses_the_time_index_and_misses_nothing_after_it() {
    let settings = metricspool::daemon::settings::Settings::embedded();
    let src = "[backends.f]\ntype = \"file\"\nstart = \"2026-11-01T00:00:00Z\"\nmax_age = \"2h\"\n";
    let parsed: toml::Table = src.parse().expect("toml");
    let table = toml::Spanned::new(
        0..src.len(),
        parsed["backends"]["f"].as_table().expect("table").clone(),
    );
    let route = metricspool::daemon::backends::build("f", &table, &settings, src).expect("route");
    assert_eq!(route.config.start, StartAt::Time(1_793_491_200_000));
    assert_eq!(
        route.config.max_age,
        Some(Duration::from_secs(7200)),
        "explicit: live too"
    );

    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = small_segments(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("tenant");
    let set = three_days("start_at", "t1");
    append_rolling(&t, &set);
    assert!(t.wal().segments().len() > 3, "several segments");
    let at = set.ts(3000);
    let start = t
        .register_consumer("from-time", StartAt::Time(at))
        .expect("register")
        .committed;
    assert!(start > 0, "older segments are skipped");
    let read = t
        .wal()
        .read_time_range(
            i64::MIN,
            at,
            0,
            metricspool::ReadLimits {
                max_samples: 1 << 20,
                max_bytes: u64::MAX,
            },
        )
        .expect("read");
    let before_start = read.offsets().filter(|&o| o < start).count();
    let newer_before_start = t
        .read_from(
            0,
            metricspool::ReadLimits {
                max_samples: start as usize,
                max_bytes: u64::MAX,
            },
        )
        .expect("read")
        .batch
        .iter()
        .filter(|(_, _, s)| s.timestamp_ms >= at)
        .count();
    assert_eq!(
        newer_before_start, 0,
        "no sample at or after the time lies before the start"
    );
    assert_eq!(
        before_start as u64, start,
        "everything before the start is older"
    );
    spool.close().expect("close");
}

#[test]
fn keys_retire_refuses_a_key_that_retained_segments_still_use() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = small_segments(dir.path());
    let id = TenantId::new("t1").expect("valid");
    let t = spool.tenant(&id).expect("tenant");
    append(&t, &DataSet::new("retire", "t1", 2, 10));
    let new = spool.rotate_key(&id).expect("rotate");
    assert_eq!(new, 2);
    t.append_blocking(&DataSet::new("retire2", "t1", 2, 10).batches(100)[0])
        .expect("append");
    let e = spool.retire_key(&id, 1).expect_err("segments use key 1");
    assert!(
        e.to_string().contains("retained segments still use it"),
        "{e}"
    );
    let e = spool.retire_key(&id, 2).expect_err("current key");
    assert!(e.to_string().contains("current key"), "{e}");
    // Once retention has deleted every segment sealed with key 1, it can go.
    t.register_consumer("done", StartAt::Now).expect("register");
    for s in t.wal().segments().iter().filter(|s| s.key_id == 1) {
        t.wal().delete_segment(s.base_offset).expect("delete");
    }
    spool.retire_key(&id, 1).expect("no longer used");
    assert_eq!(
        spool
            .keyring()
            .load(&id, false)
            .expect("load")
            .expect("keys")
            .ids(),
        vec![2]
    );
    spool.close().expect("close");
}
