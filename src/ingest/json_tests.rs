//! Tests of `ingest::json`.

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn decode(body: &str) -> Result<Batch, IngestError> {
    decode_json_push(body.as_bytes(), NOW, &IngestLimits::default())
}

fn error(body: &str) -> String {
    match decode(body).expect_err(body) {
        IngestError::Malformed { format, message } => {
            assert_eq!(format, "json");
            message
        }
        other => panic!("expected Malformed for {body}, got {other:?}"),
    }
}

#[test]
fn a_single_push_becomes_one_sample_per_metric() {
    let b = decode(
        r#"{"metrics": {"model_inference_time": 0.045, "tracks_generated": 125},
            "labels": {"model": "rec-v2"}, "timestamp": 1700000000123,
            "kind": "gauge", "kinds": {"tracks_generated": "counter"}}"#,
    )
    .expect("decodes");
    let got: Vec<_> = b
        .iter()
        .map(|(s, k, x)| {
            (
                s.name().to_owned(),
                s.label("model").map(str::to_owned),
                k,
                x,
            )
        })
        .collect();
    let model = Some("rec-v2".to_owned());
    assert_eq!(
        got,
        vec![
            (
                "model_inference_time".into(),
                model.clone(),
                MetricKind::Gauge,
                Sample::new(1_700_000_000_123, 0.045)
            ),
            (
                "tracks_generated".into(),
                model,
                MetricKind::Counter,
                Sample::new(1_700_000_000_123, 125.0)
            ),
        ]
    );
}

