//! The MQTT 5 backend against a real mosquitto started by the test on 127.0.0.1: batches go
//! through a real `Forwarder`, and a subscriber (rumqttc, MQTT 5, subscribed before the
//! first send) counts what the broker delivered, by `batch_id` user property.

#![cfg(feature = "mqtt")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::brokers::{
    Broker, expected, forwarder_config, resend_batch, sample_key, wait_caught_up,
};
use common::{DataSet, blocking};
use metricspool::backends::mqtt::{Mqtt, MqttConfig};
use metricspool::backends::{Backend, Outcome, RejectKind, SendRequest};
use metricspool::forward::Forwarder;
use metricspool::{Batch, MetricKind, Sample, Series, TenantId};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};

fn mqtt_config(url: &str) -> MqttConfig {
    let mut c = MqttConfig::new(url);
    c.timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// One message the subscriber got.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    batch_id: String,
    tenant: String,
    /// (series key, timestamp, value)
    samples: Vec<(String, i64, f64)>,
}

/// A subscriber on `metrics/#` with a persistent session (it survives a broker restart and
/// gets what was queued for it).
struct Subscriber {
    got: Arc<Mutex<Vec<Received>>>,
    subscribed: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse(topic: &str, props: Vec<(String, String)>, payload: &[u8]) -> Received {
    let prop = |k: &str| {
        props
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body: serde_json::Value = serde_json::from_slice(payload).expect("the body is JSON");
    let samples = body["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            let ts = s["timestamp_ms"].as_i64().expect("timestamp");
            (
                sample_key(s),
                ts,
                s["value"].as_f64().expect("a finite value"),
            )
        })
        .collect();
    let r = Received {
        topic: topic.to_owned(),
        batch_id: prop("batch_id"),
        tenant: prop("tenant"),
        samples,
    };
    assert_eq!(body["batch_id"].as_str(), Some(r.batch_id.as_str()));
    r
}

async fn subscribe(port: u16) -> Subscriber {
    let mut opts = MqttOptions::new("test-subscriber", "127.0.0.1", port);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(3600));
    opts.set_max_packet_size(Some(4 << 20));
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 100);
    let got = Arc::new(Mutex::new(Vec::new()));
    let subscribed = Arc::new(Mutex::new(false));
    let (g, s) = (Arc::clone(&got), Arc::clone(&subscribed));
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = client.try_subscribe("metrics/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => *s.lock().expect("lock") = true,
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let props = p.properties.map(|p| p.user_properties).unwrap_or_default();
                    g.lock()
                        .expect("lock")
                        .push(parse(&topic, props, &p.payload));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let sub = Subscriber {
        got,
        subscribed,
        task,
    };
    let ok = common::wait_until_async(Duration::from_secs(10), Duration::from_millis(10), || {
        *sub.subscribed.lock().expect("lock")
    })
    .await;
    assert!(ok.is_some(), "the subscriber did not get its SUBACK");
    sub
}

impl Subscriber {
    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Samples over the distinct batch ids (what a consumer that dedupes by batch id keeps).
    fn deduped(&self) -> BTreeMap<(String, i64), f64> {
        let mut seen = BTreeSet::new();
        let mut out = BTreeMap::new();
        for r in self.received() {
            if seen.insert(r.batch_id.clone()) {
                for (k, ts, v) in r.samples {
                    assert!(out.insert((k, ts), v).is_none(), "a sample in two batches");
                }
            }
        }
        out
    }

    fn sample_count_deduped(&self) -> usize {
        let mut seen = BTreeSet::new();
        self.received()
            .into_iter()
            .filter(|r| seen.insert(r.batch_id.clone()))
            .map(|r| r.samples.len())
            .sum()
    }
}

/// Waits until the subscriber holds `n` samples over distinct batch ids.
async fn wait_received(sub: &Subscriber, n: usize) {
    let ok = common::wait_until_async(Duration::from_secs(30), Duration::from_millis(20), || {
        sub.sample_count_deduped() >= n
    })
    .await;
    assert!(
        ok.is_some(),
        "the subscriber got {} of {n} samples",
        sub.sample_count_deduped()
    );
}

