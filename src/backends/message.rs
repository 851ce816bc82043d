//! The message body the message-bus backends ([`super::nats`], [`super::mqtt`]) publish: one
//! batch as one JSON document, optionally zstd-compressed.
//!
//! # Layout
//!
//! ```text
//! {"tenant":"edge-1","batch_id":"edge-1-0-500-0of1","samples":[
//!   {"name":"cpu","labels":{"host":"a","core":"0"},"kind":"gauge","timestamp_ms":1700000000000,"value":0.25},
//!   ...]}
//! ```
//!
//! (without the line breaks). Encoding is a pure function of the request, so a resend is
//! byte-identical:
//! - keys appear in the order above; samples in batch (offset) order; labels sorted by name
//!   (a [`Series`](crate::sample::Series) keeps them sorted); no whitespace;
//! - `kind` is `unknown`, `gauge`, `counter`, `histogram` or `summary`;
//! - finite values are JSON numbers in the shortest form that reads back to the same `f64`
//!   (`125.0`, `0.1`, `-0.0`, `1e+300`); JSON has no NaN or infinity, so those are the strings
//!   `"NaN"`, `"+Inf"` and `"-Inf"` (a NaN's payload bits, e.g. Prometheus' staleness marker,
//!   are not kept);
//! - `batch_id` is [`SendRequest::batch_id`](super::SendRequest::batch_id): consumers dedupe by it.
//!
//! With [`Compression::Zstd`] the document is compressed with zstd level 3 and the message
//! says so (NATS header `Content-Encoding: zstd`, MQTT user property `content-encoding`).

use std::io::Write;
use std::time::Duration;

use serde::Deserialize;

use super::{Outcome, RejectKind, RetryReason};
use crate::sample::Batch;
use crate::tenant::TenantId;

/// Content type of the (uncompressed) body.
pub const CONTENT_TYPE: &str = "application/json";

/// zstd level of compressed bodies.
const ZSTD_LEVEL: i32 = 3;

/// Body compression of the message-bus backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain JSON. The default.
    #[default]
    None,
    /// zstd (level 3), marked by a `content-encoding: zstd` header or property.
    Zstd,
}

impl Compression {
    /// The content-encoding to announce, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Zstd => Some("zstd"),
        }
    }
}

/// Encodes a batch as the JSON document described in the module docs.
pub fn encode_json(tenant: &TenantId, batch_id: &str, batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + batch.sample_count() * 96);
    out.extend_from_slice(b"{\"tenant\":");
    json_str(&mut out, tenant.as_str());
    out.extend_from_slice(b",\"batch_id\":");
    json_str(&mut out, batch_id);
    out.extend_from_slice(b",\"samples\":[");
    for (i, (series, kind, sample)) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json_str(&mut out, series.name());
        out.extend_from_slice(b",\"labels\":{");
        for (j, l) in series.labels().iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_str(&mut out, &l.name);
            out.push(b':');
            json_str(&mut out, &l.value);
        }
        out.extend_from_slice(b"},\"kind\":\"");
        out.extend_from_slice(kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"timestamp_ms\":");
        out.extend_from_slice(sample.timestamp_ms.to_string().as_bytes());
        out.extend_from_slice(b",\"value\":");
        json_f64(&mut out, sample.value);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Encodes and, if asked, compresses: the message body.
pub fn encode(
    tenant: &TenantId,
    batch_id: &str,
    batch: &Batch,
    compression: Compression,
) -> std::io::Result<Vec<u8>> {
    let json = encode_json(tenant, batch_id, batch);
    match compression {
        Compression::None => Ok(json),
        Compression::Zstd => zstd::bulk::compress(&json, ZSTD_LEVEL),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail; serde_json escapes it per RFC 8259.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"\"+Inf\"" } else { b"\"-Inf\"" });
    } else {
        // serde_json writes finite floats with ryu: shortest round-trip form, always with a
        // `.` or an exponent, so it reads back as a float.
        let _ = write!(out, "{}", serde_json::Value::from(v));
    }
}

