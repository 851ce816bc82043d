//! Record frames from untrusted bytes: `decode_header` and `decode_frame` never panic, and a
//! frame that decodes re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::wal::record::{self, FRAME_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never carry a right checksum; also try them with both checksums
    // made right, so the field checks behind the checksums get fuzzed too.
    if let Some(fixed) = with_checksums(data) {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    if let Ok(h) = record::decode_header(data) {
        assert_eq!(record::decode_header(&h.encode()), Ok(h));
        assert!(h.frame_len() >= FRAME_HEADER_LEN as u64);
        assert!(h.end_offset() > h.first_offset);
    }
    if let Ok((h, payload)) = record::decode_frame(data) {
        assert_eq!(payload.len(), h.payload_len as usize);
        let mut out = Vec::new();
        assert_eq!(record::encode_frame(h, payload, &mut out), h);
        assert_eq!(out.as_slice(), &data[..out.len()]);
    }
}

fn with_checksums(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < FRAME_HEADER_LEN {
        return None;
    }
    let mut b = data.to_vec();
    let available = b.len() - FRAME_HEADER_LEN;
    let len = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let payload_crc = crc32c::crc32c(&b[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len.min(available)]);
    b[8..12].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&b[4..FRAME_HEADER_LEN]);
    b[0..4].copy_from_slice(&header_crc.to_le_bytes());
    Some(b)
}
