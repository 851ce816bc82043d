//! Tests of `ingest::line_protocol`.

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn decode(body: &str) -> Result<Batch, IngestError> {
    decode_line_protocol(
        body.as_bytes(),
        Precision::Ns,
        NOW,
        &IngestLimits::default(),
    )
}

fn message(err: IngestError) -> String {
    match err {
        IngestError::Malformed { format, message } => {
            assert_eq!(format, "line protocol");
            message
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn error(body: &str) -> String {
    message(decode(body).expect_err(body))
}

/// (name, labels, timestamp, value) of one sample.
type Flat = (String, Vec<(String, String)>, i64, f64);

fn flat(batch: &Batch) -> Vec<Flat> {
    batch
        .iter()
        .map(|(s, _, x)| {
            let labels = s
                .labels()
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()));
            (
                s.name().to_owned(),
                labels.collect(),
                x.timestamp_ms,
                x.value,
            )
        })
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn every_field_type_becomes_measurement_underscore_field() {
    let b = decode(
        "weather,location=us-midwest,season=summer temp=82.5,hum=71i,count=3u,ok=true,bad=F,note=\"hi\" 1700000000123456789\n",
    )
    .expect("decodes");
    let tags = l(&[("location", "us-midwest"), ("season", "summer")]);
    let t = 1_700_000_000_123;
    assert_eq!(
        flat(&b),
        vec![
            ("weather_temp".into(), tags.clone(), t, 82.5),
            ("weather_hum".into(), tags.clone(), t, 71.0),
            ("weather_count".into(), tags.clone(), t, 3.0),
            ("weather_ok".into(), tags.clone(), t, 1.0),
            ("weather_bad".into(), tags, t, 0.0),
        ]
    );
    assert_eq!(b.entries()[0].kind, MetricKind::Unknown);
}

#[test]
fn string_fields_are_skipped_and_counted() {
    let (b, stats) = decode_line_protocol_with_stats(
        b"log msg=\"a, b=c \\\"q\\\" \\\\\",level=\"x\"\nlog v=1\n",
        Precision::Ns,
        NOW,
        &IngestLimits::default(),
    )
    .expect("decodes");
    assert_eq!(stats.points, 2);
    assert_eq!(stats.string_fields_skipped, 2);
    assert_eq!(b.sample_count(), 1);
}

#[test]
fn comments_blank_lines_crlf_and_missing_timestamps() {
    let b = decode("# a comment\r\n\r\n   \ncpu value=1\r\n  cpu value=2 5000000\r\n")
        .expect("decodes");
    assert_eq!(
        flat(&b),
        vec![
            ("cpu_value".into(), vec![], NOW, 1.0),
            ("cpu_value".into(), vec![], 5, 2.0),
        ]
    );
    assert_eq!(b.entries().len(), 1, "one series, one entry");
}

#[test]
fn escapes_follow_influxdb() {
    let b = decode("my\\ meas\\,ure=x,tag\\ key=a\\,b\\=c\\ d,t2=back\\slash fi\\=eld=1 1\n")
        .expect("decodes");
    let (name, labels, _, _) = &flat(&b)[0];
    assert_eq!(name, "my_meas_ure_x_fi_eld");
    assert_eq!(labels, &l(&[("t2", "back\\slash"), ("tag_key", "a,b=c d")]));
    // A backslash pair followed by a comma: the comma is a delimiter.
    let b = decode("m,a=x\\\\,b=y v=1 1").expect("decodes");
    assert_eq!(flat(&b)[0].1, l(&[("a", "x\\\\"), ("b", "y")]));
    // A backslash before a multi-byte character is kept with it.
    let b = decode("m,a=é\\ü v=1 1").expect("decodes");
    assert_eq!(flat(&b)[0].1, l(&[("a", "é\\ü")]));
    // A backslash before a space escapes it, even at the end of a tag value.
    let msg = error("m,a=x\\ v=1 1");
    assert!(msg.contains("unescaped '='"), "{msg}");
}

#[test]
fn names_are_sanitised() {
    let b = decode("cpu.load,host-name=a,1x=b 5m=1").expect("decodes");
    let (name, labels, _, _) = &flat(&b)[0];
    assert_eq!(name, "cpu_load_5m");
    assert_eq!(labels, &l(&[("_x", "b"), ("host_name", "a")]));
}

#[test]
fn precisions_convert_with_integer_arithmetic() {
    let cases = [
        (
            Precision::Ns,
            1_700_000_000_999_999_999_i64,
            1_700_000_000_999_i64,
        ),
        (Precision::Us, 1_700_000_000_999_999, 1_700_000_000_999),
        (Precision::Ms, 1_700_000_000_999, 1_700_000_000_999),
        (Precision::S, 1_700_000_000, 1_700_000_000_000),
        (Precision::M, 2, 120_000),
        (Precision::H, 2, 7_200_000),
        (Precision::Ns, -1, -1),
    ];
    for (p, t, want) in cases {
        let body = format!("m v=1 {t}");
        let b = decode_line_protocol(body.as_bytes(), p, NOW, &IngestLimits::default())
            .expect("decodes");
        assert_eq!(b.entries()[0].samples[0].timestamp_ms, want, "{p:?} {t}");
    }
    for (text, p) in [
        ("n", Precision::Ns),
        ("ns", Precision::Ns),
        ("u", Precision::Us),
        ("us", Precision::Us),
        ("ms", Precision::Ms),
        ("s", Precision::S),
        ("m", Precision::M),
        ("h", Precision::H),
    ] {
        assert_eq!(text.parse::<Precision>().expect(text), p);
    }
    assert!("d".parse::<Precision>().is_err());
}

#[test]
fn timestamp_overflow_is_an_error_not_a_panic() {
    let body = format!("m v=1 {}", i64::MAX / 1000 + 1);
    let err = decode_line_protocol(body.as_bytes(), Precision::S, NOW, &IngestLimits::default())
        .expect_err("overflows");
    assert!(message(err).starts_with("line 1: timestamp"));
    let msg = error("m v=1 99999999999999999999");
    assert!(msg.contains("out of range"), "{msg}");
    let msg = error("m v=1 12.5");
    assert!(msg.contains("invalid timestamp"), "{msg}");
}

#[test]
fn errors_carry_the_line_number_and_the_problem() {
    let cases = [
        ("ok v=1\n\nbroken\n", "line 3: missing field set"),
        ("ok v=1\nm,t v=1", "line 2: tag \"t\" has no '='"),
        ("m,t= v=1", "line 1: tag \"t\" has an empty value"),
        ("m,=x v=1", "line 1: empty tag key"),
        ("m,t=a=b v=1", "line 1: tag \"t\": unescaped '='"),
        ("m v", "line 1: field \"v\" has no '='"),
        ("m v=", "line 1: field \"v\": missing value"),
        ("m v=1,", "line 1: empty field key"),
        ("m v=abc", "line 1: field \"v\": invalid value"),
        ("m v=NaN", "line 1: field \"v\": invalid value"),
        ("m v=inf", "line 1: field \"v\": invalid value"),
        ("m v=1e999", "line 1: field \"v\": out-of-range float"),
        (
            "m v=99999999999999999999i",
            "line 1: field \"v\": invalid or out-of-range integer",
        ),
        (
            "m v=-1u",
            "line 1: field \"v\": invalid or out-of-range unsigned",
        ),
        ("m v=\"open", "line 1: field \"v\": unterminated string"),
        ("m v=\"a\"x", "line 1: field \"v\": text right after"),
        ("m v=1 1 2", "line 1: unexpected text after the timestamp"),
        (",t=a v=1", "line 1: missing measurement"),
        ("m,t=a,t=b v=1", "line 1: invalid label \"t\""),
        ("m,__name__=x v=1", "line 1: invalid label \"__name__\""),
    ];
    for (body, want) in cases {
        let msg = error(body);
        assert!(
            msg.starts_with(want),
            "{body:?}: {msg:?} does not start with {want:?}"
        );
    }
    let bad_utf8 = decode_line_protocol(
        b"m v=1\nm\xff v=1",
        Precision::Ns,
        NOW,
        &IngestLimits::default(),
    );
    assert!(message(bad_utf8.expect_err("utf-8")).starts_with("line 2: not valid UTF-8"));
}

#[test]
fn oversize_label_values_and_names_are_refused() {
    let long = "x".repeat(5000);
    let msg = error(&format!("m,big={long} v=1"));
    assert!(msg.contains("\"big\"") && msg.contains("4096"), "{msg}");
    let msg = error(&format!("{long} v=1"));
    assert!(msg.contains("invalid metric name"), "{msg}");
}

#[test]
fn limits_apply_to_bytes_and_samples() {
    let limits = IngestLimits {
        max_body_bytes: 10,
        max_samples: 2,
    };
    let err =
        decode_line_protocol(b"m v=1,w=2,x=3", Precision::Ns, NOW, &limits).expect_err("size");
    assert!(matches!(err, IngestError::BodyTooLarge { limit: 10 }));
    let limits = IngestLimits {
        max_samples: 2,
        ..IngestLimits::default()
    };
    let err =
        decode_line_protocol(b"m v=1,w=2,x=3", Precision::Ns, NOW, &limits).expect_err("count");
    assert!(matches!(err, IngestError::TooManySamples { limit: 2 }));
}

#[test]
fn an_empty_body_is_an_error_and_only_comments_an_empty_batch() {
    assert!(error("").contains("empty"));
    assert!(error(" \r\n\n").contains("empty"));
    assert!(decode("# nothing\n").expect("decodes").is_empty());
}

fn tag_text() -> impl Strategy<Value = String> {
    // Everything but line breaks and backslashes (whose round trip line protocol cannot
    // express exactly; see `backends::influx`).
    "[a-zA-Z0-9 ,=\"é_.-]{1,12}"
}

fn sample_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<i32>().prop_map(f64::from),
        -1e300f64..1e300,
        Just(0.0),
        Just(-0.0)
    ]
}

