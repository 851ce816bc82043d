//! A real crash of the forwarding process: the parent appends half of a fixed data set, then
//! runs a child (this test binary, re-executed) that opens the spool and forwards every
//! tenant to Prometheus, InfluxDB and two VictoriaMetrics servers (one with
//! `-dedup.minScrapeInterval=1ms`, one without), and kills it with SIGKILL at random moments,
//! again and again, appending the rest of the data set slice by slice between children, until
//! every cursor has reached the end of its log. The Prometheus forwarders keep strict offset
//! order; the others use a live lane, so crashes also hit the split into two cursors and the
//! hand-over back to one. Then each backend is read back: Prometheus, InfluxDB and the
//! deduplicating VictoriaMetrics hold every sample exactly once; the VictoriaMetrics without
//! dedup holds every sample, plus the resent batches a second time (printed: that is what
//! "at-least-once without dedup" costs).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::servers::{INFLUX_DB, Server};
use common::{DataSet, query};
use metricspool::backends::Backend;
use metricspool::backends::influx::{Influx, InfluxConfig};
use metricspool::backends::prometheus::{RemoteWrite, RemoteWriteConfig};
use metricspool::backends::victoriametrics::{VictoriaMetrics, VictoriaMetricsConfig};
use metricspool::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig, RateLimit};
use metricspool::{Batch, StartAt, TenantId};

/// Set to the data directory in the child.
const CHILD_ENV: &str = "METRICSPOOL_FWD_CRASH_CHILD";
/// Backend base URLs for the child, in [`BACKENDS`] order, separated by spaces.
const URLS_ENV: &str = "METRICSPOOL_FWD_CRASH_URLS";
/// Overrides the seed of the kill delays, to replay a failing run.
const SEED_ENV: &str = "METRICSPOOL_FWD_CRASH_SEED";
/// Cursor names, one forwarder per tenant and backend.
const BACKENDS: [&str; 4] = ["prometheus", "influx", "vm_dedup", "vm_raw"];
const TENANTS: [&str; 2] = ["crash-1", "crash-2"];
const MIN_KILLS: usize = 12;
const MAX_KILLS: usize = 40;
/// Kill delays are uniform in this range after the child starts.
const KILL_MIN_MS: u64 = 100;
const KILL_MAX_MS: u64 = 900;
const TIME_BUDGET: Duration = Duration::from_secs(90);
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Samples per second per forwarder: spreads the drain over many kills.
const RATE: u32 = 15_000;
/// Backlog above which a forwarder (all but Prometheus) opens a live lane.
const LIVE_LANE: u64 = 15_000;
/// Appends (of 10,000 samples) per tenant made before the first child; the others follow,
/// one per tenant, after each of the first kills.
const INITIAL_APPENDS: usize = 6;

/// 240,000 samples per tenant, appended in 10,000-sample slices: six before the first child,
/// one after each kill, so the children are killed while data is still being forwarded.
fn data_sets() -> Vec<DataSet> {
    TENANTS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut s = DataSet::new("crash_samples", t, 60, 4_000);
            s.seed = i as u64 + 1;
            s
        })
        .collect()
}

fn backend(name: &str, url: &str) -> Arc<dyn Backend> {
    let timeout = Duration::from_secs(10);
    match name {
        "prometheus" => {
            let mut c = RemoteWriteConfig::new(format!("{url}/api/v1/write"));
            c.timeout = timeout;
            c.out_of_order_window = true;
            Arc::new(RemoteWrite::new(c).expect("valid"))
        }
        "influx" => {
            let mut c = InfluxConfig::v1(url);
            c.timeout = timeout;
            for t in TENANTS {
                c.databases
                    .insert(TenantId::new(t).expect("valid"), INFLUX_DB.to_owned());
            }
            Arc::new(Influx::new(c).expect("valid"))
        }
        _ => {
            let mut c = VictoriaMetricsConfig::new(url);
            c.timeout = timeout;
            Arc::new(VictoriaMetrics::new(c).expect("valid"))
        }
    }
}

fn fwd_config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.start = StartAt::Earliest;
    c.max_samples = 2_000;
    c.mode = BatchMode::Batch {
        linger: Duration::from_millis(20),
    };
    c.backoff = BackoffConfig {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(10),
    };
    c.rate_limit = Some(RateLimit::SamplesPerSecond(
        RATE.try_into().expect("not zero"),
    ));
    if name != "prometheus" {
        c.live_lane = Some(LIVE_LANE);
    }
    c
}

