//! Durable cursors, one per (tenant, consumer), in a redb database in the tenant's directory.
//!
//! # The delivery guarantee
//!
//! A cursor holds the committed offset (everything below it was acknowledged by the consumer's
//! backend) and the in-flight batches: contiguous ranges `[committed, e1), [e1, e2), ...`
//! recorded with [`CursorStore::begin`] *before* they are sent. After a crash the consumer
//! finds the same ranges and, because reads are deterministic, resends exactly the same
//! samples; the backend adapter makes such a resend harmless. So a consumer sees every
//! sample at least once, and a backend that deduplicates (by sample timestamp, document id,
//! message id) holds each exactly once. Every call returns only after its redb transaction
//! is durable (`Durability::Immediate`). A cursor never moves backwards.
//!
//! Value layout (little-endian), key = consumer name:
//! ```text
//! 0  1  version (1)
//! 1  8  committed offset
//! 9  8  created_ms
//! 17 2  n in-flight ends
//! 19 8n in-flight batch ends, ascending, each > committed
//! ```

use std::ops::Range;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, InvalidInput, Result};
use crate::tenant::TenantId;

const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
const VALUE_VERSION: u8 = 1;
/// Most batches one consumer may have in flight.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Longest consumer name, in bytes.
pub const MAX_CONSUMER_NAME: usize = 128;

/// The durable state of one cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState {
    /// Everything below this offset was acknowledged.
    pub committed: u64,
    /// Ends of the batches recorded as in flight, ascending; the first batch starts at
    /// `committed`.
    pub in_flight_ends: Vec<u64>,
    /// When the cursor was registered.
    pub created_ms: i64,
}

impl CursorState {
    /// The in-flight batches as ranges, oldest first.
    pub fn in_flight(&self) -> Vec<Range<u64>> {
        let mut start = self.committed;
        self.in_flight_ends
            .iter()
            .map(|&e| {
                let r = start..e;
                start = e;
                r
            })
            .collect()
    }

    /// Where the next new batch starts: after the last in-flight batch.
    pub fn next_read(&self) -> u64 {
        self.in_flight_ends
            .last()
            .copied()
            .unwrap_or(self.committed)
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(19 + 8 * self.in_flight_ends.len());
        v.push(VALUE_VERSION);
        v.extend_from_slice(&self.committed.to_le_bytes());
        v.extend_from_slice(&self.created_ms.to_le_bytes());
        v.extend_from_slice(&(self.in_flight_ends.len() as u16).to_le_bytes());
        for e in &self.in_flight_ends {
            v.extend_from_slice(&e.to_le_bytes());
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 19 || b[0] != VALUE_VERSION {
            return None;
        }
        let n = usize::from(u16::from_le_bytes([b[17], b[18]]));
        if b.len() != 19 + 8 * n {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Self {
            committed: u64_at(1),
            created_ms: u64_at(9) as i64,
            in_flight_ends: (0..n).map(|i| u64_at(19 + 8 * i)).collect(),
        })
    }
}

/// The cursors of one tenant.
#[derive(Debug)]
pub struct CursorStore {
    db: Database,
    tenant: TenantId,
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONSUMER_NAME
        && name.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::Batch(format!(
            "consumer name {name:?} must be 1 to 128 printable ASCII characters"
        ))
        .into())
    }
}

