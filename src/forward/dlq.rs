//! The dead-letter log of one (tenant, backend): batches the backend refused for good, with
//! the reason, kept sealed like the main log so they can be listed and re-driven.
//!
//! The samples live in a [`Wal`] of their own (same format, same tenant key) under
//! `tenants/<tenant>/dlq/<backend>/`; an index of entries lives in `entries.redb` beside it.
//!
//! Entry value layout (little-endian), key = entry id (u64, from 1):
//! ```text
//! 0  1  version (1)
//! 1  8  dlq_start   offsets of the samples in the dead-letter log
//! 9  8  dlq_end
//! 17 8  src_start   offsets of the samples in the tenant's main log
//! 25 8  src_end
//! 33 8  created_ms
//! 41 1  state       0 pending, 1 re-driven
//! 42 1  kind        0 permanent, 1 duplicate on first attempt, 2 too large, 3 partial write
//! 43 2  http status (0 = none)
//! 45 .. reason, UTF-8
//! ```

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::backends::RejectKind;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::keys::TenantKeys;
use crate::sample::Batch;
use crate::tenant::TenantId;
use crate::wal::fs::Fs;
use crate::wal::{ReadLimits, Wal};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const VERSION: u8 = 1;

/// One dead-lettered batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Entry id, from 1.
    pub id: u64,
    /// Offsets of the samples in the tenant's main log.
    pub source: Range<u64>,
    /// Number of samples.
    pub samples: u64,
    /// When it was dead-lettered.
    pub created_ms: i64,
    /// True once re-driven (successfully, or into a new dead letter).
    pub redriven: bool,
    /// Why the backend refused it.
    pub kind: RejectKind,
    /// HTTP status, if any.
    pub status: Option<u16>,
    /// The backend's reason.
    pub reason: String,
    dlq: Range<u64>,
}

fn kind_byte(k: RejectKind) -> u8 {
    match k {
        RejectKind::Duplicate => 1,
        RejectKind::TooLarge => 2,
        RejectKind::Partial => 3,
        _ => 0,
    }
}

fn kind_from(b: u8) -> RejectKind {
    match b {
        1 => RejectKind::Duplicate,
        2 => RejectKind::TooLarge,
        3 => RejectKind::Partial,
        _ => RejectKind::Permanent,
    }
}

impl DeadLetter {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(45 + self.reason.len());
        v.push(VERSION);
        for x in [
            self.dlq.start,
            self.dlq.end,
            self.source.start,
            self.source.end,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&self.created_ms.to_le_bytes());
        v.push(u8::from(self.redriven));
        v.push(kind_byte(self.kind));
        v.extend_from_slice(&self.status.unwrap_or(0).to_le_bytes());
        v.extend_from_slice(self.reason.as_bytes());
        v
    }

    fn decode(id: u64, b: &[u8]) -> Option<Self> {
        if b.len() < 45 || b[0] != VERSION {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let status = u16::from_le_bytes([b[43], b[44]]);
        Some(Self {
            id,
            dlq: u(1)..u(9),
            source: u(17)..u(25),
            samples: u(9).saturating_sub(u(1)),
            created_ms: u(33) as i64,
            redriven: b[41] == 1,
            kind: kind_from(b[42]),
            status: (status != 0).then_some(status),
            reason: String::from_utf8_lossy(&b[45..]).into_owned(),
        })
    }
}

/// The dead letters of one (tenant, backend).
#[derive(Debug)]
pub struct DeadLetters {
    wal: Wal,
    db: Database,
}

impl DeadLetters {
    /// Opens (or creates) the dead-letter log in `dir`.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, tenant: TenantId, keys: TenantKeys) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (wal, _report) = Wal::open(fs, dir.join("wal"), tenant, keys, LogConfig::default())?;
        let db = Database::create(dir.join("entries.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.commit()?;
        Ok(Self { wal, db })
    }

    /// Stores a refused batch durably; returns its entry id.
    pub fn add(
        &self,
        batch: &Batch,
        source: Range<u64>,
        kind: RejectKind,
        status: Option<u16>,
        reason: &str,
    ) -> Result<u64> {
        let dlq = self.wal.append_blocking(batch)?;
        let txn = self.db.begin_write()?;
        let id = {
            let mut t = txn.open_table(ENTRIES)?;
            let id = t.last()?.map_or(1, |(k, _)| k.value() + 1);
            let entry = DeadLetter {
                id,
                samples: dlq.end - dlq.start,
                dlq,
                source,
                created_ms: crate::now_ms(),
                redriven: false,
                kind,
                status,
                reason: reason.chars().take(2048).collect(),
            };
            t.insert(id, entry.encode().as_slice())?;
            id
        };
        txn.commit()?;
        Ok(id)
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Result<Vec<DeadLetter>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push(DeadLetter::decode(k.value(), v.value()).ok_or_else(|| {
                Error::Database(format!("dead-letter entry {} does not decode", k.value()))
            })?);
        }
        Ok(out)
    }

    /// One entry and its samples.
    pub fn get(&self, id: u64) -> Result<Option<(DeadLetter, Batch)>> {
        let Some(entry) = self.list()?.into_iter().find(|e| e.id == id) else {
            return Ok(None);
        };
        let limits = ReadLimits {
            max_samples: entry.samples as usize,
            max_bytes: u64::MAX,
        };
        let read = self.wal.read_from(entry.dlq.start, limits)?;
        Ok(Some((entry, read.batch)))
    }

    /// Marks an entry re-driven.
    pub fn mark_redriven(&self, id: u64) -> Result<()> {
        let Some(mut entry) = self.list()?.into_iter().find(|e| e.id == id) else {
            return Ok(());
        };
        entry.redriven = true;
        let txn = self.db.begin_write()?;
        txn.open_table(ENTRIES)?
            .insert(id, entry.encode().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Seals the dead-letter log.
    /// Key ids of the dead-letter log's segments.
    pub fn key_ids(&self) -> Vec<u32> {
        self.wal.segments().iter().map(|s| s.key_id).collect()
    }

    /// Seals the log and stops its writer.
    pub fn close(&self) -> Result<()> {
        self.wal.close_blocking()
    }
}
