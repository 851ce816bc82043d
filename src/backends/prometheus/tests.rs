//! Tests of `backends::prometheus`.

use super::*;
use crate::backends::RetryReason;
use crate::backends::testserver;
use crate::sample::{MetricKind, Sample as Point};
use crate::tenant::TenantId;

pub(crate) fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    Series::new(name, labels.iter().copied()).expect("valid series")
}

/// A batch with the same series in two entries, out-of-order timestamps, a NaN with a
/// payload, -0.0 and an empty-valued label.
pub(crate) fn tricky_batch() -> Batch {
    let mut b = Batch::new();
    let up = series(
        "up",
        &[
            ("job", "api"),
            ("Zone", "eu"),
            ("__meta", "x"),
            ("empty", ""),
        ],
    );
    let other = series("other", &[("a", "1")]);
    b.push(
        up.clone(),
        MetricKind::Gauge,
        vec![Point::new(30, 1.0), Point::new(10, -0.0)],
    );
    b.push(other, MetricKind::Counter, vec![Point::new(5, 2.5)]);
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    b.push(
        up,
        MetricKind::Gauge,
        vec![Point::new(20, stale), Point::new(10, 7.0)],
    );
    b
}

pub(crate) fn request<'a>(tenant: &'a TenantId, batch: &'a Batch) -> SendRequest<'a> {
    SendRequest {
        tenant,
        batch,
        offsets: 0..batch.sample_count() as u64,
        part: (0, 1),
        resend: false,
    }
}

fn names(ts: &TimeSeries) -> Vec<&str> {
    ts.labels.iter().map(|l| &*l.name).collect()
}

#[test]
fn encoding_round_trips_with_sorted_labels_merged_series_and_exact_bits() {
    let body = encode(&tricky_batch()).expect("encodes");
    let wr = decode_write_request(&body).expect("decodes");
    assert_eq!(wr.timeseries.len(), 2, "the two `up` entries are merged");
    let up = &wr.timeseries[0];
    // Byte order: uppercase before `_`, `__meta` before `__name__`, lowercase after;
    // the empty-valued label is left out.
    assert_eq!(names(up), ["Zone", "__meta", "__name__", "job"]);
    assert_eq!(up.labels[2].value, "up");
    let ts: Vec<i64> = up.samples.iter().map(|s| s.timestamp).collect();
    assert_eq!(ts, [10, 10, 20, 30], "sorted by timestamp");
    // Stable sort: the -0.0 at t=10 came first in the batch, then 7.0.
    assert_eq!(up.samples[0].value.to_bits(), (-0.0f64).to_bits());
    assert_eq!(up.samples[1].value, 7.0);
    assert_eq!(up.samples[2].value.to_bits(), 0x7ff0_0000_0000_0002);
    assert_eq!(names(&wr.timeseries[1]), ["__name__", "a"]);
    assert_eq!(
        wr.timeseries[1].samples,
        [Sample {
            value: 2.5,
            timestamp: 5
        }]
    );
}

#[test]
fn a_zero_value_left_out_by_other_senders_decodes_as_zero() {
    // WriteRequest{timeseries: [{samples: [{timestamp: 5}]}]}: Go's proto3 encoders leave
    // out a value equal to 0, which is why ours marks it required (else -0.0 is lost).
    let raw = [0x0a, 0x04, 0x12, 0x02, 0x10, 0x05];
    let body = snap::raw::Encoder::new().compress_vec(&raw).expect("small");
    let wr = decode_write_request(&body).expect("decodes");
    let s = &wr.timeseries[0].samples[0];
    assert_eq!((s.value.to_bits(), s.timestamp), (0, 5));
}

