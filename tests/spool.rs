//! Spool-level behaviour: retention, quota policies, key rotation, crypto-shredding and the
//! time index.

use std::path::Path;
use std::time::Duration;

use metricspool::{
    Batch, DropReason, Error, LogConfig, MasterKey, MetricKind, QuotaPolicy, ReadLimits, Retention,
    Sample, Series, SkipReason, Spool, SpoolConfig, StartAt, TenantId,
};

fn tenant_id(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant id")
}

/// A batch of `n` samples at timestamp `ts` whose values spell out `seed`, incompressible
/// enough that segments fill up.
fn batch(seed: u64, n: usize, ts: i64) -> Batch {
    let mut b = Batch::new();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = Series::new(
            "node_network_receive_bytes_total",
            [
                ("instance", format!("node-{i}")),
                ("noise", format!("{x:x}")),
            ],
        )
        .expect("valid series");
        b.push_one(s, MetricKind::Counter, Sample::new(ts, x as f64));
    }
    b
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_max_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, log: LogConfig) -> Spool {
    let mut c = SpoolConfig::new(dir, MasterKey::from_bytes([1; 32]));
    c.log = log;
    Spool::open(c).expect("spool opens")
}

fn fill(t: &metricspool::Tenant, batches: u64) -> u64 {
    let mut end = 0;
    for i in 0..batches {
        end = t
            .append_blocking(&batch(i, 200, 1_000 * i as i64))
            .expect("append")
            .end;
    }
    end
}

#[test]
fn retention_never_deletes_a_segment_a_cursor_needs() {
    let d = tempfile::tempdir().expect("tempdir");
    let spool = open(d.path(), small_segments());
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    t.register_consumer("slow", StartAt::Earliest)
        .expect("register");
    t.register_consumer("fast", StartAt::Earliest)
        .expect("register");
    let end = fill(&t, 60);
    t.wal().roll_blocking().expect("roll");
    let before = t.wal().segments().len();
    assert!(before > 3, "expected several segments, got {before}");
    t.commit("fast", end).expect("commit");
    assert_eq!(
        t.wal().segments().len(),
        before,
        "the slow consumer still needs them"
    );
    let half = t.wal().segments()[before / 2].base_offset;
    t.commit("slow", half).expect("commit");
    let after = t.wal().segments();
    assert!(after.len() < before);
    assert!(after[0].base_offset <= half && after[0].end_offset > half);
    let read = t.read_from(half, ReadLimits::default()).expect("read");
    assert_eq!(read.start, half);
    assert!(read.skipped.is_empty());
}

#[test]
fn retention_keeps_consumed_segments_for_replay_until_they_are_old_enough() {
    let d = tempfile::tempdir().expect("tempdir");
    let log = LogConfig {
        retention: Retention {
            keep_for: Duration::from_secs(3600),
            keep_max_bytes: None,
        },
        ..small_segments()
    };
    let spool = open(d.path(), log);
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    t.register_consumer("c", StartAt::Earliest)
        .expect("register");
    let end = fill(&t, 40);
    t.wal().roll_blocking().expect("roll");
    let before = t.wal().segments().len();
    t.commit("c", end).expect("commit");
    assert_eq!(t.wal().segments().len(), before, "kept for replay");
    let replay = t.read_from(0, ReadLimits::default()).expect("replay read");
    assert_eq!(replay.start, 0);
    assert!(!replay.is_empty());
}

#[test]
fn keep_max_bytes_caps_what_is_kept_for_replay() {
    let d = tempfile::tempdir().expect("tempdir");
    let log = LogConfig {
        retention: Retention {
            keep_for: Duration::from_secs(3600),
            keep_max_bytes: Some(200 << 10),
        },
        ..small_segments()
    };
    let spool = open(d.path(), log);
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    t.register_consumer("c", StartAt::Earliest)
        .expect("register");
    let end = fill(&t, 80);
    t.wal().roll_blocking().expect("roll");
    t.commit("c", end).expect("commit");
    let kept: u64 = t.wal().segments().iter().map(|s| s.bytes).sum();
    assert!(kept <= 200 << 10, "kept {kept} bytes");
    assert!(kept > 0);
}

