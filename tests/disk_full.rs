//! A full disk: appends fail with an I/O error (ENOSPC), the log is poisoned, everything
//! acknowledged before survives a reopen, and once space is freed appends work again. Runs on
//! a real 4 MiB tmpfs (needs root to mount; the only allowed skip) and on `SimFs` with a
//! capacity, so the logic is tested without root too.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use metricspool::wal::fs::SimFs;
use metricspool::{
    Batch, Error, Keyring, LogConfig, MasterKey, MetricKind, ReadLimits, Sample, Series, Spool,
    SpoolConfig, TenantId, Wal,
};

fn tenant() -> TenantId {
    TenantId::new("full").expect("a valid tenant id")
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 256 << 10,
        ..LogConfig::default()
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Batch `i`: about 1,000 incompressible samples, ~8 KiB on disk.
fn batch(i: u64) -> Batch {
    let mut rng = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let series = Series::new("disk_filler", [("i", (i % 5).to_string())]).expect("a valid series");
    let samples = (0..900 + i % 200)
        .map(|k| {
            Sample::new(
                1_700_000_000_000 + (i * 2000 + k) as i64,
                f64::from_bits(xorshift(&mut rng)),
            )
        })
        .collect();
    let mut b = Batch::new();
    b.push(series, MetricKind::Gauge, samples);
    b
}

fn is_storage_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28))
}

/// Checks that every acknowledged batch reads back exactly, through `read`.
fn assert_readable(
    acked: &[(Range<u64>, u64)],
    read: impl Fn(u64, ReadLimits) -> metricspool::Result<metricspool::ReadBatch>,
) {
    for (range, i) in acked {
        let expected = batch(*i);
        let limits = ReadLimits {
            max_samples: expected.sample_count(),
            max_bytes: 1 << 20,
        };
        let rb =
            read(range.start, limits).unwrap_or_else(|e| panic!("reading {range:?} fails: {e}"));
        assert!(rb.skipped.is_empty(), "{range:?}: {:?}", rb.skipped);
        assert_eq!((rb.start, rb.end), (range.start, range.end));
        assert_eq!(rb.batch.sample_count(), expected.sample_count());
        for ((gs, _, g), (es, _, e)) in rb.batch.iter().zip(expected.iter()) {
            assert_eq!(gs, es);
            assert!(g.same_bits(&e), "{range:?}: {g:?} != {e:?}");
        }
    }
}

/// Appends until an append fails; returns what was acknowledged and the error.
fn fill_until_full(
    append: impl Fn(&Batch) -> metricspool::Result<Range<u64>>,
    limit: u64,
) -> (Vec<(Range<u64>, u64)>, Error) {
    let mut acked = Vec::new();
    for i in 0..limit {
        match append(&batch(i)) {
            Ok(r) => acked.push((r, i)),
            Err(e) => return (acked, e),
        }
    }
    panic!("{limit} appends fit; the disk never filled up");
}

