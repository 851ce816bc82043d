//! The plaintext record payload: a batch laid out column-wise so that zstd compresses it well.
//!
//! Pure functions over byte slices; no I/O. Decoding is bounded: every count and length is
//! checked against the format's limits and the bytes remaining before anything is allocated
//! from it, and it never panics on any input (fuzzed by `fuzz/fuzz_targets/payload.rs`).
//!
//! # Layout, version 2 (written by this build)
//!
//! ```text
//! u8      version = 2
//! varint  series_count          (<= sample_count)
//! varint  sample_count          (<= 2^20)
//! varint  shapes_len            bytes of the shapes block
//! shapes: series_count × shape
//!   u8      kind                0 unknown, 1 gauge, 2 counter, 3 histogram, 4 summary
//!   varint  n_samples           >= 1; all n_samples add up to sample_count
//!   varint  label_count         <= 128
//!   bytes   change mask         ceil((1 + 2·label_count) / 8) bytes; bit j (bit j%8 of byte
//!                               j/8) is set when string j differs from string j of the
//!                               previous series. String 0 is the metric name, 2i+1 the name
//!                               of label i, 2i+2 its value; a string the previous series
//!                               does not have (and every string before the first series)
//!                               reads as "". Bits past the last string are zero.
//! strings: for each series, for each set bit j in ascending order, string j front-coded
//!          against string j of the previous series
//! timestamps: sample_count × zigzag varint (timestamp - previous timestamp), across the record
//! classes: sample_count bytes, one per sample
//!   0xff                        raw: the value's bits are in the raw planes
//!   (L << 4) | k, L <= 8, k <= 15
//!                               decimal: value = m / 10^k, and L bytes of mantissa delta follow
//! mantissa deltas: for each decimal sample in order, L bytes (little-endian) of
//!          zigzag(m - base)
//! raw planes: 8 byte planes of n_raw bytes each (n_raw = samples of class 0xff); plane b holds
//!          byte b (little-endian) of bits(value) XOR bits(previous raw value of the same
//!          series) (0 for the first)
//!
//! string  = varint shared_prefix_len | varint suffix_len | suffix bytes (UTF-8)
//! varint  = LEB128, at most 10 bytes
//! ```
//!
//! Decimal values. `m` is an integer with |m| < 2^53 and the value is the `f64` division
//! `m as f64 / 10^k` (both operands exact, so the result is the double nearest to the decimal
//! `m·10^-k`, which is what parsing the decimal text gives). The encoder uses the smallest `k`
//! whose division gives back the value bit for bit, and the raw class when none does (NaN,
//! infinities, -0.0, full-precision values).
//!
//! Mantissa prediction. `base` is the mantissa of the previous sample of the same series if
//! that sample is decimal with the same `k`; for the first sample of a series, when this series
//! and the previous one are both of kind histogram with the same metric name (consecutive
//! `_bucket` series, whose cumulative counts are close) and the previous series' last sample
//! is decimal with the same `k`, that sample's mantissa; otherwise 0.
//!
//! Why: a record usually holds one sample of each of thousands of series (one scrape), so
//! nothing predicts a value from its own past; what helps is (a) storing the short decimals
//! that exporters print (`12345.67`, `0.4375`, integers) as small integers instead of 52
//! random-looking mantissa bits, and (b) writing each series' identity as only the strings
//! that changed from the previous series, with the change masks apart from the strings.
//!
//! # Version 1 (still decoded)
//!
//! Header as above without `shapes_len`; then per series `kind`, `n_samples`, `label_count`,
//! the name and every label name and value front-coded against the same position of the
//! previous series (no mask); timestamps as above; then 8 byte planes of `sample_count` bytes
//! holding bits(value) XOR bits(previous value of the same series).
//!
//! Samples are stored grouped by series in the order the appender gave them; that order defines
//! their offsets. The decoder bounds every count by the limits above and by the bytes
//! remaining, checks UTF-8 and the naming rules of every series, and requires the input to be
//! consumed exactly.

