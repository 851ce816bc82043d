//! The Elasticsearch / OpenSearch backend against a real OpenSearch-compatible server
//! (osmem-server from PyPI, started by the test on 127.0.0.1): samples go from a spool
//! through a real `Forwarder`, and the documents are counted back (`_refresh`, `_count`),
//! so both loss and duplication show. osmem-server keeps everything in memory, so outages
//! come from the fault proxy, not from restarting it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::json::Json;
use common::proxy::{Fault, FaultProxy};
use common::servers::Server;
use common::{DataSet, blocking};
use metricspool::backends::RejectKind;
use metricspool::backends::elasticsearch::{Elasticsearch, ElasticsearchConfig};
use metricspool::backends::{Backend, Outcome, SendRequest};
use metricspool::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig};
use metricspool::{Batch, MetricKind, Sample, Series, StartAt, Tenant, TenantId};

fn es(url: &str) -> Arc<dyn Backend> {
    let mut c = ElasticsearchConfig::new(url);
    c.timeout = Duration::from_secs(30);
    Arc::new(Elasticsearch::new(c).expect("a valid Elasticsearch config"))
}

fn fwd_config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.start = StartAt::Earliest;
    c.max_samples = 500;
    c.mode = BatchMode::Batch {
        linger: Duration::from_millis(50),
    };
    c.backoff = BackoffConfig {
        min: Duration::from_millis(50),
        max: Duration::from_millis(300),
        max_retry_after: Duration::from_secs(30),
    };
    c
}

async fn append(t: &Arc<Tenant>, set: &DataSet) {
    for b in set.batches(250) {
        t.append(&b).await.expect("the append is acknowledged");
    }
}

async fn wait_caught_up(f: &Forwarder, t: &Tenant) {
    let done =
        common::wait_until_async(Duration::from_secs(120), Duration::from_millis(50), || {
            f.stats().committed == t.wal().end_offset()
        })
        .await;
    assert!(
        done.is_some(),
        "the forwarder did not catch up: {:?}",
        f.stats()
    );
}

/// `_refresh`, then the document count of `index` (a pattern).
async fn count(port: u16, index: &str) -> u64 {
    let index = index.to_owned();
    blocking(move || {
        let r = common::http::post(port, "/_refresh", b"").expect("refresh answers");
        assert_eq!(r.status, 200, "refresh: {}", r.body);
        let r = common::http::get(port, &format!("/{index}/_count")).expect("count answers");
        assert_eq!(r.status, 200, "count: {}", r.body);
        let v = Json::parse(&r.body).expect("a JSON count");
        v.get("count").i64().expect("a count") as u64
    })
    .await
}

