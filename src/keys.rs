//! Keys: the master key, and per-tenant keyrings of data keys.
//!
//! A tenant's data key for key id `k` is `HKDF-SHA256(ikm = master, salt = seed_k, info =
//! "metricspool/data/v1" | tenant | k)`, where `seed_k` is 32 random bytes kept in the tenant's
//! keyring file, wrapped (AES-256-GCM) under a key-encryption key derived from the master key.
//! The seed is what makes crypto-shredding work: the master key alone cannot rebuild a data key,
//! so deleting a seed from the keyring makes every record sealed with that key unreadable.
//! Layout: docs/format.md, "Keyring file".

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Corruption, Error, Result};
use crate::seal::DataKey;
use crate::tenant::TenantId;

const KEYRING_MAGIC: &[u8; 8] = b"MSPLKEYR";
const KEYRING_VERSION: u16 = 1;
const KEYRING_HEADER_LEN: usize = 12;
const ENTRY_LEN: usize = 4 + 8 + 12 + 48;
const MAX_KEYS: usize = 4096;

/// The 32-byte master key. Never written to the config file; read from a file or an
/// environment variable. Zeroed on drop.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Wraps 32 bytes of key material.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key from the operating system.
    pub fn generate() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(k.as_mut()).map_err(|e| Error::MasterKey(e.to_string()))?;
        Ok(Self(k))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.len() != 64 {
            return Err(Error::MasterKey(format!(
                "expected 64 hex digits (32 bytes), found {} characters",
                t.len()
            )));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok();
            k[i] = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::MasterKey("the key contains a non-hex character".into()))?;
        }
        Ok(Self(k))
    }

    /// Reads a key file holding 64 hex digits or exactly 32 raw bytes.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(fs::read(path).map_err(|e| Error::io(path, e))?);
        if let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(Self::from_bytes(k));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::MasterKey(format!("{} is neither 32 bytes nor hex", path.display()))
        })?;
        Self::from_hex(text).map_err(|e| Error::MasterKey(format!("{}: {e}", path.display())))
    }

    /// Reads the key from environment variable `var` (64 hex digits).
    pub fn from_env(var: &str) -> Result<Self> {
        let v = Zeroizing::new(
            std::env::var(var).map_err(|_| Error::MasterKey(format!("${var} is not set")))?,
        );
        Self::from_hex(&v).map_err(|e| Error::MasterKey(format!("${var}: {e}")))
    }

    /// Writes the key as hex to a new file with mode 0600; fails if the file exists.
    pub fn write_new_file(&self, path: &Path) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let hex: Zeroizing<String> =
            Zeroizing::new(self.0.iter().map(|b| format!("{b:02x}")).collect());
        f.write_all(hex.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(path, e))
    }

    /// The tenant's key for label pseudonyms (`crate::privacy`):
    /// `HKDF-SHA256(salt = "metricspool/pseudonym/v1", ikm = master, info = tenant)`.
    ///
    /// It depends on the master key only, not on the keyring's seeds: pseudonyms stay the
    /// same across data key rotation and after crypto-shredding, so series stay joinable;
    /// they change only with the master key.
    pub fn pseudonym_key(&self, tenant: &TenantId) -> [u8; 32] {
        let mut k = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"metricspool/pseudonym/v1"), self.0.as_ref())
            .expand(tenant.as_str().as_bytes(), &mut k)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        k
    }

    fn kek(&self, tenant: &TenantId) -> Aes256Gcm {
        let mut k = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(b"metricspool/kek/v1"), self.0.as_ref())
            .expand(tenant.as_str().as_bytes(), k.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Aes256Gcm::new(&(*k).into())
    }

    fn data_key(&self, tenant: &TenantId, key_id: u32, seed: &[u8; 32]) -> DataKey {
        let mut info = b"metricspool/data/v1".to_vec();
        info.push(tenant.as_str().len() as u8);
        info.extend_from_slice(tenant.as_str().as_bytes());
        info.extend_from_slice(&key_id.to_le_bytes());
        let mut k = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(seed), self.0.as_ref())
            .expand(&info, k.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        DataKey::new(key_id, &k)
    }
}