/// The direct encoder writes exactly what prost writes for `write_request`.
#[test]
fn the_direct_encoder_matches_prost_byte_for_byte() {
    use prost::Message;
    let same = |b: &Batch| {
        assert_eq!(encode_raw(b), write_request(b).encode_to_vec(), "{b:?}");
    };
    same(&Batch::new());
    same(&tricky_batch());
    // Series that differ only in an empty-valued label are one remote-write series;
    // timestamps 0, negative and large; labels on both sides of `__name__`.
    let mut b = Batch::new();
    let a = series("m", &[("A", "x"), ("b", "y")]);
    let a_empty = series("m", &[("A", "x"), ("b", "y"), ("c", "")]);
    let long = series("m", &[("z", &"v".repeat(300)), ("_a", "é")]);
    b.push(
        a.clone(),
        MetricKind::Gauge,
        vec![Point::new(0, 0.0), Point::new(-5, 1.5)],
    );
    b.push(
        long.clone(),
        MetricKind::Counter,
        vec![Point::new(i64::MAX, 3.0)],
    );
    b.push(
        a_empty,
        MetricKind::Gauge,
        vec![Point::new(-5, 2.5), Point::new(i64::MIN, f64::NAN)],
    );
    b.push(long, MetricKind::Counter, vec![Point::new(1, -0.0)]);
    b.push(
        a,
        MetricKind::Gauge,
        vec![Point::new(1_750_000_000_000, 9.0)],
    );
    same(&b);
    // Many series, one sample each, as a scrape batch: a pseudo-random mix.
    let mut b = Batch::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..2000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let s = series(
            &format!("metric_{}", x % 7),
            &[
                ("instance", &format!("node-{}", (x >> 8) % 50)),
                ("job", if x & 1 == 0 { "node" } else { "" }),
                ("Zone", &format!("{}", (x >> 20) % 3)),
            ],
        );
        let ts = 1_750_000_000_000 + ((x >> 30) % 100) as i64 * 15_000 - i as i64;
        b.push_one(s, MetricKind::Gauge, Point::new(ts, f64::from_bits(x >> 3)));
    }
    same(&b);
}

#[test]
fn the_same_batch_always_encodes_to_the_same_bytes() {
    let a = encode(&tricky_batch()).expect("encodes");
    for _ in 0..20 {
        assert_eq!(encode(&tricky_batch()).expect("encodes"), a);
    }
}

#[test]
fn the_body_is_snappy_block_format_not_framed() {
    let body = encode(&tricky_batch()).expect("encodes");
    // The framed format starts with a stream identifier chunk (0xff "sNaPpY").
    assert_ne!(body.first(), Some(&0xff));
    assert!(snap::raw::Decoder::new().decompress_vec(&body).is_ok());
}

#[test]
fn decoding_refuses_a_body_announcing_more_than_64_mib() {
    // A snappy block starts with the decompressed length as a varint: announce 64 MiB + 1.
    let mut body = Vec::new();
    let mut n = (MAX_DECODED_LEN + 1) as u64;
    while n >= 0x80 {
        body.push((n as u8) | 0x80);
        n >>= 7;
    }
    body.push(n as u8);
    assert!(matches!(
        decode_write_request(&body),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        decode_write_request(b"\x05abc"),
        Err(DecodeError::Snappy(_))
    ));
    let not_proto = snap::raw::Encoder::new()
        .compress_vec(&[0xff; 8])
        .expect("small");
    assert!(matches!(
        decode_write_request(&not_proto),
        Err(DecodeError::Protobuf(_))
    ));
}

#[test]
fn reserved_headers_cannot_be_overridden() {
    for name in [
        "Content-Encoding",
        "content-type",
        "User-Agent",
        "X-Prometheus-Remote-Write-Version",
    ] {
        let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
        c.headers = vec![(name.to_owned(), "x".to_owned())];
        assert!(
            matches!(RemoteWrite::new(c), Err(ConfigError::ReservedHeader { .. })),
            "{name}"
        );
    }
    let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
    c.auth = Auth::Bearer("t".to_owned());
    c.headers = vec![("Authorization".to_owned(), "Basic x".to_owned())];
    assert!(matches!(
        RemoteWrite::new(c),
        Err(ConfigError::ReservedHeader { .. })
    ));
    let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
    c.headers = vec![("X-Custom".to_owned(), "yes".to_owned())];
    assert!(RemoteWrite::new(c).is_ok());
}

#[test]
fn bad_urls_are_refused() {
    for url in ["not a url", "ftp://host/x", "unix:/tmp/sock"] {
        assert!(
            matches!(
                RemoteWrite::new(RemoteWriteConfig::new(url)),
                Err(ConfigError::Url { .. })
            ),
            "{url}"
        );
    }
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        retry_after: None,
        body: body.to_owned(),
    }
}