use std::sync::Arc;

use crate::sample::{Batch, Label, MAX_LABELS, MetricKind, Sample, Series};

/// Payload layout version written by this build.
pub const PAYLOAD_VERSION: u8 = 2;
/// Most samples one record may hold.
pub const MAX_SAMPLES_PER_RECORD: usize = 1 << 20;

/// Most decimal fraction digits of a decimal value.
const MAX_DECIMALS: u8 = 15;
/// Value class of a sample stored as raw bits.
const CLASS_RAW: u8 = 0xff;
/// Decimal mantissas stay below this magnitude, so that they convert to `f64` exactly.
const MAX_MANTISSA: f64 = (1u64 << 53) as f64;

/// Encodes `batch` (which must not be empty) into `out`, replacing its contents.
pub fn encode(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.push(PAYLOAD_VERSION);
    put_varint(out, batch.entries().len() as u64);
    put_varint(out, batch.sample_count() as u64);
    let mut shapes = Vec::with_capacity(4 * batch.entries().len());
    let mut strings = Vec::new();
    let mut prev: Option<&Series> = None;
    for e in batch.entries() {
        shapes.push(e.kind as u8);
        put_varint(&mut shapes, e.samples.len() as u64);
        put_series(&mut shapes, &mut strings, &e.series, prev);
        prev = Some(&e.series);
    }
    put_varint(out, shapes.len() as u64);
    out.extend_from_slice(&shapes);
    out.extend_from_slice(&strings);
    let mut prev_ts = 0i64;
    for e in batch.entries() {
        for s in &e.samples {
            put_varint(out, zigzag(s.timestamp_ms.wrapping_sub(prev_ts)));
            prev_ts = s.timestamp_ms;
        }
    }
    put_values(batch, out);
}

/// String `j` of a series: 0 the name, `2i + 1` label `i`'s name, `2i + 2` its value; ""
/// past the last label.
fn series_string(s: &Series, j: usize) -> &str {
    if j == 0 {
        return s.name();
    }
    match s.labels().get((j - 1) / 2) {
        Some(l) if j % 2 == 1 => &l.name,
        Some(l) => &l.value,
        None => "",
    }
}

fn put_series(shapes: &mut Vec<u8>, strings: &mut Vec<u8>, s: &Series, prev: Option<&Series>) {
    let n_strings = 1 + 2 * s.labels().len();
    put_varint(shapes, s.labels().len() as u64);
    let mask_at = shapes.len();
    shapes.resize(mask_at + n_strings.div_ceil(8), 0);
    for j in 0..n_strings {
        let cur = series_string(s, j);
        let old = prev.map_or("", |p| series_string(p, j));
        if cur != old {
            shapes[mask_at + j / 8] |= 1 << (j % 8);
            put_front_coded(strings, cur, old);
        }
    }
}