#[test]
fn defaults_are_now_and_unknown_kind() {
    let b = decode(r#"{"metrics": {"up": 1}}"#).expect("decodes");
    let e = &b.entries()[0];
    assert_eq!(e.kind, MetricKind::Unknown);
    assert_eq!(e.samples, vec![Sample::new(NOW, 1.0)]);
    assert!(e.series.labels().is_empty());
}

#[test]
fn batch_and_array_forms_decode_every_push() {
    for body in [
        r#"{"batch": [{"metrics": {"a": 1}}, {"metrics": {"a": 2}, "labels": {"x": "y"}}]}"#,
        r#"[{"metrics": {"a": 1}}, {"metrics": {"a": 2}, "labels": {"x": "y"}}]"#,
    ] {
        let b = decode(body).expect(body);
        assert_eq!(b.sample_count(), 2);
        assert_eq!(b.entries().len(), 2, "two series");
    }
    assert!(decode("[]").expect("decodes").is_empty());
}

#[test]
fn rfc3339_timestamps_are_read_to_the_millisecond() {
    let cases = [
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000_500),
        ("2023-11-14T22:13:20.123456789z", 1_700_000_000_123),
        ("2023-11-15T00:13:20+02:00", 1_700_000_000_000),
        ("2023-11-14 20:13:20-02:00", 1_700_000_000_000),
        ("2000-01-01T00:00:00Z", 946_684_800_000),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ];
    for (text, want) in cases {
        let b = decode(&format!(
            r#"{{"metrics": {{"a": 1}}, "timestamp": "{text}"}}"#
        ))
        .expect(text);
        assert_eq!(b.entries()[0].samples[0].timestamp_ms, want, "{text}");
    }
    for bad in [
        "2023-02-29T00:00:00Z",
        "2023-11-14T22:13:20",
        "2023-11-14",
        "2023-13-01T00:00:00Z",
        "2023-11-14T22:13:20.Z",
        "2023-11-14T22:13:20+2:00",
        "２023-11-14T22:13:20Z",
    ] {
        let msg = error(&format!(
            r#"{{"metrics": {{"a": 1}}, "timestamp": "{bad}"}}"#
        ));
        assert!(
            msg.starts_with("timestamp: ") && msg.contains("RFC 3339"),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn timestamps_must_be_integer_milliseconds_in_a_sane_range() {
    let msg = error(r#"{"metrics": {"a": 1}, "timestamp": 1700000000}"#);
    assert!(msg.contains("looks like seconds"), "{msg}");
    let msg = error(r#"{"metrics": {"a": 1}, "timestamp": 1.7e12}"#);
    assert!(msg.contains("not an integer"), "{msg}");
    let msg = error(r#"{"metrics": {"a": 1}, "timestamp": 99999999999999999999}"#);
    assert!(msg.starts_with("timestamp: "), "{msg}");
    let msg = error(r#"{"metrics": {"a": 1}, "timestamp": -5}"#);
    assert!(msg.contains("outside"), "{msg}");
    let msg = error(r#"{"metrics": {"a": 1}, "timestamp": true}"#);
    assert!(msg.contains("found the boolean true"), "{msg}");
}

#[test]
fn errors_name_the_path_of_the_first_problem() {
    let cases = [
        (
            r#"{"metrics": {"a": 1}, "lables": {}}"#,
            "unknown field `lables`",
        ),
        (
            r#"{"batch": [{"metrics": {"a": 1}}, {"metrics": {"a": 1}}, {"metrics": {"foo": "NaN"}}]}"#,
            "batch[2].metrics.foo: the value must be a number, found the string \"NaN\"",
        ),
        (
            r#"[{"metrics": {"a": 1}}, {"metrics": {"a": null}}]"#,
            "[1].metrics.a: the value must be a number, found null",
        ),
        (
            r#"{"metrics": {"a": "Infinity"}}"#,
            "metrics.a: the value must be a number",
        ),
        (
            r#"{"metrics": {"a": 1}, "labels": {"x": 5}}"#,
            "labels.x: a label value must be a string, found the number 5",
        ),
        (
            r#"{"metrics": {"a": 1}, "kind": "gage"}"#,
            "kind: unknown kind \"gage\"",
        ),
        (
            r#"{"metrics": {"a": 1}, "kinds": {"b": "counter"}}"#,
            "kinds.b: names no metric of this push",
        ),
        (r#"{"metrics": {}}"#, "metrics: is empty"),
        (r#"{"labels": {}}"#, "missing field `metrics`"),
        (
            r#"{"batch": [], "extra": 1}"#,
            "unknown field \"extra\" next to \"batch\"",
        ),
        (r#"{"batch": {}}"#, "batch: must be an array"),
        (r#"[1]"#, "[0]: a push must be a JSON object"),
        (r#""text""#, "the body must be a JSON object or array"),
        (r#"{"metrics": {"a": 1}"#, "EOF while parsing"),
        (r#"{"metrics": {"a": NaN}}"#, "expected value at line 1"),
    ];
    for (body, want) in cases {
        let msg = error(body);
        assert!(
            msg.contains(want),
            "{body}: {msg:?} does not contain {want:?}"
        );
    }
}

#[test]
fn bad_names_and_labels_are_invalid_input() {
    for body in [
        r#"{"metrics": {"bad-name": 1}}"#,
        r#"{"metrics": {"a": 1}, "labels": {"__name__": "x"}}"#,
        r#"{"metrics": {"a": 1}, "labels": {"1x": "x"}}"#,
    ] {
        let err = decode(body).expect_err(body);
        assert!(matches!(err, IngestError::Invalid(_)), "{body}: {err:?}");
        assert_eq!(err.status(), 400);
    }
    let long = "v".repeat(4097);
    let err = decode(&format!(
        r#"{{"metrics": {{"a": 1}}, "labels": {{"big": "{long}"}}}}"#
    ))
    .expect_err("too long");
    assert!(err.to_string().contains("\"big\""), "{err}");
}

#[test]
fn limits_and_empty_bodies() {
    assert!(error("").contains("empty"));
    assert!(error("  \n").contains("empty"));
    let limits = IngestLimits {
        max_body_bytes: 5,
        ..IngestLimits::default()
    };
    let err = decode_json_push(br#"{"metrics": {"a": 1}}"#, NOW, &limits).expect_err("size");
    assert!(matches!(err, IngestError::BodyTooLarge { limit: 5 }));
    let limits = IngestLimits {
        max_samples: 1,
        ..IngestLimits::default()
    };
    let err =
        decode_json_push(br#"{"metrics": {"a": 1, "b": 2}}"#, NOW, &limits).expect_err("count");
    assert!(matches!(err, IngestError::TooManySamples { limit: 1 }));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let body = "[".repeat(100_000);
    assert!(decode(&body).is_err());
}

proptest! {
    /// Every date-time from 2000 to 9999 written in RFC 3339 reads back to its milliseconds.
    #[test]
    fn rfc3339_matches_days_from_civil(ms in MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS) {
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        // Civil date from days (Hinnant's inverse), to write the text independently.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let text = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000
        );
        prop_assert_eq!(rfc3339_ms(&text), Some(ms), "{}", text);
    }

    /// Arbitrary JSON-ish text never panics the decoder.
    #[test]
    fn arbitrary_text_never_panics(text in "[\\[\\]{}:,\"a-z0-9.eE+ -]{0,60}") {
        let _ = decode_json_push(text.as_bytes(), NOW, &IngestLimits::default());
    }
}
