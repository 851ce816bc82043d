//! Protocol tests of `backends::newrelic`: requests checked against New Relic's documented
//! Metric API (docs.newrelic.com, "Report metrics via the Metric API") by local servers that
//! answer as New Relic does. New Relic itself cannot run here: these are not end-to-end.

use serde_json::{Value, json};

use super::*;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::testserver::{self, Canned, tenant};
use crate::forward::Forwarder;
use crate::sample::{MetricKind, Sample};

const ACCEPTED: &str = r#"{"requestId":"f0e1d2c3-0000-4000-8000-000000000000"}"#;

fn config(url: &str) -> NewRelicConfig {
    let mut c = NewRelicConfig::new(testserver::secret_file("nr.key", "NRAK-123\n"));
    c.url = Some(url.to_owned());
    c
}

fn newrelic(url: &str) -> NewRelic {
    NewRelic::new(config(url)).expect("a valid config")
}

/// A whole second one minute ago, in ms.
fn recent() -> i64 {
    (crate::now_ms() / 1000 - 60) * 1000
}

fn gunzip_json(body: &[u8]) -> Value {
    serde_json::from_slice(&testserver::gunzip(body)).expect("a JSON body")
}

fn points_in(v: &Value) -> usize {
    v[0]["metrics"].as_array().expect("metrics").len()
}

