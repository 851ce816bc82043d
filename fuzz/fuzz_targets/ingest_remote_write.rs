//! Remote write bodies from untrusted bytes: `ingest::decode_remote_write` never panics, and
//! what it accepts respects the limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::ingest::{IngestLimits, decode_remote_write};

fuzz_target!(|data: &[u8]| {
    let limits = IngestLimits {
        max_body_bytes: 64 << 10,
        max_samples: 1000,
    };
    if let Ok(batch) = decode_remote_write(data, &limits) {
        assert!(batch.sample_count() <= limits.max_samples);
    }
});
