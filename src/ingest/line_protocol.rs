//! InfluxDB line protocol (the body of v1 `/write` and v2 `/api/v2/write`).
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, one point a line.
//!
//! Mapping (VictoriaMetrics' convention, so dashboards built on VictoriaMetrics' Influx
//! ingestion work unchanged):
//! - every numeric or boolean field becomes a series named `<measurement>_<field>` (also
//!   for a field named `value`), with each character a Prometheus name cannot hold replaced
//!   by `_` (`cpu.load-1m` becomes `cpu_load_1m`; a leading digit becomes `_`);
//! - tags become labels, their names sanitised the same way (`[^a-zA-Z0-9_]` to `_`);
//!   values are kept as they are;
//! - floats as written; integers (`12i`) and unsigned integers (`12u`) as `f64` (exact up
//!   to 2^53); booleans (`t`, `true`, `T`, `True`, `TRUE` and the `f` forms) as 1 and 0;
//!   string fields (`"..."`) are skipped and counted ([`LineProtocolStats`]);
//! - the timestamp is converted to milliseconds by integer arithmetic, rounding down
//!   (`1700000000123456789` ns is `1700000000123` ms); a point without one gets `now_ms`;
//! - the kind is [`MetricKind::Unknown`]: line protocol carries no type.
//!
//! Escaping follows InfluxDB's parser: in the measurement, `\,` and `\ ` stand for `,` and
//! space; in tag keys, tag values and field keys, `\,`, `\=` and `\ `; in string field
//! values, `\"` and `\\`. A backslash before any other character is kept as it is (and
//! takes that character with it: `\\,` is a backslash pair followed by a delimiter).
//! Blank lines and lines starting with `#` are skipped; `\r\n` line ends are accepted.
//!
//! The first bad line fails the whole request, with its 1-based line number.

use std::sync::Arc;

use super::{BatchBuilder, IngestError, IngestLimits, sanitize_label_name, sanitize_metric_name};
use crate::sample::{Batch, Label, MetricKind, Sample, Series};

const FORMAT: &str = "line protocol";

/// The unit of line protocol timestamps (the `precision` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Nanoseconds (`ns`, v1 `n`). InfluxDB's default.
    #[default]
    Ns,
    /// Microseconds (`us`, v1 `u`, `µs`).
    Us,
    /// Milliseconds (`ms`).
    Ms,
    /// Seconds (`s`).
    S,
    /// Minutes (v1 `m`).
    M,
    /// Hours (v1 `h`).
    H,
}

impl Precision {
    /// Parses a `precision` parameter in either the v1 spelling (`n`, `u`, `ms`, `s`, `m`,
    /// `h`) or the v2 spelling (`ns`, `us`, `ms`, `s`). `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ns" | "n" => Self::Ns,
            "us" | "u" | "µs" => Self::Us,
            "ms" => Self::Ms,
            "s" => Self::S,
            "m" => Self::M,
            "h" => Self::H,
            _ => return None,
        })
    }

    /// `t` in this unit as milliseconds (rounded down), or `None` on overflow.
    pub fn to_ms(self, t: i64) -> Option<i64> {
        match self {
            Self::Ns => Some(t.div_euclid(1_000_000)),
            Self::Us => Some(t.div_euclid(1_000)),
            Self::Ms => Some(t),
            Self::S => t.checked_mul(1_000),
            Self::M => t.checked_mul(60_000),
            Self::H => t.checked_mul(3_600_000),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = IngestError;

    fn from_str(s: &str) -> Result<Self, IngestError> {
        Self::parse(s).ok_or_else(|| {
            IngestError::malformed(
                FORMAT,
                format!("unknown precision {s:?}; use ns, us, ms, s (or n, u, m, h)"),
            )
        })
    }
}

/// What a line protocol body held besides its samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineProtocolStats {
    /// Points (non-blank, non-comment lines) decoded.
    pub points: u64,
    /// String fields skipped: a time series holds numbers only.
    pub string_fields_skipped: u64,
}

