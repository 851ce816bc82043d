//! Protocol tests of `backends::otlp`: requests checked against the OTLP/HTTP specification
//! (opentelemetry-proto `docs/specification.md`) and the protobuf schema, by local servers
//! that answer as the specification says a receiver does. No real receiver runs here:
//! these are not end-to-end.

use super::*;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::testserver::{self, Canned, tenant};
use crate::forward::Forwarder;
use crate::sample::Sample;

const PROTOBUF: &str = "application/x-protobuf";

fn otlp(url: &str) -> Otlp {
    Otlp::new(OtlpConfig::new(url)).expect("a valid config")
}

fn decoded(body: &[u8], encoding: Option<&str>) -> ExportMetricsServiceRequest {
    let raw = match encoding {
        Some("gzip") => testserver::gunzip(body),
        None => body.to_vec(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    };
    ExportMetricsServiceRequest::decode(raw.as_slice()).expect("an ExportMetricsServiceRequest")
}

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => panic!("not a string attribute: {other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `(time_unix_nano, value bits, attributes)` of one point.
type PointSummary = (u64, u64, Vec<(String, String)>);

/// Every point of a metric.
fn points(m: &Metric) -> Vec<PointSummary> {
    let dps = match &m.data {
        Some(metric::Data::Gauge(g)) => &g.data_points,
        Some(metric::Data::Sum(s)) => &s.data_points,
        None => panic!("a metric without data"),
    };
    dps.iter()
        .map(|p| {
            assert_eq!(p.start_time_unix_nano, 0);
            let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                panic!("not a double: {:?}", p.value)
            };
            (p.time_unix_nano, v.to_bits(), attrs(&p.attributes))
        })
        .collect()
}

fn point_count(r: &ExportMetricsServiceRequest) -> usize {
    r.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| points(m).len())
        .sum()
}