/// The usable data keys of one tenant: every key id still in its keyring, and the newest.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    current: u32,
    keys: BTreeMap<u32, Arc<DataKey>>,
}

impl TenantKeys {
    /// The key new segments are sealed with (the newest).
    pub fn current(&self) -> Arc<DataKey> {
        Arc::clone(&self.keys[&self.current])
    }

    /// The key with id `key_id`, if it is still in the keyring.
    pub fn get(&self, key_id: u32) -> Option<Arc<DataKey>> {
        self.keys.get(&key_id).cloned()
    }

    /// Every key id present, oldest first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }
}

struct Entry {
    key_id: u32,
    created_ms: i64,
    seed: Zeroizing<[u8; 32]>,
}

/// The keyrings of every tenant: one file per tenant in a `keys/` directory.
#[derive(Debug, Clone)]
pub struct Keyring {
    dir: PathBuf,
    master: MasterKey,
}

impl Keyring {
    /// A keyring store in `dir` (created if missing) unlocked by `master`.
    pub fn open(dir: impl Into<PathBuf>, master: MasterKey) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir, master })
    }

    fn path(&self, tenant: &TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.keys"))
    }

    /// True if the tenant has a keyring file.
    pub fn exists(&self, tenant: &TenantId) -> bool {
        self.path(tenant).exists()
    }

    /// Loads the tenant's keys, creating the keyring with key id 1 when `create` is set and
    /// there is none.
    pub fn load(&self, tenant: &TenantId, create: bool) -> Result<Option<TenantKeys>> {
        let mut entries = self.read(tenant)?;
        if entries.is_empty() {
            if !create {
                return Ok(None);
            }
            entries.push(new_entry(1)?);
            self.write(tenant, &entries)?;
        }
        Ok(Some(self.unlock(tenant, &entries)))
    }

    /// Adds a key id one above the newest; new segments use it from the next roll on.
    pub fn rotate(&self, tenant: &TenantId) -> Result<TenantKeys> {
        let mut entries = self.read(tenant)?;
        let next = entries.iter().map(|e| e.key_id).max().unwrap_or(0) + 1;
        entries.push(new_entry(next)?);
        self.write(tenant, &entries)?;
        Ok(self.unlock(tenant, &entries))
    }

    /// Removes one key id. Records sealed with it become unreadable.
    pub fn remove(&self, tenant: &TenantId, key_id: u32) -> Result<()> {
        let mut entries = self.read(tenant)?;
        entries.retain(|e| e.key_id != key_id);
        if entries.is_empty() {
            return self.erase(tenant);
        }
        self.write(tenant, &entries)
    }

    /// Crypto-shredding: overwrites the tenant's keyring with zeros, syncs, deletes it and
    /// syncs the directory. Afterwards no record of the tenant can be decrypted.
    pub fn erase(&self, tenant: &TenantId) -> Result<()> {
        let path = self.path(tenant);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let wipe = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().write(true).open(&path)?;
            f.write_all(&vec![0u8; len as usize])?;
            f.sync_all()?;
            fs::remove_file(&path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        wipe().map_err(|e| Error::io(&path, e))?;
        // A tombstone (empty, no secret) so that tools can say "erased" rather than
        // "unknown tenant" once the data is gone too.
        let mark = self.erased_marker(tenant);
        fs::File::create(&mark)
            .and_then(|f| f.sync_all())
            .and_then(|_| fs::File::open(&self.dir)?.sync_all())
            .map_err(|e| Error::io(&mark, e))
    }

    fn erased_marker(&self, tenant: &TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.erased"))
    }

    /// True when the tenant's keyring was erased and none was created since.
    pub fn was_erased(&self, tenant: &TenantId) -> bool {
        !self.exists(tenant) && self.erased_marker(tenant).exists()
    }

    fn unlock(&self, tenant: &TenantId, entries: &[Entry]) -> TenantKeys {
        let keys: BTreeMap<u32, Arc<DataKey>> = entries
            .iter()
            .map(|e| {
                (
                    e.key_id,
                    Arc::new(self.master.data_key(tenant, e.key_id, &e.seed)),
                )
            })
            .collect();
        let current = *keys.keys().next_back().expect("a keyring is never empty");
        TenantKeys { current, keys }
    }

    fn read(&self, tenant: &TenantId) -> Result<Vec<Entry>> {
        let path = self.path(tenant);
        let bytes = match fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let corrupt = |position: u64, kind| Error::Corrupt {
            path: path.clone(),
            position,
            kind,
        };
        let entries = decode_raw(&bytes).map_err(|k| corrupt(0, k))?;
        let kek = self.master.kek(tenant);
        entries
            .into_iter()
            .map(|raw| unwrap_entry(&kek, tenant, raw))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::MasterKey(format!(
                    "the master key does not open the keyring {}: wrong master key?",
                    path.display()
                ))
            })
    }

    fn write(&self, tenant: &TenantId, entries: &[Entry]) -> Result<()> {
        let kek = self.master.kek(tenant);
        let mut out = Vec::with_capacity(KEYRING_HEADER_LEN + entries.len() * ENTRY_LEN + 4);
        out.extend_from_slice(KEYRING_MAGIC);
        out.extend_from_slice(&KEYRING_VERSION.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for e in entries {
            wrap_entry(&kek, tenant, e, &mut out)?;
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let path = self.path(tenant);
        write_atomically(&self.dir, &path, &out).map_err(|e| Error::io(&path, e))
    }
}

fn new_entry(key_id: u32) -> Result<Entry> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| Error::MasterKey(e.to_string()))?;
    Ok(Entry {
        key_id,
        created_ms: crate::now_ms(),
        seed,
    })
}

