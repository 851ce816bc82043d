//! Segment files and their time index. Pure encode/decode; no I/O.
//!
//! Segment header (128 bytes, little-endian):
//! ```text
//!  0   8  magic        "MSPLSEG\0"
//!  8   2  version      1
//! 10   2  header_len   128
//! 12   4  key_id       data key the segment's records are sealed with
//! 16   8  base_offset  offset of the first sample the segment may hold
//! 24   8  created_ms   creation time, ms since the Unix epoch
//! 32   4  epoch        writer epoch that created the segment
//! 36   1  tenant_len   1..=64
//! 37  64  tenant       tenant id, zero padded
//! 101 23  reserved     zero
//! 124  4  header_crc   CRC32C of bytes 0..124
//! ```
//!
//! Index file `<base>.idx`, written when a segment is sealed:
//! ```text
//!  0   8  magic         "MSPLIDX\0"
//!  8   2  version       1
//! 10   2  reserved      zero
//! 12   4  record_count
//! 16   8  base_offset
//! 24   8  end_offset    one past the last sample
//! 32   8  min_ts
//! 40   8  max_ts
//! 48   8  segment_len   bytes of the segment file the index covers
//! 56   8  sealed_ms
//! 64  36×n entries      pos u64 | first_offset u64 | count u32 | min_ts i64 | max_ts i64
//! ..   4  crc32c        of everything before
//! ```

use crate::error::Corruption;
use crate::tenant::{MAX_TENANT_LEN, TenantId};

/// Bytes of a segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 128;
/// Segment format version written by this build.
pub const SEGMENT_VERSION: u16 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"MSPLSEG\0";
const TENANT_AT: usize = 37;
const HEADER_CRC_AT: usize = 124;

const INDEX_MAGIC: &[u8; 8] = b"MSPLIDX\0";
const INDEX_VERSION: u16 = 1;
const INDEX_HEADER_LEN: usize = 64;
const INDEX_ENTRY_LEN: usize = 36;

/// The fields of a segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The data key id.
    pub key_id: u32,
    /// First offset the segment may hold.
    pub base_offset: u64,
    /// Creation time.
    pub created_ms: i64,
    /// Writer epoch of the session that created it.
    pub epoch: u32,
    /// Owning tenant.
    pub tenant: TenantId,
}