/// A tmpfs mounted on a temp dir for the life of the value; unmounted on drop, also when the
/// test fails.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { path, _dir: dir }),
            Ok(o) => {
                eprintln!(
                    "disk_full: skipping the tmpfs test, mount failed (not root?): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("disk_full: skipping the tmpfs test, cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open (a failed test): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn spool_config(data: &Path) -> SpoolConfig {
    let mut c = SpoolConfig::new(data, MasterKey::from_bytes([4; 32]));
    c.log = log_config();
    c
}

#[test]
fn a_full_disk_poisons_the_log_and_freeing_space_lets_it_recover() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let filler = fs.path.join("filler");
    let mut f = std::fs::File::create(&filler).expect("creates the filler");
    f.write_all(&vec![0xa5; 1 << 20])
        .expect("writes the filler");
    f.sync_all().expect("syncs the filler");
    drop(f);
    let data = fs.path.join("data");

    let spool = Spool::open(spool_config(&data)).expect("opens on the tmpfs");
    let t = spool.tenant(&tenant()).expect("tenant");
    let (acked, err) = fill_until_full(|b| t.append_blocking(b), 10_000);
    assert!(is_storage_full(&err), "the failure is ENOSPC: {err:?}");
    assert!(
        acked.len() > 50,
        "a few hundred KiB fit before the disk filled: {}",
        acked.len()
    );
    let next = t.append_blocking(&batch(0));
    assert!(matches!(next, Err(Error::Poisoned { .. })), "{next:?}");
    assert_readable(&acked, |o, l| t.read_from(o, l));
    drop(t);
    drop(spool);

    // Reopen on the still full disk: it must open (else it could never be drained), and
    // everything acknowledged reads back. Whether the torn tail it truncates frees enough
    // for recovery's own writes depends on the pages the failed write took: if not, the log
    // opens read-only.
    let spool = Spool::open(spool_config(&data)).expect("reopens on a full disk");
    let t = spool.tenant(&tenant()).expect("tenant");
    assert_eq!(t.wal().end_offset(), acked.last().expect("acked").0.end);
    assert_readable(&acked, |o, l| t.read_from(o, l));
    let cause = t.wal().poisoned_cause();
    eprintln!("disk_full: the log reopened on the full tmpfs, poisoned: {cause:?}");
    if let Some(cause) = cause {
        assert!(cause.contains("disk is full"), "{cause}");
        let next = t.append_blocking(&batch(0));
        assert!(matches!(next, Err(Error::Poisoned { .. })), "{next:?}");
    }
    drop(t);
    drop(spool);

    std::fs::remove_file(&filler).expect("frees 1 MiB");
    let spool = Spool::open(spool_config(&data)).expect("reopens with free space");
    let t = spool.tenant(&tenant()).expect("tenant");
    assert_eq!(t.wal().poisoned_cause(), None);
    let end = acked.last().expect("acked").0.end;
    let mut more = Vec::new();
    for i in 0..20 {
        let r = t
            .append_blocking(&batch(1000 + i))
            .expect("appends work again");
        assert_eq!(
            r.start,
            more.last().map_or(end, |(r, _): &(Range<u64>, u64)| r.end)
        );
        more.push((r, 1000 + i));
    }
    assert_readable(&acked, |o, l| t.read_from(o, l));
    assert_readable(&more, |o, l| t.read_from(o, l));
    drop(t);
    spool.close().expect("closes");
}

#[test]
fn a_full_simulated_disk_poisons_the_log_and_more_capacity_lets_it_recover() {
    let keydir = tempfile::tempdir().expect("a temp dir for the keyring");
    let keys = Keyring::open(keydir.path(), MasterKey::from_bytes([4; 32]))
        .expect("keyring")
        .load(&tenant(), true)
        .expect("loads")
        .expect("created");
    let sim = SimFs::new();
    let open = || {
        Wal::open(
            Arc::new(sim.clone()),
            "/sim/full/wal",
            tenant(),
            keys.clone(),
            log_config(),
        )
    };
    sim.set_capacity(Some(1 << 20));

    let (wal, _) = open().expect("opens");
    let (acked, err) = fill_until_full(|b| wal.append_blocking(b), 10_000);
    assert!(is_storage_full(&err), "the failure is StorageFull: {err:?}");
    assert!(acked.len() > 50, "most of 1 MiB filled: {}", acked.len());
    let next = wal.append_blocking(&batch(0));
    assert!(matches!(next, Err(Error::Poisoned { .. })), "{next:?}");
    drop(wal);

    // The process restarts (no power loss) on a disk without a free byte: recovery cannot
    // make a new writer epoch durable nor write the index of the last segment, yet the log
    // must open, read-only, or it could never be drained.
    sim.set_capacity(Some(0));
    let (wal, report) = open().expect("reopens on a full disk");
    assert!(
        report.scanned_segments >= 1,
        "the last segment had no index: {report:?}"
    );
    assert_eq!(wal.end_offset(), acked.last().expect("acked").0.end);
    assert_readable(&acked, |o, l| wal.read_from(o, l));
    let cause = wal
        .poisoned_cause()
        .expect("a log that cannot write opens read-only");
    assert!(cause.contains("disk is full"), "{cause}");
    let next = wal.append_blocking(&batch(0));
    assert!(matches!(next, Err(Error::Poisoned { .. })), "{next:?}");
    drop(wal);

    sim.set_capacity(None);
    let (wal, _) = open().expect("reopens with room");
    assert_eq!(wal.poisoned_cause(), None);
    let end = acked.last().expect("acked").0.end;
    let r = wal
        .append_blocking(&batch(5000))
        .expect("appends work again");
    assert_eq!(r.start, end);
    assert_readable(&acked, |o, l| wal.read_from(o, l));
    assert_readable(&[(r, 5000)], |o, l| wal.read_from(o, l));
}
