//! Crash images through the I/O seam: the log runs on `SimFs`, which keeps live and durable
//! bytes apart, and a power cut is simulated at every fsync point of a fixed workload. After
//! each cut the reopened log must hold exactly the acknowledged prefix (plus, at most, the one
//! append that was in progress), accept new appends at the right offsets, and survive a second
//! crash.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metricspool::wal::fs::{CrashMode, Fs, SimFs};
use metricspool::wal::record::{FRAME_HEADER_LEN, decode_frame, decode_header};
use metricspool::wal::segment::{self, SEGMENT_HEADER_LEN};
use metricspool::{
    Batch, Durability, Error, Keyring, LogConfig, MasterKey, MetricKind, ReadLimits, RecoveryEvent,
    RecoveryReport, Sample, Series, TenantId, TenantKeys, Wal,
};

const DIR: &str = "/sim/tenants/crash/wal";
const BATCHES: u64 = 40;

fn tenant() -> TenantId {
    TenantId::new("crash").expect("a valid tenant id")
}

/// The tenant's keys, from a keyring on a real temp dir (keyrings never live on the seam).
fn keys() -> (tempfile::TempDir, TenantKeys) {
    let dir = tempfile::tempdir().expect("a temp dir for the keyring");
    let ring = Keyring::open(dir.path(), MasterKey::from_bytes([7; 32])).expect("keyring opens");
    let keys = ring
        .load(&tenant(), true)
        .expect("keyring loads")
        .expect("keyring created");
    (dir, keys)
}

