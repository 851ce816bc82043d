//! Ingest decoders: request bodies in, [`Batch`]es out. The daemon's HTTP handlers call these
//! with the raw body of a request; this module knows nothing of HTTP servers.
//!
//! | format | function | media |
//! |---|---|---|
//! | Prometheus remote write 1.0 | [`decode_remote_write`] | protobuf, snappy block |
//! | InfluxDB line protocol (v1 and v2) | [`decode_line_protocol`] | text |
//! | JSON push (applications) | [`decode_json_push`] | JSON |
//!
//! Compressed bodies (`Content-Encoding: gzip`, ...) go through [`decompress`] first, except
//! remote write, whose snappy compression is part of the format.
//!
//! # Design constraints
//!
//! - **Bounded**: a body decompresses to at most [`IngestLimits::max_body_bytes`] (checked
//!   while decompressing: a gzip bomb fails after `limit + 1` bytes, never allocating more),
//!   and a request carries at most [`IngestLimits::max_samples`] samples. Names, labels and
//!   their lengths are validated by [`Series`].
//! - **All or nothing**: a decoder returns the whole batch or the first problem; the caller
//!   appends only on `Ok`, so a bad request stores nothing.
//! - **Never panics** on any input (each decoder has a fuzz target under `fuzz/`).
//! - A body that is well formed but carries no sample (only comments, only string fields,
//!   an empty `timeseries` list) decodes to an empty batch; the caller should not append it.
//! - Samples of one series are grouped into one batch entry, series in order of first
//!   appearance, samples in request order.

mod body;
mod json;
mod line_protocol;
#[cfg(feature = "http")]
mod remote_write;

use std::collections::HashMap;

pub use body::{ContentEncoding, decompress};
pub use json::decode_json_push;
pub use line_protocol::{
    LineProtocolStats, Precision, decode_line_protocol, decode_line_protocol_with_stats,
};
#[cfg(feature = "http")]
pub use remote_write::decode_remote_write;

/// Without the `http` feature there is no protobuf or snappy decoder: every remote write body
/// is refused with [`IngestError::UnsupportedEncoding`] (HTTP 415).
#[cfg(not(feature = "http"))]
pub fn decode_remote_write(_body: &[u8], _limits: &IngestLimits) -> Result<Batch, IngestError> {
    Err(IngestError::UnsupportedEncoding(
        "snappy (this build has no remote write decoder: enable the `http` feature)".into(),
    ))
}

use crate::error::InvalidInput;
use crate::sample::{Batch, MetricKind, Sample, Series};

/// Default [`IngestLimits::max_body_bytes`]: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// Default [`IngestLimits::max_samples`]: 1,000,000.
pub const DEFAULT_MAX_SAMPLES: usize = 1_000_000;

/// Bounds on one ingest request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest body after decompression, in bytes (for remote write: the decompressed
    /// protobuf). Default 32 MiB ([`DEFAULT_MAX_BODY_BYTES`]). A larger body is refused with
    /// [`IngestError::BodyTooLarge`] (HTTP 413).
    pub max_body_bytes: usize,
    /// Most samples in one request. Default 1,000,000 ([`DEFAULT_MAX_SAMPLES`]); keep it at or
    /// below the spool's per-append limit (2^20). More is refused with
    /// [`IngestError::TooManySamples`] (HTTP 413).
    pub max_samples: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }
}

/// Why a request body was refused. Nothing from it was stored; retrying the same body gives
/// the same error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The body, decompressed, is larger than [`IngestLimits::max_body_bytes`]. HTTP 413.
    #[error("the request body is larger than {limit} bytes (decompressed); send smaller requests")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request carries more than [`IngestLimits::max_samples`] samples. HTTP 413.
    #[error("the request carries more than {limit} samples; send smaller requests")]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
    /// The body does not parse as the format; `message` names the first problem and where it
    /// is (a line number, a series index, a JSON path). HTTP 400.
    #[error("malformed {format} body: {message}")]
    Malformed {
        /// The format: `"remote write"`, `"line protocol"`, `"json"`, `"gzip"`, ...
        format: &'static str,
        /// The first problem found.
        message: String,
    },
    /// The `Content-Encoding` is not one this build decodes. HTTP 415.
    #[error("unsupported content encoding {0:?}; use identity, gzip, deflate, zstd or snappy")]
    UnsupportedEncoding(String),
    /// A metric name or label breaks the data model's rules (names, lengths, duplicates).
    /// HTTP 400.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

