//! Protocol tests of `backends::datadog`: requests checked against Datadog's documented
//! metrics v2 API (docs.datadoghq.com/api/latest/metrics/submit-metrics) by local servers
//! that answer as Datadog does. Datadog itself cannot run here: these are not end-to-end.

use std::sync::Arc;

use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::*;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::testserver::{self, Canned, harness, serve_script, tenant};
use crate::forward::Forwarder;
use crate::sample::Sample;

/// A config for `url` with the API key `key-123` in a secret file.
fn config(url: &str) -> DatadogConfig {
    let mut c = DatadogConfig::new(testserver::secret_file("dd.key", "key-123\n"));
    c.url = Some(url.to_owned());
    c
}

fn datadog(url: &str) -> Datadog {
    Datadog::new(config(url)).expect("a valid config")
}

/// A whole second one minute ago, in ms: well inside Datadog's window.
fn recent_second() -> i64 {
    (crate::now_ms() / 1000 - 60) * 1000
}

fn decoded(body: &[u8], encoding: Option<&str>) -> Value {
    let raw = match encoding {
        Some("zstd1") => zstd::stream::decode_all(body).expect("a zstd body"),
        Some("gzip") => testserver::gunzip(body),
        other => panic!("unexpected content-encoding {other:?}"),
    };
    serde_json::from_slice(&raw).expect("a JSON body")
}