#[test]
fn with_no_consumer_retention_deletes_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let spool = open(d.path(), small_segments());
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    fill(&t, 30);
    t.wal().roll_blocking().expect("roll");
    let before = t.wal().segments().len();
    assert_eq!(t.enforce_retention().expect("retention"), 0);
    assert_eq!(t.wal().segments().len(), before);
}

fn quota(policy: QuotaPolicy) -> LogConfig {
    LogConfig {
        quota_bytes: Some(1 << 20),
        quota_policy: policy,
        block_timeout: Duration::from_millis(300),
        ..small_segments()
    }
}

/// Appends until the quota says no; returns the number of acknowledged appends and the error.
fn append_until_refused(t: &metricspool::Tenant) -> (u64, Option<Error>) {
    for i in 0..2_000u64 {
        if let Err(e) = t.append_blocking(&batch(i, 200, i as i64)) {
            return (i, Some(e));
        }
    }
    (2_000, None)
}

#[test]
fn quota_reject_refuses_appends_and_counts_them() {
    let d = tempfile::tempdir().expect("tempdir");
    let spool = open(d.path(), quota(QuotaPolicy::Reject));
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    t.register_consumer("c", StartAt::Earliest)
        .expect("register");
    let (acked, err) = append_until_refused(&t);
    let err = err.expect("the quota stops appends");
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
    assert!(err.is_retryable());
    let stats = t.stats();
    let rejected = stats
        .dropped
        .iter()
        .find(|(r, _)| *r == DropReason::QuotaRejected);
    assert_eq!(rejected.map(|(_, n)| *n), Some(200));
    assert_eq!(
        stats.end_offset,
        acked * 200,
        "nothing from the refused append stored"
    );
}

#[test]
fn quota_block_waits_then_fails_and_succeeds_once_a_consumer_frees_space() {
    let d = tempfile::tempdir().expect("tempdir");
    let spool = open(d.path(), quota(QuotaPolicy::Block));
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    t.register_consumer("c", StartAt::Earliest)
        .expect("register");
    let (acked, err) = append_until_refused(&t);
    let err = err.expect("the quota stops appends");
    assert!(err.to_string().contains("policy block"), "{err}");
    assert_eq!(t.stats().dropped.iter().map(|(_, n)| n).sum::<u64>(), 0);
    t.wal().roll_blocking().expect("roll");
    t.commit("c", acked * 200).expect("commit frees space");
    t.append_blocking(&batch(9_999, 200, 0))
        .expect("appends again once space is free");
}

#[test]
fn quota_drop_oldest_deletes_unread_data_and_counts_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let spool = open(d.path(), quota(QuotaPolicy::DropOldest));
    let t = spool.tenant(&tenant_id("a")).expect("tenant");
    t.register_consumer("c", StartAt::Earliest)
        .expect("register");
    let (acked, err) = append_until_refused(&t);
    assert!(err.is_none(), "drop_oldest never refuses: {err:?}");
    assert_eq!(acked, 2_000);
    let stats = t.stats();
    let dropped = stats
        .dropped
        .iter()
        .find(|(r, _)| *r == DropReason::QuotaDropOldest)
        .map_or(0, |(_, n)| *n);
    assert!(dropped > 0);
    assert_eq!(
        stats.first_offset, dropped,
        "exactly the oldest samples are gone"
    );
    assert!(
        stats.disk_bytes <= (1 << 20) + (128 << 10),
        "{} bytes",
        stats.disk_bytes
    );
    let read = t.read_from(0, ReadLimits::default()).expect("read");
    assert_eq!(read.skipped[0].range, 0..stats.first_offset);
    assert_eq!(read.skipped[0].reason, SkipReason::Deleted);
}

#[test]
fn the_global_quota_applies_across_tenants() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut c = SpoolConfig::new(d.path(), MasterKey::from_bytes([1; 32]));
    c.log = LogConfig {
        quota_policy: QuotaPolicy::Reject,
        ..small_segments()
    };
    c.global_quota_bytes = Some(1 << 20);
    let spool = Spool::open(c).expect("spool");
    let a = spool.tenant(&tenant_id("a")).expect("tenant");
    let b = spool.tenant(&tenant_id("b")).expect("tenant");
    let (_, err) = append_until_refused(&a);
    assert!(matches!(err, Some(Error::QuotaExceeded { .. })));
    let refused = b.append_blocking(&batch(1, 10, 0));
    assert!(matches!(refused, Err(Error::QuotaExceeded { .. })));
}

