//! Protocol tests of `backends::splunk` against the test server, built from HEC's
//! documented answers (backends.md §8).

use std::io::Read as _;
use std::sync::Arc;

use super::*;
use crate::backends::RejectKind;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::testserver::{self, Forwarding, SeqAnswer};
use crate::sample::{MetricKind, Sample};

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant")
}

const SUCCESS: &str = "{\"text\":\"Success\",\"code\":0}";

fn token() -> Secret {
    // Any variable that is set: the test only checks it is sent.
    Secret::Env("PATH".into())
}

fn token_value() -> String {
    token().resolve().expect("PATH is set")
}

fn backend(url: &str) -> Splunk {
    Splunk::new(SplunkConfig::new(url, token())).expect("a valid config")
}

fn with_ack(url: &str, timeout: Duration) -> Splunk {
    let mut c = SplunkConfig::new(url, token());
    c.ack = Some(AckConfig {
        poll_interval: Duration::from_millis(20),
        timeout,
        channel: "test".into(),
    });
    Splunk::new(c).expect("a valid config")
}

/// cpu and mem of host a at t=1000 and 2000, cpu of host b at t=1000.
fn batch() -> Batch {
    let mut b = Batch::new();
    let a = [("host", "a"), ("empty", "")];
    for (name, v) in [("cpu", 1.0), ("mem", 2.0)] {
        b.push(
            series(name, &a),
            MetricKind::Gauge,
            vec![Sample::new(1000, v), Sample::new(2000, v + 10.0)],
        );
    }
    b.push_one(
        series("cpu", &[("host", "b")]),
        MetricKind::Gauge,
        Sample::new(1000, 3.5),
    );
    b
}

#[test]
fn samples_with_the_same_labels_and_time_share_one_multi_metric_event() {
    let meta = [("index", "metrics_t1".to_owned())];
    let e = encode(&batch(), &meta);
    assert_eq!(
        e.text,
        "{\"time\":1.000,\"event\":\"metric\",\"index\":\"metrics_t1\",\"fields\":{\"host\":\"a\",\"metric_name:cpu\":1.0,\"metric_name:mem\":2.0}}\n\
         {\"time\":2.000,\"event\":\"metric\",\"index\":\"metrics_t1\",\"fields\":{\"host\":\"a\",\"metric_name:cpu\":11.0,\"metric_name:mem\":12.0}}\n\
         {\"time\":1.000,\"event\":\"metric\",\"index\":\"metrics_t1\",\"fields\":{\"host\":\"b\",\"metric_name:cpu\":3.5}}\n"
    );
    assert_eq!(e.events, 3);
    for line in e.text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a JSON event");
    }
}

#[test]
fn a_repeated_metric_at_one_time_starts_a_new_event_and_nan_is_skipped() {
    let mut b = Batch::new();
    let s = series("cpu", &[]);
    b.push(
        s,
        MetricKind::Gauge,
        vec![
            Sample::new(-5, 1.0),
            Sample::new(-5, 2.0),
            Sample::new(7, f64::NAN),
        ],
    );
    let e = encode(&b, &[]);
    assert_eq!(
        e.text,
        "{\"time\":-0.005,\"event\":\"metric\",\"fields\":{\"metric_name:cpu\":1.0}}\n\
         {\"time\":-0.005,\"event\":\"metric\",\"fields\":{\"metric_name:cpu\":2.0}}\n"
    );
    assert_eq!((e.events, e.skipped), (2, 1));
    assert_eq!(seconds(1_700_000_000_123), "1700000000.123");
}

#[test]
fn channel_ids_are_stable_guid_shaped_and_per_tenant() {
    let a = channel_id("seed", &tenant("t1"));
    assert_eq!(a, channel_id("seed", &tenant("t1")));
    assert_ne!(a, channel_id("seed", &tenant("t2")));
    assert_ne!(a, channel_id("other", &tenant("t1")));
    let parts: Vec<usize> = a.split('-').map(str::len).collect();
    assert_eq!(parts, vec![8, 4, 4, 4, 12]);
    assert_eq!(&a[14..15], "4", "version nibble");
}

#[test]
fn config_reads_toml_and_refuses_inline_tokens_and_unknown_fields() {
    let c: SplunkConfig = toml::from_str(
        "url = \"https://splunk:8088\"\ntoken = { env = \"PATH\" }\nindex = \"metrics_{tenant}\"\n[ack]\ntimeout = \"2m\"\n",
    )
    .expect("parses");
    let ack = c.ack.clone().expect("ack set");
    assert_eq!(
        (ack.timeout, ack.poll_interval, ack.channel.as_str()),
        (
            Duration::from_secs(120),
            DEFAULT_ACK_POLL_INTERVAL,
            "metricspool"
        )
    );
    assert!(Splunk::new(c).is_ok());
    assert!(toml::from_str::<SplunkConfig>("url = \"http://x\"\ntoken = \"inline\"").is_err());
    assert!(
        toml::from_str::<SplunkConfig>(
            "url = \"http://x\"\ntoken = { env = \"PATH\" }\nindx = \"a\""
        )
        .is_err()
    );
    let mut c = SplunkConfig::new("http://x", token());
    c.index = Some("m_{host}".into());
    assert!(matches!(
        Splunk::new(c),
        Err(ConfigError::Field { field: "index", .. })
    ));
    let c = SplunkConfig::new(
        "http://x",
        Secret::Env("METRICSPOOL_TEST_UNSET_TOKEN".into()),
    );
    assert!(matches!(
        Splunk::new(c),
        Err(ConfigError::Field { field: "token", .. })
    ));
}

