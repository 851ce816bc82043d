//! Segment headers and segment index files from untrusted bytes: the decoders never panic,
//! and what decodes re-encodes to bytes that decode equal. (Not to the same
//! bytes: the decoders do not insist that reserved bytes and the tenant padding are zero.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::wal::segment::{self, SEGMENT_HEADER_LEN, SegmentIndex};

const SEGMENT_MAGIC: &[u8; 8] = b"MSPLSEG\0";
const INDEX_MAGIC: &[u8; 8] = b"MSPLIDX\0";

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never carry the magic and a right checksum; also try them with both
    // made right, so the field checks behind them get fuzzed too.
    check(&header_fixed(data));
    check(&index_fixed(data));
});

fn check(data: &[u8]) {
    if let Ok(h) = segment::decode_header(data) {
        assert_eq!(segment::decode_header(&h.encode()), Ok(h));
    }
    if let Ok(idx) = SegmentIndex::decode(data) {
        assert_eq!(SegmentIndex::decode(&idx.encode()), Ok(idx));
    }
}

/// `data` behind a segment magic, padded to a header, with its checksum made right.
fn header_fixed(data: &[u8]) -> Vec<u8> {
    let mut b = SEGMENT_MAGIC.to_vec();
    b.extend_from_slice(data);
    if b.len() < SEGMENT_HEADER_LEN {
        b.resize(SEGMENT_HEADER_LEN, 0);
    }
    let crc = crc32c::crc32c(&b[..SEGMENT_HEADER_LEN - 4]);
    b[SEGMENT_HEADER_LEN - 4..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `data` behind an index magic, with a right checksum appended.
fn index_fixed(data: &[u8]) -> Vec<u8> {
    let mut b = INDEX_MAGIC.to_vec();
    b.extend_from_slice(data);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}