#[test]
fn rotation_seals_new_segments_with_the_new_key_and_old_ones_stay_readable() {
    let d = tempfile::tempdir().expect("tempdir");
    let spool = open(d.path(), LogConfig::default());
    let id = tenant_id("a");
    let t = spool.tenant(&id).expect("tenant");
    let old = batch(1, 50, 1);
    t.append_blocking(&old).expect("append");
    assert_eq!(spool.rotate_key(&id).expect("rotate"), 2);
    let new = batch(2, 50, 2);
    t.append_blocking(&new).expect("append");
    let keys: Vec<u32> = t.wal().segments().iter().map(|s| s.key_id).collect();
    assert_eq!(keys, vec![1, 2]);
    spool.close().expect("close");
    drop(t);
    drop(spool);

    let spool = open(d.path(), LogConfig::default());
    let t = spool.tenant(&id).expect("tenant");
    let read = t.read_from(0, ReadLimits::default()).expect("read");
    let mut both = old.clone();
    both.extend(new.clone());
    assert_eq!(read.batch, both);

    spool.keyring().remove(&id, 1).expect("retire key 1");
    spool.close().expect("close");
    drop(t);
    drop(spool);
    let spool = open(d.path(), LogConfig::default());
    let t = spool.tenant(&id).expect("tenant");
    let err = t
        .read_from(0, ReadLimits::default())
        .expect_err("key 1 is gone");
    assert!(
        matches!(err, Error::KeyUnavailable { key_id: 1, .. }),
        "{err}"
    );
    let read = t
        .read_from(50, ReadLimits::default())
        .expect("key 2 still opens");
    assert_eq!(read.batch, new);
}

#[test]
fn erased_keys_leave_data_unreadable_and_reopen_refuses_with_a_clear_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let id = tenant_id("gone");
    {
        let spool = open(d.path(), LogConfig::default());
        let t = spool.tenant(&id).expect("tenant");
        t.append_blocking(&batch(1, 20, 1)).expect("append");
        spool.close().expect("close");
        // An erase interrupted after the keyring went and before the data did.
        spool.keyring().erase(&id).expect("erase keys");
    }
    let spool = open(d.path(), LogConfig::default());
    let err = spool.tenant(&id).expect_err("no keys, data present");
    assert!(
        matches!(err, Error::KeysErased { segments: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("erased"));

    spool.erase_tenant(&id).expect("finish the erase");
    assert!(!d.path().join("tenants/gone").exists());
    let fresh = spool
        .tenant(&id)
        .expect("a new tenant of the same name starts empty");
    assert_eq!(fresh.wal().end_offset(), 0);
}

#[test]
fn a_time_range_read_does_not_touch_segments_outside_the_range() {
    let d = tempfile::tempdir().expect("tempdir");
    let id = tenant_id("a");
    let spool = open(d.path(), small_segments());
    let t = spool.tenant(&id).expect("tenant");
    for i in 0..60u64 {
        t.append_blocking(&batch(i, 200, 1_000_000 * i as i64))
            .expect("append");
    }
    spool.close().expect("close");
    drop(t);
    drop(spool);
    // Destroy the payload bytes of every segment but the last two: a read that touched them
    // would report corrupt records.
    let wal = d.path().join("tenants/a/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() > 3);
    for p in &segs[..segs.len() - 2] {
        let mut bytes = std::fs::read(p).expect("read segment");
        for b in bytes.iter_mut().skip(200) {
            *b ^= 0xff;
        }
        std::fs::write(p, bytes).expect("write segment");
    }
    let spool = open(d.path(), small_segments());
    let t = spool.tenant(&id).expect("tenant");
    let from = 58_000_000;
    let mut at = 0;
    let mut got = 0;
    loop {
        let r = t
            .wal()
            .read_time_range(from, i64::MAX, at, ReadLimits::default())
            .expect("read");
        assert!(
            r.skipped.is_empty(),
            "touched a damaged segment: {:?}",
            r.skipped
        );
        got += r.batch.sample_count();
        assert!(r.batch.iter().all(|(_, _, s)| s.timestamp_ms >= from));
        if r.end >= t.wal().end_offset() {
            break;
        }
        at = r.end;
    }
    assert_eq!(got, 400);
}
