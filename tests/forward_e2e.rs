//! Forwarders against real Prometheus, VictoriaMetrics and InfluxDB servers started by the
//! test on 127.0.0.1: the data is queried back and compared sample by sample (timestamp and
//! value bits, no duplicates). Faults come from stopping a server or from a proxy in front
//! of it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::Server;
use common::{DataSet, blocking, query};
use metricspool::backends::influx::{Influx, InfluxConfig};
use metricspool::backends::prometheus::{RemoteWrite, RemoteWriteConfig};
use metricspool::backends::victoriametrics::{VictoriaMetrics, VictoriaMetricsConfig};
use metricspool::backends::{Backend, RetryReason};
use metricspool::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig};
use metricspool::{StartAt, Tenant, TenantId};

fn prometheus(url: &str, timeout: Duration) -> Arc<dyn Backend> {
    let mut c = RemoteWriteConfig::new(format!("{url}/api/v1/write"));
    c.timeout = timeout;
    c.out_of_order_window = true;
    Arc::new(RemoteWrite::new(c).expect("a valid Prometheus config"))
}

fn victoria_metrics(url: &str, timeout: Duration) -> Arc<dyn Backend> {
    let mut c = VictoriaMetricsConfig::new(url);
    c.timeout = timeout;
    Arc::new(VictoriaMetrics::new(c).expect("a valid VictoriaMetrics config"))
}

/// InfluxDB 1.x, every tenant in the database the harness creates.
fn influx(url: &str, timeout: Duration, tenants: &[&str]) -> Arc<dyn Backend> {
    let mut c = InfluxConfig::v1(url);
    c.timeout = timeout;
    for t in tenants {
        c.databases.insert(
            TenantId::new(*t).expect("valid"),
            common::servers::INFLUX_DB.to_owned(),
        );
    }
    Arc::new(Influx::new(c).expect("a valid InfluxDB config"))
}

/// Forwarder settings for tests: from the start of the log, short linger, quick backoff.
fn fwd_config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.start = StartAt::Earliest;
    c.mode = BatchMode::Batch {
        linger: Duration::from_millis(50),
    };
    c.backoff = BackoffConfig {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(30),
    };
    c
}

fn caught_up(f: &Forwarder, t: &Tenant) -> bool {
    f.stats().committed == t.wal().end_offset()
}

/// Appends a data set in slices of about 10,000 samples.
async fn append(t: &Arc<Tenant>, set: &DataSet) {
    for b in set.batches(10_000) {
        t.append(&b).await.expect("the append is acknowledged");
    }
}

/// Samples per tenant in the end-to-end test. ~1M as the issue asks in release mode; see
/// `E2E_SERIES` and the report for debug builds.
const E2E_SERIES: usize = 200;
const E2E_PER_SERIES: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_reach_prometheus_victoriametrics_and_influxdb_exactly_once() {
    let (prom, vm, idb) = blocking(|| {
        let mut p = Server::prometheus();
        p.start();
        let mut v = Server::victoria_metrics(false);
        v.start();
        let mut i = Server::influx();
        i.start();
        (p, v, i)
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let timeout = Duration::from_secs(30);
    let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("prometheus", prometheus(&prom.url(), timeout)),
        ("vm", victoria_metrics(&vm.url(), timeout)),
        ("influx", influx(&idb.url(), timeout, &["t1", "t2", "t3"])),
    ];
    let sets: Vec<DataSet> = ["t1", "t2", "t3"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut s = DataSet::new("e2e_samples", t, E2E_SERIES, E2E_PER_SERIES);
            s.seed = i as u64 + 1;
            s
        })
        .collect();
    let mut tenants = Vec::new();
    let mut forwarders = Vec::new();
    for set in &sets {
        let t = spool
            .tenant(&TenantId::new(set.tenant.as_str()).expect("valid"))
            .expect("the tenant opens");
        for (name, b) in &backends {
            let f = Forwarder::spawn(Arc::clone(&t), Arc::clone(b), fwd_config(name))
                .expect("the forwarder starts");
            forwarders.push((set.tenant.clone(), *name, f, Arc::clone(&t)));
        }
        tenants.push(t);
    }
    let t0 = Instant::now();
    let mut appends = tokio::task::JoinSet::new();
    for (t, set) in tenants.iter().zip(&sets) {
        let (t, set) = (Arc::clone(t), set.clone());
        appends.spawn(async move { append(&t, &set).await });
    }
    appends.join_all().await;
    let appended = t0.elapsed();
    let drained =
        common::wait_until_async(Duration::from_secs(180), Duration::from_millis(50), || {
            forwarders.iter().all(|(_, _, f, t)| caught_up(f, t))
        })
        .await;
    let total: usize = sets.iter().map(DataSet::len).sum();
    eprintln!(
        "e2e: {total} samples appended in {appended:?}, all forwarders caught up after {:?}",
        t0.elapsed()
    );
    for (tenant, name, f, _) in &forwarders {
        let s = f.stats();
        eprintln!(
            "e2e: {tenant} -> {name}: {} sends, {} delivered, retries {:?}",
            s.sends, s.delivered_samples, s.retries
        );
    }
    assert!(drained.is_some(), "the forwarders did not catch up in time");
    let (pp, vp, ip) = (prom.port, vm.port, idb.port);
    let sets2 = sets.clone();
    blocking(move || {
        for set in &sets2 {
            for g in 0..common::GROUPS {
                let exp = set.expected_groups(g..g + 1);
                let sel = set.selector(Some(g));
                let got = query::prometheus(pp, &sel, "2d");
                let d = query::diff(&exp, &got);
                assert!(d.is_exact(), "prometheus {sel}: {d:?}");
                let got = query::victoria_metrics(vp, &sel, 2);
                let d = query::diff(&exp, &got);
                assert!(d.is_exact(), "victoriametrics {sel}: {d:?}");
                let got = query::influx(
                    ip,
                    &set.metric,
                    &format!("\"tenant\"='{}' AND \"g\"='{g}'", set.tenant),
                );
                let d = query::diff(&exp, &got);
                assert!(d.is_exact(), "influxdb {sel}: {d:?}");
            }
        }
    })
    .await;
    eprintln!("e2e: verified after {:?}", t0.elapsed());
    drop((prom, vm, idb));
}