fn put_front_coded(out: &mut Vec<u8>, s: &str, prev: &str) {
    let shared = s
        .bytes()
        .zip(prev.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    // Never split a UTF-8 character: back off to a char boundary.
    let shared = (0..=shared)
        .rev()
        .find(|&k| s.is_char_boundary(k))
        .unwrap_or(0);
    put_varint(out, shared as u64);
    put_varint(out, (s.len() - shared) as u64);
    out.extend_from_slice(&s.as_bytes()[shared..]);
}

/// `10^k`, exact for every `k <= MAX_DECIMALS`.
fn pow10(k: u8) -> f64 {
    const P: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    P[usize::from(k & 15)]
}

fn from_decimal(k: u8, m: i64) -> f64 {
    m as f64 / pow10(k)
}

/// The decimal form `(k, m)` of `v` with the fewest fraction digits, if one gives back `v`
/// bit for bit.
fn to_decimal(v: f64) -> Option<(u8, i64)> {
    if !v.is_finite() {
        return None;
    }
    for k in 0..=MAX_DECIMALS {
        let scaled = (v * pow10(k)).round();
        if scaled.abs() >= MAX_MANTISSA {
            return None;
        }
        let m = scaled as i64;
        if from_decimal(k, m).to_bits() == v.to_bits() {
            return Some((k, m));
        }
    }
    None
}

/// Bytes needed for `d` little-endian with no zero top byte.
fn byte_len(d: u64) -> u8 {
    (64 - d.leading_zeros()).div_ceil(8) as u8
}

/// Whether the first sample of a series of `kind` is predicted from the last sample of the
/// previous series: consecutive series of one histogram.
fn chained(prev: Option<(&Series, MetricKind)>, series: &Series, kind: MetricKind) -> bool {
    kind == MetricKind::Histogram
        && prev.is_some_and(|(p, pk)| pk == MetricKind::Histogram && p.name() == series.name())
}

/// The prediction state carried from sample to sample: `(k, m)` of the last decimal sample
/// that may serve as a base.
type Last = Option<(u8, i64)>;

fn base_of(last: Last, k: u8) -> i64 {
    match last {
        Some((lk, lm)) if lk == k => lm,
        _ => 0,
    }
}

fn put_values(batch: &Batch, out: &mut Vec<u8>) {
    let n = batch.sample_count();
    let mut classes = Vec::with_capacity(n);
    let mut mantissas = Vec::with_capacity(4 * n);
    let mut raw: Vec<u64> = Vec::new();
    let mut prev: Option<(&Series, MetricKind, Last)> = None;
    for e in batch.entries() {
        let mut last = match prev {
            Some((ps, pk, l)) if chained(Some((ps, pk)), &e.series, e.kind) => l,
            _ => None,
        };
        let mut prev_bits = 0u64;
        for s in &e.samples {
            if let Some((k, m)) = to_decimal(s.value) {
                let d = zigzag(m.wrapping_sub(base_of(last, k)));
                let len = byte_len(d);
                classes.push((len << 4) | k);
                mantissas.extend_from_slice(&d.to_le_bytes()[..usize::from(len)]);
                last = Some((k, m));
            } else {
                let bits = s.value.to_bits();
                classes.push(CLASS_RAW);
                raw.push(bits ^ prev_bits);
                prev_bits = bits;
                last = None;
            }
        }
        prev = Some((&e.series, e.kind, last));
    }
    out.extend_from_slice(&classes);
    out.extend_from_slice(&mantissas);
    let base = out.len();
    out.resize(base + 8 * raw.len(), 0);
    let planes = &mut out[base..];
    for (i, w) in raw.iter().enumerate() {
        for (b, byte) in w.to_le_bytes().iter().enumerate() {
            planes[b * raw.len() + i] = *byte;
        }
    }
}

/// Decodes a payload produced by [`encode`] (or by a version 1 build). Errors are
/// descriptions for [`crate::error::Corruption::Payload`].
pub fn decode(bytes: &[u8]) -> Result<Batch, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.byte()?;
    if version != 1 && version != PAYLOAD_VERSION {
        return Err(format!("unknown payload version {version}"));
    }
    let series_count = r.count("series count", MAX_SAMPLES_PER_RECORD)?;
    let sample_count = r.count("sample count", MAX_SAMPLES_PER_RECORD)?;
    if series_count > sample_count || (sample_count > 0 && series_count == 0) {
        return Err(format!(
            "{series_count} series cannot hold {sample_count} samples"
        ));
    }
    // Each series needs at least 4 bytes, so this bounds the allocation by the input size.
    if series_count > bytes.len() / 4 {
        return Err("series count exceeds the payload size".into());
    }
    let mut table: Vec<(Series, MetricKind, usize)> = Vec::with_capacity(series_count);
    if version == 1 {
        for _ in 0..series_count {
            let (kind, n) = r.kind_and_count(sample_count)?;
            let series = r.series_v1(table.last().map(|t| &t.0))?;
            table.push((series, kind, n));
        }
    } else {
        let shapes_len = r.count("shapes length", bytes.len())?;
        let mut shapes = Reader {
            buf: r.take(shapes_len)?,
            pos: 0,
        };
        for _ in 0..series_count {
            let (kind, n) = shapes.kind_and_count(sample_count)?;
            let series = series_v2(&mut shapes, &mut r, table.last().map(|t| &t.0))?;
            table.push((series, kind, n));
        }
        if shapes.pos != shapes_len {
            return Err("trailing bytes after the series shapes".into());
        }
    }
    let total = table
        .iter()
        .fold(0usize, |t, (_, _, n)| t.saturating_add(*n));
    if total != sample_count {
        return Err(format!(
            "series hold {total} samples, header says {sample_count}"
        ));
    }
    let mut timestamps = Vec::with_capacity(sample_count.min(bytes.len()));
    let mut prev_ts = 0i64;
    for _ in 0..sample_count {
        prev_ts = prev_ts.wrapping_add(unzigzag(r.varint()?));
        timestamps.push(prev_ts);
    }
    let values = if version == 1 {
        values_v1(&mut r, &table, sample_count)?
    } else {
        values_v2(&mut r, &table, sample_count)?
    };
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    let mut batch = Batch::new();
    let mut i = 0usize;
    for (series, kind, n) in table {
        let samples = (i..i + n)
            .map(|j| Sample::new(timestamps[j], f64::from_bits(values[j])))
            .collect();
        i += n;
        batch.push(series, kind, samples);
    }
    Ok(batch)
}

