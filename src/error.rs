//! Errors, one enum per layer. Every `Display` is a sentence an operator can act on.

use std::io;
use std::path::PathBuf;

/// Input that does not satisfy the data model. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A tenant id that is not safe as a directory name.
    #[error("invalid tenant id {tenant:?}: {reason}")]
    TenantId {
        /// The offending id (truncated to 80 characters).
        tenant: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A metric name that breaks the Prometheus naming rules.
    #[error("invalid metric name {name:?}: {reason}")]
    MetricName {
        /// The offending name (truncated to 80 characters).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A label name or value that breaks the naming rules or the length limits.
    #[error("invalid label {label:?} on metric {metric:?}: {reason}")]
    Label {
        /// The metric the label belongs to.
        metric: String,
        /// The offending label name (truncated to 80 characters).
        label: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A batch that is empty or exceeds the per-append limits.
    #[error("invalid batch: {0}")]
    Batch(String),
    /// A privacy rule that cannot apply (see `crate::privacy`).
    #[error("invalid privacy rule for label {label:?}: {reason}")]
    PrivacyRule {
        /// The label the rule names (truncated to 80 characters).
        label: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Why a stored record or file could not be read. Carried inside [`Error::Corrupt`] and in
/// recovery reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A file does not start with the expected magic bytes.
    #[error("bad magic: not a metricspool {what} file")]
    BadMagic {
        /// Which kind of file was expected.
        what: &'static str,
    },
    /// The file was written by a format version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version found in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch (stored {expected:#010x}, computed {actual:#010x})")]
    ChecksumMismatch {
        /// The checksum stored on disk.
        expected: u32,
        /// The checksum computed over the bytes read.
        actual: u32,
    },
    /// A length field is larger than the format allows or than the bytes available.
    #[error("length {len} is out of bounds (limit {limit})")]
    LengthOutOfBounds {
        /// The length found.
        len: u64,
        /// The bound it broke.
        limit: u64,
    },
    /// The file ends in the middle of a structure.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A segment found in one tenant's directory belongs to another tenant.
    #[error("segment belongs to tenant {found:?}, not {expected:?}")]
    WrongTenant {
        /// Tenant named in the segment header.
        found: String,
        /// Tenant whose directory holds the file.
        expected: String,
    },
    /// Authenticated decryption failed: wrong key, or the record was modified or moved.
    #[error("authentication failed: wrong key, or the record was modified or moved")]
    AuthenticationFailed,
    /// The decrypted payload does not decode.
    #[error("payload does not decode: {0}")]
    Payload(String),
    /// A field holds a value the format forbids.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field name as in docs/format.md.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Errors of the storage layer (log, cursors, keys).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; nothing was stored. Not retryable as is.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// An I/O operation failed. If it happened while appending, the log is now poisoned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An earlier write or fsync failed, so the state of the file is unknown. Every append
    /// returns this until the tenant's log is reopened (which runs recovery).
    #[error(
        "the log of tenant {tenant} is poisoned by an earlier I/O failure ({cause}); reopen it to recover"
    )]
    Poisoned {
        /// The tenant whose log is poisoned.
        tenant: String,
        /// The first failure, as text.
        cause: String,
    },
    /// Stored bytes failed validation. Reads skip such records and report them.
    #[error("corrupt data in {path} at byte {position}: {kind}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte position in the file.
        position: u64,
        /// What is wrong.
        kind: Corruption,
    },
    /// The data key needed to read a segment is not in the keyring (removed or erased).
    #[error(
        "key {key_id} of tenant {tenant} is not in the keyring (erased or retired): its data cannot be decrypted"
    )]
    KeyUnavailable {
        /// The tenant.
        tenant: String,
        /// The key id named in the segment header.
        key_id: u32,
    },
    /// The tenant's keyring is gone (crypto-shredded) while segments remain: they cannot be
    /// decrypted. Delete the tenant's data directory to start afresh.
    #[error(
        "the keys of tenant {tenant} were erased: its {segments} remaining segments cannot be decrypted; delete its data directory"
    )]
    KeysErased {
        /// The tenant.
        tenant: String,
        /// Segment files still on disk.
        segments: usize,
    },
    /// The master key could not be loaded or is malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The disk quota is used up and the policy is `reject` (or `block` timed out).
    /// Retry later; nothing was stored.
    #[error("disk quota of tenant {tenant} exceeded ({used} of {limit} bytes); {policy}")]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// Bytes in use.
        used: u64,
        /// The quota.
        limit: u64,
        /// What the policy did.
        policy: &'static str,
    },
    /// A cursor commit would move the cursor backwards or past the log's end.
    #[error("cursor {consumer} of tenant {tenant}: {reason}")]
    Cursor {
        /// The tenant.
        tenant: String,
        /// The consumer name.
        consumer: String,
        /// What was refused.
        reason: String,
    },
    /// The cursor database failed.
    #[error("cursor database: {0}")]
    Database(String),
    /// The spool or log was closed.
    #[error("the log is closed")]
    Closed,
    /// `keys retire` refused: the key is current, unknown, or still seals retained data.
    #[error("key {key_id} of tenant {tenant} cannot be retired: {reason}")]
    KeyInUse {
        /// The tenant.
        tenant: String,
        /// The key id.
        key_id: u32,
        /// Why, and what to do.
        reason: String,
    },
    /// A replay job cannot be created, resumed or changed as asked.
    #[error("replay job {job} of tenant {tenant}: {reason}")]
    Replay {
        /// The tenant.
        tenant: String,
        /// The job name.
        job: String,
        /// What is wrong, as a sentence the operator can act on.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// True when retrying the same call later can succeed without operator action.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::QuotaExceeded { .. })
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::Database(e.to_string())
            }
        }
    )*};
}
db_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
