//! Line protocol from untrusted bytes: `ingest::decode_line_protocol` never panics, at any
//! precision (chosen by the first byte), and what it accepts respects the limits. The rest
//! also goes through `ingest::decompress` with each coding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::ingest::{IngestLimits, Precision, decode_line_protocol, decompress};

const PRECISIONS: [Precision; 6] = [
    Precision::Ns,
    Precision::Us,
    Precision::Ms,
    Precision::S,
    Precision::M,
    Precision::H,
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let precision = PRECISIONS[usize::from(first) % PRECISIONS.len()];
    let limits = IngestLimits {
        max_body_bytes: 64 << 10,
        max_samples: 1000,
    };
    if let Ok(batch) = decode_line_protocol(body, precision, 1_700_000_000_000, &limits) {
        assert!(batch.sample_count() <= limits.max_samples);
    }
    let coding = ["", "gzip", "deflate", "zstd", "snappy"][usize::from(first >> 5) % 5];
    if let Ok(plain) = decompress(body, coding, 64 << 10) {
        assert!(plain.len() <= 64 << 10);
    }
});