#[tokio::test]
async fn a_request_has_the_path_token_and_concatenated_events() {
    let server = testserver::serve_once(200, &[], SUCCESS).await;
    let mut c = SplunkConfig::new(&server.url, token());
    c.endpoint = HecEndpoint::Event;
    c.index = Some("metrics_{tenant}".into());
    c.sourcetype = Some("metricspool".into());
    c.gzip = true;
    let s = Splunk::new(c).expect("valid");
    let t = tenant("t1");
    let b = batch();
    let out = s.send(request(&t, &b)).await;
    assert!(
        matches!(out, Outcome::Delivered { skipped: 0, .. }),
        "{out:?}"
    );
    let r = server.request().await;
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/services/collector/event")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Splunk {}", token_value()).as_str())
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.header("x-splunk-request-channel"),
        None,
        "no channel without ack"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut text)
        .expect("gzip");
    let meta = [
        ("index", "metrics_t1".to_owned()),
        ("sourcetype", "metricspool".to_owned()),
    ];
    assert_eq!(text, encode(&b, &meta).text);
}

#[tokio::test]
async fn hec_answers_map_to_permanent_retry_and_too_large() {
    let t = tenant("t1");
    let b = batch();
    let cases: &[(u16, &str, &str)] = &[
        (
            400,
            "{\"text\":\"Invalid data format\",\"code\":6,\"invalid-event-number\":0}",
            "permanent",
        ),
        (
            400,
            "{\"text\":\"Incorrect index\",\"code\":7}",
            "permanent",
        ),
        (
            401,
            "{\"text\":\"Token is required\",\"code\":2}",
            "permanent",
        ),
        (403, "{\"text\":\"Invalid token\",\"code\":4}", "permanent"),
        (413, "", "too large"),
        (429, "", "retry"),
        (
            500,
            "{\"text\":\"Internal server error\",\"code\":8}",
            "retry",
        ),
        (503, "{\"text\":\"Server is busy\",\"code\":9}", "retry"),
    ];
    for &(status, body, want) in cases {
        let s = testserver::serve_once(status, &[("Retry-After", "2")], body).await;
        let out = backend(&s.url).send(request(&t, &b)).await;
        let got = testserver::outcome_word(&out, Duration::from_secs(2), body);
        assert_eq!(got, want, "{status} {body}");
    }
}

#[tokio::test]
async fn with_ack_the_send_is_delivered_only_once_the_ack_is_true() {
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(200, "{\"text\":\"Success\",\"code\":0,\"ackId\":7}"),
        SeqAnswer::new(200, "{\"acks\":{\"7\":false}}"),
        SeqAnswer::new(200, "{\"acks\":{\"7\":true}}"),
    ])
    .await;
    let s = with_ack(&server.url, Duration::from_secs(10));
    let t = tenant("t1");
    let b = batch();
    let out = s.send(request(&t, &b)).await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    let channel = channel_id("test", &t);
    assert_eq!(reqs[0].path(), "/services/collector");
    assert_eq!(
        reqs[0].header("x-splunk-request-channel"),
        Some(channel.as_str())
    );
    for poll in &reqs[1..] {
        assert_eq!(poll.path(), "/services/collector/ack");
        assert_eq!(poll.query(), vec![("channel".to_owned(), channel.clone())]);
        assert_eq!(
            poll.header("x-splunk-request-channel"),
            Some(channel.as_str())
        );
        assert!(
            poll.header("authorization")
                .is_some_and(|a| a.starts_with("Splunk "))
        );
        assert_eq!(poll.body, b"{\"acks\":[7]}");
    }
}

#[tokio::test]
async fn an_ack_that_never_comes_gives_a_timeout_retry() {
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(200, "{\"text\":\"Success\",\"code\":0,\"ackId\":3}"),
        SeqAnswer::new(200, "{\"acks\":{\"3\":false}}"),
        SeqAnswer::new(503, "{\"text\":\"ACK is unavailable\",\"code\":20}"),
        SeqAnswer::new(200, "not json"),
    ])
    .await;
    let s = with_ack(&server.url, Duration::from_millis(300));
    let t = tenant("t1");
    let b = batch();
    let out = s.send(request(&t, &b)).await;
    assert!(
        matches!(out, Outcome::Retry { reason: RetryReason::Timeout, ref detail, .. } if detail.contains("ackId 3")),
        "{out:?}"
    );
    assert!(
        server.requests().len() >= 4,
        "it kept polling through errors"
    );
}

#[tokio::test]
async fn a_forwarder_dead_letters_a_batch_refused_with_400() {
    let server = testserver::serve_seq(vec![SeqAnswer::new(
        400,
        "{\"text\":\"Invalid data format\",\"code\":6}",
    )])
    .await;
    let f = Forwarding::start(Arc::new(backend(&server.url)));
    f.append_and_settle(&batch()).await;
    let dl = f.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        (dl[0].kind, dl[0].status, dl[0].samples),
        (RejectKind::Permanent, Some(400), 5)
    );
    assert!(dl[0].reason.contains("Invalid data format"));
}

#[tokio::test]
async fn a_forwarder_waits_for_retry_after_then_delivers() {
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(429, "").header("Retry-After", "1"),
        SeqAnswer::new(200, SUCCESS),
    ])
    .await;
    let f = Forwarding::start(Arc::new(backend(&server.url)));
    f.append_and_settle(&batch()).await;
    let times = server.times();
    assert_eq!(times.len(), 2);
    assert!(times[1] - times[0] >= Duration::from_millis(950));
    assert!(f.dead_letters().is_empty());
}
