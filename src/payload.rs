//! The plaintext record payload: a batch laid out column-wise so that zstd compresses it well.
//!
//! Pure functions over byte slices; no I/O. The byte layout is specified in docs/format.md
//! ("Record payload"). Decoding is bounded: every count and length is checked against the
//! format's limits and the bytes remaining before anything is allocated from it, and it never
//! panics on any input (fuzzed by `fuzz/fuzz_targets/payload.rs`).

use crate::sample::{Batch, MAX_LABELS, MetricKind, Sample, Series};

/// Payload layout version written by this build.
pub const PAYLOAD_VERSION: u8 = 1;
/// Most samples one record may hold.
pub const MAX_SAMPLES_PER_RECORD: usize = 1 << 20;

/// Encodes `batch` (which must not be empty) into `out`, replacing its contents.
pub fn encode(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.push(PAYLOAD_VERSION);
    put_varint(out, batch.entries().len() as u64);
    put_varint(out, batch.sample_count() as u64);
    let mut prev: Option<&Series> = None;
    for e in batch.entries() {
        out.push(e.kind as u8);
        put_varint(out, e.samples.len() as u64);
        put_series(out, &e.series, prev);
        prev = Some(&e.series);
    }
    let mut prev_ts = 0i64;
    for e in batch.entries() {
        for s in &e.samples {
            put_varint(out, zigzag(s.timestamp_ms.wrapping_sub(prev_ts)));
            prev_ts = s.timestamp_ms;
        }
    }
    let n = batch.sample_count();
    let base = out.len();
    out.resize(base + 8 * n, 0);
    let planes = &mut out[base..];
    let mut i = 0usize;
    for e in batch.entries() {
        let mut prev_bits = 0u64;
        for s in &e.samples {
            let bits = s.value.to_bits();
            let x = (bits ^ prev_bits).to_le_bytes();
            prev_bits = bits;
            for (k, byte) in x.iter().enumerate() {
                planes[k * n + i] = *byte;
            }
            i += 1;
        }
    }
}

fn put_series(out: &mut Vec<u8>, s: &Series, prev: Option<&Series>) {
    put_varint(out, s.labels().len() as u64);
    put_front_coded(out, s.name(), prev.map_or("", |p| p.name()));
    for (i, l) in s.labels().iter().enumerate() {
        let pl = prev.and_then(|p| p.labels().get(i));
        put_front_coded(out, &l.name, pl.map_or("", |p| p.name.as_str()));
        put_front_coded(out, &l.value, pl.map_or("", |p| p.value.as_str()));
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

/// Decodes a payload produced by [`encode`]. Errors are descriptions for
/// [`crate::error::Corruption::Payload`].
pub fn decode(bytes: &[u8]) -> Result<Batch, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.byte()?;
    if version != PAYLOAD_VERSION {
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
    let mut total = 0usize;
    for _ in 0..series_count {
        let kind_byte = r.byte()?;
        let kind = MetricKind::from_u8(kind_byte)
            .ok_or_else(|| format!("unknown metric kind {kind_byte}"))?;
        let n = r.count("samples of a series", sample_count)?;
        if n == 0 {
            return Err("a series with no samples".into());
        }
        total = total.saturating_add(n);
        let series = r.series(table.last().map(|t| &t.0))?;
        table.push((series, kind, n));
    }
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
    let planes = r.take(8 * sample_count)?;
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    let mut batch = Batch::new();
    let mut i = 0usize;
    for (series, kind, n) in table {
        let mut prev_bits = 0u64;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let mut x = [0u8; 8];
            for (k, b) in x.iter_mut().enumerate() {
                *b = planes[k * sample_count + i];
            }
            let bits = u64::from_le_bytes(x) ^ prev_bits;
            prev_bits = bits;
            samples.push(Sample::new(timestamps[i], f64::from_bits(bits)));
            i += 1;
        }
        batch.push(series, kind, samples);
    }
    Ok(batch)
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

    fn series(&mut self, prev: Option<&Series>) -> Result<Series, String> {
        let label_count = self.count("label count", MAX_LABELS)?;
        let name = self.front_coded(prev.map_or("", |p| p.name()))?;
        let mut labels = Vec::with_capacity(label_count);
        for i in 0..label_count {
            let pl = prev.and_then(|p| p.labels().get(i));
            let n = self.front_coded(pl.map_or("", |p| p.name.as_str()))?;
            let v = self.front_coded(pl.map_or("", |p| p.value.as_str()))?;
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
                [("model", "llama-3-8b"), ("instance", &format!("node-{i:03}"))],
            )
            .expect("valid");
            let samples = (0..3)
                .map(|k| Sample::new(1_700_000_000_000 + k * 15_000, i as f64 * 0.5 + k as f64))
                .collect();
            b.push(s, MetricKind::Histogram, samples);
        }
        b
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
        b.push(s, MetricKind::Gauge, vec![Sample::new(-5, nan), Sample::new(i64::MAX, -0.0)]);
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
}