#[test]
fn a_400_naming_stored_samples_is_a_duplicate() {
    for body in [
        "out of order sample",
        "duplicate sample for timestamp",
        "too old sample",
        "out of bounds",
        "Out Of Order Sample",
        "failed pushing to ingester: user=t: the sample has been rejected (err-mimir-sample-duplicate-timestamp)",
        "err-mimir-sample-timestamp-too-old",
    ] {
        assert!(
            matches!(
                classify(&answer(400, body), 1),
                Outcome::Rejected {
                    kind: RejectKind::Duplicate,
                    status: Some(400),
                    ..
                }
            ),
            "{body}"
        );
    }
    assert!(matches!(
        classify(&answer(400, "invalid metric name"), 1),
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            ..
        }
    ));
    // Only a 400 means "already stored": a 500 saying "out of order" is still retried.
    assert!(matches!(
        classify(&answer(500, "out of order sample"), 1),
        Outcome::Retry {
            reason: RetryReason::ServerError,
            ..
        }
    ));
    // Except Prometheus 2.42's answer to a sample older than its out-of-order window.
    assert!(matches!(
        classify(&answer(500, "too old sample\n"), 1),
        Outcome::Rejected {
            kind: RejectKind::Duplicate,
            status: Some(500),
            ..
        }
    ));
}

#[test]
fn other_statuses_follow_the_default_classification() {
    assert!(matches!(
        classify(&answer(204, ""), 9),
        Outcome::Delivered {
            bytes: 9,
            skipped: 0
        }
    ));
    let mut limited = answer(429, "slow down");
    limited.retry_after = Some(Duration::from_secs(3));
    assert!(matches!(
        classify(&limited, 1),
        Outcome::Retry { reason: RetryReason::RateLimited, retry_after: Some(d), .. } if d == Duration::from_secs(3)
    ));
    assert!(matches!(
        classify(&answer(413, ""), 1),
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
    assert!(matches!(
        classify(&answer(401, ""), 1),
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            ..
        }
    ));
}

#[test]
fn out_of_order_is_accepted_only_with_a_window() {
    let mut c = RemoteWriteConfig::new("http://localhost:9090/api/v1/write");
    assert!(
        !RemoteWrite::new(c.clone())
            .expect("valid")
            .accepts_out_of_order()
    );
    c.out_of_order_window = true;
    assert!(RemoteWrite::new(c).expect("valid").accepts_out_of_order());
}

#[tokio::test]
async fn a_request_carries_the_spec_headers_and_a_decodable_body() {
    let server = testserver::serve_once(204, &[], "").await;
    let mut c = RemoteWriteConfig::new(format!("{}/api/v1/write", server.url));
    c.auth = Auth::Basic {
        user: "u".to_owned(),
        password: "p".to_owned(),
    };
    c.headers = vec![("X-Extra".to_owned(), "1".to_owned())];
    let rw = RemoteWrite::new(c).expect("valid");
    let tenant = TenantId::new("t1").expect("valid");
    let batch = tricky_batch();
    let out = rw.send(request(&tenant, &batch)).await;
    let got = server.request().await;
    let expected = encode(&batch).expect("encodes");
    assert_eq!(
        out,
        Outcome::Delivered {
            bytes: expected.len() as u64,
            skipped: 0
        }
    );
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/api/v1/write");
    assert_eq!(got.header("content-encoding"), Some("snappy"));
    assert_eq!(got.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(
        got.header("x-prometheus-remote-write-version"),
        Some("0.1.0")
    );
    assert_eq!(got.header("user-agent"), Some(USER_AGENT));
    assert_eq!(got.header("authorization"), Some("Basic dTpw"));
    assert_eq!(got.header("x-extra"), Some("1"));
    assert_eq!(got.body, expected);
    // NaN != NaN, so compare the decoded request by re-encoding it.
    let decoded = decode_write_request(&got.body).expect("decodes");
    assert_eq!(
        prost::Message::encode_to_vec(&decoded),
        prost::Message::encode_to_vec(&write_request(&batch))
    );
}

#[tokio::test]
async fn a_duplicate_answer_from_the_receiver_is_classified() {
    let server =
        testserver::serve_once(400, &[], "out of order sample for series up{job=\"api\"}").await;
    let rw = RemoteWrite::new(RemoteWriteConfig::new(server.url.clone())).expect("valid");
    let tenant = TenantId::new("t1").expect("valid");
    let batch = tricky_batch();
    let out = rw.send(request(&tenant, &batch)).await;
    assert!(matches!(
        out,
        Outcome::Rejected {
            kind: RejectKind::Duplicate,
            status: Some(400),
            ..
        }
    ));
    assert_eq!(server.request().await.target, "/");
}
