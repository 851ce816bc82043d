//! Tests of `backends::influx`.

use std::io::Read as _;

use super::*;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::{RetryReason, testserver};
use crate::sample::{MetricKind, Sample};

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant")
}

fn one(series: Series, samples: &[(i64, f64)]) -> Batch {
    let mut b = Batch::new();
    let samples = samples.iter().map(|&(t, v)| Sample::new(t, v)).collect();
    b.push(series, MetricKind::Gauge, samples);
    b
}

fn lines(batch: &Batch) -> String {
    line_protocol(batch).text
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .expect("a gzip body");
    text
}

fn escaped(s: &str) -> String {
    let mut out = String::new();
    escape(&mut out, s, &[',', '=', ' ']);
    out
}

#[test]
fn a_line_has_measurement_sorted_tags_float_value_and_ms_timestamp() {
    let s = series("cpu_seconds_total", &[("tenant", "t1"), ("host", "a")]);
    let b = one(s, &[(1_700_000_000_000, 12.5), (1_700_000_015_000, 1.0)]);
    assert_eq!(
        lines(&b),
        "cpu_seconds_total,host=a,tenant=t1 value=12.5 1700000000000\n\
         cpu_seconds_total,host=a,tenant=t1 value=1 1700000015000\n"
    );
    // A timestamp is written even for the epoch and before it.
    let b = one(series("up", &[]), &[(0, 0.0), (-5, -0.0)]);
    assert_eq!(lines(&b), "up value=0 0\nup value=-0 -5\n");
}

#[test]
fn tag_values_are_escaped() {
    let s = series(
        "m",
        &[
            ("a", "with space"),
            ("b", "x,y=z"),
            ("c", "say \"hi\""),
            ("d", "zürich ☃"),
            ("e", ""),
            ("f", "two\nlines"),
        ],
    );
    assert_eq!(
        lines(&one(s, &[(1, 2.0)])),
        "m,a=with\\ space,b=x\\,y\\=z,c=say\\ \"hi\",d=zürich\\ ☃,f=two\\nlines value=2 1\n"
    );
}

#[test]
fn measurement_and_keys_escape_their_special_characters() {
    let mut m = String::new();
    escape(&mut m, "my measure,x=1", &[',', ' ']);
    assert_eq!(
        m, "my\\ measure\\,x=1",
        "`=` needs no escape in a measurement"
    );
    assert_eq!(escaped("k=y"), "k\\=y");
}

#[test]
fn backslashes_never_swallow_a_separator() {
    assert_eq!(
        escaped("C:\\dir\\x"),
        "C:\\dir\\x",
        "kept as is, read back unchanged"
    );
    assert_eq!(
        escaped("C:\\"),
        "C:\\\\",
        "a trailing odd run gets one more"
    );
    assert_eq!(escaped("a\\\\"), "a\\\\", "an even run is left alone");
    assert_eq!(escaped("a\\,b"), "a\\\\\\,b");
    assert_eq!(escaped("a\\\\ b"), "a\\\\\\ b");
}

#[test]
fn values_parse_back_to_the_same_bits() {
    let values = [
        0.1,
        -0.0,
        1e300,
        1e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        123_456_789.123_456_78,
        -2.5e-7,
    ];
    let b = one(series("m", &[]), &values.map(|v| (1, v)));
    for (line, v) in lines(&b).lines().zip(values) {
        let field = line.split(' ').nth(1).expect("a field");
        let text = field.strip_prefix("value=").expect("the value field");
        assert!(!text.contains(['e', 'E', 'i']), "{text}");
        assert_eq!(text.parse::<f64>().expect("a float").to_bits(), v.to_bits());
    }
}

#[test]
fn nan_and_infinities_are_left_out_and_counted() {
    let b = one(
        series("m", &[]),
        &[
            (1, f64::NAN),
            (2, 1.5),
            (3, f64::INFINITY),
            (4, f64::NEG_INFINITY),
        ],
    );
    let lp = line_protocol(&b);
    assert_eq!(lp.text, "m value=1.5 2\n");
    assert_eq!((lp.lines, lp.skipped), (1, 3));
}

#[test]
fn encoding_is_deterministic() {
    let b = one(series("m", &[("a", "1")]), &[(1, 1.0), (2, 2.0)]);
    let first = gzip(lines(&b).as_bytes());
    assert_eq!(gzip(lines(&b).as_bytes()), first);
    assert_eq!(gunzip(&first), lines(&b));
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        retry_after: None,
        body: body.to_owned(),
    }
}