fn entry_aad(tenant: &TenantId, key_id: u32) -> Vec<u8> {
    let mut aad = b"MSPLKEY".to_vec();
    aad.extend_from_slice(tenant.as_str().as_bytes());
    aad.extend_from_slice(&key_id.to_le_bytes());
    aad
}

fn wrap_entry(kek: &Aes256Gcm, tenant: &TenantId, e: &Entry, out: &mut Vec<u8>) -> Result<()> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| Error::MasterKey(e.to_string()))?;
    let mut buf = e.seed.to_vec();
    kek.encrypt_in_place(&Nonce::from(nonce), &entry_aad(tenant, e.key_id), &mut buf)
        .expect("a Vec grows to hold the tag");
    out.extend_from_slice(&e.key_id.to_le_bytes());
    out.extend_from_slice(&e.created_ms.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(())
}

struct RawEntry<'a> {
    key_id: u32,
    created_ms: i64,
    nonce: [u8; 12],
    wrapped: &'a [u8],
}

fn unwrap_entry(kek: &Aes256Gcm, tenant: &TenantId, raw: RawEntry<'_>) -> Option<Entry> {
    let mut buf = Zeroizing::new(raw.wrapped.to_vec());
    kek.decrypt_in_place(
        &Nonce::from(raw.nonce),
        &entry_aad(tenant, raw.key_id),
        &mut *buf,
    )
    .ok()?;
    let seed: [u8; 32] = buf.as_slice().try_into().ok()?;
    Some(Entry {
        key_id: raw.key_id,
        created_ms: raw.created_ms,
        seed: Zeroizing::new(seed),
    })
}

/// Parses a keyring file's framing (not the wrapped seeds). Bounded; never panics.
pub fn decode_keyring(bytes: &[u8]) -> Result<Vec<RawEntryView>, Corruption> {
    let raw = decode_raw(bytes)?;
    Ok(raw
        .into_iter()
        .map(|r| RawEntryView {
            key_id: r.key_id,
            created_ms: r.created_ms,
        })
        .collect())
}