fn config() -> LogConfig {
    LogConfig {
        durability: Durability::Fsync,
        segment_max_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

fn open(sim: &SimFs, keys: &TenantKeys) -> metricspool::Result<(Wal, RecoveryReport)> {
    Wal::open(Arc::new(sim.clone()), DIR, tenant(), keys.clone(), config())
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Batch `i` of the workload: 1 to 3 series, 30 to ~1400 samples, values that barely compress
/// (random bit patterns, NaN payloads included) so that the 64 KiB segments roll.
fn batch(i: u64) -> Batch {
    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (i + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let series_count = 1 + i % 3;
    let per_series = 30 + (i * 97) % 450;
    let mut b = Batch::new();
    for s in 0..series_count {
        let series = Series::new(
            "crash_test_metric",
            [("batch", i.to_string()), ("series", s.to_string())],
        )
        .expect("a valid series");
        let samples = (0..per_series)
            .map(|k| {
                let ts = 1_700_000_000_000 + (i * 10_000 + k) as i64;
                Sample::new(ts, f64::from_bits(xorshift(&mut rng)))
            })
            .collect();
        let kind = if s % 2 == 0 {
            MetricKind::Gauge
        } else {
            MetricKind::Counter
        };
        b.push(series, kind, samples);
    }
    b
}

/// One acknowledged append: which batch, and the offsets it got.
#[derive(Debug, Clone)]
struct Acked {
    batch: u64,
    range: Range<u64>,
}

/// What one run of the workload left behind.
#[derive(Debug, Default)]
struct Run {
    acked: Vec<Acked>,
    /// The append that failed (it may be durable without having been acknowledged).
    in_progress: Option<u64>,
    /// The first error seen, if any.
    failure: Option<String>,
}

impl Run {
    fn acked_end(&self) -> u64 {
        self.acked.last().map_or(0, |a| a.range.end)
    }
}

/// Opens the log and appends the workload until something fails, then drops the log (the
/// writer thread lets go of its files).
fn run_workload(sim: &SimFs, keys: &TenantKeys) -> Run {
    let mut run = Run::default();
    let wal = match open(sim, keys) {
        Ok((wal, _)) => wal,
        Err(e) => {
            run.failure = Some(format!("open: {e}"));
            return run;
        }
    };
    for i in 0..BATCHES {
        match wal.append_blocking(&batch(i)) {
            Ok(range) => {
                assert_eq!(range.start, run.acked_end(), "offsets are dense from 0");
                assert_eq!(range.end - range.start, batch(i).sample_count() as u64);
                run.acked.push(Acked { batch: i, range });
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Io { .. }),
                    "the first failure is an I/O error: {e} (append {i}, syncs {})",
                    sim.syncs()
                );
                run.in_progress = Some(i);
                run.failure = Some(e.to_string());
                break;
            }
        }
    }
    if run.failure.is_some() {
        let next = wal.append_blocking(&batch(BATCHES));
        assert!(
            matches!(next, Err(Error::Poisoned { .. })),
            "after a failed append the log is poisoned: {next:?}"
        );
    }
    drop(wal);
    run
}

/// Every sample in `[0, end)` of the log, in offset order, with its series and kind.
fn read_all(wal: &Wal) -> Vec<(u64, Series, MetricKind, Sample)> {
    let end = wal.end_offset();
    let mut out = Vec::new();
    let mut cur = wal.first_offset();
    while cur < end {
        let rb = wal
            .read_from(
                cur,
                ReadLimits {
                    max_samples: 4096,
                    max_bytes: 1 << 20,
                },
            )
            .expect("the log reads");
        assert!(
            rb.skipped.is_empty(),
            "nothing is skipped after a clean crash: {:?}",
            rb.skipped
        );
        assert!(rb.end > cur, "reads make progress");
        for (o, (series, kind, s)) in rb.offsets().zip(rb.batch.iter()) {
            out.push((o, series.clone(), kind, s));
        }
        cur = rb.end;
    }
    out
}

/// Asserts that the log holds exactly `acked`, plus the samples of `in_progress` right after
/// them if the log ends there, and nothing else. Returns the log's end offset.
fn assert_holds(wal: &Wal, acked: &[Acked], in_progress: Option<u64>, what: &str) -> u64 {
    let acked_end = acked.last().map_or(0, |a| a.range.end);
    let end = wal.end_offset();
    let extra = in_progress.map_or(0, |i| batch(i).sample_count() as u64);
    assert!(
        end == acked_end || (extra > 0 && end == acked_end + extra),
        "{what}: the log ends at {end}; acknowledged end {acked_end}, in-progress append of {extra}"
    );
    let mut expected: Vec<(u64, Batch)> = acked
        .iter()
        .map(|a| (a.range.start, batch(a.batch)))
        .collect();
    if end > acked_end {
        expected.push((acked_end, batch(in_progress.expect("checked above"))));
    }
    let got = read_all(wal);
    let mut got = got.iter();
    for (start, b) in expected {
        for (k, (series, kind, sample)) in b.iter().enumerate() {
            let o = start + k as u64;
            let (go, gs, gk, gsample) = got
                .next()
                .unwrap_or_else(|| panic!("{what}: offset {o} is missing"));
            assert_eq!(*go, o, "{what}: offsets are dense");
            assert_eq!(gs, series, "{what}: series at offset {o}");
            assert_eq!(*gk, kind, "{what}: kind at offset {o}");
            assert!(
                gsample.same_bits(&sample),
                "{what}: sample at {o}: {gsample:?} != {sample:?}"
            );
        }
    }
    assert!(
        got.next().is_none(),
        "{what}: the log holds samples past {end}"
    );
    end
}

/// Counts the syncs of a clean run of the workload, the final seal included.
fn total_syncs(keys: &TenantKeys) -> u64 {
    let sim = SimFs::new();
    let run = run_workload(&sim, keys);
    let syncs = sim.syncs();
    assert!(
        run.failure.is_none(),
        "the clean run fails: {:?}",
        run.failure
    );
    assert_eq!(run.acked.len() as u64, BATCHES);
    let (wal, _) = open(&sim, keys).expect("the clean log reopens");
    assert!(
        wal.segments().len() >= 3,
        "the workload rolls segments: {:?}",
        wal.segments()
    );
    assert_holds(&wal, &run.acked, None, "clean run");
    drop(wal);
    syncs
}

fn crash_at(keys: &TenantKeys, k: u64, mode: CrashMode) {
    let what = format!("crash at sync {k} ({mode:?})");
    let sim = SimFs::new();
    sim.fail_at_sync(k);
    let mut run = run_workload(&sim, keys);
    // The failing sync is either seen by an append or by the seal when the log is dropped.
    assert_eq!(
        sim.syncs(),
        k,
        "{what}: the injected failure did not happen"
    );
    sim.crash(mode);

    let (wal, report) = open(&sim, keys).unwrap_or_else(|e| panic!("{what}: reopen fails: {e}"));
    for e in &report.events {
        assert!(
            !matches!(
                e,
                RecoveryEvent::CorruptRecordSkipped { .. }
                    | RecoveryEvent::SegmentQuarantined { .. }
            ),
            "{what}: a crash is not corruption: {e:?}"
        );
    }
    assert_eq!(
        wal.poisoned_cause(),
        None,
        "{what}: a reopened log is not poisoned"
    );
    let end = assert_holds(
        &wal,
        &run.acked,
        run.in_progress,
        &format!("{what}, first reopen"),
    );
    if end > run.acked_end() {
        let i = run
            .in_progress
            .expect("only the in-progress append may be durable");
        run.acked.push(Acked {
            batch: i,
            range: run.acked_end()..end,
        });
    }

    let next = BATCHES + 1;
    let range = wal
        .append_blocking(&batch(next))
        .unwrap_or_else(|e| panic!("{what}: append after reopen fails: {e}"));
    assert_eq!(range.start, end, "{what}: offsets continue from the end");
    run.acked.push(Acked { batch: next, range });
    drop(wal);

    sim.crash(mode);
    let (wal, _) = open(&sim, keys).unwrap_or_else(|e| panic!("{what}: second reopen fails: {e}"));
    assert_eq!(wal.poisoned_cause(), None);
    assert_holds(&wal, &run.acked, None, &format!("{what}, second reopen"));
}

#[test]
fn every_fsync_point_leaves_exactly_the_acknowledged_prefix() {
    let (_keydir, keys) = keys();
    let n = total_syncs(&keys);
    assert!(
        n > BATCHES,
        "each fsync append syncs at least once: {n} syncs"
    );
    // A torn frame, and a whole unsynced frame that survives without being acknowledged.
    let modes = [
        CrashMode::DropUnsynced,
        CrashMode::KeepTorn(FRAME_HEADER_LEN + 9),
        CrashMode::KeepTorn(1 << 30),
    ];
    // Two workers (the machine has two cores); each takes every other sync point.
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let keys = &keys;
            scope.spawn(move || {
                for k in (1..=n).filter(|k| k % 2 == worker) {
                    for mode in modes {
                        crash_at(keys, k, mode);
                    }
                }
            });
        }
    });
}