/// Decodes a line protocol body (already decompressed) into a batch; see the module docs for
/// the mapping. `precision` is the unit of the timestamps; `now_ms` stamps points without
/// one.
///
/// Errors: [`IngestError::BodyTooLarge`] when `body` exceeds `limits.max_body_bytes`,
/// [`IngestError::TooManySamples`], and [`IngestError::Malformed`] naming the first bad line
/// (`"line 3: missing field set"`), including names or labels the data model refuses.
pub fn decode_line_protocol(
    body: &[u8],
    precision: Precision,
    now_ms: i64,
    limits: &IngestLimits,
) -> Result<Batch, IngestError> {
    decode_line_protocol_with_stats(body, precision, now_ms, limits).map(|(batch, _)| batch)
}

/// [`decode_line_protocol`], also returning what was skipped.
pub fn decode_line_protocol_with_stats(
    body: &[u8],
    precision: Precision,
    now_ms: i64,
    limits: &IngestLimits,
) -> Result<(Batch, LineProtocolStats), IngestError> {
    if body.len() > limits.max_body_bytes {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::malformed(FORMAT, "the body is empty"));
    }
    let mut out = BatchBuilder::new(limits);
    let mut stats = LineProtocolStats::default();
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let at_line =
            |message: String| IngestError::malformed(FORMAT, format!("line {}: {message}", i + 1));
        let line = std::str::from_utf8(raw).map_err(|_| at_line("not valid UTF-8".into()))?;
        let line = line
            .strip_suffix('\r')
            .unwrap_or(line)
            .trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let point = parse_line(line).map_err(at_line)?;
        let ts = match point.timestamp {
            None => now_ms,
            Some(t) => precision.to_ms(t).ok_or_else(|| {
                at_line(format!(
                    "timestamp {t} overflows when converted from {precision:?} to milliseconds"
                ))
            })?,
        };
        stats.points += 1;
        stats.string_fields_skipped += point.strings;
        add_point(&mut out, point, ts).map_err(|e| match e {
            IngestError::Invalid(invalid) => at_line(invalid.to_string()),
            other => other,
        })?;
    }
    Ok((out.finish(), stats))
}

/// One parsed line, escapes resolved.
#[derive(Debug)]
struct Point {
    measurement: String,
    tags: Vec<(String, String)>,
    /// Numeric and boolean fields.
    fields: Vec<(String, f64)>,
    /// String fields skipped.
    strings: u64,
    timestamp: Option<i64>,
}

fn add_point(out: &mut BatchBuilder, p: Point, timestamp_ms: i64) -> Result<(), IngestError> {
    let labels: Vec<Label> = p
        .tags
        .iter()
        .map(|(k, v)| Label {
            name: Arc::from(sanitize_label_name(k)),
            value: Arc::from(v.as_str()),
        })
        .collect();
    for (field, value) in p.fields {
        let name = sanitize_metric_name(&format!("{}_{field}", p.measurement));
        let series = Series::from_labels(name, labels.clone())?;
        out.push(
            series,
            MetricKind::Unknown,
            Sample::new(timestamp_ms, value),
        )?;
    }
    Ok(())
}

/// A cursor over one line. Delimiters are ASCII, so every index it stops at is a character
/// boundary of the line.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn skip_spaces(&mut self) -> bool {
        let from = self.at;
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
        self.at > from
    }

    /// Reads up to the first unescaped byte of `stops` (or the end), resolving `\x` for `x`
    /// in `stops`; any other backslash is kept and takes the next byte with it.
    fn escaped(&mut self, stops: &[u8]) -> String {
        let b = self.s.as_bytes();
        let mut out = String::new();
        let mut copied = self.at;
        while let Some(&c) = b.get(self.at) {
            if stops.contains(&c) {
                break;
            }
            if c == b'\\' {
                match b.get(self.at + 1) {
                    Some(&n) if stops.contains(&n) => {
                        out.push_str(&self.s[copied..self.at]);
                        out.push(char::from(n));
                        self.at += 2;
                        copied = self.at;
                        continue;
                    }
                    // Skips the next byte too: if it starts a multi-byte character, the
                    // scan continues inside it, which is fine (no delimiter byte is there).
                    Some(_) => self.at += 1,
                    None => {}
                }
            }
            self.at += 1;
        }
        out.push_str(&self.s[copied..self.at]);
        out
    }

    /// A plain token up to a byte of `stops` (or the end).
    fn token(&mut self, stops: &[u8]) -> &str {
        let from = self.at;
        while self.peek().is_some_and(|c| !stops.contains(&c)) {
            self.at += 1;
        }
        &self.s[from..self.at]
    }
}