/// The child: when `METRICSPOOL_FWD_CRASH_CHILD` is set, forward every tenant to every
/// backend until killed, printing `CAUGHT_UP` once every forwarder has committed the whole
/// log. Without it (an ordinary test run) it returns at once.
#[test]
fn forward_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let urls: Vec<String> = std::env::var(URLS_ENV)
        .expect("the parent sets the URLs")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let spool = common::open_spool(Path::new(&dir));
        let mut running = Vec::new();
        for t in TENANTS {
            let tenant = spool
                .tenant(&TenantId::new(t).expect("valid"))
                .expect("the child opens the tenant");
            for (name, url) in BACKENDS.iter().zip(&urls) {
                let f = Forwarder::spawn(Arc::clone(&tenant), backend(name, url), fwd_config(name))
                    .expect("the forwarder starts");
                running.push((f, Arc::clone(&tenant)));
            }
        }
        println!("STARTED");
        let deadline = Instant::now() + CHILD_LIFETIME;
        let mut report = Instant::now();
        while Instant::now() < deadline {
            // Quiet unless the child seems stuck (its stderr is the test's own).
            let started = deadline - CHILD_LIFETIME;
            if started.elapsed() > Duration::from_secs(20)
                && report.elapsed() > Duration::from_secs(10)
            {
                report = Instant::now();
                // What is still behind, for the log of a child that does not catch up.
                for (f, t) in &running {
                    let st = f.stats();
                    if st.committed == t.wal().end_offset() {
                        continue;
                    }
                    let cursors = t.cursors().list().expect("cursors");
                    eprintln!(
                        "child: {} {}: committed {} of {}, cursors {:?}, last error {:?}",
                        st.tenant.as_str(),
                        st.name,
                        st.committed,
                        t.wal().end_offset(),
                        cursors
                            .iter()
                            .map(|(n, c)| (n.clone(), c.committed, c.in_flight()))
                            .collect::<Vec<_>>(),
                        st.last_error
                    );
                }
            }
            if running
                .iter()
                .all(|(f, t)| f.stats().committed == t.wal().end_offset())
            {
                println!("CAUGHT_UP");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Wait here to be killed, like a daemon would run on.
        tokio::time::sleep_until(deadline.into()).await;
    });
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Starts a child; its stdout lines arrive on the returned channel.
fn spawn_child(dir: &Path, urls: &str) -> (Child, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([
            "forward_crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(URLS_ENV, urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL is sent");
    let status = child.wait().expect("the child is reaped");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died of SIGKILL, not on its own: {status}"
    );
}

/// Between two children: appends `appends` (tenant index, batch), then returns the sum of
/// the (tenant, backend) cursors' committed offsets, the sum of the logs' ends (once per
/// cursor), and how many live-lane cursors exist.
fn between_children(dir: &Path, appends: &[(usize, Batch)]) -> (u64, u64, usize) {
    let spool = common::open_spool(dir);
    let (mut committed, mut end, mut live) = (0, 0, 0);
    for (i, t) in TENANTS.iter().enumerate() {
        let tenant = spool
            .tenant(&TenantId::new(*t).expect("valid"))
            .expect("the tenant opens");
        for (_, b) in appends.iter().filter(|(j, _)| *j == i) {
            tenant
                .append_blocking(b)
                .expect("the append is acknowledged");
        }
        let e = tenant.wal().end_offset();
        let cursors = tenant.cursors().list().expect("cursors read");
        for (name, c) in &cursors {
            assert!(c.committed <= e, "{t} {name}: {c:?} is past the end {e}");
            if BACKENDS.contains(&name.as_str()) {
                committed += c.committed;
                end += e;
            } else {
                assert!(name.contains(".live@"), "{t}: unexpected cursor {name}");
                live += 1;
            }
        }
    }
    spool.close().expect("the spool closes");
    (committed, end, live)
}