impl SegmentHeader {
    /// The 128 header bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(SEGMENT_MAGIC);
        h[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        h[12..16].copy_from_slice(&self.key_id.to_le_bytes());
        h[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        h[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        h[32..36].copy_from_slice(&self.epoch.to_le_bytes());
        let t = self.tenant.as_str().as_bytes();
        h[36] = t.len() as u8;
        h[TENANT_AT..TENANT_AT + t.len()].copy_from_slice(t);
        let crc = crc32c::crc32c(&h[..HEADER_CRC_AT]);
        h[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and validates a segment header from the start of `b`.
pub fn decode_header(b: &[u8]) -> Result<SegmentHeader, Corruption> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err(Corruption::Truncated {
            needed: SEGMENT_HEADER_LEN as u64,
            available: b.len() as u64,
        });
    }
    if &b[0..8] != SEGMENT_MAGIC {
        return Err(Corruption::BadMagic { what: "segment" });
    }
    let expected = u32_at(b, HEADER_CRC_AT);
    let actual = crc32c::crc32c(&b[..HEADER_CRC_AT]);
    if expected != actual {
        return Err(Corruption::ChecksumMismatch { expected, actual });
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != SEGMENT_VERSION {
        return Err(Corruption::UnsupportedVersion {
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    let header_len = u16::from_le_bytes([b[10], b[11]]);
    if usize::from(header_len) != SEGMENT_HEADER_LEN {
        return Err(Corruption::InvalidField {
            field: "header_len",
            reason: format!("{header_len}, expected {SEGMENT_HEADER_LEN}"),
        });
    }
    let tlen = usize::from(b[36]);
    if tlen == 0 || tlen > MAX_TENANT_LEN {
        return Err(Corruption::InvalidField {
            field: "tenant_len",
            reason: format!("{tlen} is out of range"),
        });
    }
    if b[TENANT_AT + tlen..HEADER_CRC_AT].iter().any(|&x| x != 0) {
        return Err(Corruption::InvalidField {
            field: "reserved",
            reason: "tenant padding or reserved bytes are not zero".into(),
        });
    }
    let tenant = std::str::from_utf8(&b[TENANT_AT..TENANT_AT + tlen])
        .ok()
        .and_then(|s| TenantId::new(s).ok())
        .ok_or_else(|| Corruption::InvalidField {
            field: "tenant",
            reason: "not a valid tenant id".into(),
        })?;
    Ok(SegmentHeader {
        key_id: u32_at(b, 12),
        base_offset: u64_at(b, 16),
        created_ms: u64_at(b, 24) as i64,
        epoch: u32_at(b, 32),
        tenant,
    })
}

/// Where a record sits in its segment and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLoc {
    /// Byte position of the frame in the segment file.
    pub pos: u64,
    /// First sample offset.
    pub first_offset: u64,
    /// Number of samples.
    pub count: u32,
    /// Smallest timestamp.
    pub min_ts: i64,
    /// Largest timestamp.
    pub max_ts: i64,
}

impl RecordLoc {
    /// One past the last offset.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }
}

/// The time index of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// First offset the segment may hold.
    pub base_offset: u64,
    /// One past the last sample.
    pub end_offset: u64,
    /// Smallest timestamp (`i64::MAX` when there are no records).
    pub min_ts: i64,
    /// Largest timestamp (`i64::MIN` when there are no records).
    pub max_ts: i64,
    /// Bytes of the segment file the index covers.
    pub segment_len: u64,
    /// When the segment was sealed.
    pub sealed_ms: i64,
    /// Every readable record, in offset order.
    pub records: Vec<RecordLoc>,
}

impl SegmentIndex {
    /// The index bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + self.records.len() * 36 + 4);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for v in [self.base_offset, self.end_offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.min_ts, self.max_ts] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.segment_len.to_le_bytes());
        out.extend_from_slice(&self.sealed_ms.to_le_bytes());
        for r in &self.records {
            out.extend_from_slice(&r.pos.to_le_bytes());
            out.extend_from_slice(&r.first_offset.to_le_bytes());
            out.extend_from_slice(&r.count.to_le_bytes());
            out.extend_from_slice(&r.min_ts.to_le_bytes());
            out.extend_from_slice(&r.max_ts.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and validates index bytes. Bounded; never panics.
    pub fn decode(b: &[u8]) -> Result<Self, Corruption> {
        if b.len() < INDEX_HEADER_LEN + 4 {
            return Err(Corruption::Truncated {
                needed: (INDEX_HEADER_LEN + 4) as u64,
                available: b.len() as u64,
            });
        }
        if &b[0..8] != INDEX_MAGIC {
            return Err(Corruption::BadMagic { what: "index" });
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let expected = u32_at(crc, 0);
        let actual = crc32c::crc32c(body);
        if expected != actual {
            return Err(Corruption::ChecksumMismatch { expected, actual });
        }
        if b[10..12] != [0, 0] {
            return Err(Corruption::InvalidField {
                field: "reserved",
                reason: "index reserved bytes are not zero".into(),
            });
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != INDEX_VERSION {
            return Err(Corruption::UnsupportedVersion {
                found: version,
                supported: INDEX_VERSION,
            });
        }
        let n = u32_at(b, 12) as usize;
        if (body.len() - INDEX_HEADER_LEN) / INDEX_ENTRY_LEN != n
            || !(body.len() - INDEX_HEADER_LEN).is_multiple_of(INDEX_ENTRY_LEN)
        {
            return Err(Corruption::LengthOutOfBounds {
                len: n as u64,
                limit: ((body.len() - INDEX_HEADER_LEN) / INDEX_ENTRY_LEN) as u64,
            });
        }
        let records = body[INDEX_HEADER_LEN..]
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|c| RecordLoc {
                pos: u64_at(c, 0),
                first_offset: u64_at(c, 8),
                count: u32_at(c, 16),
                min_ts: u64_at(c, 20) as i64,
                max_ts: u64_at(c, 28) as i64,
            })
            .collect();
        Ok(Self {
            base_offset: u64_at(b, 16),
            end_offset: u64_at(b, 24),
            min_ts: u64_at(b, 32) as i64,
            max_ts: u64_at(b, 40) as i64,
            segment_len: u64_at(b, 48),
            sealed_ms: u64_at(b, 56) as i64,
            records,
        })
    }
}

/// The file name of the segment with `base_offset`.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.seg")
}

/// The file name of the index of the segment with `base_offset`.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.idx")
}

/// The base offset named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_headers_round_trip_and_detect_flips() {
        let h = SegmentHeader {
            key_id: 3,
            base_offset: 42,
            created_ms: 1_700_000_000_000,
            epoch: 9,
            tenant: TenantId::new("team-a").expect("valid"),
        };
        let b = h.encode();
        assert_eq!(decode_header(&b).expect("decodes"), h);
        for i in 0..SEGMENT_HEADER_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(decode_header(&c).is_err(), "flip of bit {i} not detected");
        }
    }

    #[test]
    fn indexes_round_trip() {
        let idx = SegmentIndex {
            base_offset: 10,
            end_offset: 30,
            min_ts: 1,
            max_ts: 2,
            segment_len: 999,
            sealed_ms: 5,
            records: vec![RecordLoc {
                pos: 128,
                first_offset: 10,
                count: 20,
                min_ts: 1,
                max_ts: 2,
            }],
        };
        assert_eq!(SegmentIndex::decode(&idx.encode()).expect("decodes"), idx);
    }

    #[test]
    fn segment_names_sort_by_offset() {
        assert_eq!(parse_segment_file_name(&segment_file_name(7)), Some(7));
        assert_eq!(parse_segment_file_name("7.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