fn parse_line(line: &str) -> Result<Point, String> {
    let mut c = Cursor { s: line, at: 0 };
    let measurement = c.escaped(b", ");
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let tags = parse_tags(&mut c)?;
    if !c.skip_spaces() || c.peek().is_none() {
        return Err("missing field set".into());
    }
    let (fields, strings) = parse_fields(&mut c)?;
    c.skip_spaces();
    let timestamp = match c.token(b" ") {
        "" => None,
        t => Some(parse_timestamp(t)?),
    };
    c.skip_spaces();
    if c.peek().is_some() {
        return Err(format!(
            "unexpected text after the timestamp at byte {}",
            c.at + 1
        ));
    }
    Ok(Point {
        measurement,
        tags,
        fields,
        strings,
        timestamp,
    })
}

fn parse_tags(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::new();
    while c.peek() == Some(b',') {
        c.at += 1;
        let key = c.escaped(b",= ");
        if key.is_empty() {
            return Err("empty tag key".into());
        }
        if c.peek() != Some(b'=') {
            return Err(format!("tag {key:?} has no '=' and value"));
        }
        c.at += 1;
        let value = c.escaped(b",= ");
        if c.peek() == Some(b'=') {
            return Err(format!("tag {key:?}: unescaped '=' in the value"));
        }
        if value.is_empty() {
            return Err(format!("tag {key:?} has an empty value"));
        }
        tags.push((key, value));
    }
    Ok(tags)
}

fn parse_fields(c: &mut Cursor<'_>) -> Result<(Vec<(String, f64)>, u64), String> {
    let mut fields = Vec::new();
    let mut strings = 0u64;
    loop {
        let key = c.escaped(b",= ");
        if key.is_empty() {
            return Err("empty field key".into());
        }
        if c.peek() != Some(b'=') {
            return Err(format!("field {key:?} has no '=' and value"));
        }
        c.at += 1;
        if c.peek() == Some(b'"') {
            skip_string(c).map_err(|e| format!("field {key:?}: {e}"))?;
            strings += 1;
        } else {
            let v = field_value(c.token(b", ")).map_err(|e| format!("field {key:?}: {e}"))?;
            fields.push((key, v));
        }
        if c.peek() != Some(b',') {
            return Ok((fields, strings));
        }
        c.at += 1;
    }
}

/// Skips a quoted string field value (`\"` and `\\` are escapes).
fn skip_string(c: &mut Cursor<'_>) -> Result<(), String> {
    let b = c.s.as_bytes();
    c.at += 1;
    while let Some(&x) = b.get(c.at) {
        match x {
            b'"' => {
                c.at += 1;
                return match c.peek() {
                    None | Some(b',' | b' ') => Ok(()),
                    Some(_) => Err("text right after the closing quote".into()),
                };
            }
            b'\\' => c.at += 2,
            _ => c.at += 1,
        }
    }
    Err("unterminated string (a line protocol string cannot span lines)".into())
}

fn field_value(t: &str) -> Result<f64, String> {
    let bad = |what: &str| format!("{what} {t:?}");
    if t.is_empty() {
        return Err("missing value".into());
    }
    if let Some(int) = t.strip_suffix('i') {
        return int
            .parse::<i64>()
            .map(|v| v as f64)
            .map_err(|_| bad("invalid or out-of-range integer"));
    }
    if let Some(uint) = t.strip_suffix('u') {
        return uint
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| bad("invalid or out-of-range unsigned integer"));
    }
    match t {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    // Rust also reads `inf` and `NaN`; line protocol does not.
    let numeric = t
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    match t.parse::<f64>() {
        Ok(v) if numeric && v.is_finite() => Ok(v),
        Ok(_) if numeric => Err(bad("out-of-range float")),
        _ => Err(bad(
            "invalid value (expected a float, 1i, 1u, true/false or \"string\")",
        )),
    }
}

fn parse_timestamp(t: &str) -> Result<i64, String> {
    if !t
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        return Err(format!("invalid timestamp {t:?} (expected an integer)"));
    }
    t.parse::<i64>()
        .map_err(|_| format!("timestamp {t:?} is out of range (64-bit integer)"))
}

#[cfg(test)]
#[path = "line_protocol_tests.rs"]
mod tests;