#[test]
fn forwarding_killed_at_random_moments_still_delivers_everything_exactly_once() {
    let servers = {
        let mut p = Server::prometheus();
        p.start();
        let mut i = Server::influx();
        i.start();
        let mut vd = Server::victoria_metrics(true);
        vd.start();
        let mut vr = Server::victoria_metrics(false);
        vr.start();
        [p, i, vd, vr]
    };
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let urls = urls.join(" ");
    let dir = tempfile::tempdir().expect("a temp dir");
    let sets = data_sets();
    let batches: Vec<Vec<Batch>> = sets.iter().map(|s| s.batches(10_000)).collect();
    let rounds = batches[0].len();
    // Slice k holds append k of every tenant.
    let mut slices: Vec<Vec<(usize, Batch)>> = (0..rounds)
        .map(|k| {
            batches
                .iter()
                .enumerate()
                .map(|(i, b)| (i, b[k].clone()))
                .collect()
        })
        .collect();
    let later = slices.split_off(INITIAL_APPENDS);
    let mut later = later.into_iter();
    between_children(dir.path(), &slices.concat());
    let total: usize = sets.iter().map(DataSet::len).sum();

    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| common::now_ms() as u64 | 1);
    eprintln!("forward_crash: {SEED_ENV}={seed}");
    let mut rng = seed;
    let t0 = Instant::now();
    let (mut kills, mut kills_mid_drain, mut live_seen) = (0, 0, 0);
    loop {
        let budget_left = t0.elapsed() < TIME_BUDGET;
        let wanted = kills < MIN_KILLS || kills_mid_drain < MIN_KILLS || later.len() > 0;
        let kill_this_one = kills < MAX_KILLS && budget_left && wanted;
        if !kill_this_one {
            // Out of kills or time: whatever is left is appended before the last child.
            let rest: Vec<(usize, Batch)> = later.by_ref().flatten().collect();
            if !rest.is_empty() {
                between_children(dir.path(), &rest);
            }
        }
        let (child, lines) = spawn_child(dir.path(), &urls);
        if kill_this_one {
            let delay = Duration::from_millis(
                KILL_MIN_MS + xorshift(&mut rng) % (KILL_MAX_MS - KILL_MIN_MS),
            );
            std::thread::sleep(delay);
            kill(child);
            kills += 1;
            let next = later.next();
            let (committed, end, live) =
                between_children(dir.path(), next.as_deref().unwrap_or_default());
            live_seen += usize::from(live > 0);
            eprintln!(
                "forward_crash: kill {kills} after {delay:?}: {committed} of {end} committed, \
                 {live} live lanes{}",
                if next.is_some() {
                    ", then appended a slice"
                } else {
                    ""
                }
            );
            if committed < end {
                kills_mid_drain += 1;
            } else if kills >= MIN_KILLS && kills_mid_drain >= MIN_KILLS.min(10) && later.len() == 0
            {
                break;
            }
        } else {
            // The last child runs until every cursor is at the end.
            let done = Instant::now() + Duration::from_secs(60);
            let mut caught_up = false;
            while let Ok(line) = lines.recv_timeout(done.saturating_duration_since(Instant::now()))
            {
                if line == "CAUGHT_UP" {
                    caught_up = true;
                    break;
                }
            }
            kill(child);
            assert!(caught_up, "the last child did not catch up within 60 s");
            break;
        }
    }
    assert_eq!(later.len(), 0, "every slice was appended");
    let (committed, end, live) = between_children(dir.path(), &[]);
    assert_eq!(committed, end, "every cursor is at the end of its log");
    assert_eq!(live, 0, "every live lane was merged back");
    eprintln!(
        "forward_crash: {kills} kills ({kills_mid_drain} mid-drain, {live_seen} with a live lane open), \
         {total} samples x {} backends, drained in {:?}",
        BACKENDS.len(),
        t0.elapsed()
    );
    assert!(kills >= MIN_KILLS, "only {kills} kills");
    assert!(
        kills_mid_drain >= MIN_KILLS.min(10),
        "only {kills_mid_drain} kills happened while data was still being forwarded"
    );

    let [prom, influx, vm_dedup, vm_raw] = &servers;
    let mut duplicates = 0;
    for set in &sets {
        let exp = set.expected();
        let sel = set.selector(None);
        let d = query::diff(&exp, &query::prometheus(prom.port, &sel, "2d"));
        assert!(d.is_exact(), "prometheus {sel}: {d:?}");
        let where_ = format!("\"tenant\"='{}'", set.tenant);
        let d = query::diff(&exp, &query::influx(influx.port, &set.metric, &where_));
        assert!(d.is_exact(), "influxdb {sel}: {d:?}");
        let d = query::diff(&exp, &query::victoria_metrics(vm_dedup.port, &sel, 2));
        assert!(d.is_exact(), "victoriametrics with dedup {sel}: {d:?}");
        assert_eq!(
            query::count_over_time(vm_dedup.port, &sel, "2d"),
            set.len() as u64,
            "victoriametrics with dedup counts each sample once"
        );
        let raw = query::victoria_metrics(vm_raw.port, &sel, 2);
        let d = query::diff(&exp, &raw);
        assert!(
            d.missing == 0 && d.extra == 0 && d.wrong_value == 0,
            "victoriametrics without dedup lost or changed samples {sel}: {d:?}"
        );
        assert!(query::total(&raw) >= set.len());
        eprintln!(
            "forward_crash: {}: VictoriaMetrics without dedup stored {} samples for {} sent ({} duplicates)",
            set.tenant,
            query::total(&raw),
            set.len(),
            d.duplicates
        );
        duplicates += d.duplicates;
    }
    eprintln!(
        "forward_crash: {duplicates} duplicate samples in VictoriaMetrics without dedup after {kills} kills; none elsewhere"
    );
}