/// The live bytes of a file on the simulated file system.
fn file_bytes(sim: &SimFs, path: &Path) -> Vec<u8> {
    let f = sim.open(path).expect("the file exists");
    let len = f.len().expect("a length") as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).expect("the file reads");
    buf
}

fn segment_paths(sim: &SimFs) -> Vec<PathBuf> {
    let mut names: Vec<String> = sim
        .list(Path::new(DIR))
        .expect("the directory lists")
        .into_iter()
        .filter(|n| segment::parse_segment_file_name(n).is_some())
        .collect();
    names.sort();
    names.into_iter().map(|n| Path::new(DIR).join(n)).collect()
}

/// Every record frame's nonce in a segment file, and the segment's writer epoch.
fn nonces(sim: &SimFs, path: &Path) -> (u32, Vec<[u8; 12]>) {
    let bytes = file_bytes(sim, path);
    let header = segment::decode_header(&bytes).expect("a valid segment header");
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let (h, _) = decode_frame(&bytes[pos..]).expect("every frame left after recovery is valid");
        out.push(h.nonce);
        pos += h.frame_len() as usize;
    }
    (header.epoch, out)
}

#[test]
fn a_nonce_is_never_reused_when_a_torn_tail_is_rewritten_at_the_same_offsets() {
    let (_keydir, keys) = keys();
    let sim = SimFs::new();
    let (wal, _) = open(&sim, &keys).expect("opens");
    let mut end = 0;
    for i in 0..3 {
        end = wal.append_blocking(&batch(i)).expect("appends").end;
    }
    sim.fail_at_sync(1);
    let failed = wal.append_blocking(&batch(3));
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    drop(wal);
    // Keep the torn frame's header (with its nonce) and a few payload bytes.
    sim.crash(CrashMode::KeepTorn(FRAME_HEADER_LEN + 10));

    let seg0 = Path::new(DIR).join(segment::segment_file_name(0));
    let torn_image = file_bytes(&sim, &seg0);
    let (_, before) = nonces_until_torn(&torn_image);
    assert_eq!(before.len(), 3, "three whole records before the torn one");
    let torn = decode_header(&torn_image[torn_image.len() - FRAME_HEADER_LEN - 10..])
        .expect("the torn frame's header survived");
    assert_eq!(torn.first_offset, end);

    let (wal, report) = open(&sim, &keys).expect("reopens");
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::TornTailTruncated { .. })),
        "{report:?}"
    );
    assert_eq!(wal.end_offset(), end, "the torn record is gone");
    let again = wal
        .append_blocking(&batch(4))
        .expect("appends after reopen");
    assert_eq!(
        again.start, torn.first_offset,
        "the same offsets are written again"
    );
    wal.append_blocking(&batch(5))
        .expect("appends after reopen");
    drop(wal);

    let mut all: Vec<[u8; 12]> = vec![torn.nonce];
    let mut epochs = Vec::new();
    for p in segment_paths(&sim) {
        let (epoch, n) = nonces(&sim, &p);
        epochs.push(epoch);
        all.extend(n);
    }
    assert_eq!(all.len(), 1 + 3 + 2, "every record frame was found");
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a nonce was reused: {all:?}");
    assert!(
        epochs.len() >= 2 && epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs grow: {epochs:?}"
    );
    assert_ne!(
        torn.nonce[..4],
        all.last().expect("a nonce")[..4],
        "the new writer has a new epoch"
    );
}

