//! Prometheus remote write 1.0 receiver: the body Prometheus, vmagent and Grafana Alloy POST
//! (`Content-Encoding: snappy`, block format; `Content-Type: application/x-protobuf`).
//!
//! Decoding reuses the wire types of [`crate::backends::prometheus`]:
//! - the snappy header's decompressed length is checked against
//!   [`IngestLimits::max_body_bytes`] before anything is allocated;
//! - the sample count is checked against [`IngestLimits::max_samples`] before any series is
//!   built;
//! - `__name__` becomes the series name; it must appear exactly once. Other labels become
//!   the series labels (sorted and validated by [`Series`]); a label with an empty value is
//!   left out, as Prometheus treats it as absent; a label name given twice is an error;
//! - timestamps are milliseconds, as on the wire; values are kept bit for bit (NaN staleness
//!   markers included); the kind is [`MetricKind::Unknown`] (1.0 carries types in metadata);
//! - exemplars, native histograms and metadata are not part of the 1.0 wire types used here,
//!   so they are skipped unread (and not counted); a series carrying only those yields no
//!   sample and is not validated.

use std::collections::HashMap;
use std::sync::Arc;

use super::{IngestError, IngestLimits};
use crate::backends::prometheus::{self, DecodeError, MAX_DECODED_LEN, TimeSeries};
use crate::sample::{Batch, Label, MetricKind, Sample, Series};

const FORMAT: &str = "remote write";

/// Decodes a remote write 1.0 body: snappy-compressed (block format) `prometheus.WriteRequest`.
///
/// Errors: [`IngestError::BodyTooLarge`] when the decompressed protobuf would exceed
/// `limits.max_body_bytes` (or the backend decoder's own bound, 64 MiB);
/// [`IngestError::TooManySamples`]; [`IngestError::Malformed`] for bad snappy, bad protobuf,
/// a series without `__name__` or with a repeated label name (the message names the series
/// index); [`IngestError::Invalid`] for a name or label breaking the data model.
pub fn decode_remote_write(body: &[u8], limits: &IngestLimits) -> Result<Batch, IngestError> {
    if body.is_empty() {
        return Err(IngestError::malformed(FORMAT, "the body is empty"));
    }
    let len = snap::raw::decompress_len(body).map_err(|e| {
        IngestError::malformed(
            FORMAT,
            format!("the body is not snappy block-compressed data: {e}"),
        )
    })?;
    if len > limits.max_body_bytes {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    let request = prometheus::decode_write_request(body).map_err(decode_error)?;
    let samples: usize = request.timeseries.iter().map(|ts| ts.samples.len()).sum();
    if samples > limits.max_samples {
        return Err(IngestError::TooManySamples {
            limit: limits.max_samples,
        });
    }
    // One entry per time series, its samples moved over as they are: a request holds each
    // series once (a repeated one becomes a second entry, which the log stores correctly),
    // so no per-sample lookup is needed.
    let mut out = Batch::new();
    // Label names and many values repeat across the series of a request: share one string
    // each instead of allocating it per series.
    let mut strings: HashMap<&str, Arc<str>> = HashMap::new();
    for (i, ts) in request.timeseries.iter().enumerate() {
        if ts.samples.is_empty() {
            continue;
        }
        let series = series_of(i, ts, &mut strings)?;
        let samples = ts
            .samples
            .iter()
            .map(|s| Sample::new(s.timestamp, s.value))
            .collect();
        out.push(series, MetricKind::Unknown, samples);
    }
    Ok(out)
}

fn decode_error(e: DecodeError) -> IngestError {
    match e {
        DecodeError::TooLarge { .. } => IngestError::BodyTooLarge {
            limit: MAX_DECODED_LEN,
        },
        other => IngestError::malformed(FORMAT, other.to_string()),
    }
}

/// The series of `timeseries[index]`.
fn series_of<'a>(
    index: usize,
    ts: &'a TimeSeries,
    strings: &mut HashMap<&'a str, Arc<str>>,
) -> Result<Series, IngestError> {
    let bad = |what: String| IngestError::malformed(FORMAT, format!("timeseries[{index}]: {what}"));
    let mut name: Option<&str> = None;
    let mut labels: Vec<Label> = Vec::with_capacity(ts.labels.len());
    for l in &ts.labels {
        if l.name == "__name__" {
            if name.replace(&l.value).is_some() {
                return Err(bad("the label __name__ appears twice".into()));
            }
        } else if !l.value.is_empty() {
            labels.push(Label {
                name: shared(strings, &l.name),
                value: shared(strings, &l.value),
            });
        }
    }
    let name =
        name.ok_or_else(|| bad("no __name__ label (every series needs a metric name)".into()))?;
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(bad(format!("the label {:?} appears twice", &*w[0].name)));
    }
    Ok(Series::from_labels(name.to_owned(), labels)?)
}