#[tokio::test]
async fn a_request_is_the_documented_metric_api_post_with_the_api_key_and_gzip_json() {
    let server = testserver::serve_once(202, &[], ACCEPTED).await;
    let nr = newrelic(&server.url);
    let t0 = recent() + 123;
    let mut batch = Batch::new();
    batch.push(
        series("cpu", &[("zone", "eu"), ("tenant", "spoof"), ("empty", "")]),
        MetricKind::Gauge,
        vec![Sample::new(t0, 2.5), Sample::new(t0 - 1, f64::NAN)],
    );
    batch.push_one(
        series("requests_total", &[]),
        MetricKind::Counter,
        Sample::new(t0, 42.0),
    );
    let t = tenant("t1");
    let out = nr.send(request(&t, &batch)).await;
    let got = server.request().await;
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/metric/v1");
    assert_eq!(got.header("api-key"), Some("NRAK-123"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(
        out,
        Outcome::Delivered {
            bytes: got.body.len() as u64,
            skipped: 1
        }
    );
    let expected = json!([{
        "common": {"attributes": {"tenant": "t1"}},
        "metrics": [
            {"name": "cpu", "type": "gauge", "value": 2.5, "timestamp": t0,
             "attributes": {"exported_tenant": "spoof", "zone": "eu"}},
            {"name": "requests_total", "type": "gauge", "value": 42.0, "timestamp": t0},
        ]
    }]);
    assert_eq!(gunzip_json(&got.body), expected);
}

#[test]
fn points_outside_new_relics_window_are_left_out_and_counted() {
    let shape = Shape {
        tenant_attribute: String::new(),
        max_age_ms: DEFAULT_MAX_AGE.as_millis() as i64,
    };
    let now = 1_700_000_000_000;
    let day = 86_400_000;
    let at = |t: i64| Sample::new(t, 1.0);
    let mut batch = Batch::new();
    batch.push(
        series("m", &[]),
        MetricKind::Gauge,
        vec![
            at(now - 2 * day - 1),
            at(now - 2 * day),
            at(now + day),
            at(now + day + 1),
            Sample::new(now, f64::NEG_INFINITY),
        ],
    );
    let json = shape.encode(&batch, &tenant("t"), now);
    assert_eq!((json.points, json.skipped), (2, 3));
    let v: Value = serde_json::from_slice(&json.bytes).expect("JSON");
    assert!(
        v[0].get("common").is_none(),
        "no tenant attribute configured"
    );
    assert_eq!(points_in(&v), 2);
}

#[tokio::test]
async fn an_over_limit_batch_is_too_large_before_any_request() {
    let nr = newrelic("http://127.0.0.1:1");
    let batch = testserver::incompressible_batch(4000, 400, recent());
    let t = tenant("t");
    let out = nr.send(request(&t, &batch)).await;
    assert!(
        matches!(
            &out,
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                status: None,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(matches!(
        too_large(1, 2_000_000),
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_forwarder_an_over_limit_batch_is_split_and_every_part_arrives() {
    let batch = testserver::incompressible_batch(4000, 400, recent());
    let accepted = Canned::status(202).body(ACCEPTED);
    let (server, f, _h) = testserver::forward_batch(vec![accepted], "nr", &batch, newrelic).await;
    let requests = server.requests();
    assert!(requests.len() >= 2, "split into parts");
    let mut total = 0;
    for r in &requests {
        assert!(r.request.body.len() <= MAX_PAYLOAD_BYTES);
        total += points_in(&gunzip_json(&r.request.body));
    }
    assert_eq!(total, 4000, "every point arrived once");
    f.shutdown(Duration::from_secs(5)).await;
}

/// Forwards ten recent points through `script` and waits until they are committed.
async fn forward_through(
    script: Vec<Canned>,
) -> (testserver::ScriptServer, Forwarder, testserver::Harness) {
    testserver::forward_ten(script, "nr", recent(), newrelic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_with_its_body_goes_to_the_dead_letter_log() {
    let body = r#"{"error":"Invalid JSON: unexpected token"}"#;
    let (server, f, h) = forward_through(vec![Canned::status(400).body(body)]).await;
    assert_eq!(server.requests().len(), 1, "not retried");
    let dl = h
        .tenant
        .dead_letters("nr")
        .expect("dlq")
        .list()
        .expect("list");
    assert_eq!(dl.len(), 1);
    assert_eq!((dl[0].samples, dl[0].status), (10, Some(400)));
    assert_eq!(dl[0].kind, RejectKind::Permanent);
    assert!(
        dl[0].reason.contains("unexpected token"),
        "{}",
        dl[0].reason
    );
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_answer_splits_the_batch_and_both_halves_arrive() {
    let (server, f, _h) = forward_through(vec![
        Canned::status(413),
        Canned::status(202).body(ACCEPTED),
    ])
    .await;
    let counts: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| points_in(&gunzip_json(&r.request.body)))
        .collect();
    assert_eq!(counts, [10, 5, 5]);
    assert_eq!(f.stats().dead_letter_samples, 0);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_and_then_delivered() {
    let limited = Canned::status(429).header("Retry-After", "1");
    let (server, f, _h) = forward_through(vec![limited, Canned::status(202).body(ACCEPTED)]).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(testserver::retries(&f, RetryReason::RateLimited), 1);
    assert_eq!(f.stats().delivered_samples, 10);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_and_then_delivered() {
    let (server, f, _h) = forward_through(vec![
        Canned::status(500),
        Canned::status(202).body(ACCEPTED),
    ])
    .await;
    assert_eq!(server.requests().len(), 2);
    assert_eq!(testserver::retries(&f, RetryReason::ServerError), 1);
    assert_eq!(f.stats().delivered_samples, 10);
    f.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn statuses_are_classified_as_new_relic_documents() {
    let answer = |status| RawAnswer {
        status,
        headers: HeaderMap::new(),
        body: Vec::new(),
        truncated: false,
    };
    assert!(matches!(
        classify(&answer(202), 1, 0),
        Outcome::Delivered { .. }
    ));
    assert!(matches!(
        classify(&answer(429), 1, 0),
        Outcome::Retry {
            reason: RetryReason::RateLimited,
            ..
        }
    ));
    for s in [408, 500, 503] {
        assert!(
            matches!(classify(&answer(s), 1, 0), Outcome::Retry { .. }),
            "{s}"
        );
    }
    assert!(matches!(
        classify(&answer(413), 1, 0),
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
    for s in [400, 403, 404, 405, 411, 414, 415, 431] {
        assert!(
            matches!(
                classify(&answer(s), 1, 0),
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
fn the_region_picks_the_endpoint_and_url_overrides_it() {
    let mut c = config("http://unused");
    c.url = None;
    let nr = NewRelic::new(c.clone()).expect("valid");
    assert_eq!(nr.url.as_str(), "https://metric-api.newrelic.com/metric/v1");
    c.region = NewRelicRegion::Eu;
    let nr = NewRelic::new(c.clone()).expect("valid");
    assert_eq!(
        nr.url.as_str(),
        "https://metric-api.eu.newrelic.com/metric/v1"
    );
    c.max_age = Duration::from_secs(49 * 3600);
    assert!(matches!(
        NewRelic::new(c),
        Err(ConfigError::Field {
            field: "max_age",
            ..
        })
    ));
}

#[test]
fn config_reads_from_toml_with_defaults_and_refuses_unknown_fields_and_inline_keys() {
    let c: NewRelicConfig =
        toml::from_str(r#"api_key = { env = "NEW_RELIC_LICENSE_KEY" }"#).expect("minimal");
    assert_eq!(
        c,
        NewRelicConfig::new(Secret::Env("NEW_RELIC_LICENSE_KEY".into()))
    );
    let full: NewRelicConfig = toml::from_str(
        r#"
        api_key = { file = "/etc/metricspool/nr.key" }
        region = "eu"
        url = "http://127.0.0.1:8080"
        tenant_attribute = "customer"
        max_age = "6h"
        timeout = "10s"
        "#,
    )
    .expect("full config");
    assert_eq!(full.region, NewRelicRegion::Eu);
    assert_eq!(full.max_age, Duration::from_secs(6 * 3600));
    assert!(toml::from_str::<NewRelicConfig>(r#"api_key = "inline""#).is_err());
    assert!(
        toml::from_str::<NewRelicConfig>("api_key = { env = \"K\" }\nregoin = \"eu\"").is_err()
    );
}