#[test]
fn statuses_are_classified_as_influxdb_documents() {
    assert_eq!(
        classify(&answer(204, ""), 10, 2),
        Outcome::Delivered {
            bytes: 10,
            skipped: 2
        }
    );
    let partial = r#"{"error":"partial write: field type conflict: input field \"value\" is type float, already exists as type integer dropped=1"}"#;
    assert!(matches!(
        classify(&answer(400, partial), 1, 0),
        Outcome::Rejected {
            kind: RejectKind::Partial,
            status: Some(400),
            ..
        }
    ));
    assert!(matches!(
        classify(
            &answer(
                422,
                r#"{"code":"unprocessable entity","message":"failure writing points"}"#
            ),
            1,
            0
        ),
        Outcome::Rejected {
            kind: RejectKind::Partial,
            status: Some(422),
            ..
        }
    ));
    for s in [400, 401, 403, 404] {
        assert!(matches!(
            classify(&answer(s, "unable to parse"), 1, 0),
            Outcome::Rejected {
                kind: RejectKind::Permanent,
                ..
            }
        ));
    }
    assert!(matches!(
        classify(&answer(413, ""), 1, 0),
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
    assert!(matches!(
        classify(
            &answer(500, r#"{"error":"retention policy not found: weekly"}"#),
            1,
            0
        ),
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            ..
        }
    ));
    assert!(matches!(
        classify(&answer(500, "internal error"), 1, 0),
        Outcome::Retry {
            reason: RetryReason::ServerError,
            ..
        }
    ));
    for (status, reason) in [
        (429, RetryReason::RateLimited),
        (503, RetryReason::ServerError),
    ] {
        let mut a = answer(status, "");
        a.retry_after = Some(Duration::from_secs(30));
        assert!(matches!(
            classify(&a, 1, 0),
            Outcome::Retry { reason: r, retry_after: Some(d), .. } if r == reason && d == Duration::from_secs(30)
        ));
    }
}

#[test]
fn bad_configurations_are_refused() {
    assert!(matches!(
        Influx::new(InfluxConfig::v2("http://i:8086", "", "tok")),
        Err(ConfigError::Field { field: "org", .. })
    ));
    assert!(matches!(
        Influx::new(InfluxConfig::v2("http://i:8086", "org", "")),
        Err(ConfigError::Field { field: "token", .. })
    ));
    let mut c = InfluxConfig::v2("http://i:8086", "org", "tok");
    c.headers = vec![("Authorization".to_owned(), "Token other".to_owned())];
    assert!(matches!(
        Influx::new(c),
        Err(ConfigError::ReservedHeader { .. })
    ));
    let mut c = InfluxConfig::v1("http://i:8086");
    c.headers = vec![("content-encoding".to_owned(), "identity".to_owned())];
    assert!(matches!(
        Influx::new(c),
        Err(ConfigError::ReservedHeader { .. })
    ));
    let mut c = InfluxConfig::v1("http://i:8086");
    c.databases.insert(tenant("t"), String::new());
    assert!(matches!(
        Influx::new(c),
        Err(ConfigError::Field {
            field: "databases",
            ..
        })
    ));
}

fn mixed_batch() -> Batch {
    let mut b = one(
        series("temp", &[("room", "living room")]),
        &[(1000, 21.5), (2000, f64::NAN)],
    );
    b.push_one(
        series("hum", &[]),
        MetricKind::Gauge,
        Sample::new(1000, 40.0),
    );
    b
}

#[tokio::test]
async fn v1_writes_to_write_with_db_rp_precision_and_query_credentials() {
    let server = testserver::serve_once(204, &[], "").await;
    let mut c = InfluxConfig::v1(server.url.clone());
    c.api = InfluxApi::V1 {
        retention_policy: Some("autogen".to_owned()),
        auth: V1Auth::Query {
            user: "writer".to_owned(),
            password: "p&ss word".to_owned(),
        },
    };
    c.databases
        .insert(tenant("edge-1"), "metrics db".to_owned());
    let influx = Influx::new(c).expect("valid");
    let (t, batch) = (tenant("edge-1"), mixed_batch());
    let out = influx.send(request(&t, &batch)).await;
    let got = server.request().await;
    assert_eq!(
        out,
        Outcome::Delivered {
            bytes: got.body.len() as u64,
            skipped: 1
        }
    );
    assert_eq!(got.method, "POST");
    assert_eq!(got.path(), "/write");
    let q: Vec<(String, String)> = got.query();
    let expected = [
        ("db", "metrics db"),
        ("rp", "autogen"),
        ("precision", "ms"),
        ("u", "writer"),
        ("p", "p&ss word"),
    ];
    assert_eq!(q, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(got.header("authorization"), None);
    assert_eq!(
        gunzip(&got.body),
        "temp,room=living\\ room value=21.5 1000\nhum value=40 1000\n"
    );
}

#[tokio::test]
async fn v1_basic_auth_and_the_tenant_as_default_database() {
    let server = testserver::serve_once(204, &[], "").await;
    let mut c = InfluxConfig::v1(format!("{}/influx/", server.url));
    c.api = InfluxApi::V1 {
        retention_policy: None,
        auth: V1Auth::Basic {
            user: "u".to_owned(),
            password: "p".to_owned(),
        },
    };
    let influx = Influx::new(c).expect("valid");
    let (t, batch) = (tenant("edge-2"), mixed_batch());
    influx.send(request(&t, &batch)).await;
    let got = server.request().await;
    assert_eq!(got.target, "/influx/write?db=edge-2&precision=ms");
    assert_eq!(got.header("authorization"), Some("Basic dTpw"));
}

#[tokio::test]
async fn v2_writes_to_api_v2_write_with_org_bucket_and_token() {
    let server = testserver::serve_once(204, &[], "").await;
    let mut c = InfluxConfig::v2(server.url.clone(), "my-org", "s3cret");
    c.databases.insert(tenant("edge-1"), "bucket-a".to_owned());
    let influx = Influx::new(c).expect("valid");
    let (t, batch) = (tenant("edge-1"), mixed_batch());
    let out = influx.send(request(&t, &batch)).await;
    let got = server.request().await;
    assert!(matches!(out, Outcome::Delivered { skipped: 1, .. }));
    assert_eq!(
        got.target,
        "/api/v2/write?org=my-org&bucket=bucket-a&precision=ms"
    );
    assert_eq!(got.header("authorization"), Some("Token s3cret"));
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&got.body), line_protocol(&batch).text);
}

#[tokio::test]
async fn a_v2_partial_write_and_a_throttled_write_are_classified() {
    let server = testserver::serve_once(
        422,
        &[],
        r#"{"code":"unprocessable entity","message":"partial write: dropped 1 points"}"#,
    )
    .await;
    let influx = Influx::new(InfluxConfig::v2(server.url.clone(), "o", "t")).expect("valid");
    let (t, batch) = (tenant("a"), mixed_batch());
    let out = influx.send(request(&t, &batch)).await;
    server.request().await;
    assert!(matches!(
        out,
        Outcome::Rejected {
            kind: RejectKind::Partial,
            status: Some(422),
            ..
        }
    ));

    let server = testserver::serve_once(503, &[("Retry-After", "9")], "").await;
    let influx = Influx::new(InfluxConfig::v2(server.url.clone(), "o", "t")).expect("valid");
    let out = influx.send(request(&t, &batch)).await;
    server.request().await;
    assert!(matches!(
        out,
        Outcome::Retry { reason: RetryReason::ServerError, retry_after: Some(d), .. } if d == Duration::from_secs(9)
    ));
}

#[tokio::test]
async fn a_batch_of_only_nan_is_not_sent() {
    // Nothing listens on port 1: a request would come back as a network retry.
    let influx = Influx::new(InfluxConfig::v1("http://127.0.0.1:1")).expect("valid");
    let (t, batch) = (
        tenant("a"),
        one(series("m", &[]), &[(1, f64::NAN), (2, f64::INFINITY)]),
    );
    let out = influx.send(request(&t, &batch)).await;
    assert_eq!(
        out,
        Outcome::Delivered {
            bytes: 0,
            skipped: 2
        }
    );
}

#[tokio::test]
async fn a_transport_error_does_not_reveal_the_query_password() {
    let mut c = InfluxConfig::v1("http://127.0.0.1:1");
    c.api = InfluxApi::V1 {
        retention_policy: None,
        auth: V1Auth::Query {
            user: "u".to_owned(),
            password: "hunter2/+".to_owned(),
        },
    };
    let influx = Influx::new(c).expect("valid");
    let (t, batch) = (tenant("a"), mixed_batch());
    let out = influx.send(request(&t, &batch)).await;
    let Outcome::Retry {
        reason: RetryReason::Network,
        detail,
        ..
    } = out
    else {
        panic!("expected a network retry, got {out:?}");
    };
    assert!(!detail.contains("hunter2"), "{detail}");
}