fn retries(f: &Forwarder, reason: RetryReason) -> u64 {
    f.stats()
        .retries
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

/// Appends `batches` in order.
async fn append_all(t: &Arc<Tenant>, batches: &[metricspool::Batch]) {
    for b in batches {
        t.append(b).await.expect("the append is acknowledged");
    }
}

/// Waits (bounded) until `f` has committed everything `t` holds.
async fn drain(f: &Forwarder, t: &Tenant, within: Duration, what: &str) -> Duration {
    common::wait_until_async(within, Duration::from_millis(20), || caught_up(f, t))
        .await
        .unwrap_or_else(|| panic!("{what}: not caught up after {within:?}: {:?}", f.stats()))
}

/// Checks a data set in VictoriaMetrics (export, so duplicates count) and Prometheus.
async fn verify(set: &DataSet, prom: Option<u16>, vm: Option<u16>) {
    let set = set.clone();
    blocking(move || {
        let exp = set.expected();
        let sel = set.selector(None);
        if let Some(p) = prom {
            let d = query::diff(&exp, &query::prometheus(p, &sel, "2d"));
            assert!(d.is_exact(), "prometheus {sel}: {d:?}");
        }
        if let Some(v) = vm {
            let d = query::diff(&exp, &query::victoria_metrics(v, &sel, 2));
            assert!(d.is_exact(), "victoriametrics {sel}: {d:?}");
        }
    })
    .await;
}

/// The shipped backoff (100 ms doubling to 5 s, full jitter): the figures printed are what a
/// user gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_victoriametrics_outage_loses_nothing_and_the_backlog_drains_soon_after_it_returns() {
    let vm = Server::victoria_metrics(false); // no dedup: a duplicate would show
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("outage").expect("valid"))
        .expect("the tenant opens");
    let mut cfg = fwd_config("vm");
    cfg.backoff = BackoffConfig::default();
    let f = Forwarder::spawn(
        Arc::clone(&t),
        victoria_metrics(&vm.url(), Duration::from_secs(10)),
        cfg,
    )
    .expect("the forwarder starts");
    let set = DataSet::new("outage_samples", "outage", 100, 2_000);
    let batches = set.batches(10_000);
    let (first, second) = batches.split_at(batches.len() / 2);

    // 1. The server has never run: appends go on, the forwarder retries.
    let t0 = Instant::now();
    append_all(&t, first).await;
    eprintln!(
        "outage: {} samples appended with the backend down in {:?}",
        t.wal().end_offset(),
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = f.stats();
    assert_eq!(before.committed, 0, "nothing can be delivered: {before:?}");
    assert!(
        retries(&f, RetryReason::Network) >= 3,
        "the forwarder kept trying: {before:?}"
    );
    let (mut vm, noticed, drained) = restart_and_measure(vm, &f, &t, "never started").await;

    // 2. The server stops while the forwarder is idle and comes back on the same port,
    //    over the same data.
    vm = blocking(move || {
        vm.stop();
        vm
    })
    .await;
    let retried = retries(&f, RetryReason::Network);
    append_all(&t, second).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        retries(&f, RetryReason::Network) > retried,
        "{:?}",
        f.stats()
    );
    assert!(!caught_up(&f, &t));
    let (vm, noticed2, drained2) = restart_and_measure(vm, &f, &t, "stopped").await;

    verify(&set, None, Some(vm.port)).await;
    let s = f.stats();
    eprintln!(
        "outage: never-started server noticed {noticed:?} after it was ready, drained {drained:?}; \
         stopped server noticed {noticed2:?}, drained {drained2:?}; {} sends, retries {:?}",
        s.sends, s.retries
    );
    assert!(noticed < Duration::from_secs(20) && noticed2 < Duration::from_secs(20));
    f.shutdown(Duration::from_secs(5)).await;
}

/// Starts `server` again and returns (time until the forwarder's first delivery, time until
/// it caught up), both from the moment the server answered its readiness check.
async fn restart_and_measure(
    mut server: Server,
    f: &Forwarder,
    t: &Tenant,
    what: &str,
) -> (Server, Duration, Duration) {
    let delivered = f.stats().delivered_samples;
    let server = blocking(move || {
        server.start();
        server
    })
    .await;
    let up = Instant::now();
    common::wait_until_async(Duration::from_secs(30), Duration::from_millis(5), || {
        f.stats().delivered_samples > delivered
    })
    .await
    .unwrap_or_else(|| panic!("{what}: nothing delivered 30 s after the backend returned"));
    let noticed = up.elapsed();
    drain(f, t, Duration::from_secs(60), what).await;
    (server, noticed, up.elapsed())
}
