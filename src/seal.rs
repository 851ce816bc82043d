//! Sealing a record payload: zstd, then AES-256-GCM with the record's position as associated
//! data. Pure functions; no I/O.
//!
//! The nonce is 12 bytes: a 4-byte writer epoch then an 8-byte record counter, both
//! little-endian (docs/format.md, "Nonces"). The epoch is a per-tenant counter made durable
//! before a writer uses it, so no (key, nonce) pair repeats, not even when recovery truncates a
//! torn tail and the same offsets are written again.

use std::cell::RefCell;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::error::Corruption;
use crate::tenant::TenantId;

/// Bytes of the GCM authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Largest decompressed payload accepted, in bytes.
pub const MAX_PLAINTEXT: usize = 256 << 20;

/// A tenant's data key for one key id, ready to seal and open records.
pub struct DataKey {
    key_id: u32,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// Builds a data key from 32 bytes of key material.
    pub fn new(key_id: u32, material: &Zeroizing<[u8; 32]>) -> Self {
        let cipher = Aes256Gcm::new(&(**material).into());
        Self { key_id, cipher }
    }

    /// The key id stored in segment headers.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

/// Where a record sits; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct RecordPosition<'a> {
    /// The owning tenant.
    pub tenant: &'a TenantId,
    /// Base offset of the segment holding the record.
    pub segment_base: u64,
    /// The frame header bytes that describe the record (everything but the checksums and
    /// the nonce; see `record::aad_fields`).
    pub header: &'a [u8],
}

fn aad(pos: &RecordPosition<'_>, key_id: u32) -> Vec<u8> {
    let t = pos.tenant.as_str().as_bytes();
    let mut a = Vec::with_capacity(16 + t.len() + pos.header.len());
    a.extend_from_slice(b"MSPL");
    a.push(t.len() as u8);
    a.extend_from_slice(t);
    a.extend_from_slice(&key_id.to_le_bytes());
    a.extend_from_slice(&pos.segment_base.to_le_bytes());
    a.extend_from_slice(pos.header);
    a
}

/// Builds the nonce for record `counter` of writer epoch `epoch`.
pub fn nonce(epoch: u32, counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&epoch.to_le_bytes());
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Compresses `plaintext` with zstd at `level` into `out` (replacing its contents).
///
/// Each thread keeps one compression context: creating one costs more than compressing a
/// small record.
pub fn compress(plaintext: &[u8], level: i32, out: &mut Vec<u8>) {
    thread_local! {
        static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { RefCell::new(None) };
    }
    let bound = zstd::zstd_safe::compress_bound(plaintext.len());
    out.clear();
    out.reserve(bound + TAG_LEN);
    CCTX.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let ctx = zstd::bulk::Compressor::new(level).expect("zstd accepts levels 1..=19");
            *slot = Some((level, ctx));
        }
        let (_, ctx) = slot.as_mut().expect("set just above");
        ctx.compress_to_buffer(plaintext, out)
            .expect("the output buffer has compress_bound capacity");
    });
}

/// Encrypts `buf` (compressed bytes) in place, appending the tag.
pub fn encrypt(
    key: &DataKey,
    nonce: &[u8; NONCE_LEN],
    pos: &RecordPosition<'_>,
    buf: &mut Vec<u8>,
) {
    let aad = aad(pos, key.key_id);
    key.cipher
        .encrypt_in_place(&Nonce::from(*nonce), &aad, buf)
        .expect("a Vec grows to hold the tag");
}

/// Authenticates, decrypts and decompresses a sealed payload.
pub fn open(
    key: &DataKey,
    nonce: &[u8; NONCE_LEN],
    pos: &RecordPosition<'_>,
    sealed: &[u8],
) -> Result<Vec<u8>, Corruption> {
    let aad = aad(pos, key.key_id);
    let mut buf = sealed.to_vec();
    key.cipher
        .decrypt_in_place(&Nonce::from(*nonce), &aad, &mut buf)
        .map_err(|_| Corruption::AuthenticationFailed)?;
    decompress(&buf)
}

/// Decompresses a zstd frame, refusing output larger than [`MAX_PLAINTEXT`].
pub fn decompress(compressed: &[u8]) -> Result<Vec<u8>, Corruption> {
    let size = zstd::bulk::Decompressor::upper_bound(compressed)
        .ok_or_else(|| Corruption::Payload("zstd frame without a content size".into()))?;
    if size > MAX_PLAINTEXT {
        return Err(Corruption::LengthOutOfBounds {
            len: size as u64,
            limit: MAX_PLAINTEXT as u64,
        });
    }
    zstd::bulk::decompress(compressed, size).map_err(|e| Corruption::Payload(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32, byte: u8) -> DataKey {
        DataKey::new(id, &Zeroizing::new([byte; 32]))
    }

    #[test]
    fn a_record_opened_at_another_position_or_tenant_fails_authentication() {
        let t = TenantId::new("a").expect("valid");
        let other = TenantId::new("b").expect("valid");
        let k = key(1, 7);
        let n = nonce(3, 9);
        let pos = RecordPosition {
            tenant: &t,
            segment_base: 100,
            header: b"hdr",
        };
        let mut buf = Vec::new();
        compress(b"hello hello hello", 1, &mut buf);
        encrypt(&k, &n, &pos, &mut buf);
        assert_eq!(
            open(&k, &n, &pos, &buf).expect("opens"),
            b"hello hello hello"
        );
        let moved = RecordPosition {
            segment_base: 101,
            ..pos
        };
        let stolen = RecordPosition {
            tenant: &other,
            ..pos
        };
        for p in [moved, stolen] {
            assert_eq!(
                open(&k, &n, &p, &buf),
                Err(Corruption::AuthenticationFailed)
            );
        }
        assert_eq!(
            open(&key(1, 8), &n, &pos, &buf),
            Err(Corruption::AuthenticationFailed)
        );
    }

    #[test]
    fn nonce_layout_is_epoch_then_counter() {
        let n = nonce(0x0102_0304, 0x0a0b);
        assert_eq!(n[..4], [4, 3, 2, 1]);
        assert_eq!(n[4..6], [0x0b, 0x0a]);
    }
}