type Table = [(Series, MetricKind, usize)];

/// Word `i` of `n` words stored as 8 byte planes.
fn plane_word(planes: &[u8], n: usize, i: usize) -> u64 {
    let mut x = [0u8; 8];
    for (b, byte) in x.iter_mut().enumerate() {
        *byte = planes[b * n + i];
    }
    u64::from_le_bytes(x)
}

/// Version 1 values: 8 byte planes of bits XOR the previous bits of the same series.
fn values_v1(r: &mut Reader<'_>, table: &Table, sample_count: usize) -> Result<Vec<u64>, String> {
    let planes = r.take(8 * sample_count)?;
    let mut values = Vec::with_capacity(sample_count);
    for (_, _, n) in table {
        let mut prev_bits = 0u64;
        for _ in 0..*n {
            let bits = plane_word(planes, sample_count, values.len()) ^ prev_bits;
            prev_bits = bits;
            values.push(bits);
        }
    }
    Ok(values)
}

/// Version 2 values: classes, mantissa deltas, raw planes.
fn values_v2(r: &mut Reader<'_>, table: &Table, sample_count: usize) -> Result<Vec<u64>, String> {
    let classes = r.take(sample_count)?;
    let mut n_raw = 0usize;
    let mut deltas = Vec::with_capacity(sample_count);
    for &c in classes {
        if c == CLASS_RAW {
            n_raw += 1;
            continue;
        }
        let len = usize::from(c >> 4);
        if len > 8 {
            return Err(format!("unknown value class {c:#04x}"));
        }
        let mut x = [0u8; 8];
        x[..len].copy_from_slice(r.take(len)?);
        deltas.push(u64::from_le_bytes(x));
    }
    let raw = r.take(8 * n_raw)?;
    let mut values = Vec::with_capacity(sample_count);
    let (mut d, mut w) = (0usize, 0usize);
    let mut prev: Option<(&Series, MetricKind, Last)> = None;
    for (series, kind, n) in table {
        let mut last = match prev {
            Some((ps, pk, l)) if chained(Some((ps, pk)), series, *kind) => l,
            _ => None,
        };
        let mut prev_bits = 0u64;
        for _ in 0..*n {
            let c = classes[values.len()];
            if c == CLASS_RAW {
                let bits = plane_word(raw, n_raw, w) ^ prev_bits;
                w += 1;
                prev_bits = bits;
                last = None;
                values.push(bits);
            } else {
                let k = c & 15;
                let m = base_of(last, k).wrapping_add(unzigzag(deltas[d]));
                d += 1;
                last = Some((k, m));
                values.push(from_decimal(k, m).to_bits());
            }
        }
        prev = Some((series, *kind, last));
    }
    Ok(values)
}

