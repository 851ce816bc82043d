//! Record payloads from untrusted bytes: `payload::decode` and `seal::decompress` never panic,
//! and a payload that decodes re-encodes to one that decodes to the same batch, bit for bit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::{Batch, payload, seal};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = payload::decode(data) {
        let mut encoded = Vec::new();
        payload::encode(&batch, &mut encoded);
        let again = payload::decode(&encoded).expect("a re-encoded payload decodes");
        assert_same(&batch, &again);
        let mut twice = Vec::new();
        payload::encode(&again, &mut twice);
        assert_eq!(encoded, twice, "encoding is deterministic");
    }
    if let Ok(plain) = seal::decompress(data) {
        assert!(plain.len() <= seal::MAX_PLAINTEXT);
    }
});

/// Equal series, kinds and sample bits in the same order (NaN != NaN, so not `==`).
fn assert_same(a: &Batch, b: &Batch) {
    assert_eq!(a.sample_count(), b.sample_count());
    assert_eq!(a.entries().len(), b.entries().len());
    for (x, y) in a.entries().iter().zip(b.entries()) {
        assert_eq!(x.series, y.series);
        assert_eq!(x.kind, y.kind);
    }
    assert!(a.iter().count() == b.iter().count());
    for ((sa, ka, xa), (sb, kb, xb)) in a.iter().zip(b.iter()) {
        assert_eq!(sa, sb);
        assert_eq!(ka, kb);
        assert!(xa.same_bits(&xb), "{xa:?} != {xb:?}");
    }
}
