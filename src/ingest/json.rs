//! JSON push: the application endpoint, shaped like an `export_metrics(metrics, labels)` call.
//!
//! One push:
//! ```json
//! {"metrics": {"model_inference_time": 0.045, "tracks_generated": 125},
//!  "labels": {"model": "rec-v2"},
//!  "timestamp": 1700000000000,
//!  "kind": "gauge",
//!  "kinds": {"tracks_generated": "counter"}}
//! ```
//! - `metrics` (required, not empty): metric name to value; each becomes one sample of the
//!   series `name{labels}`. Values are JSON numbers (JSON has no NaN or infinity; a string
//!   such as `"NaN"` is refused).
//! - `labels` (optional): label name to string value, shared by every metric of the push.
//! - `timestamp` (optional, default: the time of the request): integer milliseconds since the
//!   Unix epoch, or an RFC 3339 string (`"2023-11-14T22:13:20.5Z"`, `"...+02:00"`); between
//!   2000-01-01 and 9999-12-31 (a value in seconds is refused, not stored in 1970).
//! - `kind` (optional, default `unknown`): `gauge`, `counter`, `histogram`, `summary`,
//!   `unknown` (or `untyped`); `kinds` overrides it per metric and must name metrics of the
//!   push.
//!
//! Several pushes: `{"batch": [push, ...]}` or a top-level array `[push, ...]`.
//!
//! Names are not sanitised (an application can send valid ones): a bad name is an error.
//! Unknown fields are errors, so a typo (`"lables"`) is not silently ignored. A key repeated
//! in one object keeps its last value (JSON parsers differ; do not rely on it). The first
//! problem is reported with its path: `batch[2].metrics.foo: the value must be a number`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{BatchBuilder, IngestError, IngestLimits};
use crate::sample::Batch;
use crate::sample::{Label, MetricKind, Sample, Series};

const FORMAT: &str = "json";

/// Earliest timestamp accepted: 2000-01-01T00:00:00Z, in ms.
const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
/// Latest timestamp accepted: 9999-12-31T23:59:59.999Z, in ms.
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// One push, fields typed loosely so each value can be checked with its path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    metrics: serde_json::Map<String, Value>,
    #[serde(default)]
    labels: serde_json::Map<String, Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    kinds: serde_json::Map<String, Value>,
}

/// Decodes a JSON push body (already decompressed); see the module docs for the shape.
/// `now_ms` stamps pushes without a timestamp.
///
/// Errors: [`IngestError::BodyTooLarge`] when `body` exceeds `limits.max_body_bytes`,
/// [`IngestError::TooManySamples`], [`IngestError::Malformed`] naming the first problem with
/// its path (or line and column for a syntax error), [`IngestError::Invalid`] for a name or
/// label the data model refuses.
pub fn decode_json_push(
    body: &[u8],
    now_ms: i64,
    limits: &IngestLimits,
) -> Result<Batch, IngestError> {
    if body.len() > limits.max_body_bytes {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::malformed(FORMAT, "the body is empty"));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| IngestError::malformed(FORMAT, e.to_string()))?;
    let mut out = BatchBuilder::new(limits);
    match doc {
        Value::Array(pushes) => add_all(&mut out, pushes, "", now_ms)?,
        Value::Object(mut map) if map.contains_key("batch") => {
            let pushes = map.remove("batch").unwrap_or(Value::Null);
            if let Some(other) = map.keys().next() {
                return Err(bad(
                    "",
                    format!("unknown field {other:?} next to \"batch\""),
                ));
            }
            let Value::Array(pushes) = pushes else {
                return Err(bad("batch", "must be an array of pushes"));
            };
            add_all(&mut out, pushes, "batch", now_ms)?;
        }
        single @ Value::Object(_) => add_push(&mut out, single, "", now_ms)?,
        _ => return Err(bad("", "the body must be a JSON object or array")),
    }
    Ok(out.finish())
}

fn bad(path: &str, message: impl std::fmt::Display) -> IngestError {
    let message = if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    };
    IngestError::malformed(FORMAT, message)
}

/// `prefix.key`, or `key` at the top level.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn add_all(
    out: &mut BatchBuilder,
    pushes: Vec<Value>,
    prefix: &str,
    now_ms: i64,
) -> Result<(), IngestError> {
    for (i, p) in pushes.into_iter().enumerate() {
        add_push(out, p, &format!("{prefix}[{i}]"), now_ms)?;
    }
    Ok(())
}