/// A message-bus backend's configuration cannot be used. Nothing was connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has a value the backend cannot use.
    #[error("invalid {field}: {reason}")]
    Field {
        /// The field name, as in the TOML config.
        field: &'static str,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// A secret (password, token) could not be read.
    #[error("cannot read {field}: {source}")]
    Secret {
        /// The field name.
        field: &'static str,
        /// Why.
        source: crate::secret::SecretError,
    },
}

/// Expands `{tenant}` in a subject or topic template.
pub fn expand(template: &str, tenant: &TenantId) -> String {
    template.replace("{tenant}", tenant.as_str())
}

/// A [`ConfigError::Field`] for `field`.
pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

/// Refuses a duration outside `lo..=hi`.
pub(crate) fn check_duration(
    name: &'static str,
    d: Duration,
    lo: Duration,
    hi: Duration,
) -> Result<(), ConfigError> {
    if d < lo || d > hi {
        return Err(field(name, format!("{d:?} is outside {lo:?} to {hi:?}")));
    }
    Ok(())
}

/// A retry without a broker-given delay.
pub(crate) fn retry(reason: RetryReason, detail: impl Into<String>) -> Outcome {
    Outcome::Retry {
        reason,
        retry_after: None,
        detail: detail.into(),
    }
}

/// A rejection without an HTTP status (brokers have none).
pub(crate) fn rejected(kind: RejectKind, reason: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        kind,
        status: None,
        reason: reason.into(),
    }
}

/// A message of `size` bytes refused because the limit is `limit`.
pub(crate) fn too_large(size: usize, limit: usize) -> Outcome {
    rejected(
        RejectKind::TooLarge,
        format!("the message is {size} bytes, more than the limit of {limit}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{MetricKind, Sample, Series};

    fn batch() -> Batch {
        let mut b = Batch::new();
        let s = Series::new("up", [("job", "a\"b"), ("instance", "x\n")]).expect("valid");
        b.push(
            s,
            MetricKind::Gauge,
            vec![
                Sample::new(1, 1.0),
                Sample::new(2, f64::NAN),
                Sample::new(3, f64::INFINITY),
                Sample::new(4, f64::NEG_INFINITY),
                Sample::new(5, -0.0),
                Sample::new(6, 0.1),
            ],
        );
        b.push_one(
            Series::new("c", Vec::<(&str, &str)>::new()).expect("valid"),
            MetricKind::Counter,
            Sample::new(-7, 1e300),
        );
        b
    }

    #[test]
    fn the_layout_is_exact_and_special_values_are_strings() {
        let t = TenantId::new("t1").expect("valid");
        let got = String::from_utf8(encode_json(&t, "t1-0-7-0of1", &batch())).expect("utf-8");
        let s = |ts: i64, v: &str| {
            format!(
                r#"{{"name":"up","labels":{{"instance":"x\n","job":"a\"b"}},"kind":"gauge","timestamp_ms":{ts},"value":{v}}}"#
            )
        };
        let expected = format!(
            r#"{{"tenant":"t1","batch_id":"t1-0-7-0of1","samples":[{},{},{},{},{},{},{}]}}"#,
            s(1, "1.0"),
            s(2, r#""NaN""#),
            s(3, r#""+Inf""#),
            s(4, r#""-Inf""#),
            s(5, "-0.0"),
            s(6, "0.1"),
            r#"{"name":"c","labels":{},"kind":"counter","timestamp_ms":-7,"value":1e+300}"#
        );
        assert_eq!(got, expected);
        let v: serde_json::Value = serde_json::from_str(&got).expect("valid JSON");
        assert_eq!(v["samples"].as_array().map(Vec::len), Some(7));
    }

    #[test]
    fn encoding_is_deterministic_and_zstd_round_trips() {
        let t = TenantId::new("t1").expect("valid");
        let a = encode(&t, "id", &batch(), Compression::Zstd).expect("compresses");
        let b = encode(&t, "id", &batch(), Compression::Zstd).expect("compresses");
        assert_eq!(a, b);
        let plain = zstd::bulk::decompress(&a, 1 << 20).expect("decompresses");
        assert_eq!(plain, encode_json(&t, "id", &batch()));
        assert_eq!(Compression::Zstd.content_encoding(), Some("zstd"));
        assert_eq!(Compression::None.content_encoding(), None);
    }
}
