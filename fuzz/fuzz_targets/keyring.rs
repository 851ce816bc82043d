//! Keyring files from untrusted bytes: `keys::decode_keyring` never panics and never returns
//! more entries than the bytes can hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::keys;

const KEYRING_MAGIC: &[u8; 8] = b"MSPLKEYR";
/// Header (magic, version, count) and one entry (key id, created, nonce, wrapped seed + tag).
const HEADER_LEN: usize = 12;
const ENTRY_LEN: usize = 4 + 8 + 12 + 48;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never carry the magic and a right checksum; also try them with both
    // made right, so the checks behind them get fuzzed too.
    let mut fixed = KEYRING_MAGIC.to_vec();
    fixed.extend_from_slice(data);
    let crc = crc32c::crc32c(&fixed);
    fixed.extend_from_slice(&crc.to_le_bytes());
    check(&fixed);
});

fn check(data: &[u8]) {
    if let Ok(entries) = keys::decode_keyring(data) {
        assert_eq!(data.len(), HEADER_LEN + entries.len() * ENTRY_LEN + 4);
    }
}