impl CursorStore {
    /// Opens (or creates) `cursors.redb` in `dir`.
    pub fn open(dir: &Path, tenant: TenantId) -> Result<Self> {
        let path = dir.join("cursors.redb");
        let db = Database::create(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(CURSORS)?;
        txn.commit()?;
        Ok(Self { db, tenant })
    }

    fn err(&self, consumer: &str, reason: String) -> Error {
        Error::Cursor {
            tenant: self.tenant.to_string(),
            consumer: consumer.to_owned(),
            reason,
        }
    }

    /// The cursor of `consumer`, if registered.
    pub fn get(&self, consumer: &str) -> Result<Option<CursorState>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CURSORS)?;
        let Some(v) = table.get(consumer)? else {
            return Ok(None);
        };
        CursorState::decode(v.value())
            .map(Some)
            .ok_or_else(|| self.err(consumer, "the stored cursor does not decode".into()))
    }

    /// Every cursor, by consumer name.
    pub fn list(&self) -> Result<Vec<(String, CursorState)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CURSORS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let state = CursorState::decode(v.value())
                .ok_or_else(|| self.err(k.value(), "the stored cursor does not decode".into()))?;
            out.push((k.value().to_owned(), state));
        }
        Ok(out)
    }

    /// Registers `consumer` at `start` unless it exists; returns its state either way.
    pub fn register(&self, consumer: &str, start: u64) -> Result<CursorState> {
        check_name(consumer)?;
        self.update(consumer, |cur| {
            Ok(cur.unwrap_or(CursorState {
                committed: start,
                in_flight_ends: Vec::new(),
                created_ms: crate::now_ms(),
            }))
        })
    }

    /// Records the batch `[next_read, end)` as in flight, durably, before it is sent.
    pub fn begin(&self, consumer: &str, end: u64) -> Result<CursorState> {
        self.update(consumer, |cur| {
            let mut s = cur.ok_or_else(|| self.err(consumer, "not registered".into()))?;
            let from = s.next_read();
            if end <= from {
                return Err(self.err(consumer, format!("batch end {end} is not after {from}")));
            }
            if s.in_flight_ends.len() >= MAX_IN_FLIGHT {
                return Err(self.err(consumer, "too many batches in flight".into()));
            }
            s.in_flight_ends.push(end);
            Ok(s)
        })
    }

    /// Marks everything below `end` acknowledged and drops the in-flight batches it covers.
    /// Committing an offset below the committed one is refused; committing the same one is
    /// a no-op.
    pub fn commit(&self, consumer: &str, end: u64) -> Result<CursorState> {
        self.update(consumer, |cur| {
            let mut s = cur.ok_or_else(|| self.err(consumer, "not registered".into()))?;
            if end < s.committed {
                return Err(self.err(
                    consumer,
                    format!(
                        "commit of {end} would move the cursor back from {}",
                        s.committed
                    ),
                ));
            }
            s.committed = end;
            s.in_flight_ends.retain(|&e| e > end);
            Ok(s)
        })
    }

    /// In one durable transaction: `to` takes `from`'s state (committed offset and in-flight
    /// batches) and `from` is removed. `to` never moves backwards: if it is already past
    /// `from`, it keeps its own state.
    pub fn replace(&self, to: &str, from: &str) -> Result<CursorState> {
        let txn = self.db.begin_write()?;
        let next = {
            let mut table = txn.open_table(CURSORS)?;
            let decode = |v: Option<redb::AccessGuard<'_, &[u8]>>,
                          who: &str|
             -> Result<Option<CursorState>> {
                v.map(|g| {
                    CursorState::decode(g.value())
                        .ok_or_else(|| self.err(who, "the stored cursor does not decode".into()))
                })
                .transpose()
            };
            let src = decode(table.get(from)?, from)?
                .ok_or_else(|| self.err(from, "not registered".into()))?;
            let dst = decode(table.get(to)?, to)?;
            let next = match dst {
                Some(d) if d.committed > src.committed => d,
                Some(d) => CursorState {
                    created_ms: d.created_ms,
                    ..src
                },
                None => src,
            };
            table.insert(to, next.encode().as_slice())?;
            table.remove(from)?;
            next
        };
        txn.commit()?;
        Ok(next)
    }

    /// Removes `consumer`'s cursor; returns whether it existed.
    pub fn remove(&self, consumer: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(CURSORS)?.remove(consumer)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    fn update(
        &self,
        consumer: &str,
        f: impl FnOnce(Option<CursorState>) -> Result<CursorState>,
    ) -> Result<CursorState> {
        let txn = self.db.begin_write()?;
        let next = {
            let mut table = txn.open_table(CURSORS)?;
            let cur = match table.get(consumer)? {
                Some(v) => Some(CursorState::decode(v.value()).ok_or_else(|| {
                    self.err(consumer, "the stored cursor does not decode".into())
                })?),
                None => None,
            };
            let next = f(cur)?;
            table.insert(consumer, next.encode().as_slice())?;
            next
        };
        txn.commit()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> CursorStore {
        CursorStore::open(dir, TenantId::new("t").expect("valid")).expect("opens")
    }

    #[test]
    fn a_cursor_never_moves_backwards() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = store(d.path());
        s.register("prom", 0).expect("registers");
        s.commit("prom", 10).expect("commits");
        assert!(s.commit("prom", 9).is_err());
        assert_eq!(s.get("prom").expect("reads").expect("exists").committed, 10);
    }

    #[test]
    fn in_flight_batches_survive_reopen_and_clear_on_commit() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let s = store(d.path());
            s.register("vm", 5).expect("registers");
            s.begin("vm", 15).expect("begins");
            s.begin("vm", 25).expect("begins");
            assert!(s.begin("vm", 20).is_err());
        }
        let s = store(d.path());
        let st = s.get("vm").expect("reads").expect("exists");
        assert_eq!(st.in_flight(), vec![5..15, 15..25]);
        let st = s.commit("vm", 15).expect("commits");
        assert_eq!(st.in_flight(), vec![15..25]);
        assert_eq!(st.next_read(), 25);
    }
}
