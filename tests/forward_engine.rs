//! The forwarding engine against a scripted in-process backend (a custom exporter through the
//! public `Backend` trait): batch boundaries, resends, dead letters, splitting, retries.
//! Real backends are exercised in forward_e2e.rs and forward_crash.rs.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metricspool::backends::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use metricspool::forward::{BackoffConfig, BatchMode, Forwarder, ForwarderConfig};
use metricspool::{
    Batch, MasterKey, MetricKind, Sample, Series, Spool, SpoolConfig, StartAt, Tenant, TenantId,
};

#[derive(Debug, Clone)]
struct Sent {
    offsets: Range<u64>,
    samples: Vec<(String, i64)>,
    resend: bool,
    at: Instant,
}

/// Answers from a script (then `Delivered`), and records every request.
#[derive(Debug, Default)]
struct Scripted {
    script: Mutex<VecDeque<Outcome>>,
    sent: Mutex<Vec<Sent>>,
    /// Reject any request holding more samples than this as too large.
    max_samples: Option<usize>,
    /// Time each request takes.
    delay: Option<Duration>,
    out_of_order: bool,
    /// Requests under way now, and the most seen at once.
    active: std::sync::atomic::AtomicUsize,
    max_active: std::sync::atomic::AtomicUsize,
}

impl Scripted {
    fn with(script: Vec<Outcome>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            ..Self::default()
        })
    }
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("lock").clone()
    }
    fn delivered_keys(&self) -> Vec<(String, i64)> {
        let sent = self.sent();
        sent.iter().flat_map(|s| s.samples.clone()).collect()
    }
}

impl Backend for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn accepts_out_of_order(&self) -> bool {
        self.out_of_order
    }
    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.active.fetch_add(1, SeqCst) + 1;
            self.max_active.fetch_max(now, SeqCst);
            if let Some(d) = self.delay {
                tokio::time::sleep(d).await;
            }
            self.active.fetch_sub(1, SeqCst);
            if self
                .max_samples
                .is_some_and(|m| req.batch.sample_count() > m)
            {
                return Outcome::Rejected {
                    kind: RejectKind::TooLarge,
                    status: Some(413),
                    reason: "too large".into(),
                };
            }
            let next = self.script.lock().expect("lock").pop_front();
            let outcome = next.unwrap_or(Outcome::Delivered {
                bytes: 1,
                skipped: 0,
            });
            if matches!(outcome, Outcome::Delivered { .. }) {
                self.sent.lock().expect("lock").push(Sent {
                    offsets: req.offsets.clone(),
                    samples: req
                        .batch
                        .iter()
                        .map(|(s, _, x)| (s.label("i").unwrap_or("").to_owned(), x.timestamp_ms))
                        .collect(),
                    resend: req.resend,
                    at: Instant::now(),
                });
            }
            outcome
        })
    }
}

fn batch(from: i64, n: i64) -> Batch {
    let mut b = Batch::new();
    for k in from..from + n {
        let s = Series::new("m", [("i", format!("{}", k % 7))]).expect("valid");
        b.push_one(s, MetricKind::Gauge, Sample::new(k, k as f64));
    }
    b
}

fn setup() -> (tempfile::TempDir, Spool, Arc<Tenant>) {
    let d = tempfile::tempdir().expect("tempdir");
    let spool =
        Spool::open(SpoolConfig::new(d.path(), MasterKey::from_bytes([4; 32]))).expect("spool");
    let t = spool
        .tenant(&TenantId::new("t").expect("valid"))
        .expect("tenant");
    (d, spool, t)
}

fn config(name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(name);
    c.mode = BatchMode::Streaming;
    c.max_samples = 100;
    c.start = StartAt::Earliest;
    c.backoff = BackoffConfig {
        min: Duration::from_millis(5),
        max: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    };
    c
}