impl IngestError {
    /// The HTTP status an endpoint should answer with: 413 for a body too large or too many
    /// samples, 415 for an unsupported encoding, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } | Self::TooManySamples { .. } => 413,
            Self::UnsupportedEncoding(_) => 415,
            Self::Malformed { .. } | Self::Invalid(_) => 400,
        }
    }

    pub(crate) fn malformed(format: &'static str, message: impl Into<String>) -> Self {
        Self::Malformed {
            format,
            message: message.into(),
        }
    }
}

/// Collects samples into a [`Batch`], one entry per series (first appearance order), and
/// enforces [`IngestLimits::max_samples`] as samples arrive.
struct BatchBuilder {
    max_samples: usize,
    samples: usize,
    index: HashMap<Series, usize>,
    entries: Vec<(Series, MetricKind, Vec<Sample>)>,
}

impl BatchBuilder {
    fn new(limits: &IngestLimits) -> Self {
        Self {
            max_samples: limits.max_samples,
            samples: 0,
            index: HashMap::new(),
            entries: Vec::new(),
        }
    }

    /// Adds one sample; a series seen before with another kind keeps its first kind.
    fn push(
        &mut self,
        series: Series,
        kind: MetricKind,
        sample: Sample,
    ) -> Result<(), IngestError> {
        if self.samples >= self.max_samples {
            return Err(IngestError::TooManySamples {
                limit: self.max_samples,
            });
        }
        self.samples += 1;
        match self.index.get(&series) {
            Some(&i) => self.entries[i].2.push(sample),
            None => {
                self.index.insert(series.clone(), self.entries.len());
                self.entries.push((series, kind, vec![sample]));
            }
        }
        Ok(())
    }

    fn finish(self) -> Batch {
        let mut batch = Batch::new();
        for (series, kind, samples) in self.entries {
            batch.push(series, kind, samples);
        }
        batch
    }
}

/// `name` with every character a Prometheus metric name cannot hold replaced by `_`
/// (VictoriaMetrics' Prometheus-compatible naming: `[^a-zA-Z0-9_:]` and a leading digit).
fn sanitize_metric_name(name: &str) -> String {
    sanitize(name, |c| c == ':')
}

/// `name` with every character a label name cannot hold replaced by `_`
/// (`[^a-zA-Z0-9_]` and a leading digit).
fn sanitize_label_name(name: &str) -> String {
    sanitize(name, |_| false)
}

fn sanitize(name: &str, extra: impl Fn(char) -> bool) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || extra(c) || (i > 0 && c.is_ascii_digit());
            if ok { c } else { '_' }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_error_class() {
        assert_eq!(IngestError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(IngestError::TooManySamples { limit: 1 }.status(), 413);
        assert_eq!(IngestError::UnsupportedEncoding("br".into()).status(), 415);
        assert_eq!(IngestError::malformed("json", "x").status(), 400);
        let invalid = InvalidInput::Batch("empty".into());
        assert_eq!(IngestError::from(invalid).status(), 400);
    }

    #[test]
    fn names_are_sanitised_like_victoriametrics_does() {
        assert_eq!(sanitize_metric_name("cpu.load-1m"), "cpu_load_1m");
        assert_eq!(sanitize_metric_name("node:cpu"), "node:cpu");
        assert_eq!(sanitize_metric_name("1xx"), "_xx");
        assert_eq!(sanitize_metric_name("é"), "_");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("9lives"), "_lives");
    }

    #[test]
    fn the_builder_groups_by_series_and_stops_at_the_sample_limit() {
        let limits = IngestLimits {
            max_samples: 3,
            ..IngestLimits::default()
        };
        let mut b = BatchBuilder::new(&limits);
        let a = Series::new("a", [("x", "1")]).expect("valid");
        let c = Series::new("c", [("x", "1")]).expect("valid");
        for (s, t) in [(&a, 1), (&c, 2), (&a, 3)] {
            b.push(s.clone(), MetricKind::Gauge, Sample::new(t, 1.0))
                .expect("under the limit");
        }
        let err = b.push(a.clone(), MetricKind::Gauge, Sample::new(4, 1.0));
        assert!(matches!(err, Err(IngestError::TooManySamples { limit: 3 })));
        let batch = b.finish();
        assert_eq!(batch.entries().len(), 2);
        assert_eq!(batch.entries()[0].samples.len(), 2);
        assert_eq!(batch.sample_count(), 3);
    }
}