/// The one shared copy of `s` in this request (a request's strings are bounded by its size).
fn shared<'a>(strings: &mut HashMap<&'a str, Arc<str>>, s: &'a str) -> Arc<str> {
    strings.entry(s).or_insert_with(|| Arc::from(s)).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::prometheus::{Label as PbLabel, Sample as PbSample, WriteRequest};

    fn label(name: &str, value: &str) -> PbLabel {
        PbLabel {
            name: name.into(),
            value: value.into(),
        }
    }

    fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| PbSample { value, timestamp })
                .collect(),
        }
    }

    fn body(timeseries: Vec<TimeSeries>) -> Vec<u8> {
        use prost::Message;
        let raw = WriteRequest { timeseries }.encode_to_vec();
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("compresses")
    }

    fn decode(body: &[u8]) -> Result<Batch, IngestError> {
        decode_remote_write(body, &IngestLimits::default())
    }

    fn message(err: IngestError) -> String {
        match err {
            IngestError::Malformed { message, .. } => message,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    /// What vmagent sends for a scrape: sorted labels with `__name__` first among the
    /// lowercase ones, a staleness marker, several series sharing job and instance.
    #[test]
    fn a_vmagent_like_body_decodes_to_named_series() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let b = body(vec![
            ts(
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", "0"),
                    ("instance", "edge-1:9100"),
                    ("job", "node"),
                    ("mode", "idle"),
                ],
                &[(1_700_000_000_000, 12345.5), (1_700_000_015_000, 12360.25)],
            ),
            ts(
                &[
                    ("__name__", "up"),
                    ("instance", "edge-1:9100"),
                    ("job", "node"),
                ],
                &[(1_700_000_000_000, 1.0), (1_700_000_015_000, stale)],
            ),
        ]);
        let batch = decode(&b).expect("decodes");
        assert_eq!(batch.sample_count(), 4);
        let e = &batch.entries()[0];
        assert_eq!(e.series.name(), "node_cpu_seconds_total");
        assert_eq!(e.series.label("mode"), Some("idle"));
        assert_eq!(e.series.labels().len(), 4);
        assert_eq!(e.kind, MetricKind::Unknown);
        assert_eq!(e.samples[1], Sample::new(1_700_000_015_000, 12360.25));
        let up = &batch.entries()[1];
        assert_eq!(up.series.name(), "up");
        assert_eq!(up.samples[1].value.to_bits(), stale.to_bits());
    }

    #[test]
    fn a_batch_survives_the_backend_encoder_and_this_decoder() {
        let s =
            Series::new("http_requests_total", [("code", "200"), ("path", "/a b")]).expect("valid");
        let mut batch = Batch::new();
        batch.push(
            s,
            MetricKind::Unknown,
            vec![
                Sample::new(-5, -0.0),
                Sample::new(0, 1.5),
                Sample::new(7, f64::NAN),
            ],
        );
        let encoded = prometheus::encode(&batch).expect("encodes");
        let back = decode(&encoded).expect("decodes");
        assert_eq!(back.entries()[0].series, batch.entries()[0].series);
        for (a, b) in batch.iter().zip(back.iter()) {
            assert!(a.2.same_bits(&b.2), "{:?} != {:?}", a.2, b.2);
        }
    }

    #[test]
    fn empty_label_values_are_left_out_and_empty_series_skipped() {
        let b = body(vec![
            ts(&[("__name__", "a"), ("gone", ""), ("x", "1")], &[(1, 1.0)]),
            ts(&[("no_name", "x")], &[]),
        ]);
        let batch = decode(&b).expect("decodes");
        assert_eq!(batch.entries().len(), 1);
        assert_eq!(batch.entries()[0].series.labels().len(), 1);
    }

    #[test]
    fn a_series_without_a_name_is_refused_by_index() {
        let b = body(vec![
            ts(&[("__name__", "a")], &[(1, 1.0)]),
            ts(&[("job", "x")], &[(1, 1.0)]),
        ]);
        let msg = message(decode(&b).expect_err("no name"));
        assert!(msg.starts_with("timeseries[1]: no __name__"), "{msg}");
    }

    #[test]
    fn repeated_label_names_are_refused() {
        let b = body(vec![ts(
            &[("__name__", "a"), ("x", "1"), ("x", "2")],
            &[(1, 1.0)],
        )]);
        assert!(message(decode(&b).expect_err("dup")).contains("\"x\" appears twice"));
        let b = body(vec![ts(
            &[("__name__", "a"), ("__name__", "b")],
            &[(1, 1.0)],
        )]);
        assert!(message(decode(&b).expect_err("dup")).contains("__name__ appears twice"));
    }

    #[test]
    fn invalid_names_and_oversize_values_name_the_culprit() {
        let b = body(vec![ts(&[("__name__", "bad-name")], &[(1, 1.0)])]);
        let err = decode(&b).expect_err("bad name");
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("bad-name"), "{err}");
        let long = "v".repeat(5000);
        let b = body(vec![ts(&[("__name__", "a"), ("big", &long)], &[(1, 1.0)])]);
        let err = decode(&b).expect_err("too long");
        assert!(matches!(err, IngestError::Invalid(_)));
        assert!(err.to_string().contains("\"big\""), "{err}");
    }

    #[test]
    fn limits_are_checked_before_building() {
        let b = body(vec![ts(
            &[("__name__", "a")],
            &[(1, 1.0), (2, 2.0), (3, 3.0)],
        )]);
        let limits = IngestLimits {
            max_samples: 2,
            ..IngestLimits::default()
        };
        let err = decode_remote_write(&b, &limits).expect_err("too many");
        assert!(matches!(err, IngestError::TooManySamples { limit: 2 }));
        let limits = IngestLimits {
            max_body_bytes: 10,
            ..IngestLimits::default()
        };
        let err = decode_remote_write(&b, &limits).expect_err("too large");
        assert!(matches!(err, IngestError::BodyTooLarge { limit: 10 }));
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn a_huge_announced_length_is_refused_without_allocating() {
        // A snappy header announcing 2^32-1 bytes, followed by nothing.
        let err = decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).expect_err("too large");
        assert!(matches!(err, IngestError::BodyTooLarge { .. }));
    }

    #[test]
    fn bad_snappy_bad_protobuf_and_empty_bodies_are_malformed() {
        assert!(message(decode(b"").expect_err("empty")).contains("empty"));
        assert!(message(decode(b"\x05abc").expect_err("snappy")).contains("snappy"));
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff\xff")
            .expect("compresses");
        let msg = message(decode(&not_proto).expect_err("protobuf"));
        assert!(msg.contains("WriteRequest"), "{msg}");
    }

    #[test]
    fn an_empty_write_request_is_an_empty_batch() {
        let batch = decode(&body(Vec::new())).expect("decodes");
        assert!(batch.is_empty());
    }
}