/// What `decode_keyring` reveals of an entry without the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntryView {
    /// The key id.
    pub key_id: u32,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
}

fn decode_raw(bytes: &[u8]) -> Result<Vec<RawEntry<'_>>, Corruption> {
    if bytes.len() < KEYRING_HEADER_LEN + 4 {
        return Err(Corruption::Truncated {
            needed: (KEYRING_HEADER_LEN + 4) as u64,
            available: bytes.len() as u64,
        });
    }
    if &bytes[..8] != KEYRING_MAGIC {
        return Err(Corruption::BadMagic { what: "keyring" });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(body);
    if expected != actual {
        return Err(Corruption::ChecksumMismatch { expected, actual });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != KEYRING_VERSION {
        return Err(Corruption::UnsupportedVersion {
            found: version,
            supported: KEYRING_VERSION,
        });
    }
    let count = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    if count > MAX_KEYS || body.len() != KEYRING_HEADER_LEN + count * ENTRY_LEN {
        return Err(Corruption::LengthOutOfBounds {
            len: count as u64,
            limit: ((body.len() - KEYRING_HEADER_LEN) / ENTRY_LEN) as u64,
        });
    }
    Ok(body[KEYRING_HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .map(|c| RawEntry {
            key_id: u32::from_le_bytes(c[0..4].try_into().expect("4 bytes")),
            created_ms: i64::from_le_bytes(c[4..12].try_into().expect("8 bytes")),
            nonce: c[12..24].try_into().expect("12 bytes"),
            wrapped: &c[24..],
        })
        .collect())
}

/// Writes `path` via a temporary file, fsync, rename, and a directory fsync.
pub(crate) fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path) -> Keyring {
        Keyring::open(dir, MasterKey::from_bytes([9; 32])).expect("opens")
    }

    #[test]
    fn rotation_keeps_old_keys_and_makes_the_new_one_current() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = TenantId::new("a").expect("valid");
        let k = ring(d.path());
        let first = k.load(&t, true).expect("loads").expect("created");
        assert_eq!(first.current().key_id(), 1);
        let second = k.rotate(&t).expect("rotates");
        assert_eq!(second.current().key_id(), 2);
        assert_eq!(second.ids(), vec![1, 2]);
        let again = ring(d.path())
            .load(&t, false)
            .expect("loads")
            .expect("exists");
        assert_eq!(again.ids(), vec![1, 2]);
    }

    #[test]
    fn a_wrong_master_key_is_a_clear_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = TenantId::new("a").expect("valid");
        ring(d.path()).load(&t, true).expect("creates");
        let other = Keyring::open(d.path(), MasterKey::from_bytes([1; 32])).expect("opens");
        let err = other.load(&t, false).expect_err("wrong key");
        assert!(err.to_string().contains("wrong master key"), "{err}");
    }

    #[test]
    fn erase_leaves_no_keyring_behind() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = TenantId::new("a").expect("valid");
        let k = ring(d.path());
        k.load(&t, true).expect("creates");
        k.erase(&t).expect("erases");
        assert!(k.load(&t, false).expect("loads").is_none());
    }

    #[test]
    fn pseudonym_keys_differ_by_tenant_and_from_the_kek_derivation() {
        let m = MasterKey::from_bytes([9; 32]);
        let a = m.pseudonym_key(&TenantId::new("a").expect("valid"));
        let b = m.pseudonym_key(&TenantId::new("b").expect("valid"));
        assert_ne!(a, b);
        assert_eq!(a, m.pseudonym_key(&TenantId::new("a").expect("valid")));
        let mut kek = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"metricspool/kek/v1"), &[9; 32])
            .expand(b"a", &mut kek)
            .expect("valid length");
        assert_ne!(a, kek);
    }

    #[test]
    fn hex_master_keys_parse_and_bad_ones_are_refused() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