fn points_in(v: &Value) -> usize {
    v["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["points"].as_array().expect("points").len())
        .sum()
}

#[tokio::test]
async fn a_request_is_the_documented_v2_series_post_with_the_api_key_and_zstd_json() {
    let server = testserver::serve_once(202, &[], r#"{"errors":[]}"#).await;
    let dd = datadog(&server.url);
    let base = recent_second();
    let b = base / 1000;
    let cpu = series("cpu", &[("zone", "eu"), ("host", "a"), ("tenant", "spoof")]);
    let mut batch = Batch::new();
    batch.push(
        cpu.clone(),
        MetricKind::Gauge,
        vec![Sample::new(base + 1500, 2.5), Sample::new(base + 1200, 1.0)],
    );
    batch.push_one(
        series("requests_total", &[]),
        MetricKind::Counter,
        Sample::new(base, 42.0),
    );
    batch.push(
        series("mystery", &[("empty", "")]),
        MetricKind::Unknown,
        vec![Sample::new(base, -0.0), Sample::new(base, f64::NAN)],
    );
    batch.push_one(cpu, MetricKind::Gauge, Sample::new(base + 999, 0.5));
    let t = tenant("t1");
    let out = dd.send(request(&t, &batch)).await;
    let got = server.request().await;

    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/api/v2/series");
    assert_eq!(got.header("dd-api-key"), Some("key-123"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("content-encoding"), Some("zstd1"));
    assert_eq!(
        out,
        Outcome::Delivered {
            bytes: got.body.len() as u64,
            skipped: 1
        },
        "the NaN is left out and counted"
    );
    let body = decoded(&got.body, got.header("content-encoding"));
    let expected = json!({"series": [
        {"metric": "cpu", "type": 3,
         "points": [{"timestamp": b, "value": 0.5},
                    {"timestamp": b + 1, "value": 2.5},
                    {"timestamp": b + 1, "value": 1.0}],
         "tags": ["tenant:t1", "exported_tenant:spoof", "zone:eu"],
         "resources": [{"name": "a", "type": "host"}]},
        {"metric": "requests_total", "type": 3,
         "points": [{"timestamp": b, "value": 42.0}], "tags": ["tenant:t1"]},
        {"metric": "mystery", "type": 0,
         "points": [{"timestamp": b, "value": -0.0}], "tags": ["tenant:t1"]},
    ]});
    assert_eq!(body, expected);
    let text =
        String::from_utf8(zstd::stream::decode_all(&got.body[..]).expect("zstd")).expect("UTF-8");
    assert!(text.contains(r#""value":-0.0"#), "{text}");
    assert!(
        !text.contains("resources\":[]"),
        "no empty resources: {text}"
    );
}

#[tokio::test]
async fn gzip_is_sent_as_content_encoding_gzip() {
    let server = testserver::serve_once(202, &[], r#"{"errors":[]}"#).await;
    let mut c = config(&server.url);
    c.compression = DatadogCompression::Gzip;
    let dd = Datadog::new(c).expect("valid");
    let mut batch = Batch::new();
    batch.push_one(
        series("up", &[]),
        MetricKind::Gauge,
        Sample::new(recent_second(), 1.0),
    );
    let t = tenant("t1");
    assert!(matches!(
        dd.send(request(&t, &batch)).await,
        Outcome::Delivered { .. }
    ));
    let got = server.request().await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    let body = decoded(&got.body, Some("gzip"));
    assert_eq!(body["series"][0]["metric"], "up");
}

#[test]
fn points_outside_datadogs_window_are_left_out_and_counted() {
    let shape = Shape {
        tenant_tag: String::new(),
        host_label: String::new(),
        max_age_ms: 3_600_000,
    };
    let now = 1_700_000_000_000;
    let mut batch = Batch::new();
    let at = |t: i64| Sample::new(t, 1.0);
    batch.push(
        series("m", &[]),
        MetricKind::Gauge,
        vec![
            at(now - 3_600_001), // just over 1 h old
            at(now - 3_600_000), // exactly 1 h old: kept
            at(now + 600_000),   // exactly 10 min ahead: kept
            at(now + 600_001),   // further ahead
            Sample::new(now, f64::INFINITY),
        ],
    );
    let json = shape.encode(&batch, &tenant("t"), now);
    assert_eq!((json.points, json.skipped), (2, 3));
    let v: Value = serde_json::from_slice(&json.bytes).expect("JSON");
    assert_eq!(
        v["series"][0]["points"].as_array().expect("points").len(),
        2
    );
    assert_eq!(
        v["series"][0]["tags"],
        json!([]),
        "no tenant tag when it is empty"
    );
}

#[tokio::test]
async fn a_batch_entirely_out_of_the_window_is_delivered_as_skipped_without_a_request() {
    // Nothing listens on port 1: a request would come back as a network retry.
    let dd = datadog("http://127.0.0.1:1");
    let mut batch = Batch::new();
    batch.push_one(
        series("m", &[]),
        MetricKind::Gauge,
        Sample::new(crate::now_ms() - 2 * 3_600_000, 1.0),
    );
    let t = tenant("t");
    assert_eq!(
        dd.send(request(&t, &batch)).await,
        Outcome::Delivered {
            bytes: 0,
            skipped: 1
        }
    );
}

#[tokio::test]
async fn an_over_limit_batch_is_too_large_before_any_request() {
    let dd = datadog("http://127.0.0.1:1");
    let batch = testserver::incompressible_batch(3000, 300, recent_second());
    let t = tenant("t");
    let out = dd.send(request(&t, &batch)).await;
    assert!(
        matches!(&out, Outcome::Rejected { kind: RejectKind::TooLarge, status: None, reason } if reason.contains("512,000")),
        "{out:?}"
    );
}

#[test]
fn one_point_over_the_limit_is_permanent() {
    assert!(matches!(
        too_large(1, "x".into()),
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            ..
        }
    ));
    assert!(matches!(
        too_large(2, "x".into()),
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_forwarder_an_over_limit_batch_is_split_and_every_part_arrives() {
    let batch = testserver::incompressible_batch(3000, 300, recent_second());
    let accepted = Canned::status(202).body(r#"{"errors":[]}"#);
    let (server, f, _h) = testserver::forward_batch(vec![accepted], "dd", &batch, datadog).await;
    let requests = server.requests();
    assert!(requests.len() >= 2, "split into parts");
    let mut total = 0;
    for r in &requests {
        assert!(r.request.body.len() <= MAX_PAYLOAD_BYTES);
        total += points_in(&decoded(
            &r.request.body,
            r.request.header("content-encoding"),
        ));
    }
    assert_eq!(total, 3000, "every point arrived once");
    assert_eq!(f.stats().dead_letter_samples, 0);
    f.shutdown(Duration::from_secs(5)).await;
}

/// Forwards a small recent batch through `script` and waits until it is committed.
async fn forward_through(
    script: Vec<Canned>,
) -> (testserver::ScriptServer, Forwarder, testserver::Harness) {
    testserver::forward_ten(script, "dd", recent_second(), datadog).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_with_its_body_goes_to_the_dead_letter_log() {
    let body = r#"{"errors":["Invalid metric name"]}"#;
    let (server, f, h) = forward_through(vec![Canned::status(400).body(body)]).await;
    assert_eq!(server.requests().len(), 1, "not retried");
    let dl = h
        .tenant
        .dead_letters("dd")
        .expect("dlq")
        .list()
        .expect("list");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].samples, 10);
    assert_eq!(dl[0].status, Some(400));
    assert_eq!(dl[0].kind, RejectKind::Permanent);
    assert!(
        dl[0].reason.contains("Invalid metric name"),
        "{}",
        dl[0].reason
    );
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_bad_api_key_goes_to_the_dead_letter_log_naming_the_key() {
    let (server, f, h) = forward_through(vec![
        Canned::status(403).body(r#"{"errors":["Forbidden"]}"#),
    ])
    .await;
    assert_eq!(server.requests().len(), 1, "not retried");
    let dl = h
        .tenant
        .dead_letters("dd")
        .expect("dlq")
        .list()
        .expect("list");
    assert_eq!(dl[0].status, Some(403));
    assert!(dl[0].reason.contains("api_key"), "{}", dl[0].reason);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_answer_splits_the_batch_and_both_halves_arrive() {
    let accepted = Canned::status(202).body(r#"{"errors":[]}"#);
    let (server, f, _h) = forward_through(vec![Canned::status(413), accepted]).await;
    let requests = server.requests();
    let counts: Vec<usize> = requests
        .iter()
        .map(|r| {
            points_in(&decoded(
                &r.request.body,
                r.request.header("content-encoding"),
            ))
        })
        .collect();
    assert_eq!(counts, [10, 5, 5]);
    assert_eq!(f.stats().dead_letter_samples, 0);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_and_then_delivered() {
    let limited = Canned::status(429)
        .header("Retry-After", "1")
        .body(r#"{"errors":["Too many requests"]}"#);
    let accepted = Canned::status(202).body(r#"{"errors":[]}"#);
    let (server, f, _h) = forward_through(vec![limited, accepted]).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(
        requests[0].request.body, requests[1].request.body,
        "the same request"
    );
    assert_eq!(testserver::retries(&f, RetryReason::RateLimited), 1);
    assert_eq!(f.stats().delivered_samples, 10);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_and_then_delivered() {
    let accepted = Canned::status(202).body(r#"{"errors":[]}"#);
    let (server, f, _h) = forward_through(vec![Canned::status(503), accepted]).await;
    assert_eq!(server.requests().len(), 2);
    assert_eq!(testserver::retries(&f, RetryReason::ServerError), 1);
    assert_eq!(f.stats().delivered_samples, 10);
    f.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn statuses_and_rate_limit_headers_are_classified_as_datadog_documents() {
    let answer = |status, headers: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(*n, HeaderValue::from_static(v));
        }
        RawAnswer {
            status,
            headers: map,
            body: b"{}".to_vec(),
            truncated: false,
        }
    };
    assert_eq!(
        classify(&answer(202, &[]), 7, 1),
        Outcome::Delivered {
            bytes: 7,
            skipped: 1
        }
    );
    assert!(matches!(
        classify(&answer(429, &[("x-ratelimit-reset", "12")]), 1, 0),
        Outcome::Retry { reason: RetryReason::RateLimited, retry_after: Some(d), .. } if d == Duration::from_secs(12)
    ));
    assert!(matches!(
        classify(&answer(429, &[("retry-after", "3"), ("x-ratelimit-reset", "12")]), 1, 0),
        Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
    ));
    for s in [408, 500, 502, 503, 504] {
        assert!(
            matches!(
                classify(&answer(s, &[]), 1, 0),
                Outcome::Retry {
                    reason: RetryReason::ServerError,
                    ..
                }
            ),
            "{s}"
        );
    }
    assert!(matches!(
        classify(&answer(413, &[]), 1, 0),
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
    for s in [400, 401, 403, 404] {
        assert!(
            matches!(
                classify(&answer(s, &[]), 1, 0),
                Outcome::Rejected {
                    kind: RejectKind::Permanent,
                    ..
                }
            ),
            "{s}"
        );
    }
}

#[test]
fn the_site_picks_the_api_host_and_url_overrides_it() {
    let mut c = config("http://unused");
    c.url = None;
    c.site = "datadoghq.eu".to_owned();
    let dd = Datadog::new(c.clone()).expect("valid");
    assert_eq!(dd.url.as_str(), "https://api.datadoghq.eu/api/v2/series");
    c.site = "us5.datadoghq.com".to_owned();
    let dd = Datadog::new(c.clone()).expect("valid");
    assert_eq!(
        dd.url.as_str(),
        "https://api.us5.datadoghq.com/api/v2/series"
    );
    for bad in ["", "https://datadoghq.eu", "datadoghq.eu/x"] {
        c.site = bad.to_owned();
        assert!(
            matches!(
                Datadog::new(c.clone()),
                Err(ConfigError::Field { field: "site", .. })
            ),
            "{bad:?}"
        );
    }
    c.url = Some("http://127.0.0.1:9/proxy/".to_owned());
    let dd = Datadog::new(c).expect("valid");
    assert_eq!(dd.url.as_str(), "http://127.0.0.1:9/proxy/api/v2/series");
}

#[test]
fn config_reads_from_toml_with_defaults_and_refuses_unknown_fields_and_inline_keys() {
    let c: DatadogConfig =
        toml::from_str(r#"api_key = { env = "DD_API_KEY" }"#).expect("minimal config");
    assert_eq!(c, DatadogConfig::new(Secret::Env("DD_API_KEY".into())));
    assert_eq!(c.site, "datadoghq.com");
    assert_eq!(c.compression, DatadogCompression::Zstd);
    assert_eq!(c.max_age, Duration::from_secs(3600));
    let full: DatadogConfig = toml::from_str(
        r#"
        api_key = { file = "/etc/metricspool/dd.key" }
        site = "datadoghq.eu"
        url = "http://127.0.0.1:8080"
        compression = "gzip"
        tenant_tag = "customer"
        host_label = ""
        max_age = "2h"
        timeout = "10s"
        "#,
    )
    .expect("full config");
    assert_eq!(full.compression, DatadogCompression::Gzip);
    assert_eq!(full.max_age, Duration::from_secs(7200));
    assert_eq!(full.timeout, Duration::from_secs(10));
    assert!(toml::from_str::<DatadogConfig>(r#"api_key = "inline""#).is_err());
    assert!(toml::from_str::<DatadogConfig>("api_key = { env = \"K\" }\nsitee = \"x\"").is_err());
}

#[test]
fn a_missing_key_or_a_bad_max_age_is_refused() {
    let c = DatadogConfig::new(Secret::Env("METRICSPOOL_TEST_NO_SUCH_DD_KEY".into()));
    assert!(matches!(
        Datadog::new(c),
        Err(ConfigError::Field {
            field: "api_key",
            ..
        })
    ));
    let mut c = config("http://127.0.0.1:1");
    c.max_age = Duration::ZERO;
    assert!(matches!(
        Datadog::new(c),
        Err(ConfigError::Field {
            field: "max_age",
            ..
        })
    ));
}

/// One forwarder per tenant: a tenant whose backend hangs and then answers 429 does not
/// hold up another tenant's forwarder. Shared by the three vendor backends (each forwarder
/// is its own task; the backend type does not matter to the isolation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rate_limited_tenant_does_not_slow_another_tenant() {
    let gate = Arc::new(Semaphore::new(0));
    let stuck = serve_script(vec![
        Canned::status(429)
            .header("Retry-After", "60")
            .gated(Arc::clone(&gate)),
    ])
    .await;
    let fine = serve_script(vec![Canned::status(202).body(r#"{"errors":[]}"#)]).await;
    let h = harness("slow");
    let other = h.spool.tenant(&tenant("quick")).expect("tenant");
    let mut batch = Batch::new();
    batch.push_one(
        series("m", &[]),
        MetricKind::Gauge,
        Sample::new(recent_second(), 1.0),
    );
    h.tenant.append(&batch).await.expect("append");
    let fa = Forwarder::spawn(
        Arc::clone(&h.tenant),
        Arc::new(datadog(&stuck.url)),
        testserver::forwarder_config("dd"),
    )
    .expect("spawn");
    // The slow tenant's request is under way (held by its server) before the other starts.
    while stuck.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fb = Forwarder::spawn(
        Arc::clone(&other),
        Arc::new(datadog(&fine.url)),
        testserver::forwarder_config("dd"),
    )
    .expect("spawn");
    let end = other.append(&batch).await.expect("append").end;
    testserver::wait_committed(&fb, end).await;
    assert_eq!(
        fa.stats().committed,
        0,
        "the slow tenant's request is still held"
    );
    // Let the slow one answer 429 (retry in 60 s); the quick tenant keeps flowing.
    gate.add_permits(1000);
    while testserver::retries(&fa, RetryReason::RateLimited) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = other.append(&batch).await.expect("append").end;
    testserver::wait_committed(&fb, end).await;
    assert_eq!(fa.stats().committed, 0, "waiting out its Retry-After");
    assert_eq!(stuck.requests().len(), 1);
    fa.shutdown(Duration::from_secs(5)).await;
    fb.shutdown(Duration::from_secs(5)).await;
}