proptest! {
    /// The InfluxDB backend's encoder and this decoder agree: name `<metric>_value`, the
    /// same labels, timestamps and values bit for bit.
    #[cfg(feature = "http")]
    #[test]
    fn the_influx_encoder_output_decodes_to_the_same_samples(
        name in "[a-zA-Z_][a-zA-Z0-9_]{0,10}",
        labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", tag_text(), 0..4),
        samples in proptest::collection::vec((any::<i64>(), sample_value()), 1..5),
    ) {
        let series = Series::new(name.clone(), labels.iter()).expect("valid");
        let mut batch = Batch::new();
        batch.push(series, MetricKind::Gauge, samples.iter().map(|&(t, v)| Sample::new(t, v)).collect());
        let text = crate::backends::influx::line_protocol(&batch).text;
        let back = decode_line_protocol(text.as_bytes(), Precision::Ms, NOW, &IngestLimits::default())
            .expect("decodes");
        prop_assert_eq!(back.sample_count(), samples.len());
        for ((s, _, x), &(t, v)) in back.iter().zip(&samples) {
            prop_assert_eq!(s.name(), format!("{name}_value"));
            let got: Vec<(&str, &str)> = s.labels().iter().map(|l| (&*l.name, &*l.value)).collect();
            let want: Vec<(&str, &str)> = labels.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(x.timestamp_ms, t);
            prop_assert_eq!(x.value.to_bits(), v.to_bits());
        }
    }

    /// Arbitrary text never panics the decoder.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z ,=\\\\\"\\n0-9.iu#-]{0,80}") {
        let _ = decode_line_protocol(text.as_bytes(), Precision::S, NOW, &IngestLimits::default());
    }
}