#[tokio::test]
async fn a_request_is_an_export_metrics_service_request_as_the_schema_defines() {
    let server = testserver::serve_once(200, &[("Content-Type", PROTOBUF)], "").await;
    let mut c = OtlpConfig::new(format!("{}/otlp", server.url));
    c.headers = BTreeMap::from([
        (
            "X-Scope-OrgID".to_owned(),
            HeaderSource::Plain("org-7".to_owned()),
        ),
        (
            "Authorization".to_owned(),
            HeaderSource::Secret(testserver::secret_file("otlp.auth", "Bearer s3cret\n")),
        ),
    ]);
    c.resource_attributes =
        BTreeMap::from([("deployment.environment".to_owned(), "prod".to_owned())]);
    let backend = Otlp::new(c).expect("valid");
    let (t0, t1, t2) = (1_700_000_000_000i64, 1_700_000_001_000, 1_700_000_002_000);
    let cpu = series("cpu", &[("zone", "eu"), ("host", "a"), ("empty", "")]);
    let mut batch = Batch::new();
    batch.push(
        cpu.clone(),
        MetricKind::Gauge,
        vec![Sample::new(t2, 1.0), Sample::new(t1, -0.0)],
    );
    batch.push_one(
        series("requests_total", &[("code", "200")]),
        MetricKind::Counter,
        Sample::new(t1, 5.0),
    );
    batch.push_one(
        series("requests_total", &[("code", "500")]),
        MetricKind::Counter,
        Sample::new(t1, 1.0),
    );
    batch.push(
        series("mystery", &[]),
        MetricKind::Unknown,
        vec![Sample::new(t1, f64::NAN), Sample::new(-5, 1.0)],
    );
    batch.push_one(cpu, MetricKind::Gauge, Sample::new(t0, 0.5));
    let t = tenant("t1");
    let out = backend.send(request(&t, &batch)).await;
    let got = server.request().await;

    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/otlp/v1/metrics");
    assert_eq!(got.header("content-type"), Some(PROTOBUF));
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(got.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(got.header("x-scope-orgid"), Some("org-7"));
    assert_eq!(
        out,
        Outcome::Delivered {
            bytes: got.body.len() as u64,
            skipped: 1
        },
        "the sample before 1970 is left out and counted"
    );

    let req = decoded(&got.body, got.header("content-encoding"));
    assert_eq!(req.resource_metrics.len(), 1);
    let rm = &req.resource_metrics[0];
    let resource = rm.resource.as_ref().expect("a resource");
    assert_eq!(
        attrs(&resource.attributes),
        pairs(&[
            ("service.name", "metricspool"),
            ("tenant", "t1"),
            ("deployment.environment", "prod")
        ])
    );
    assert_eq!(rm.scope_metrics.len(), 1);
    let sm = &rm.scope_metrics[0];
    let scope = sm.scope.as_ref().expect("a scope");
    assert_eq!(scope.name, "metricspool");
    assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = sm.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["cpu", "requests_total", "mystery"]);

    let cpu = &sm.metrics[0];
    assert!(matches!(cpu.data, Some(metric::Data::Gauge(_))));
    let cpu_attrs = pairs(&[("host", "a"), ("zone", "eu")]);
    assert_eq!(
        points(cpu),
        vec![
            (t0 as u64 * 1_000_000, 0.5f64.to_bits(), cpu_attrs.clone()),
            (
                t1 as u64 * 1_000_000,
                (-0.0f64).to_bits(),
                cpu_attrs.clone()
            ),
            (t2 as u64 * 1_000_000, 1.0f64.to_bits(), cpu_attrs),
        ],
        "one series' points grouped in timestamp order, -0.0 kept"
    );

    let total = &sm.metrics[1];
    let Some(metric::Data::Sum(sum)) = &total.data else {
        panic!("a counter is a sum: {:?}", total.data)
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    assert_eq!(
        points(total),
        vec![
            (
                t1 as u64 * 1_000_000,
                5.0f64.to_bits(),
                pairs(&[("code", "200")])
            ),
            (
                t1 as u64 * 1_000_000,
                1.0f64.to_bits(),
                pairs(&[("code", "500")])
            ),
        ],
        "one metric per name, one point per label set"
    );

    let mystery = &sm.metrics[2];
    assert!(matches!(mystery.data, Some(metric::Data::Gauge(_))));
    assert!(
        f64::from_bits(points(mystery)[0].1).is_nan(),
        "NaN is sent as is"
    );
}

#[test]
fn field_numbers_and_wire_types_are_the_schemas() {
    // NumberDataPoint: time_unix_nano = 3 (fixed64), as_double = 4 (double, written even
    // when 0 because it is in a oneof), attributes = 7.
    let p = NumberDataPoint {
        attributes: vec![string_kv("k", "v")],
        start_time_unix_nano: 0,
        time_unix_nano: 1_000_000,
        value: Some(number_data_point::Value::AsDouble(0.0)),
        flags: 0,
    };
    let mut want = vec![0x19, 0x40, 0x42, 0x0f, 0, 0, 0, 0, 0];
    want.extend([0x21, 0, 0, 0, 0, 0, 0, 0, 0]);
    // KeyValue{key = 1: "k", value = 2: AnyValue{string_value = 1: "v"}}
    want.extend([0x3a, 8, 0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v']);
    assert_eq!(p.encode_to_vec(), want);
    // Metric: name = 1, gauge = 5, sum = 7; Sum: aggregation_temporality = 2,
    // is_monotonic = 3.
    let sum = empty_metric("c", true).encode_to_vec();
    assert_eq!(sum, [0x0a, 1, b'c', 0x3a, 4, 0x10, 2, 0x18, 1]);
    let gauge = empty_metric("g", false).encode_to_vec();
    assert_eq!(gauge, [0x0a, 1, b'g', 0x2a, 0]);
    // ExportMetricsServiceRequest.resource_metrics = 1, ResourceMetrics.resource = 1,
    // .scope_metrics = 2.
    let (req, _) = Shape {
        service_name: "s".into(),
        tenant_attribute: String::new(),
        resource_attributes: BTreeMap::new(),
    }
    .request(&Batch::new(), &tenant("t"));
    let bytes = req.encode_to_vec();
    assert_eq!(&bytes[..1], [0x0a]);
    assert_eq!(bytes[2], 0x0a, "ResourceMetrics.resource");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_goes_to_the_dead_letter_log_without_a_retry() {
    let answer = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 3,
            error_message: "3 points had invalid names".into(),
        }),
    };
    let (server, f, h) = forward_through(
        vec![
            Canned::status(200)
                .header("Content-Type", PROTOBUF)
                .body(answer.encode_to_vec()),
        ],
        |_| {},
    )
    .await;
    assert_eq!(
        server.requests().len(),
        1,
        "partial success must not be retried"
    );
    let dl = h
        .tenant
        .dead_letters("otlp")
        .expect("dlq")
        .list()
        .expect("list");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].kind, RejectKind::Partial);
    assert_eq!((dl[0].samples, dl[0].status), (10, Some(200)));
    assert!(
        dl[0].reason.contains("refused 3 data point(s)"),
        "{}",
        dl[0].reason
    );
    assert!(dl[0].reason.contains("invalid names"), "{}", dl[0].reason);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_retried_and_its_status_message_is_the_dead_letter_reason() {
    let status = Status {
        code: 3,
        message: "unknown metric type".into(),
    };
    let (server, f, h) = forward_through(
        vec![
            Canned::status(400)
                .header("Content-Type", PROTOBUF)
                .body(status.encode_to_vec()),
        ],
        |_| {},
    )
    .await;
    assert_eq!(server.requests().len(), 1, "400 must not be retried");
    let dl = h
        .tenant
        .dead_letters("otlp")
        .expect("dlq")
        .list()
        .expect("list");
    assert_eq!(
        (dl[0].kind, dl[0].status),
        (RejectKind::Permanent, Some(400))
    );
    assert_eq!(dl[0].reason, "HTTP 400: unknown metric type (code 3)");
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_not_retried_but_a_503_is_after_its_retry_after() {
    let (server, f, h) = forward_through(vec![Canned::status(500).body("boom")], |_| {}).await;
    assert_eq!(
        server.requests().len(),
        1,
        "OTLP retries only 429/502/503/504"
    );
    assert_eq!(f.stats().dead_letter_samples, 10);
    drop((server, h));
    f.shutdown(Duration::from_secs(5)).await;

    let busy = Canned::status(503).header("Retry-After", "1");
    let (server, f, _h) = forward_through(vec![busy, Canned::status(200)], |_| {}).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(requests[0].request.body, requests[1].request.body);
    assert_eq!(testserver::retries(&f, RetryReason::ServerError), 1);
    assert_eq!(f.stats().delivered_samples, 10);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_and_then_delivered() {
    let limited = Canned::status(429).header("Retry-After", "1");
    let (server, f, _h) = forward_through(vec![limited, Canned::status(200)], |_| {}).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
    assert_eq!(testserver::retries(&f, RetryReason::RateLimited), 1);
    f.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_answer_splits_the_batch_and_both_halves_arrive() {
    let (server, f, _h) =
        forward_through(vec![Canned::status(413), Canned::status(200)], |_| {}).await;
    let counts: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| {
            point_count(&decoded(
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
async fn a_batch_over_max_request_bytes_is_split_before_sending_and_every_part_arrives() {
    let mut c = OtlpConfig::new("http://127.0.0.1:1");
    c.max_request_bytes = 2048;
    let backend = Otlp::new(c).expect("valid");
    let batch = testserver::incompressible_batch(40, 100, 1_700_000_000_000);
    let t = tenant("t");
    let out = backend.send(request(&t, &batch)).await;
    assert!(
        matches!(
            out,
            Outcome::Rejected {
                kind: RejectKind::TooLarge,
                status: None,
                ..
            }
        ),
        "refused before any request: {out:?}"
    );

    let script = vec![Canned::status(200)];
    let (server, f, _h) = testserver::forward_batch(script, "otlp", &batch, |url| {
        let mut c = OtlpConfig::new(url);
        c.max_request_bytes = 2048;
        c.compression = OtlpCompression::None;
        Otlp::new(c).expect("valid")
    })
    .await;
    let requests = server.requests();
    assert!(requests.len() >= 2, "split into parts");
    let mut total = 0;
    for r in &requests {
        assert!(r.request.body.len() <= 2048);
        assert_eq!(r.request.header("content-encoding"), None);
        total += point_count(&decoded(&r.request.body, None));
    }
    assert_eq!(total, 40, "every point arrived once");
    f.shutdown(Duration::from_secs(5)).await;
}

/// Forwards ten points through `script` with a config adjusted by `adjust` and waits until
/// they are committed.
async fn forward_through(
    script: Vec<Canned>,
    adjust: impl FnOnce(&mut OtlpConfig),
) -> (testserver::ScriptServer, Forwarder, testserver::Harness) {
    testserver::forward_ten(script, "otlp", 1_700_000_000_000, |url| {
        let mut c = OtlpConfig::new(url);
        adjust(&mut c);
        Otlp::new(c).expect("valid")
    })
    .await
}

fn raw(status: u16, content_type: &str, body: Vec<u8>) -> RawAnswer {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("a header value"),
    );
    RawAnswer {
        status,
        headers,
        body,
        truncated: false,
    }
}

#[test]
fn success_answers_are_read_within_bounds_and_never_fail_a_delivered_request() {
    let delivered = |a: &RawAnswer| matches!(classify(a, 1, 0), Outcome::Delivered { .. });
    // Empty body, zero rejected with a warning, garbage, and a cut body: all delivered.
    assert!(delivered(&raw(200, PROTOBUF, Vec::new())));
    let warning = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 0,
            error_message: "deprecated attribute".into(),
        }),
    };
    assert!(delivered(&raw(200, PROTOBUF, warning.encode_to_vec())));
    assert!(delivered(&raw(200, PROTOBUF, vec![0xff; 64])));
    let mut cut = raw(200, PROTOBUF, vec![0x0a, 0x80]);
    cut.truncated = true;
    assert!(delivered(&cut));
    // Proto-JSON answers (64-bit integers as strings or numbers).
    let json = br#"{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"bad"}}"#;
    assert!(matches!(
        classify(&raw(200, "application/json", json.to_vec()), 1, 0),
        Outcome::Rejected { kind: RejectKind::Partial, reason, .. } if reason.contains("refused 2")
    ));
    let json = br#"{"partialSuccess":{"rejectedDataPoints":0}}"#;
    assert!(delivered(&raw(200, "application/json", json.to_vec())));
}

#[test]
fn only_429_502_503_504_are_retried() {
    let c = |s| classify(&raw(s, "text/plain", b"x".to_vec()), 1, 0);
    assert!(matches!(
        c(429),
        Outcome::Retry {
            reason: RetryReason::RateLimited,
            ..
        }
    ));
    for s in [502, 503, 504] {
        assert!(matches!(c(s), Outcome::Retry { .. }), "{s}");
    }
    assert!(matches!(
        c(413),
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
    assert!(matches!(
        classify(
            &raw(400, "text/plain", b"out of order sample".to_vec()),
            1,
            0
        ),
        Outcome::Rejected {
            kind: RejectKind::Duplicate,
            ..
        }
    ));
    for s in [400, 401, 403, 404, 408, 415, 500, 501, 505] {
        assert!(
            matches!(
                c(s),
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
fn config_reads_from_toml_with_defaults_and_refuses_what_cannot_work() {
    let c: OtlpConfig = toml::from_str("").expect("every field has a default");
    assert_eq!(c, OtlpConfig::default());
    assert_eq!(c.url, "http://localhost:4318");
    let full: OtlpConfig = toml::from_str(
        r#"
        url = "https://otlp.example.com/prefix"
        compression = "none"
        service_name = "edge-gateway"
        tenant_attribute = "customer"
        out_of_order = true
        max_request_bytes = 4194304
        timeout = "10s"
        [headers]
        authorization = { env = "OTLP_AUTH" }
        x-scope-orgid = "org-7"
        [resource_attributes]
        "deployment.environment" = "prod"
        "#,
    )
    .expect("full config");
    assert_eq!(
        full.headers["authorization"],
        HeaderSource::Secret(Secret::Env("OTLP_AUTH".into()))
    );
    assert_eq!(
        full.headers["x-scope-orgid"],
        HeaderSource::Plain("org-7".into())
    );
    assert!(toml::from_str::<OtlpConfig>("urll = \"x\"").is_err());

    let mut c = OtlpConfig::new("http://collector:4318");
    c.resource_attributes = BTreeMap::from([("tenant".to_owned(), "x".to_owned())]);
    assert!(matches!(
        Otlp::new(c),
        Err(ConfigError::Field {
            field: "resource_attributes",
            ..
        })
    ));
    let mut c = OtlpConfig::new("http://collector:4318");
    c.headers = BTreeMap::from([(
        "Content-Encoding".to_owned(),
        HeaderSource::Plain("zstd".to_owned()),
    )]);
    assert!(matches!(
        Otlp::new(c),
        Err(ConfigError::ReservedHeader { .. })
    ));
    let mut c = OtlpConfig::new("http://collector:4318");
    c.headers = BTreeMap::from([(
        "authorization".to_owned(),
        HeaderSource::Secret(Secret::Env("METRICSPOOL_TEST_NO_SUCH_OTLP_AUTH".into())),
    )]);
    assert!(matches!(Otlp::new(c), Err(ConfigError::Header { .. })));
    let otlp = otlp("http://collector:4318");
    assert!(!otlp.accepts_out_of_order());
    assert_eq!(otlp.kind(), "otlp");
    assert_eq!(otlp.url.as_str(), "http://collector:4318/v1/metrics");
}