fn add_push(out: &mut BatchBuilder, v: Value, path: &str, now_ms: i64) -> Result<(), IngestError> {
    if !v.is_object() {
        return Err(bad(path, "a push must be a JSON object"));
    }
    let push = Push::deserialize(v).map_err(|e| bad(path, e))?;
    if push.metrics.is_empty() {
        return Err(bad(
            &join(path, "metrics"),
            "is empty: a push needs at least one metric",
        ));
    }
    let labels = labels(&push.labels, &join(path, "labels"))?;
    let timestamp = match &push.timestamp {
        None | Some(Value::Null) => now_ms,
        Some(t) => timestamp(t).map_err(|e| bad(&join(path, "timestamp"), e))?,
    };
    let default_kind = match &push.kind {
        None | Some(Value::Null) => MetricKind::Unknown,
        Some(k) => kind(k).map_err(|e| bad(&join(path, "kind"), e))?,
    };
    let kinds = kinds(&push, &join(path, "kinds"))?;
    for (name, value) in &push.metrics {
        let at = || join(&join(path, "metrics"), name);
        let value = match value {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| bad(&at(), "the number is out of range"))?,
            other => {
                return Err(bad(
                    &at(),
                    format!("the value must be a number, found {}", describe(other)),
                ));
            }
        };
        let series = Series::from_labels(name.clone(), labels.clone())?;
        let kind = kinds.get(name.as_str()).copied().unwrap_or(default_kind);
        out.push(series, kind, Sample::new(timestamp, value))?;
    }
    Ok(())
}

fn labels(map: &serde_json::Map<String, Value>, path: &str) -> Result<Vec<Label>, IngestError> {
    map.iter()
        .map(|(name, value)| match value {
            Value::String(s) => Ok(Label {
                name: name.as_str().into(),
                value: s.as_str().into(),
            }),
            other => Err(bad(
                &join(path, name),
                format!("a label value must be a string, found {}", describe(other)),
            )),
        })
        .collect()
}

fn kinds<'a>(push: &'a Push, path: &str) -> Result<BTreeMap<&'a str, MetricKind>, IngestError> {
    push.kinds
        .iter()
        .map(|(name, k)| {
            let at = join(path, name);
            if !push.metrics.contains_key(name) {
                return Err(bad(&at, "names no metric of this push"));
            }
            Ok((name.as_str(), kind(k).map_err(|e| bad(&at, e))?))
        })
        .collect()
}

fn kind(v: &Value) -> Result<MetricKind, String> {
    Ok(match v.as_str() {
        Some("gauge") => MetricKind::Gauge,
        Some("counter") => MetricKind::Counter,
        Some("histogram") => MetricKind::Histogram,
        Some("summary") => MetricKind::Summary,
        Some("unknown" | "untyped") => MetricKind::Unknown,
        _ => {
            return Err(format!(
                "unknown kind {v}; use gauge, counter, histogram, summary or unknown"
            ));
        }
    })
}

fn timestamp(v: &Value) -> Result<i64, String> {
    let ms = match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            format!("{n} is not an integer number of milliseconds since the Unix epoch")
        })?,
        Value::String(s) => rfc3339_ms(s).ok_or_else(|| {
            format!("{s:?} is not an RFC 3339 date-time (like 2023-11-14T22:13:20Z)")
        })?,
        other => {
            return Err(format!(
                "must be an integer or a string, found {}",
                describe(other)
            ));
        }
    };
    if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms) {
        let hint = if (MIN_TIMESTAMP_MS / 1000..=MAX_TIMESTAMP_MS / 1000).contains(&ms) {
            " (it looks like seconds; timestamps are milliseconds)"
        } else {
            ""
        };
        return Err(format!(
            "{ms} is outside 2000-01-01..9999-12-31 in milliseconds{hint}"
        ));
    }
    Ok(ms)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Milliseconds of an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `t` and a
/// space are accepted for `T`, `z` for `Z`. Fractions beyond milliseconds are truncated.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let d = b.get(from..from + len)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |acc, x| acc * 10 + i64::from(x - b'0')))
    };
    let sep = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if sep(at, b".") {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        // "5" is 500 ms, "123456" is 123 ms: pad or truncate to three digits.
        let frac = b[at + 1..]
            .iter()
            .take(digits.min(3))
            .chain(std::iter::repeat(&b'0'))
            .take(3);
        millis = frac.fold(0, |acc, c| acc * 10 + i64::from(c - b'0'));
        at += 1 + digits;
    }
    let offset_min = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && sep(at + 3, b":") => {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