async fn start_server() -> Server {
    blocking(|| {
        let mut s = Server::osmem();
        s.start();
        s
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_reaches_opensearch_exactly_once_through_a_forwarder() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("the tenant opens");
    let set = DataSet::new("es_samples", "t1", 20, 100);
    let f = Forwarder::spawn(Arc::clone(&t), es(&server.url()), fwd_config("es"))
        .expect("the forwarder starts");
    append(&t, &set).await;
    wait_caught_up(&f, &t).await;
    assert_eq!(count(server.port, "metrics-t1-*").await, set.len() as u64);
    assert!(
        t.dead_letters("es")
            .expect("dlq")
            .list()
            .expect("list")
            .is_empty()
    );

    // The documents are chartable: time field, metric object, labels, tenant.
    let port = server.port;
    let body = blocking(move || {
        common::http::get(port, "/metrics-t1-*/_search?size=1")
            .expect("search answers")
            .body
    })
    .await;
    let hit = Json::parse(&body).expect("JSON");
    let source = hit.get("hits").get("hits").at(0).get("_source");
    assert!(
        source
            .get("@timestamp")
            .str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(source.get("metric").get("name").str(), Some("es_samples"));
    assert_eq!(source.get("metric").get("kind").str(), Some("gauge"));
    assert!(source.get("metric").get("value").f64().is_some());
    assert_eq!(source.get("labels").get("tenant").str(), Some("t1"));
    assert_eq!(source.get("tenant").str(), Some("t1"));
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_delivered_through_409s_and_the_count_stays_exact() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t2").expect("valid"))
        .expect("the tenant opens");
    let set = DataSet::new("es_resend", "t2", 10, 100);
    append(&t, &set).await;
    let backend = es(&server.url());

    // The same request twice, the second flagged as a resend after a crash.
    let read = t
        .read_from(0, metricspool::ReadLimits::default())
        .expect("a read");
    let n = read.batch.sample_count() as u64;
    for resend in [false, true] {
        let req = SendRequest {
            tenant: t.id(),
            batch: &read.batch,
            offsets: read.start..read.end,
            part: (0, 1),
            resend,
        };
        let out = backend.send(req).await;
        assert!(
            matches!(out, Outcome::Delivered { skipped: 0, .. }),
            "resend={resend}: {out:?}"
        );
        assert_eq!(count(server.port, "metrics-t2-*").await, n);
    }

    // A crash that lost every commit: a forwarder starting from the beginning of the log
    // sends every sample again, cut into other batches (500 samples, not the 1,000 above):
    // the ids do not depend on batch boundaries, so every document answers 409 and counts
    // as delivered.
    let first = Forwarder::spawn(Arc::clone(&t), Arc::clone(&backend), fwd_config("es-a"))
        .expect("the forwarder starts");
    wait_caught_up(&first, &t).await;
    first.shutdown(Duration::from_secs(5)).await;
    assert_eq!(count(server.port, "metrics-t2-*").await, set.len() as u64);
    let again = Forwarder::spawn(Arc::clone(&t), Arc::clone(&backend), fwd_config("es-b"))
        .expect("the forwarder starts");
    wait_caught_up(&again, &t).await;
    assert_eq!(count(server.port, "metrics-t2-*").await, set.len() as u64);
    assert!(
        t.dead_letters("es-b")
            .expect("dlq")
            .list()
            .expect("list")
            .is_empty()
    );
    assert_eq!(again.stats().dead_letter_samples, 0);
    again.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_while_appending_loses_and_duplicates_nothing() {
    let server = start_server().await;
    let proxy = FaultProxy::start(server.port).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t3").expect("valid"))
        .expect("the tenant opens");
    // One batch at a time, so the request after the 429 is that batch's retry.
    let mut config = fwd_config("es");
    config.max_in_flight = 1;
    let f =
        Forwarder::spawn(Arc::clone(&t), es(&proxy.url()), config).expect("the forwarder starts");
    let before = DataSet::new("es_outage", "t3", 10, 50);
    append(&t, &before).await;
    wait_caught_up(&f, &t).await;

    // Down: connections reset, then 503s, then a 429 with Retry-After; data keeps coming.
    proxy.set(Fault::Reset);
    let mut during = DataSet::new("es_outage_during", "t3", 10, 100);
    during.seed = 2;
    append(&t, &during).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set(Fault::Unavailable);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        f.stats().committed < t.wal().end_offset(),
        "nothing passes while down"
    );
    proxy.script([Fault::TooManyRequests {
        retry_after_secs: 1,
    }]);
    proxy.set(Fault::Pass);
    wait_caught_up(&f, &t).await;
    let total = (before.len() + during.len()) as u64;
    assert_eq!(count(server.port, "metrics-t3-*").await, total);
    assert!(proxy.count_of(Fault::Reset) > 0 && proxy.count_of(Fault::Unavailable) > 0);
    // The 429's Retry-After was obeyed before the next request.
    let seen = proxy.seen();
    let throttled = seen
        .iter()
        .position(|s| matches!(s.fault, Fault::TooManyRequests { .. }))
        .expect("the 429 was answered");
    let next = seen.get(throttled + 1).expect("a request after the 429");
    assert!(next.at - seen[throttled].at >= Duration::from_millis(950));
    assert!(
        t.dead_letters("es")
            .expect("dlq")
            .list()
            .expect("list")
            .is_empty()
    );
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_the_mapping_refuses_is_a_partial_dead_letter_and_redriving_it_stores_nothing_twice()
 {
    let server = start_server().await;
    // An index whose mapping wants an integer `labels.code`.
    let (port, index) = (server.port, "metrics-t4-2026.12.04");
    let mapping =
        br#"{"mappings":{"properties":{"labels":{"properties":{"code":{"type":"integer"}}}}}}"#;
    let r = blocking(move || {
        common::http::json("PUT", port, &format!("/{index}"), mapping)
            .expect("create index answers")
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t4").expect("valid"))
        .expect("the tenant opens");
    let f = Forwarder::spawn(Arc::clone(&t), es(&server.url()), fwd_config("es"))
        .expect("the forwarder starts");
    // 2026-12-04T10:00:00Z: one sample the mapping takes, one it refuses.
    let t0 = 1_796_378_400_000;
    let mut b = Batch::new();
    for (code, ts) in [("12", t0), ("abc", t0 + 1000)] {
        let s = Series::new("http_requests", [("code", code)]).expect("valid");
        b.push_one(s, MetricKind::Counter, Sample::new(ts, 1.0));
    }
    t.append(&b).await.expect("the append is acknowledged");
    wait_caught_up(&f, &t).await;
    assert_eq!(count(server.port, index).await, 1);
    let dlq = t.dead_letters("es").expect("dlq").list().expect("list");
    assert_eq!(dlq.len(), 1);
    assert_eq!((dlq[0].kind, dlq[0].samples), (RejectKind::Partial, 2));
    assert!(
        dlq[0].reason.contains("1 of 2 documents refused"),
        "{}",
        dlq[0].reason
    );
    assert!(
        dlq[0].reason.contains("mapper_parsing_exception"),
        "{}",
        dlq[0].reason
    );

    // Re-driving sends the whole batch again: the stored document answers 409, the refused
    // one is refused again (a new dead letter); nothing is stored twice.
    assert!(f.redrive(dlq[0].id).await.expect("redrive runs"));
    assert_eq!(count(server.port, index).await, 1);
    let dlq = t.dead_letters("es").expect("dlq").list().expect("list");
    assert_eq!(dlq.len(), 2);
    assert!(dlq[0].redriven);
    f.shutdown(Duration::from_secs(5)).await;
}