/// A version 2 series: label count and change mask from `shapes`, the changed strings from
/// `strings`.
fn series_v2(
    shapes: &mut Reader<'_>,
    strings: &mut Reader<'_>,
    prev: Option<&Series>,
) -> Result<Series, String> {
    let label_count = shapes.count("label count", MAX_LABELS)?;
    let n_strings = 1 + 2 * label_count;
    let mask = shapes.take(n_strings.div_ceil(8))?;
    if n_strings % 8 != 0 && mask[mask.len() - 1] >> (n_strings % 8) != 0 {
        return Err("change mask bits set past the last string".into());
    }
    let changed = |j: usize| mask[j / 8] & (1 << (j % 8)) != 0;
    let mut read_changed = |j: usize| -> Result<String, String> {
        let old = prev.map_or("", |p| series_string(p, j));
        let s = strings.front_coded(old)?;
        if s == old {
            return Err("a string marked as changed is unchanged".into());
        }
        Ok(s)
    };
    let name = if changed(0) {
        read_changed(0)?
    } else {
        prev.map_or("", |p| p.name()).to_owned()
    };
    // Unchanged label strings are shared with the previous series, not copied.
    let mut labels = Vec::with_capacity(label_count);
    for i in 0..label_count {
        let pl = prev.and_then(|p| p.labels().get(i));
        let name_j = 2 * i + 1;
        let label_name: Arc<str> = match (changed(name_j), pl) {
            (true, _) => Arc::from(read_changed(name_j)?),
            (false, Some(l)) => Arc::clone(&l.name),
            (false, None) => Arc::from(""),
        };
        let value: Arc<str> = match (changed(name_j + 1), pl) {
            (true, _) => Arc::from(read_changed(name_j + 1)?),
            (false, Some(l)) => Arc::clone(&l.value),
            (false, None) => Arc::from(""),
        };
        labels.push(Label {
            name: label_name,
            value,
        });
    }
    Series::from_labels(name, labels).map_err(|e| e.to_string())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("unexpected end of payload")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn count(&mut self, what: &str, limit: usize) -> Result<usize, String> {
        let v = self.varint()?;
        if v > limit as u64 {
            return Err(format!("{what} {v} exceeds the limit {limit}"));
        }
        Ok(v as usize)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("unexpected end of payload")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn front_coded(&mut self, prev: &str) -> Result<String, String> {
        let shared = self.count("shared prefix", prev.len())?;
        let suffix_len = self.count("string length", self.buf.len() - self.pos)?;
        let suffix = self.take(suffix_len)?;
        let head = prev
            .get(..shared)
            .ok_or("shared prefix splits a character")?;
        let tail = std::str::from_utf8(suffix).map_err(|_| "string is not UTF-8")?;
        let mut s = String::with_capacity(shared + suffix_len);
        s.push_str(head);
        s.push_str(tail);
        Ok(s)
    }

    fn kind_and_count(&mut self, sample_count: usize) -> Result<(MetricKind, usize), String> {
        let kind_byte = self.byte()?;
        let kind = MetricKind::from_u8(kind_byte)
            .ok_or_else(|| format!("unknown metric kind {kind_byte}"))?;
        let n = self.count("samples of a series", sample_count)?;
        if n == 0 {
            return Err("a series with no samples".into());
        }
        Ok((kind, n))
    }

    fn series_v1(&mut self, prev: Option<&Series>) -> Result<Series, String> {
        let label_count = self.count("label count", MAX_LABELS)?;
        let name = self.front_coded(prev.map_or("", |p| p.name()))?;
        let mut labels = Vec::with_capacity(label_count);
        for i in 0..label_count {
            let pl = prev.and_then(|p| p.labels().get(i));
            let n = self.front_coded(pl.map_or("", |p| &*p.name))?;
            let v = self.front_coded(pl.map_or("", |p| &*p.value))?;
            labels.push((n, v));
        }
        Series::new(name, labels).map_err(|e| e.to_string())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_batch() -> Batch {
        let mut b = Batch::new();
        for i in 0..50 {
            let s = Series::new(
                "vllm:request_latency_seconds",
                [
                    ("model", "llama-3-8b"),
                    ("instance", &format!("node-{i:03}")),
                ],
            )
            .expect("valid");
            let samples = (0..3)
                .map(|k| Sample::new(1_700_000_000_000 + k * 15_000, i as f64 * 0.5 + k as f64))
                .collect();
            b.push(s, MetricKind::Histogram, samples);
        }
        b
    }

    fn round_trip_bits(batch: &Batch) {
        let mut buf = Vec::new();
        encode(batch, &mut buf);
        let d = decode(&buf).expect("decodes");
        assert_eq!(d.entries().len(), batch.entries().len());
        for ((sa, ka, xa), (sb, kb, xb)) in batch.iter().zip(d.iter()) {
            assert_eq!((sa, ka), (sb, kb));
            assert!(xa.same_bits(&xb), "{xa:?} != {xb:?}");
        }
    }

    #[test]
    fn payload_round_trips_exactly() {
        let batch = sample_batch();
        let mut buf = Vec::new();
        encode(&batch, &mut buf);
        assert_eq!(decode(&buf).expect("decodes"), batch);
    }

    #[test]
    fn nan_and_negative_timestamps_keep_their_bits() {
        let mut b = Batch::new();
        let s = Series::new("x", [("k", "é✓")]).expect("valid");
        let nan = f64::from_bits(0x7ff0_0000_0000_0002);
        b.push(
            s,
            MetricKind::Gauge,
            vec![Sample::new(-5, nan), Sample::new(i64::MAX, -0.0)],
        );
        let mut buf = Vec::new();
        encode(&b, &mut buf);
        let d = decode(&buf).expect("decodes");
        let got: Vec<_> = d.iter().map(|(_, _, s)| s).collect();
        assert!(got[0].same_bits(&Sample::new(-5, nan)));
        assert!(got[1].same_bits(&Sample::new(i64::MAX, -0.0)));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode(&sample_batch(), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn every_value_keeps_its_bits_decimal_or_not() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.25,
            12345.67,
            1_234_567.891,
            0.000_001,
            1e-15,
            1.5e-300,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            -9_007_199_254_740_994.0,
            1e20,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.1 + 0.2,
            std::f64::consts::PI,
            1_750_000_015.123_456_7,
        ];
        let mut b = Batch::new();
        for (i, v) in values.iter().enumerate() {
            let s = Series::new("v", [("i", i.to_string())]).expect("valid");
            // Alone, and after a neighbour of the same and of another decimal class.
            b.push(
                s,
                MetricKind::Gauge,
                vec![
                    Sample::new(0, *v),
                    Sample::new(1, 0.5),
                    Sample::new(2, *v),
                    Sample::new(3, *v),
                ],
            );
        }
        round_trip_bits(&b);
        for v in values {
            if let Some((k, m)) = to_decimal(v) {
                assert_eq!(from_decimal(k, m).to_bits(), v.to_bits(), "{v}");
            }
        }
        assert_eq!(to_decimal(12345.67), Some((2, 1_234_567)));
        assert_eq!(to_decimal(-0.0), None);
        assert_eq!(to_decimal(0.1 + 0.2), None);
    }

    #[test]
    fn histogram_buckets_are_predicted_from_the_previous_bucket() {
        let mut b = Batch::new();
        for (le, c) in [
            ("0.1", 1_000_000.0),
            ("0.5", 1_000_007.0),
            ("+Inf", 1_000_009.0),
        ] {
            let s = Series::new("h_bucket", [("le", le)]).expect("valid");
            b.push_one(s, MetricKind::Histogram, Sample::new(7, c));
        }
        let s = Series::new("h_sum", [("le", "x")]).expect("valid");
        b.push_one(s, MetricKind::Histogram, Sample::new(7, 1_000_010.0));
        let mut buf = Vec::new();
        encode(&b, &mut buf);
        assert_eq!(decode(&buf).expect("decodes"), b);
        // Classes: the first bucket needs 3 bytes, the next two 1, the _sum (another name) 3.
        let classes = &buf[buf.len() - 4 - 8..buf.len() - 8];
        assert_eq!(classes, [0x30, 0x10, 0x10, 0x30]);
    }

    #[test]
    fn unchanged_strings_are_not_repeated() {
        let mut b = Batch::new();
        for cpu in 0..4 {
            for mode in ["idle", "user"] {
                let s = Series::new(
                    "node_cpu_seconds_total",
                    [
                        ("cpu", cpu.to_string().as_str()),
                        ("instance", "node-0042:9100"),
                        ("mode", mode),
                    ],
                )
                .expect("valid");
                b.push_one(s, MetricKind::Counter, Sample::new(1, 2.5));
            }
        }
        let mut buf = Vec::new();
        encode(&b, &mut buf);
        assert_eq!(decode(&buf).expect("decodes"), b);
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(text.matches("node_cpu_seconds_total").count(), 1);
        assert_eq!(text.matches("node-0042:9100").count(), 1);
    }

    #[test]
    fn version_1_payloads_still_decode() {
        // encode_v1 is the layout written by version 1 builds.
        fn encode_v1(batch: &Batch, out: &mut Vec<u8>) {
            out.clear();
            out.push(1);
            put_varint(out, batch.entries().len() as u64);
            put_varint(out, batch.sample_count() as u64);
            let mut prev: Option<&Series> = None;
            for e in batch.entries() {
                out.push(e.kind as u8);
                put_varint(out, e.samples.len() as u64);
                put_varint(out, e.series.labels().len() as u64);
                put_front_coded(out, e.series.name(), prev.map_or("", |p| p.name()));
                for (i, l) in e.series.labels().iter().enumerate() {
                    let pl = prev.and_then(|p| p.labels().get(i));
                    put_front_coded(out, &l.name, pl.map_or("", |p| &*p.name));
                    put_front_coded(out, &l.value, pl.map_or("", |p| &*p.value));
                }
                prev = Some(&e.series);
            }
            let mut prev_ts = 0i64;
            for (_, _, s) in batch.iter() {
                put_varint(out, zigzag(s.timestamp_ms.wrapping_sub(prev_ts)));
                prev_ts = s.timestamp_ms;
            }
            let n = batch.sample_count();
            let base = out.len();
            out.resize(base + 8 * n, 0);
            let mut i = 0;
            for e in batch.entries() {
                let mut prev_bits = 0u64;
                for s in &e.samples {
                    let x = (s.value.to_bits() ^ prev_bits).to_le_bytes();
                    prev_bits = s.value.to_bits();
                    for (k, byte) in x.iter().enumerate() {
                        out[base + k * n + i] = *byte;
                    }
                    i += 1;
                }
            }
        }
        let batch = sample_batch();
        let mut buf = Vec::new();
        encode_v1(&batch, &mut buf);
        assert_eq!(decode(&buf).expect("decodes"), batch);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn corrupt_classes_and_masks_are_errors() {
        let mut b = Batch::new();
        let s = Series::new("m", [("a", "b")]).expect("valid");
        b.push_one(s, MetricKind::Gauge, Sample::new(0, 3.0));
        let mut buf = Vec::new();
        encode(&b, &mut buf);
        // The class byte is the one before the single mantissa byte.
        let at = buf.len() - 2;
        assert_eq!(buf[at], 0x10);
        let mut bad = buf.clone();
        bad[at] = 0x9f;
        assert!(decode(&bad).is_err());
        // The mask of 3 strings is the byte after kind, n_samples and label_count.
        let mask_at = 1 + 1 + 1 + 1 + 3;
        assert_eq!(buf[mask_at], 0b111);
        let mut bad = buf;
        bad[mask_at] = 0b1111;
        assert!(decode(&bad).is_err());
    }
}
