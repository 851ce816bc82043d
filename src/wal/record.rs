//! The record frame: a fixed 56-byte header, then the sealed payload. Pure; no I/O.
//!
//! ```text
//! offset size field
//!  0     4    header_crc    CRC32C of bytes 4..56 (so it covers the length and every field)
//!  4     4    payload_len   sealed payload bytes (zstd + AES-GCM, tag included)
//!  8     4    payload_crc   CRC32C of the sealed payload
//! 12     1    kind          1 = samples
//! 13     3    reserved      zero
//! 16     4    sample_count  samples in the record (>= 1)
//! 20     8    first_offset  offset of the record's first sample
//! 28     8    min_ts        smallest timestamp (ms)
//! 36     8    max_ts        largest timestamp (ms)
//! 44    12    nonce         AES-GCM nonce: epoch u32 | counter u64
//! 56     ..   payload
//! ```
//! All integers little-endian. Bytes 12..44 are the associated data of the AES-GCM seal,
//! together with the tenant, key id and segment base offset (see `seal`).

use crate::error::Corruption;
use crate::payload::MAX_SAMPLES_PER_RECORD;
use crate::seal::NONCE_LEN;

/// Bytes of the frame header.
pub const FRAME_HEADER_LEN: usize = 56;
/// Largest sealed payload a frame may carry.
pub const MAX_PAYLOAD_LEN: u32 = 64 << 20;
/// The record kind for a batch of samples.
pub const KIND_SAMPLES: u8 = 1;

const HEADER_CRC: usize = 0;
const PAYLOAD_LEN: usize = 4;
const PAYLOAD_CRC: usize = 8;
const KIND: usize = 12;
const RESERVED: usize = 13;
const SAMPLE_COUNT: usize = 16;
const FIRST_OFFSET: usize = 20;
const MIN_TS: usize = 28;
const MAX_TS: usize = 36;
const NONCE: usize = 44;
/// The header bytes bound into the seal as associated data.
pub const AAD_RANGE: std::ops::Range<usize> = KIND..NONCE;

/// The decoded fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sealed payload length.
    pub payload_len: u32,
    /// CRC32C of the sealed payload.
    pub payload_crc: u32,
    /// Samples in the record.
    pub sample_count: u32,
    /// Offset of the first sample.
    pub first_offset: u64,
    /// Smallest timestamp.
    pub min_ts: i64,
    /// Largest timestamp.
    pub max_ts: i64,
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl FrameHeader {
    /// Offset one past the last sample.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.sample_count)
    }

    /// Total frame length: header plus payload.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// The associated-data bytes of this header (the fields at [`AAD_RANGE`]).
    pub fn aad_fields(&self) -> [u8; 32] {
        let full = self.encode_unchecked();
        full[AAD_RANGE].try_into().expect("AAD_RANGE is 32 bytes")
    }

    fn encode_unchecked(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[PAYLOAD_LEN..PAYLOAD_CRC].copy_from_slice(&self.payload_len.to_le_bytes());
        h[PAYLOAD_CRC..KIND].copy_from_slice(&self.payload_crc.to_le_bytes());
        h[KIND] = KIND_SAMPLES;
        h[SAMPLE_COUNT..FIRST_OFFSET].copy_from_slice(&self.sample_count.to_le_bytes());
        h[FIRST_OFFSET..MIN_TS].copy_from_slice(&self.first_offset.to_le_bytes());
        h[MIN_TS..MAX_TS].copy_from_slice(&self.min_ts.to_le_bytes());
        h[MAX_TS..NONCE].copy_from_slice(&self.max_ts.to_le_bytes());
        h[NONCE..].copy_from_slice(&self.nonce);
        h
    }

    /// The header bytes with their checksum.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = self.encode_unchecked();
        let crc = crc32c::crc32c(&h[PAYLOAD_LEN..]);
        h[HEADER_CRC..PAYLOAD_LEN].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and validates a frame header from the first [`FRAME_HEADER_LEN`] bytes of `b`.