/// Nonces of the whole frames of a segment image, stopping at the first invalid one.
fn nonces_until_torn(bytes: &[u8]) -> (usize, Vec<[u8; 12]>) {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Ok((h, _)) = decode_frame(&bytes[pos..]) {
        out.push(h.nonce);
        pos += h.frame_len() as usize;
    }
    (pos, out)
}

#[test]
fn a_failed_sync_poisons_the_log_until_it_is_reopened() {
    let (_keydir, keys) = keys();
    let sim = SimFs::new();
    let (wal, _) = open(&sim, &keys).expect("opens");
    let first = wal.append_blocking(&batch(0)).expect("appends");
    sim.fail_at_sync(1);
    let failed = wal.append_blocking(&batch(1));
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    assert!(wal.poisoned_cause().is_some());
    let next = wal.append_blocking(&batch(2));
    assert!(matches!(next, Err(Error::Poisoned { .. })), "{next:?}");
    assert_eq!(
        wal.end_offset(),
        first.end,
        "the failed append is not visible"
    );
    drop(wal);

    sim.crash(CrashMode::DropUnsynced);
    let (wal, _) = open(&sim, &keys).expect("reopens");
    assert_eq!(wal.poisoned_cause(), None);
    assert_eq!(wal.end_offset(), first.end);
    let after = wal.append_blocking(&batch(3)).expect("appends work again");
    assert_eq!(after.start, first.end);
    assert_holds(
        &wal,
        &[
            Acked {
                batch: 0,
                range: first,
            },
            Acked {
                batch: 3,
                range: after,
            },
        ],
        None,
        "after poison and reopen",
    );
}
