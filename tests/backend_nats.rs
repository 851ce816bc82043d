//! The NATS JetStream backend against a real nats-server (JetStream, file store) started by
//! the test on 127.0.0.1: batches go through a real `Forwarder`, and the stream is read back
//! message by message (`$JS.API.STREAM.MSG.GET`) and compared sample by sample.

#![cfg(feature = "nats")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::brokers::{
    Broker, expected, forwarder_config, resend_batch, sample_key, wait_caught_up,
};
use common::{DataSet, blocking};
use metricspool::backends::nats::{Nats, NatsConfig};
use metricspool::backends::{Backend, Outcome, RejectKind, RetryReason, SendRequest};
use metricspool::forward::Forwarder;
use metricspool::{Batch, MetricKind, Sample, Series, TenantId};

fn nats_config(url: &str) -> NatsConfig {
    let mut c = NatsConfig::new(url);
    c.create_stream = true;
    c.timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// What the stream holds: message count, and every stored message's batch id and samples.
struct StreamContent {
    messages: u64,
    /// Nats-Msg-Id of every message, in stream order.
    ids: Vec<String>,
    /// (series key, timestamp) -> value, over every sample of every message.
    samples: BTreeMap<(String, i64), f64>,
    /// Samples counted over every message (duplicates counted twice).
    sample_count: usize,
}

async fn read_stream(url: &str, stream: &str) -> StreamContent {
    let client = async_nats::connect(url).await.expect("the test connects");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("the stream exists");
    let info = s.info().await.expect("stream info");
    let (messages, first, last) = (
        info.state.messages,
        info.state.first_sequence,
        info.state.last_sequence,
    );
    let mut out = StreamContent {
        messages,
        ids: Vec::new(),
        samples: BTreeMap::new(),
        sample_count: 0,
    };
    for seq in first..=last {
        let m = s
            .get_raw_message(seq)
            .await
            .expect("the message reads back");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .expect("every message has a Nats-Msg-Id");
        let body: serde_json::Value = serde_json::from_slice(&m.payload).expect("the body is JSON");
        assert_eq!(body["batch_id"].as_str(), Some(id.as_str()));
        for smp in body["samples"].as_array().expect("samples") {
            let key = sample_key(smp);
            let ts = smp["timestamp_ms"].as_i64().expect("timestamp");
            let v = smp["value"].as_f64().expect("a finite value");
            out.samples.insert((key, ts), v);
            out.sample_count += 1;
        }
        out.ids.push(id);
    }
    out
}

/// Exactly the data set: every sample once, no message stored twice.
fn assert_exact(content: &StreamContent, set: &DataSet) {
    assert_eq!(content.sample_count, set.len(), "samples over all messages");
    assert_eq!(content.samples, expected(set));
    let distinct: BTreeSet<&String> = content.ids.iter().collect();
    assert_eq!(
        distinct.len() as u64,
        content.messages,
        "a batch id stored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_reach_jetstream_exactly_once_through_a_forwarder() {
    let broker = blocking(|| {
        let mut b = Broker::nats("");
        b.start();
        b
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("the tenant opens");
    let nats: Arc<dyn Backend> = Arc::new(Nats::new(nats_config(&broker.url())).expect("valid"));
    let f = Forwarder::spawn(Arc::clone(&t), nats, forwarder_config("nats")).expect("starts");
    let set = DataSet::new("nats_e2e", "t1", 20, 250);
    for b in set.batches(1000) {
        t.append(&b).await.expect("appended");
    }
    wait_caught_up(&f, &t, 60).await;
    let content = read_stream(&broker.url(), "METRICS").await;
    assert_exact(&content, &set);
    assert!(
        content.messages >= 10,
        "5,000 samples in batches of at most 500"
    );
    assert_eq!(f.stats().dead_letter_batches, 0);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_acknowledged_as_a_duplicate_and_stored_once() {
    // The story: a forwarder sent a batch, JetStream stored it, and the process crashed
    // before the cursor commit. After the restart the same batch (same offsets, same
    // Nats-Msg-Id) is sent again: it must count as delivered and not be stored twice.
    let broker = blocking(|| {
        let mut b = Broker::nats("");
        b.start();
        b
    })
    .await;
    let nats = Nats::new(nats_config(&broker.url())).expect("valid");
    let (t, batch) = (TenantId::new("t1").expect("valid"), resend_batch());
    let req = |resend| SendRequest {
        tenant: &t,
        batch: &batch,
        offsets: 100..110,
        part: (0, 1),
        resend,
    };
    let first = nats.send(req(false)).await;
    assert!(matches!(first, Outcome::Delivered { .. }), "{first:?}");
    let second = nats.send(req(true)).await;
    assert!(matches!(second, Outcome::Delivered { .. }), "{second:?}");
    let content = read_stream(&broker.url(), "METRICS").await;
    assert_eq!(content.messages, 1);
    assert_eq!(content.ids, vec!["t1-100-110-0of1".to_owned()]);
    assert_eq!(content.sample_count, 10);

    // The PubAck of the resend says "duplicate": checked with a plain JetStream publish of
    // the same id, which is what the backend sends.
    let client = async_nats::connect(broker.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "t1-100-110-0of1");
    let ack = js
        .publish_with_headers("metrics.t1", h, "x".into())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    assert!(ack.duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_mid_stream_is_survived_without_loss_or_duplicates() {
    let mut broker = blocking(|| {
        let mut b = Broker::nats("");
        b.start();
        b
    })
    .await;
    let url = broker.url();
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("the tenant opens");
    let backend = Arc::new(Nats::new(nats_config(&url)).expect("valid"));
    let f = Forwarder::spawn(
        Arc::clone(&t),
        Arc::clone(&backend) as Arc<dyn Backend>,
        forwarder_config("nats"),
    )
    .expect("starts");
    let set = DataSet::new("nats_outage", "t1", 20, 300);
    let batches = set.batches(200);
    let third = batches.len() / 3;
    for b in &batches[..third] {
        t.append(b).await.expect("appended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker = blocking(move || {
        broker.stop();
        broker
    })
    .await;
    // While the server is down appends go on, and a send fails promptly as a network retry.
    for b in &batches[third..2 * third] {
        t.append(b).await.expect("appended");
    }
    let (tid, probe) = (TenantId::new("probe").expect("valid"), resend_batch());
    let t0 = Instant::now();
    let out = backend
        .send(SendRequest {
            tenant: &tid,
            batch: &probe,
            offsets: 0..10,
            part: (0, 1),
            resend: false,
        })
        .await;
    assert!(
        matches!(
            out,
            Outcome::Retry {
                reason: RetryReason::Network | RetryReason::Timeout,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker = blocking(move || {
        broker.start();
        broker
    })
    .await;
    for b in &batches[2 * third..] {
        t.append(b).await.expect("appended");
    }
    wait_caught_up(&f, &t, 90).await;
    let content = read_stream(&url, "METRICS").await;
    assert_exact(&content, &set);
    let retries: u64 = f.stats().retries.iter().map(|(_, n)| n).sum();
    assert!(retries > 0, "the outage was noticed: {:?}", f.stats());
    f.shutdown(Duration::from_secs(5)).await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_sample_is_dead_lettered_and_a_missing_stream_is_retried() {
    // max_payload 2 KiB: batches are split until they fit; a single sample with a 3 KiB
    // label value never fits and goes to the dead-letter log.
    let broker = blocking(|| {
        let mut b = Broker::nats("max_payload: 2048");
        b.start();
        b
    })
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("the tenant opens");
    // No stream yet: the first sends are answered "no responders" and retried.
    let mut c = nats_config(&broker.url());
    c.create_stream = false;
    let nats: Arc<dyn Backend> = Arc::new(Nats::new(c).expect("valid"));
    let f = Forwarder::spawn(Arc::clone(&t), nats, forwarder_config("nats")).expect("starts");
    let set = DataSet::new("nats_small", "t1", 4, 10);
    for b in set.batches(40) {
        t.append(&b).await.expect("appended");
    }
    let mut big = Batch::new();
    let huge = Series::new("nats_huge", [("blob", "x".repeat(3000))]).expect("valid");
    big.push_one(huge, MetricKind::Gauge, Sample::new(1_700_000_000_000, 1.0));
    t.append(&big).await.expect("appended");
    let retried =
        common::wait_until_async(Duration::from_secs(20), Duration::from_millis(20), || {
            f.stats()
                .retries
                .iter()
                .any(|(r, n)| *r == RetryReason::ServerError && *n > 0)
        })
        .await;
    assert!(
        retried.is_some(),
        "no retry for the missing stream: {:?}",
        f.stats()
    );
    assert!(
        f.stats()
            .last_error
            .is_some_and(|e| e.contains("no JetStream stream")),
        "{:?}",
        f.stats()
    );
    // An operator creates the stream; the forwarder's next retry goes through.
    let client = async_nats::connect(broker.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "METRICS".into(),
        subjects: vec!["metrics.>".into()],
        ..Default::default()
    })
    .await
    .expect("the stream is created");
    wait_caught_up(&f, &t, 60).await;
    let content = read_stream(&broker.url(), "METRICS").await;
    assert_exact(&content, &set);
    let s = f.stats();
    assert_eq!(
        (s.dead_letter_batches, s.dead_letter_samples),
        (1, 1),
        "{s:?}"
    );
    let dl = t.dead_letters("nats").expect("the dead-letter log opens");
    let list = dl.list().expect("lists");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind, RejectKind::TooLarge);
    assert!(list[0].reason.contains("2048"), "{}", list[0].reason);
    f.shutdown(Duration::from_secs(5)).await;
}