pub fn decode_header(b: &[u8]) -> Result<FrameHeader, Corruption> {
    if b.len() < FRAME_HEADER_LEN {
        return Err(Corruption::Truncated {
            needed: FRAME_HEADER_LEN as u64,
            available: b.len() as u64,
        });
    }
    let expected = u32_at(b, HEADER_CRC);
    let actual = crc32c::crc32c(&b[PAYLOAD_LEN..FRAME_HEADER_LEN]);
    if expected != actual {
        return Err(Corruption::ChecksumMismatch { expected, actual });
    }
    let invalid = |field, reason: String| Corruption::InvalidField { field, reason };
    if b[KIND] != KIND_SAMPLES {
        return Err(invalid("kind", format!("unknown record kind {}", b[KIND])));
    }
    if b[RESERVED..SAMPLE_COUNT] != [0, 0, 0] {
        return Err(invalid("reserved", "reserved bytes are not zero".into()));
    }
    let h = FrameHeader {
        payload_len: u32_at(b, PAYLOAD_LEN),
        payload_crc: u32_at(b, PAYLOAD_CRC),
        sample_count: u32_at(b, SAMPLE_COUNT),
        first_offset: u64_at(b, FIRST_OFFSET),
        min_ts: u64_at(b, MIN_TS) as i64,
        max_ts: u64_at(b, MAX_TS) as i64,
        nonce: b[NONCE..FRAME_HEADER_LEN].try_into().expect("12 bytes"),
    };
    if h.payload_len > MAX_PAYLOAD_LEN {
        return Err(Corruption::LengthOutOfBounds {
            len: u64::from(h.payload_len),
            limit: u64::from(MAX_PAYLOAD_LEN),
        });
    }
    if h.sample_count == 0 || h.sample_count as usize > MAX_SAMPLES_PER_RECORD {
        return Err(invalid(
            "sample_count",
            format!("{} is out of range", h.sample_count),
        ));
    }
    if h.first_offset
        .checked_add(u64::from(h.sample_count))
        .is_none()
    {
        return Err(invalid("first_offset", "offset range overflows".into()));
    }
    if h.min_ts > h.max_ts {
        return Err(invalid("min_ts", "min_ts is after max_ts".into()));
    }
    Ok(h)
}

/// Checks the payload checksum.
pub fn check_payload(h: &FrameHeader, payload: &[u8]) -> Result<(), Corruption> {
    if payload.len() != h.payload_len as usize {
        return Err(Corruption::Truncated {
            needed: u64::from(h.payload_len),
            available: payload.len() as u64,
        });
    }
    let actual = crc32c::crc32c(payload);
    if actual != h.payload_crc {
        return Err(Corruption::ChecksumMismatch {
            expected: h.payload_crc,
            actual,
        });
    }
    Ok(())
}

/// Decodes a whole frame at the start of `b`: the header and a checked payload slice.
pub fn decode_frame(b: &[u8]) -> Result<(FrameHeader, &[u8]), Corruption> {
    let h = decode_header(b)?;
    let end = FRAME_HEADER_LEN + h.payload_len as usize;
    let payload = b.get(FRAME_HEADER_LEN..end).ok_or(Corruption::Truncated {
        needed: end as u64,
        available: b.len() as u64,
    })?;
    check_payload(&h, payload)?;
    Ok((h, payload))
}

/// Appends a whole frame for `payload` to `out`; `h.payload_len` and `h.payload_crc` are
/// filled in here.
pub fn encode_frame(mut h: FrameHeader, payload: &[u8], out: &mut Vec<u8>) -> FrameHeader {
    h.payload_len = payload.len() as u32;
    h.payload_crc = crc32c::crc32c(payload);
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FrameHeader {
        FrameHeader {
            payload_len: 0,
            payload_crc: 0,
            sample_count: 10,
            first_offset: 1000,
            min_ts: -5,
            max_ts: 99,
            nonce: [7; 12],
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        let h = encode_frame(header(), b"payload", &mut out);
        let (d, p) = decode_frame(&out).expect("decodes");
        assert_eq!(d, h);
        assert_eq!(p, b"payload");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode_frame(header(), b"payload", &mut out);
        for i in 0..out.len() * 8 {
            let mut c = out.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(decode_frame(&c).is_err(), "flip of bit {i} not detected");
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_allocation() {
        let mut h = header();
        h.payload_len = u32::MAX;
        let b = h.encode();
        assert!(matches!(
            decode_header(&b),
            Err(Corruption::LengthOutOfBounds { .. })
        ));
    }
}
