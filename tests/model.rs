//! Reference-model tests of the log and the cursors.
//!
//! proptest drives one or two tenants' real [`Wal`] (on [`SimFs`]) and [`CursorStore`] (redb,
//! on the real file system in a temporary directory) with random actions, and keeps beside
//! them, per tenant, a plain model: the samples by offset, the prefix retention deleted, and
//! each consumer's committed offset and in-flight batch ends. After every action the two
//! must agree:
//!
//! - an append returns exactly the next `n` offsets of the model, also when several are
//!   sent together and the writer groups them (rolling the segment inside a group);
//! - a read from any offset (also past the end, also into the deleted prefix) returns the
//!   model's slice, sample for sample, bit for bit (NaN included), with its offsets, and
//!   reading again gives the same batch; a byte-limited read returns a non-empty prefix;
//! - a time-range read returns the model filtered by timestamp;
//! - begin and commit follow the cursor rules (a commit never moves back; a refused call
//!   changes nothing) and survive a restart;
//! - deleting the oldest segment (retention, or the drop-oldest quota policy) turns exactly
//!   its offsets into a `Deleted` gap, and offsets are never reused after a restart;
//! - after a key rotation new records use the new key and old ones stay readable;
//! - a power cut, a crash after the writers stopped, appends whose fsync fails followed by a
//!   power cut that keeps a torn tail, and a clean close all reopen to a log equal to the
//!   model: under `fsync` durability nothing acknowledged is lost, an unacknowledged record
//!   survives whole or not at all, and a read made before is made again identical.
//!
//! A second, fixed test writes a log of many segments and checks the multi-segment read
//! paths after a power cut: reads across segment boundaries and time-range reads that skip
//! whole segments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use metricspool::wal::fs::{CrashMode, SimFs};
use metricspool::{
    Batch, CursorStore, Durability, Error, Keyring, LogConfig, MasterKey, MetricKind, ReadBatch,
    ReadLimits, RecoveryEvent, RecoveryReport, Sample, Series, SkipReason, TenantId, TenantKeys,
    Wal,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// One sample of the model, at the offset that is its index.
type Entry = (Series, MetricKind, Sample);

/// Timestamps cluster around here, so time windows select something.
const T0: i64 = 1_700_000_000_000;
/// Limits that never stop a read by size.
const NO_BYTE_LIMIT: u64 = u64::MAX;
/// How many earlier reads each tenant remembers for the resend check.
const REMEMBERED_READS: usize = 16;

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::Fsync,
        segment_max_bytes: 64 << 10,
        max_group_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelCursor {
    committed: u64,
    in_flight_ends: Vec<u64>,
}

impl ModelCursor {
    fn next_read(&self) -> u64 {
        self.in_flight_ends
            .last()
            .copied()
            .unwrap_or(self.committed)
    }
}

/// A read already returned once: the same call must return the same batch for as long as
/// nothing it covers is deleted.
#[derive(Debug, Clone)]
struct Remembered {
    offset: u64,
    limits: ReadLimits,
    window: Option<(i64, i64)>,
    read: ReadBatch,
}

#[derive(Debug, Default)]
struct Model {
    /// Every acknowledged sample; the index is the offset.
    log: Vec<Entry>,
    /// Offsets below this were deleted (retention deletes the oldest segments).
    deleted: u64,
    cursors: BTreeMap<String, ModelCursor>,
    remembered: Vec<Remembered>,
}

impl Model {
    fn end(&self) -> u64 {
        self.log.len() as u64
    }

    /// Picks an offset in `0..=end + 2` from a random selector.
    fn pick_offset(&self, selector: u64) -> u64 {
        selector % (self.end() + 3)
    }

    fn remember(&mut self, r: Remembered) {
        // Only a read that stopped before the end is fixed: later appends extend the others.
        if r.read.end < self.end() {
            if self.remembered.len() == REMEMBERED_READS {
                self.remembered.remove(0);
            }
            self.remembered.push(r);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------

fn flat(b: &Batch) -> Vec<Entry> {
    b.iter().map(|(s, k, x)| (s.clone(), k, x)).collect()
}

fn same_entry(a: &Entry, b: &Entry) -> bool {
    a.0 == b.0 && a.1 == b.1 && a.2.same_bits(&b.2)
}

fn assert_same_entries(what: &str, got: &[Entry], want: &[Entry]) {
    assert_eq!(got.len(), want.len(), "{what}: sample count");
    if let Some(i) = (0..got.len()).find(|&i| !same_entry(&got[i], &want[i])) {
        panic!(
            "{what}: sample {i} differs: got {:?}, want {:?}",
            got[i], want[i]
        );
    }
}

/// Bitwise equality of two reads, grouping included (`ReadBatch: PartialEq` says NaN != NaN).
fn same_read(a: &ReadBatch, b: &ReadBatch) -> bool {
    let ea = a.batch.entries();
    let eb = b.batch.entries();
    a.start == b.start
        && a.end == b.end
        && a.runs == b.runs
        && a.skipped == b.skipped
        && ea.len() == eb.len()
        && ea.iter().zip(eb).all(|(x, y)| {
            x.series == y.series
                && x.kind == y.kind
                && x.samples.len() == y.samples.len()
                && x.samples
                    .iter()
                    .zip(&y.samples)
                    .all(|(p, q)| p.same_bits(q))
        })
}

/// Invariants of any read: runs ascending and disjoint, one offset per sample.
fn check_read_shape(r: &ReadBatch) {
    let offsets: Vec<u64> = r.offsets().collect();
    assert_eq!(
        offsets.len(),
        r.batch.sample_count(),
        "one offset per sample"
    );
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets ascend: {:?}",
        r.runs
    );
    assert!(
        offsets.iter().all(|o| (r.start..r.end).contains(o)),
        "offsets inside the read"
    );
    assert!(r.runs.iter().all(|x| !x.is_empty()), "no empty run");
}

/// The skip a read from `offset` must report for the deleted prefix.
fn expected_skips(m: &Model, offset: u64) -> Vec<(std::ops::Range<u64>, SkipReason)> {
    let to = m.deleted.min(m.end());
    if offset < to {
        vec![(offset..to, SkipReason::Deleted)]
    } else {
        Vec::new()
    }
}

fn skips(r: &ReadBatch) -> Vec<(std::ops::Range<u64>, SkipReason)> {
    r.skipped
        .iter()
        .map(|s| (s.range.clone(), s.reason.clone()))
        .collect()
}

/// Checks a `read_from` result against the model. With a byte limit the read may stop at
/// any record boundary, but returns at least one sample when one is readable.
fn check_offset_read(m: &Model, offset: u64, limits: ReadLimits, r: &ReadBatch) {
    check_read_shape(r);
    assert_eq!(r.start, offset, "a read starts where it was asked to");
    assert_eq!(
        skips(r),
        expected_skips(m, offset),
        "skipped ranges of a read from {offset}"
    );
    let end = m.end();
    let from = offset.max(m.deleted);
    // A limit of 0 samples reads as 1.
    let available = end
        .saturating_sub(from)
        .min(limits.max_samples.max(1) as u64);
    let got = r.batch.sample_count() as u64;
    if limits.max_bytes == NO_BYTE_LIMIT {
        assert_eq!(
            got, available,
            "samples read from {offset} (end {end}, deleted {})",
            m.deleted
        );
    } else {
        assert!(
            got <= available,
            "a byte-limited read returns no more than the samples limit"
        );
        assert!(
            got >= available.min(1),
            "a byte-limited read returns at least one sample"
        );
    }
    let want = if got == 0 {
        &[][..]
    } else {
        &m.log[from as usize..(from + got) as usize]
    };
    assert_same_entries(&format!("read from {offset}"), &flat(&r.batch), want);
    assert!(
        r.offsets().eq(from..from + got),
        "offsets of a read from {offset}: {:?}",
        r.runs
    );
    assert_eq!(r.end, from + got, "end of a read from {offset}");
}

/// Checks a time-range read against the model filtered by timestamp.
fn check_window_read(
    m: &Model,
    window: (i64, i64),
    offset: u64,
    limits: ReadLimits,
    r: &ReadBatch,
) {
    check_read_shape(r);
    assert_eq!(
        r.start, offset,
        "a time-range read starts where it was asked to"
    );
    assert_eq!(
        skips(r),
        expected_skips(m, offset),
        "skipped ranges of a time-range read"
    );
    let (lo, hi) = window;
    let end = m.end();
    let from = offset.max(m.deleted);
    let picked: Vec<u64> = (from..end)
        .filter(|&o| (lo..hi).contains(&m.log[o as usize].2.timestamp_ms))
        .take(limits.max_samples.max(1))
        .collect();
    let want: Vec<Entry> = picked.iter().map(|&o| m.log[o as usize].clone()).collect();
    let what = format!("time range {lo}..{hi} from {offset}");
    assert_same_entries(&what, &flat(&r.batch), &want);
    assert!(
        r.offsets().eq(picked.iter().copied()),
        "{what}: offsets {:?}",
        r.runs
    );
    let want_end = if picked.len() == limits.max_samples.max(1) {
        picked.last().map_or(offset, |o| o + 1)
    } else {
        end.max(offset)
    };
    assert_eq!(r.end, want_end, "{what}: end");
}

fn check_cursor(m: &Model, consumer: &str, got: Option<metricspool::CursorState>) {
    let got = got.map(|c| ModelCursor {
        committed: c.committed,
        in_flight_ends: c.in_flight_ends,
    });
    assert_eq!(
        got.as_ref(),
        m.cursors.get(consumer),
        "cursor of {consumer}"
    );
}

// ---------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------

struct Subject {
    id: TenantId,
    keys: TenantKeys,
    wal_dir: PathBuf,
    cursor_dir: PathBuf,
    wal: Option<Wal>,
    cursors: Option<CursorStore>,
    model: Model,
}

impl Subject {
    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("the log is open between actions")
    }

    fn cursors(&self) -> &CursorStore {
        self.cursors
            .as_ref()
            .expect("the cursor store is open between actions")
    }

    fn open_wal(&mut self, sim: &SimFs) -> RecoveryReport {
        let (wal, report) = Wal::open(
            Arc::new(sim.clone()),
            &self.wal_dir,
            self.id.clone(),
            self.keys.clone(),
            log_config(),
        )
        .expect("the log opens");
        self.wal = Some(wal);
        report
    }

    fn open_cursors(&mut self) {
        self.cursors = None; // redb refuses a second handle on the same file
        self.cursors =
            Some(CursorStore::open(&self.cursor_dir, self.id.clone()).expect("cursors open"));
    }

    fn append(&mut self, batch: &Batch) {
        let end = self.model.end();
        let n = batch.sample_count() as u64;
        let range = self
            .wal()
            .append_blocking(batch)
            .expect("the append is acknowledged");
        assert_eq!(range, end..end + n, "an append takes the next offsets");
        self.model.log.extend(flat(batch));
        assert_eq!(
            self.wal().end_offset(),
            self.model.end(),
            "end after an append"
        );
        self.check_newest_key();
    }

    /// Sends every append before awaiting any, as concurrent appenders would; returns the
    /// results in the order sent.
    fn send_all(&self, batches: &[Batch]) -> Vec<metricspool::Result<std::ops::Range<u64>>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let wal = self.wal();
        rt.block_on(async {
            let mut futs: Vec<_> = batches.iter().map(|b| Box::pin(wal.append(b))).collect();
            let mut results: Vec<Option<metricspool::Result<std::ops::Range<u64>>>> =
                batches.iter().map(|_| None).collect();
            std::future::poll_fn(|cx| {
                let mut pending = false;
                for (f, r) in futs.iter_mut().zip(results.iter_mut()) {
                    if r.is_none() {
                        match f.as_mut().poll(cx) {
                            std::task::Poll::Ready(x) => *r = Some(x),
                            std::task::Poll::Pending => pending = true,
                        }
                    }
                }
                if pending {
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            })
            .await;
            results
                .into_iter()
                .map(|r| r.expect("polled to completion"))
                .collect()
        })
    }

    fn append_many(&mut self, batches: &[Batch]) {
        let results = self.send_all(batches);
        // One writer takes requests in the order they were sent.
        for (b, r) in batches.iter().zip(results) {
            let end = self.model.end();
            let n = b.sample_count() as u64;
            let range = r.expect("the append is acknowledged");
            assert_eq!(
                range,
                end..end + n,
                "appends sent together take offsets in order"
            );
            self.model.log.extend(flat(b));
        }
        assert_eq!(
            self.wal().end_offset(),
            self.model.end(),
            "end after appends"
        );
        self.check_newest_key();
    }

    /// The segment an append just went to is sealed with the newest key.
    fn check_newest_key(&self) {
        let last = self
            .wal()
            .segments()
            .pop()
            .expect("an append leaves a segment");
        assert_eq!(
            last.key_id,
            self.keys.current().key_id(),
            "new records use the newest key"
        );
    }

    fn read(&mut self, offset: u64, limits: ReadLimits) -> ReadBatch {
        let r = self
            .wal()
            .read_from(offset, limits)
            .expect("the read succeeds");
        check_offset_read(&self.model, offset, limits, &r);
        let again = self
            .wal()
            .read_from(offset, limits)
            .expect("the read succeeds");
        assert!(same_read(&r, &again), "reading again gives the same batch");
        self.model.remember(Remembered {
            offset,
            limits,
            window: None,
            read: r.clone(),
        });
        r
    }

    fn read_window(&mut self, window: (i64, i64), offset: u64, limits: ReadLimits) {
        let (lo, hi) = window;
        let r = self
            .wal()
            .read_time_range(lo, hi, offset, limits)
            .expect("the read succeeds");
        check_window_read(&self.model, window, offset, limits, &r);
        let again = self
            .wal()
            .read_time_range(lo, hi, offset, limits)
            .expect("the read succeeds");
        assert!(
            same_read(&r, &again),
            "reading a time range again gives the same batch"
        );
        self.model.remember(Remembered {
            offset,
            limits,
            window: Some(window),
            read: r,
        });
    }

    /// Every remembered read, made again, returns the same batch.
    fn resend(&self) {
        for m in &self.model.remembered {
            let again = match m.window {
                None => self.wal().read_from(m.offset, m.limits),
                Some((lo, hi)) => self.wal().read_time_range(lo, hi, m.offset, m.limits),
            }
            .expect("the read succeeds");
            assert!(
                same_read(&m.read, &again),
                "a resent read equals the first: {m:?} vs {again:?}"
            );
        }
    }

    fn register(&mut self, consumer: &str, start: u64) {
        let got = self
            .cursors()
            .register(consumer, start)
            .expect("registering succeeds");
        self.model
            .cursors
            .entry(consumer.to_owned())
            .or_insert(ModelCursor {
                committed: start,
                in_flight_ends: Vec::new(),
            });
        check_cursor(&self.model, consumer, Some(got));
    }

    fn begin(&mut self, consumer: &str, end: u64) {
        let r = self.cursors().begin(consumer, end);
        let allowed = self.model.cursors.get(consumer).is_some_and(|c| {
            end > c.next_read() && c.in_flight_ends.len() < metricspool::cursor::MAX_IN_FLIGHT
        });
        match r {
            Ok(got) => {
                assert!(
                    allowed,
                    "begin of {consumer} to {end} was accepted against the rules"
                );
                let c = self
                    .model
                    .cursors
                    .get_mut(consumer)
                    .expect("allowed implies registered");
                c.in_flight_ends.push(end);
                check_cursor(&self.model, consumer, Some(got));
            }
            Err(e) => {
                assert!(!allowed, "begin of {consumer} to {end} was refused: {e}");
                assert!(
                    matches!(e, Error::Cursor { .. }),
                    "a refused begin is a cursor error: {e:?}"
                );
            }
        }
        check_cursor(
            &self.model,
            consumer,
            self.cursors().get(consumer).expect("get succeeds"),
        );
    }

    fn commit(&mut self, consumer: &str, end: u64) {
        let r = self.cursors().commit(consumer, end);
        let allowed = self
            .model
            .cursors
            .get(consumer)
            .is_some_and(|c| end >= c.committed);
        match r {
            Ok(got) => {
                assert!(
                    allowed,
                    "commit of {consumer} to {end} was accepted against the rules"
                );
                let c = self
                    .model
                    .cursors
                    .get_mut(consumer)
                    .expect("allowed implies registered");
                c.committed = end;
                c.in_flight_ends.retain(|&e| e > end);
                check_cursor(&self.model, consumer, Some(got));
            }
            Err(e) => {
                assert!(!allowed, "commit of {consumer} to {end} was refused: {e}");
                assert!(
                    matches!(e, Error::Cursor { .. }),
                    "a refused commit is a cursor error: {e:?}"
                );
            }
        }
        check_cursor(
            &self.model,
            consumer,
            self.cursors().get(consumer).expect("get succeeds"),
        );
    }

    /// What a forwarder does: read from the cursor, record the batch as in flight, and
    /// perhaps acknowledge the oldest batch in flight.
    fn consume(&mut self, consumer: &str, max_samples: usize, ack: bool) {
        let Some(next) = self.model.cursors.get(consumer).map(ModelCursor::next_read) else {
            return;
        };
        let limits = ReadLimits {
            max_samples,
            max_bytes: NO_BYTE_LIMIT,
        };
        let r = self.read(next, limits);
        if r.end > next {
            self.begin(consumer, r.end);
        }
        if ack && let Some(&first) = self.model.cursors[consumer].in_flight_ends.first() {
            self.commit(consumer, first);
        }
    }

    /// Deletes the oldest segment, as retention does when every consumer has passed it, or
    /// (`force`) as the drop-oldest quota policy does whether read or not.
    fn delete_oldest(&mut self, force: bool) {
        let min = self.model.cursors.values().map(|c| c.committed).min();
        let Some(oldest) = self.wal().segments().into_iter().next() else {
            return;
        };
        if oldest.sealed_ms.is_none() {
            let r = self.wal().delete_segment(oldest.base_offset);
            assert!(r.is_err(), "the segment being written cannot be deleted");
            return;
        }
        if !force && min.is_none_or(|m| oldest.end_offset > m) {
            return;
        }
        assert_eq!(
            oldest.base_offset, self.model.deleted,
            "the oldest segment starts at the deleted prefix"
        );
        self.wal()
            .delete_segment(oldest.base_offset)
            .expect("a consumed segment can be deleted");
        self.model.deleted = oldest.end_offset;
        let deleted = self.model.deleted;
        self.model.remembered.retain(|r| r.offset >= deleted);
    }

    /// The whole log equals the model: end, first offset, segment layout and time index,
    /// and every sample, read in chunks of `chunk`.
    fn check_log(&self, chunk: usize) {
        let m = &self.model;
        let wal = self.wal();
        assert_eq!(wal.end_offset(), m.end(), "end offset of the log");
        assert_eq!(
            wal.first_offset(),
            m.deleted.min(m.end()),
            "first offset of the log"
        );
        let segs = wal.segments();
        let mut at = m.deleted;
        let current_key = self.keys.current().key_id();
        assert!(
            segs.windows(2).all(|w| w[0].key_id <= w[1].key_id)
                && segs.iter().all(|g| g.key_id <= current_key),
            "segments use the keys in rotation order: {segs:#?}"
        );
        for s in &segs {
            assert_eq!(s.base_offset, at, "segments are contiguous: {segs:#?}");
            assert!(
                s.end_offset > s.base_offset,
                "no segment is empty: {segs:#?}"
            );
            let ts = m.log[s.base_offset as usize..s.end_offset as usize]
                .iter()
                .map(|e| e.2.timestamp_ms);
            assert_eq!(
                s.min_ts,
                ts.clone().min(),
                "min_ts of segment {}",
                s.base_offset
            );
            assert_eq!(s.max_ts, ts.max(), "max_ts of segment {}", s.base_offset);
            at = s.end_offset;
        }
        if !segs.is_empty() {
            assert_eq!(at, m.end(), "the last segment ends at the end of the log");
        }
        let limits = ReadLimits {
            max_samples: chunk,
            max_bytes: NO_BYTE_LIMIT,
        };
        let mut cur = 0;
        while cur < m.end() {
            let r = wal.read_from(cur, limits).expect("the read succeeds");
            check_offset_read(m, cur, limits, &r);
            assert!(r.end > cur, "a read before the end makes progress");
            cur = r.end;
        }
    }

    fn check_cursors(&self) {
        let stored: BTreeMap<String, ModelCursor> = self
            .cursors()
            .list()
            .expect("listing cursors succeeds")
            .into_iter()
            .map(|(k, c)| {
                (
                    k,
                    ModelCursor {
                        committed: c.committed,
                        in_flight_ends: c.in_flight_ends,
                    },
                )
            })
            .collect();
        assert_eq!(stored, self.model.cursors, "every cursor");
    }
}

/// Recovery after a crash under `fsync` durability never finds a corrupt record.
fn assert_no_damage(report: &RecoveryReport) {
    for e in &report.events {
        assert!(
            !matches!(
                e,
                RecoveryEvent::CorruptRecordSkipped { .. }
                    | RecoveryEvent::SegmentQuarantined { .. }
            ),
            "recovery found damage: {report:#?}"
        );
    }
}

struct World {
    sim: SimFs,
    keyring: Keyring,
    subjects: Vec<Subject>,
    _tmp: tempfile::TempDir,
}

impl World {
    fn new(tenants: usize) -> Self {
        // Cursors live on a real file system; tmpfs, where there is one, keeps redb's fsyncs
        // from dominating the run time.
        let shm = std::path::Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let keyring = Keyring::open(tmp.path().join("keys"), MasterKey::from_bytes([5; 32]))
            .expect("the keyring opens");
        let sim = SimFs::new();
        let subjects = (0..tenants)
            .map(|i| {
                let id = TenantId::new(format!("tenant-{i}")).expect("a valid tenant id");
                let keys = keyring
                    .load(&id, true)
                    .expect("keys load")
                    .expect("keys were created");
                let cursor_dir = tmp.path().join(id.as_str());
                std::fs::create_dir_all(&cursor_dir).expect("the cursor directory is created");
                let mut s = Subject {
                    wal_dir: PathBuf::from("/spool").join(id.as_str()).join("wal"),
                    id,
                    keys,
                    cursor_dir,
                    wal: None,
                    cursors: None,
                    model: Model::default(),
                };
                let report = s.open_wal(&sim);
                assert!(report.is_clean(), "a new log opens clean: {report:#?}");
                s.open_cursors();
                s
            })
            .collect();
        Self {
            sim,
            keyring,
            subjects,
            _tmp: tmp,
        }
    }

    fn subject(&mut self, t: usize) -> &mut Subject {
        let n = self.subjects.len();
        &mut self.subjects[t % n]
    }

    /// Stops every writer (dropping the handles), crashes the file system, restarts the
    /// process: logs and cursor stores reopen. Returns the recovery reports.
    fn restart(&mut self, mode: CrashMode) -> Vec<RecoveryReport> {
        for s in &mut self.subjects {
            s.wal = None;
            s.cursors = None;
        }
        self.sim.crash(mode);
        self.reopen()
    }

    fn reopen(&mut self) -> Vec<RecoveryReport> {
        let sim = self.sim.clone();
        self.subjects
            .iter_mut()
            .map(|s| {
                let report = s.open_wal(&sim);
                assert_no_damage(&report);
                assert_eq!(
                    report.end_offset,
                    s.model.end(),
                    "recovered end: {report:#?}"
                );
                s.open_cursors();
                report
            })
            .collect()
    }

    fn check_all(&self) {
        for s in &self.subjects {
            s.check_log(509);
            s.check_cursors();
            s.resend();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Action {
    Append {
        t: usize,
        batch: Batch,
    },
    /// One series with many incompressible samples, so segments fill and roll by size.
    AppendBulk {
        t: usize,
        series: Series,
        n: usize,
        seed: u64,
    },
    /// Appends sent together from one task, so the writer groups them into one write (and
    /// may roll the segment in the middle of a group).
    AppendMany {
        t: usize,
        batches: Vec<Batch>,
    },
    /// A new data key: the writer seals the segment and seals new records with the new key.
    RotateKey {
        t: usize,
    },
    Sync {
        t: usize,
    },
    Roll {
        t: usize,
    },
    Read {
        t: usize,
        offset: u64,
        max_samples: usize,
        max_bytes: Option<u64>,
    },
    ReadTimeRange {
        t: usize,
        from: Bound,
        until: Bound,
        offset: u64,
        max_samples: usize,
    },
    Register {
        t: usize,
        consumer: usize,
        start: u64,
    },
    Begin {
        t: usize,
        consumer: usize,
        end: u64,
    },
    Commit {
        t: usize,
        consumer: usize,
        end: u64,
    },
    Consume {
        t: usize,
        consumer: usize,
        max_samples: usize,
        ack: bool,
    },
    DeleteOldest {
        t: usize,
        force: bool,
    },
    /// Writers stop (and seal), then power is cut.
    CrashAfterDrop,
    /// Power is cut while the writers run: the segment being written is never sealed.
    PowerCut,
    /// Appends (one by one, or sent together) while the `fail_at`-th sync from now on fails,
    /// then a power cut that keeps `keep` unsynced bytes of each file.
    FailingAppends {
        t: usize,
        batches: Vec<Batch>,
        together: bool,
        fail_at: u64,
        keep: usize,
    },
    CloseReopen,
    Resend,
}

const CONSUMERS: [&str; 2] = ["prometheus", "victoria"];

/// One end of a time window.
#[derive(Debug, Clone, Copy)]
enum Bound {
    At(i64),
    /// `delta` from the timestamp of a stored sample (`selector` picks which), so windows
    /// start and end exactly on, just before and just after record and segment bounds.
    NearSample {
        selector: u64,
        delta: i64,
    },
    /// This far after the start (for the end of a window).
    After(i64),
}

impl Bound {
    fn resolve(self, m: &Model, start: i64) -> i64 {
        match self {
            Bound::At(t) => t,
            Bound::NearSample { selector, delta } if !m.log.is_empty() => {
                let i = (selector % m.end()) as usize;
                m.log[i].2.timestamp_ms.saturating_add(delta)
            }
            Bound::NearSample { delta, .. } => T0 + delta,
            Bound::After(width) => start.saturating_add(width),
        }
    }
}

fn bound() -> impl Strategy<Value = Bound> {
    prop_oneof![
        2 => timestamp().prop_map(Bound::At),
        3 => (any::<u64>(), -1i64..=1).prop_map(|(selector, delta)| Bound::NearSample { selector, delta }),
    ]
}

fn series() -> impl Strategy<Value = Series> {
    let names = prop::sample::select(vec![
        "up",
        "http_requests_total",
        "node:cpu_seconds_total",
        "_x",
    ]);
    let labels = prop::collection::btree_map(
        prop::sample::select(vec!["job", "instance", "le", "a"]),
        prop::sample::select(vec!["", "api", "e", "é", "éa", "10.0.0.1:9100", "+Inf"]),
        0..3,
    );
    (names, labels).prop_map(|(n, l)| Series::new(n, l).expect("the pools hold valid names"))
}

fn kind() -> impl Strategy<Value = MetricKind> {
    prop::sample::select(vec![
        MetricKind::Unknown,
        MetricKind::Gauge,
        MetricKind::Counter,
        MetricKind::Histogram,
        MetricKind::Summary,
    ])
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => (0i64..5_000).prop_map(|d| T0 + d),
        3 => -5_000i64..5_000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -1e6f64..1e6,
        1 => Just(f64::NAN),
        // The Prometheus staleness marker: a NaN with a payload.
        1 => Just(f64::from_bits(0x7ff0_0000_0000_0002)),
        1 => Just(-0.0),
        1 => Just(f64::NEG_INFINITY),
        2 => any::<f64>(),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    let samples = prop::collection::vec(
        (timestamp(), value()).prop_map(|(t, v)| Sample::new(t, v)),
        1..=4,
    );
    prop::collection::vec((series(), kind(), samples), 1..=5).prop_map(|entries| {
        let mut b = Batch::new();
        for (s, k, v) in entries {
            b.push(s, k, v);
        }
        b
    })
}

fn action() -> impl Strategy<Value = Action> {
    let t = 0usize..2;
    let c = 0usize..CONSUMERS.len();
    prop_oneof![
        10 => (t.clone(), batch()).prop_map(|(t, batch)| Action::Append { t, batch }),
        1 => (t.clone(), series(), 500usize..3000, any::<u64>())
            .prop_map(|(t, series, n, seed)| Action::AppendBulk { t, series, n, seed }),
        3 => (t.clone(), prop::collection::vec(prop_oneof![
                6 => batch(),
                1 => (series(), 500usize..3000, any::<u64>()).prop_map(|(s, n, seed)| bulk_batch(&s, n, seed)),
            ], 2..8))
            .prop_map(|(t, batches)| Action::AppendMany { t, batches }),
        1 => t.clone().prop_map(|t| Action::RotateKey { t }),
        2 => t.clone().prop_map(|t| Action::Sync { t }),
        3 => t.clone().prop_map(|t| Action::Roll { t }),
        7 => (t.clone(), any::<u64>(), 0usize..50, prop::option::weighted(0.25, 1u64..3000))
            .prop_map(|(t, offset, max_samples, max_bytes)| Action::Read { t, offset, max_samples, max_bytes }),
        4 => (
            t.clone(),
            bound(),
            prop_oneof![
                2 => bound(),
                2 => prop_oneof![0i64..6000, Just(i64::MAX)].prop_map(Bound::After),
            ],
            any::<u64>(),
            0usize..50,
        )
            .prop_map(|(t, from, until, offset, max_samples)| Action::ReadTimeRange {
                t,
                from,
                until,
                offset,
                max_samples,
            }),
        2 => (t.clone(), c.clone(), any::<u64>()).prop_map(|(t, consumer, start)| Action::Register { t, consumer, start }),
        3 => (t.clone(), c.clone(), any::<u64>()).prop_map(|(t, consumer, end)| Action::Begin { t, consumer, end }),
        3 => (t.clone(), c.clone(), any::<u64>()).prop_map(|(t, consumer, end)| Action::Commit { t, consumer, end }),
        4 => (t.clone(), c, 1usize..50, any::<bool>())
            .prop_map(|(t, consumer, max_samples, ack)| Action::Consume { t, consumer, max_samples, ack }),
        3 => (t.clone(), any::<bool>()).prop_map(|(t, force)| Action::DeleteOldest { t, force }),
        1 => Just(Action::CrashAfterDrop),
        1 => Just(Action::PowerCut),
        2 => (
            t,
            prop::collection::vec(batch(), 1..6),
            any::<bool>(),
            1u64..10,
            prop_oneof![Just(0usize), 1usize..3000],
        )
            .prop_map(|(t, batches, together, fail_at, keep)| Action::FailingAppends { t, batches, together, fail_at, keep }),
        1 => Just(Action::CloseReopen),
        1 => Just(Action::Resend),
    ]
}

/// Pseudo-random, incompressible values (xorshift64*).
fn noise(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        })
        .collect()
}

fn bulk_batch(series: &Series, n: usize, seed: u64) -> Batch {
    let samples = noise(seed, n)
        .into_iter()
        .enumerate()
        .map(|(i, bits)| Sample::new(T0 + i as i64, f64::from_bits(bits)))
        .collect();
    let mut b = Batch::new();
    b.push(series.clone(), MetricKind::Gauge, samples);
    b
}

impl World {
    fn apply(&mut self, action: &Action) {
        match action {
            Action::Append { t, batch } => self.subject(*t).append(batch),
            Action::AppendBulk { t, series, n, seed } => {
                self.subject(*t).append(&bulk_batch(series, *n, *seed))
            }
            Action::AppendMany { t, batches } => self.subject(*t).append_many(batches),
            Action::RotateKey { t } => {
                let n = self.subjects.len();
                let s = &mut self.subjects[t % n];
                s.keys = self.keyring.rotate(&s.id).expect("the key rotates");
                s.wal().set_keys(s.keys.clone());
            }
            Action::Sync { t } => self
                .subject(*t)
                .wal()
                .sync_blocking()
                .expect("sync succeeds"),
            Action::Roll { t } => self
                .subject(*t)
                .wal()
                .roll_blocking()
                .expect("roll succeeds"),
            Action::Read {
                t,
                offset,
                max_samples,
                max_bytes,
            } => {
                let s = self.subject(*t);
                let offset = s.model.pick_offset(*offset);
                let limits = ReadLimits {
                    max_samples: *max_samples,
                    max_bytes: max_bytes.unwrap_or(NO_BYTE_LIMIT),
                };
                s.read(offset, limits);
            }
            Action::ReadTimeRange {
                t,
                from,
                until,
                offset,
                max_samples,
            } => {
                let s = self.subject(*t);
                let offset = s.model.pick_offset(*offset);
                let limits = ReadLimits {
                    max_samples: *max_samples,
                    max_bytes: NO_BYTE_LIMIT,
                };
                let from = from.resolve(&s.model, T0);
                let until = until.resolve(&s.model, from);
                s.read_window((from, until), offset, limits);
            }
            Action::Register { t, consumer, start } => {
                let s = self.subject(*t);
                let start = s.model.pick_offset(*start);
                s.register(CONSUMERS[*consumer], start);
            }
            Action::Begin { t, consumer, end } => {
                let s = self.subject(*t);
                let end = s.model.pick_offset(*end);
                s.begin(CONSUMERS[*consumer], end);
            }
            Action::Commit { t, consumer, end } => {
                let s = self.subject(*t);
                let end = s.model.pick_offset(*end);
                s.commit(CONSUMERS[*consumer], end);
            }
            Action::Consume {
                t,
                consumer,
                max_samples,
                ack,
            } => self
                .subject(*t)
                .consume(CONSUMERS[*consumer], *max_samples, *ack),
            Action::DeleteOldest { t, force } => self.subject(*t).delete_oldest(*force),
            Action::CrashAfterDrop => {
                let reports = self.restart(CrashMode::DropUnsynced);
                for r in reports {
                    assert!(
                        r.is_clean(),
                        "writers that stopped sealed everything: {r:#?}"
                    );
                }
                self.check_all();
            }
            Action::PowerCut => {
                // The first sync from now on fails and every operation after it: the writers
                // cannot seal on their way out, as after a power cut.
                self.sim.fail_at_sync(1);
                self.restart(CrashMode::DropUnsynced);
                self.check_all();
            }
            Action::FailingAppends {
                t,
                batches,
                together,
                fail_at,
                keep,
            } => self.failing_appends(*t, batches, *together, *fail_at, *keep),
            Action::CloseReopen => {
                for s in &mut self.subjects {
                    s.wal().close_blocking().expect("close succeeds");
                    s.wal().close_blocking().expect("closing twice is harmless");
                    assert!(
                        matches!(s.wal().append_blocking(&one_sample()), Err(Error::Closed)),
                        "an append after close fails with Closed"
                    );
                    s.wal = None;
                    s.cursors = None;
                }
                let reports = self.reopen();
                for r in reports {
                    assert!(r.is_clean(), "a closed log reopens clean: {r:#?}");
                }
                self.check_all();
            }
            Action::Resend => {
                for s in &self.subjects {
                    s.resend();
                }
            }
        }
        for s in &self.subjects {
            assert_eq!(
                s.wal().end_offset(),
                s.model.end(),
                "end offset after {action:?}"
            );
            assert!(
                s.wal().poisoned_cause().is_none(),
                "the log is not poisoned"
            );
        }
    }

    /// Appends while a sync fails, then a power cut. The appends acknowledged before the
    /// failure are a prefix, and survive; every later one fails (the log is poisoned). Of the
    /// unacknowledged ones, a prefix of whole records may survive the crash (their frames
    /// reached the disk), with the offsets they would have had; nothing else does.
    fn failing_appends(
        &mut self,
        t: usize,
        batches: &[Batch],
        together: bool,
        fail_at: u64,
        keep: usize,
    ) {
        self.sim.fail_at_sync(fail_at);
        let s = self.subject(t);
        let results = if together {
            s.send_all(batches)
        } else {
            batches.iter().map(|b| s.wal().append_blocking(b)).collect()
        };
        let acked = results.iter().take_while(|r| r.is_ok()).count();
        assert!(
            results[acked..].iter().all(|r| r.is_err()),
            "after a failure every append fails: {results:?}"
        );
        for (b, r) in batches.iter().zip(&results).take(acked) {
            let end = s.model.end();
            let range = r.as_ref().expect("acknowledged");
            assert_eq!(
                *range,
                end..end + b.sample_count() as u64,
                "acknowledged appends take the next offsets"
            );
            s.model.log.extend(flat(b));
        }
        let failed = &batches[acked..];
        if !failed.is_empty() {
            let again = s.wal().append_blocking(&one_sample());
            assert!(
                matches!(again, Err(Error::Poisoned { .. })),
                "the log is poisoned: {again:?}"
            );
        }
        for s in &mut self.subjects {
            s.wal = None;
            s.cursors = None;
        }
        self.sim.crash(CrashMode::KeepTorn(keep));
        let n = self.subjects.len();
        let sim = self.sim.clone();
        for (i, s) in self.subjects.iter_mut().enumerate() {
            let report = s.open_wal(&sim);
            assert_no_damage(&report);
            if i == t % n {
                let mut end = s.model.end();
                for b in failed {
                    if report.end_offset < end + b.sample_count() as u64 {
                        break;
                    }
                    // The whole frame reached the disk: the unacknowledged record survived.
                    end += b.sample_count() as u64;
                    s.model.log.extend(flat(b));
                }
            }
            assert_eq!(
                report.end_offset,
                s.model.end(),
                "recovered end after failed appends: {report:#?}"
            );
            s.open_cursors();
        }
        self.check_all();
    }
}

fn one_sample() -> Batch {
    let series = Series::new("up", Vec::<(&str, &str)>::new()).expect("a valid series");
    bulk_batch(&series, 1, 1)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=n runs a deeper search.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/model.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_and_the_cursors_agree_with_a_reference_model(
        tenants in 1usize..=2,
        actions in prop::collection::vec(action(), 30..60),
    ) {
        let mut world = World::new(tenants);
        for a in &actions {
            world.apply(a);
        }
        world.restart(CrashMode::DropUnsynced);
        world.check_all();
    }
}

// ---------------------------------------------------------------------------------------
// A long log of many segments
// ---------------------------------------------------------------------------------------

/// 2000 appends, mostly in time order with a few late samples, fill many segments; after a
/// power cut (the last segment is never sealed, so recovery scans it) every read path that
/// crosses segments is compared with the model.
#[test]
fn a_log_of_many_segments_reads_back_exactly_after_a_power_cut() {
    let mut world = World::new(1);
    let names = ["cpu", "mem", "disk_io"];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x = noise(x, 1)[0];
        x
    };
    let s = world.subject(0);
    for i in 0..2000i64 {
        let mut b = Batch::new();
        for name in &names[..1 + (next() % 3) as usize] {
            let series =
                Series::new(*name, [("host", format!("h{}", next() % 4))]).expect("a valid series");
            let n = 1 + next() % 24;
            let samples = (0..n as i64)
                .map(|j| {
                    // Every 97th append carries a late sample, so some segments span wide.
                    let ts = if i % 97 == 0 && j == 0 {
                        T0 - 10_000_000
                    } else {
                        T0 + i * 1000 + j
                    };
                    Sample::new(ts, f64::from_bits(next()))
                })
                .collect();
            b.push(series, MetricKind::Gauge, samples);
        }
        s.append(&b);
    }
    let segments = s.wal().segments().len();
    assert!(
        segments >= 10,
        "the log rolled into many segments, not {segments}"
    );

    world.sim.fail_at_sync(1);
    let reports = world.restart(CrashMode::DropUnsynced);
    assert_eq!(
        reports[0].scanned_segments, 1,
        "only the unsealed segment is scanned: {:#?}",
        reports[0]
    );
    let s = world.subject(0);
    s.check_log(997);
    s.check_log(10_000);

    let segs = s.wal().segments();
    assert_eq!(segs.len(), segments, "recovery keeps every segment");
    let unlimited = |max_samples| ReadLimits {
        max_samples,
        max_bytes: NO_BYTE_LIMIT,
    };
    // Reads that start shortly before a boundary and end after it.
    for g in &segs[1..] {
        for k in [1u64, 7, 150] {
            let from = g.base_offset.saturating_sub(k);
            let limits = unlimited(2 * k as usize);
            let r = s.wal().read_from(from, limits).expect("the read succeeds");
            check_offset_read(&s.model, from, limits, &r);
        }
    }
    // Byte-limited reads page through the whole log without a gap.
    let mut cur = 0;
    let mut pages = Vec::new();
    while cur < s.model.end() {
        let limits = ReadLimits {
            max_samples: 5000,
            max_bytes: 20_000,
        };
        let r = s.wal().read_from(cur, limits).expect("the read succeeds");
        check_offset_read(&s.model, cur, limits, &r);
        cur = r.end;
        pages.push(r);
    }
    assert!(
        pages.len() > segments,
        "the byte limit split the log into pages"
    );

    // Time-range reads, paged by `end`: whole segments fall outside most windows.
    let mut windows: Vec<(i64, i64)> = Vec::new();
    for g in &segs {
        let (lo, hi) = (g.min_ts.expect("not empty"), g.max_ts.expect("not empty"));
        // The whole segment, its first and last instant, and the instants just outside.
        windows.extend([
            (lo, hi + 1),
            (lo, lo + 1),
            (hi, hi + 1),
            (lo - 1, lo),
            (hi + 1, hi + 2),
        ]);
    }
    windows.extend([
        (i64::MIN, i64::MAX),
        (T0 - 10_000_000, T0 - 10_000_000 + 1),
        (T0 + 500_000, T0 + 503_000),
        (T0 + 1_999_000, i64::MAX),
        (T0 + 700_000, T0 + 700_000),
        (i64::MIN, T0),
    ]);
    for (lo, hi) in windows {
        for max_samples in [97usize, 5000] {
            let limits = unlimited(max_samples);
            let mut cur = 0;
            let mut got = Vec::new();
            let mut offsets = Vec::new();
            while cur < s.model.end() {
                let r = s
                    .wal()
                    .read_time_range(lo, hi, cur, limits)
                    .expect("the read succeeds");
                check_window_read(&s.model, (lo, hi), cur, limits, &r);
                assert!(
                    r.end > cur,
                    "a time-range read before the end makes progress"
                );
                got.extend(flat(&r.batch));
                offsets.extend(r.offsets());
                cur = r.end;
            }
            let want: Vec<u64> = (0..s.model.end())
                .filter(|&o| (lo..hi).contains(&s.model.log[o as usize].2.timestamp_ms))
                .collect();
            assert_eq!(offsets, want, "paged time range {lo}..{hi}");
            let want: Vec<Entry> = want
                .iter()
                .map(|&o| s.model.log[o as usize].clone())
                .collect();
            assert_same_entries(&format!("paged time range {lo}..{hi}"), &got, &want);
        }
    }

    // A clean close and reopen changes nothing, and the same pages come back.
    s.wal().close_blocking().expect("close succeeds");
    s.wal = None;
    let sim = world.sim.clone();
    let report = world.subject(0).open_wal(&sim);
    assert!(report.is_clean(), "a closed log reopens clean: {report:#?}");
    let s = world.subject(0);
    let mut cur = 0;
    for p in &pages {
        let r = s
            .wal()
            .read_from(
                cur,
                ReadLimits {
                    max_samples: 5000,
                    max_bytes: 20_000,
                },
            )
            .expect("the read succeeds");
        assert!(
            same_read(p, &r),
            "a page read after reopen equals the one before"
        );
        cur = r.end;
    }
    s.check_log(4096);
}