async fn start_broker(extra: &'static str, acl: Option<&'static str>) -> Broker {
    blocking(move || {
        let mut b = Broker::mosquitto(extra, acl);
        b.start();
        b
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_reach_a_subscriber_through_a_forwarder() {
    let broker = start_broker("", None).await;
    let sub = subscribe(broker.port).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("the tenant opens");
    let mqtt: Arc<dyn Backend> = Arc::new(Mqtt::new(mqtt_config(&broker.url())).expect("valid"));
    let f = Forwarder::spawn(Arc::clone(&t), mqtt, forwarder_config("mqtt")).expect("starts");
    let set = DataSet::new("mqtt_e2e", "t1", 20, 250);
    for b in set.batches(1000) {
        t.append(&b).await.expect("appended");
    }
    wait_caught_up(&f, &t, 60).await;
    wait_received(&sub, set.len()).await;
    let got = sub.received();
    // Nothing was resent here, so not even a duplicate message arrived.
    assert_eq!(
        got.iter().map(|r| r.samples.len()).sum::<usize>(),
        set.len()
    );
    assert!(got.len() >= 10, "5,000 samples in batches of at most 500");
    assert!(
        got.iter()
            .all(|r| r.topic == "metrics/t1" && r.tenant == "t1")
    );
    assert_eq!(sub.deduped(), expected(&set));
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_arrives_twice_with_the_same_batch_id_so_consumers_can_dedupe() {
    // MQTT has no end-to-end dedup: the resend after a crash before the cursor commit is
    // delivered again. What the backend guarantees is that both copies carry the same
    // batch_id (and the same bytes), so a consumer keeps one.
    let broker = start_broker("", None).await;
    let sub = subscribe(broker.port).await;
    let mqtt = Mqtt::new(mqtt_config(&broker.url())).expect("valid");
    let (t, batch) = (TenantId::new("t1").expect("valid"), resend_batch());
    let req = |resend| SendRequest {
        tenant: &t,
        batch: &batch,
        offsets: 100..110,
        part: (0, 1),
        resend,
    };
    for resend in [false, true] {
        let out = mqtt.send(req(resend)).await;
        assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    }
    let ok = common::wait_until_async(Duration::from_secs(10), Duration::from_millis(10), || {
        sub.received().len() == 2
    })
    .await;
    assert!(ok.is_some(), "got {:?}", sub.received());
    let got = sub.received();
    assert_eq!(got[0].batch_id, "t1-100-110-0of1");
    assert_eq!(got[1].batch_id, got[0].batch_id);
    assert_eq!(sub.sample_count_deduped(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_stream_is_survived_without_loss() {
    let mut broker = start_broker("", None).await;
    let port = broker.port;
    let sub = subscribe(port).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let t = spool
        .tenant(&TenantId::new("t1").expect("valid"))
        .expect("the tenant opens");
    let backend = Arc::new(Mqtt::new(mqtt_config(&broker.url())).expect("valid"));
    let f = Forwarder::spawn(
        Arc::clone(&t),
        Arc::clone(&backend) as Arc<dyn Backend>,
        forwarder_config("mqtt"),
    )
    .expect("starts");
    let set = DataSet::new("mqtt_outage", "t1", 20, 300);
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
    for b in &batches[third..2 * third] {
        t.append(b).await.expect("appended");
    }
    // A send while the broker is down is a prompt network retry.
    let (tid, probe) = (TenantId::new("probe").expect("valid"), resend_batch());
    let t0 = std::time::Instant::now();
    let out = backend
        .send(SendRequest {
            tenant: &tid,
            batch: &probe,
            offsets: 0..10,
            part: (0, 1),
            resend: false,
        })
        .await;
    assert!(matches!(out, Outcome::Retry { .. }), "{out:?}");
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
    wait_received(&sub, set.len()).await;
    assert_eq!(sub.deduped(), expected(&set));
    let retries: u64 = f.stats().retries.iter().map(|(_, n)| n).sum();
    assert!(retries > 0, "the outage was noticed: {:?}", f.stats());
    f.shutdown(Duration::from_secs(5)).await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_oversized_batches_are_dead_lettered_while_allowed_ones_arrive() {
    // The ACL lets anonymous clients write only metrics/ok: mosquitto answers PUBACK 0x87
    // for tenant "denied". message_size_limit makes mosquitto answer 0x95 for a message
    // over 4 KiB: the forwarder splits it, and a single sample that is still too large is
    // dead-lettered.
    let broker = start_broker(
        "message_size_limit 4096",
        Some("topic read metrics/#\ntopic write metrics/ok\n"),
    )
    .await;
    let sub = subscribe(broker.port).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spool = common::open_spool(dir.path());
    let mqtt: Arc<dyn Backend> = Arc::new(Mqtt::new(mqtt_config(&broker.url())).expect("valid"));
    let ok = spool
        .tenant(&TenantId::new("ok").expect("valid"))
        .expect("opens");
    let denied = spool
        .tenant(&TenantId::new("denied").expect("valid"))
        .expect("opens");
    let f_ok = Forwarder::spawn(Arc::clone(&ok), Arc::clone(&mqtt), forwarder_config("mqtt"))
        .expect("starts");
    let f_denied = Forwarder::spawn(
        Arc::clone(&denied),
        Arc::clone(&mqtt),
        forwarder_config("mqtt"),
    )
    .expect("starts");
    let set = DataSet::new("mqtt_acl", "ok", 4, 25);
    for b in set.batches(100) {
        ok.append(&b).await.expect("appended");
    }
    let mut big = Batch::new();
    let huge = Series::new("mqtt_huge", [("blob", "x".repeat(4096))]).expect("valid");
    big.push_one(huge, MetricKind::Gauge, Sample::new(1_700_000_000_000, 1.0));
    ok.append(&big).await.expect("appended");
    let other = DataSet::new("mqtt_acl", "denied", 2, 5);
    for b in other.batches(10) {
        denied.append(&b).await.expect("appended");
    }
    wait_caught_up(&f_ok, &ok, 60).await;
    wait_caught_up(&f_denied, &denied, 60).await;
    wait_received(&sub, set.len()).await;
    assert_eq!(sub.deduped(), expected(&set));
    assert!(sub.received().iter().all(|r| r.tenant == "ok"));

    let s = f_ok.stats();
    assert_eq!(
        (s.dead_letter_batches, s.dead_letter_samples),
        (1, 1),
        "{s:?}"
    );
    let dl = ok
        .dead_letters("mqtt")
        .expect("opens")
        .list()
        .expect("lists");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].kind, RejectKind::TooLarge);
    assert_eq!(
        dl[0].status,
        Some(0x95),
        "mosquitto's PUBACK: {}",
        dl[0].reason
    );

    let s = f_denied.stats();
    assert_eq!(s.dead_letter_samples, other.len() as u64, "{s:?}");
    let dl = denied
        .dead_letters("mqtt")
        .expect("opens")
        .list()
        .expect("lists");
    assert!(!dl.is_empty());
    assert!(
        dl.iter()
            .all(|d| d.kind == RejectKind::Permanent && d.status == Some(0x87))
    );
    assert!(dl[0].reason.contains("not authorized"), "{}", dl[0].reason);
    f_ok.shutdown(Duration::from_secs(5)).await;
    f_denied.shutdown(Duration::from_secs(5)).await;
}