async fn wait_committed(f: &Forwarder, end: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.stats().committed < end {
        assert!(Instant::now() < deadline, "stuck: {:?}", f.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_is_delivered_once_in_offset_order() {
    let (_d, _spool, t) = setup();
    for i in 0..10 {
        t.append(&batch(i * 50, 50)).await.expect("append");
    }
    let b = Scripted::with(vec![]);
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), config("a")).expect("spawn");
    wait_committed(&f, 500).await;
    let ts: Vec<i64> = b.delivered_keys().iter().map(|(_, ts)| *ts).collect();
    assert_eq!(ts, (0..500).collect::<Vec<_>>());
    let sent = b.sent();
    assert!(sent.iter().all(|s| s.offsets.end - s.offsets.start <= 100));
    assert!(
        sent.windows(2)
            .all(|w| w[0].offsets.end == w[1].offsets.start)
    );
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_at_a_crash_is_resent_exactly() {
    let (_d, _spool, t) = setup();
    t.append(&batch(0, 300)).await.expect("append");
    t.register_consumer("a", StartAt::Earliest)
        .expect("register");
    // As if a forwarder recorded [0, 120) and [120, 170) in flight and then died.
    t.begin_batch("a", 120).expect("begin");
    t.begin_batch("a", 170).expect("begin");
    let b = Scripted::with(vec![]);
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), config("a")).expect("spawn");
    wait_committed(&f, 300).await;
    let sent = b.sent();
    assert_eq!(sent[0].offsets, 0..120);
    assert_eq!(sent[0].samples.len(), 120);
    assert!(sent[0].resend);
    assert_eq!(sent[1].offsets, 120..170);
    assert!(sent[1].resend);
    assert!(!sent[2].resend);
    assert_eq!(b.delivered_keys().len(), 300);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_rejection_goes_to_the_dead_letter_log_and_the_rest_flows() {
    let (_d, _spool, t) = setup();
    t.append(&batch(0, 300)).await.expect("append");
    let reject = Outcome::Rejected {
        kind: RejectKind::Permanent,
        status: Some(400),
        reason: "bad sample".into(),
    };
    let b = Scripted::with(vec![
        Outcome::Delivered {
            bytes: 1,
            skipped: 0,
        },
        reject,
    ]);
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), config("a")).expect("spawn");
    wait_committed(&f, 300).await;
    let dl = t.dead_letters("a").expect("dlq").list().expect("list");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].source, 100..200);
    assert_eq!(dl[0].samples, 100);
    assert_eq!(dl[0].status, Some(400));
    assert!(dl[0].reason.contains("bad sample"));
    assert_eq!(f.stats().dead_letter_samples, 100);
    assert_eq!(b.delivered_keys().len(), 200);

    assert!(f.redrive(dl[0].id).await.expect("redrive"));
    assert_eq!(b.delivered_keys().len(), 300);
    let dl = t.dead_letters("a").expect("dlq").list().expect("list");
    assert!(dl[0].redriven);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_on_a_resend_counts_as_delivered_but_on_a_first_attempt_is_a_dead_letter() {
    let (_d, _spool, t) = setup();
    t.append(&batch(0, 200)).await.expect("append");
    t.register_consumer("a", StartAt::Earliest)
        .expect("register");
    t.begin_batch("a", 100).expect("begin");
    let dup = || Outcome::Rejected {
        kind: RejectKind::Duplicate,
        status: Some(400),
        reason: "out of order sample".into(),
    };
    let b = Scripted::with(vec![dup(), dup()]);
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), config("a")).expect("spawn");
    wait_committed(&f, 200).await;
    let s = f.stats();
    assert_eq!(s.already_delivered_samples, 100, "the resend of [0, 100)");
    assert_eq!(
        s.dead_letter_samples, 100,
        "the first attempt of [100, 200)"
    );
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_batches_are_split_until_they_fit() {
    let (_d, _spool, t) = setup();
    t.append(&batch(0, 100)).await.expect("append");
    let b = Arc::new(Scripted {
        max_samples: Some(30),
        ..Scripted::default()
    });
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), config("a")).expect("spawn");
    wait_committed(&f, 100).await;
    let ts: Vec<i64> = b.delivered_keys().iter().map(|(_, ts)| *ts).collect();
    assert_eq!(ts, (0..100).collect::<Vec<_>>());
    assert!(b.sent().iter().all(|s| s.samples.len() <= 30));
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_and_are_counted_by_reason() {
    let (_d, _spool, t) = setup();
    t.append(&batch(0, 10)).await.expect("append");
    let start = Instant::now();
    let b = Scripted::with(vec![
        Outcome::Retry {
            reason: RetryReason::RateLimited,
            retry_after: Some(Duration::from_millis(700)),
            detail: "429".into(),
        },
        Outcome::Retry {
            reason: RetryReason::ServerError,
            retry_after: None,
            detail: "503".into(),
        },
    ]);
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), config("a")).expect("spawn");
    wait_committed(&f, 10).await;
    let sent = b.sent();
    assert!(sent[0].at - start >= Duration::from_millis(700));
    assert!(!sent[0].resend, "429 and 503 are not ambiguous");
    let s = f.stats();
    let count = |r| {
        s.retries
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(RetryReason::RateLimited), 1);
    assert_eq!(count(RetryReason::ServerError), 1);
    assert!(s.up);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_waits_for_a_full_batch_or_the_linger_time() {
    let (_d, _spool, t) = setup();
    let b = Scripted::with(vec![]);
    let mut c = config("a");
    c.mode = BatchMode::Batch {
        linger: Duration::from_millis(400),
    };
    c.start = StartAt::Now;
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), c).expect("spawn");
    t.append(&batch(0, 10)).await.expect("append");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(b.sent().is_empty(), "lingering for more data");
    wait_committed(&f, 10).await;
    t.append(&batch(10, 100)).await.expect("append");
    wait_committed(&f, 110).await;
    assert_eq!(b.sent()[1].offsets, 10..110);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lane_sends_fresh_data_while_the_backlog_drains_then_merges_back() {
    let (_d, _spool, t) = setup();
    for i in 0..20 {
        t.append(&batch(i * 100, 100)).await.expect("append");
    }
    let b = Arc::new(Scripted {
        delay: Some(Duration::from_millis(30)),
        out_of_order: true,
        ..Scripted::default()
    });
    let mut c = config("a");
    c.live_lane = Some(500);
    let f = Forwarder::spawn(Arc::clone(&t), b.clone(), c).expect("spawn");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = t.append(&batch(1_000_000, 50)).await.expect("append");
    wait_committed(&f, fresh.end).await;
    let keys = b.delivered_keys();
    let pos = |ts: i64| keys.iter().position(|(_, x)| *x == ts).expect("delivered");
    assert!(
        pos(1_000_000) < pos(1_999),
        "fresh data went out before the end of the backlog"
    );
    let mut ts: Vec<i64> = keys.iter().map(|(_, x)| *x).collect();
    ts.sort_unstable();
    let mut want: Vec<i64> = (0..2000).collect();
    want.extend(1_000_000..1_000_050);
    assert_eq!(ts, want, "every sample exactly once");
    let names: Vec<String> = t
        .cursors()
        .list()
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec!["a".to_owned()], "the live lane merged back");
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lane_is_refused_for_a_backend_that_needs_order() {
    let (_d, _spool, t) = setup();
    let mut c = config("a");
    c.live_lane = Some(10);
    let err = Forwarder::spawn(Arc::clone(&t), Scripted::with(vec![]), c).expect_err("refused");
    assert!(err.to_string().contains("out-of-order"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_batches_are_in_flight_only_for_backends_that_accept_out_of_order_data() {
    for out_of_order in [true, false] {
        let (_d, _spool, t) = setup();
        for i in 0..10 {
            t.append(&batch(i * 100, 100)).await.expect("append");
        }
        let b = Arc::new(Scripted {
            delay: Some(Duration::from_millis(40)),
            out_of_order,
            ..Scripted::default()
        });
        let mut c = config("a");
        c.max_in_flight = 4;
        let f = Forwarder::spawn(Arc::clone(&t), b.clone(), c).expect("spawn");
        wait_committed(&f, 1000).await;
        let most = b.max_active.load(std::sync::atomic::Ordering::SeqCst);
        if out_of_order {
            assert!(most > 1, "expected parallel batches, saw {most}");
        } else {
            assert_eq!(
                most, 1,
                "a backend that needs order gets one batch at a time"
            );
        }
        let mut ts: Vec<i64> = b.delivered_keys().iter().map(|(_, x)| *x).collect();
        ts.sort_unstable();
        assert_eq!(ts, (0..1000).collect::<Vec<_>>(), "every sample once");
        let c = t.cursors().get("a").expect("cursor").expect("exists");
        assert!(c.in_flight_ends.is_empty());
        f.shutdown(Duration::from_secs(5)).await;
    }
}
