//! Timers: the `interval` policy fsyncs on its own clock even when no new write arrives, and an
//! idle segment is sealed once it is older than `segment_max_age`.

use std::sync::Arc;
use std::time::Duration;

use metricspool::wal::fs::{CrashMode, SimFs};
use metricspool::{
    Batch, Durability, Keyring, LogConfig, MasterKey, MetricKind, ReadLimits, Sample, Series,
    TenantId, Wal,
};

fn batch(n: i64) -> Batch {
    let mut b = Batch::new();
    for k in 0..n {
        let s = Series::new("up", [("k", format!("{k}"))]).expect("valid");
        b.push_one(s, MetricKind::Gauge, Sample::new(k, 1.0));
    }
    b
}

fn open(sim: &SimFs, keys_dir: &std::path::Path, config: LogConfig) -> Wal {
    let tenant = TenantId::new("t").expect("valid");
    let keys = Keyring::open(keys_dir, MasterKey::from_bytes([8; 32]))
        .expect("keyring")
        .load(&tenant, true)
        .expect("keys")
        .expect("created");
    let (wal, _) =
        Wal::open(Arc::new(sim.clone()), "/data/wal", tenant, keys, config).expect("opens");
    wal
}

#[test]
fn the_interval_policy_syncs_on_its_timer_without_a_new_write() {
    let keys = tempfile::tempdir().expect("tempdir");
    let sim = SimFs::new();
    let config = LogConfig {
        durability: Durability::Interval(Duration::from_millis(50)),
        ..LogConfig::default()
    };
    let wal = open(&sim, keys.path(), config.clone());
    let before = sim.syncs();
    wal.append_blocking(&batch(10)).expect("append");
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        sim.syncs() > before + 2,
        "the segment creation and the timer synced"
    );
    // Power cut while the writer is still running: only synced bytes survive.
    sim.fail_at_sync(1);
    drop(wal);
    sim.crash(CrashMode::DropUnsynced);
    let wal = open(&sim, keys.path(), config);
    assert_eq!(
        wal.end_offset(),
        10,
        "the timer had made the append durable"
    );
    let read = wal.read_from(0, ReadLimits::default()).expect("read");
    assert_eq!(read.batch, batch(10));
}

#[test]
fn without_the_timer_an_unsynced_append_is_lost_at_a_power_cut() {
    // The control for the test above: under `none`, the same power cut loses the append, so
    // the test above really observes the timer.
    let keys = tempfile::tempdir().expect("tempdir");
    let sim = SimFs::new();
    let config = LogConfig {
        durability: Durability::None,
        ..LogConfig::default()
    };
    let wal = open(&sim, keys.path(), config.clone());
    wal.append_blocking(&batch(10)).expect("append");
    std::thread::sleep(Duration::from_millis(200));
    sim.fail_at_sync(1);
    drop(wal);
    sim.crash(CrashMode::DropUnsynced);
    let wal = open(&sim, keys.path(), config);
    assert_eq!(wal.end_offset(), 0);
}

#[test]
fn an_idle_segment_is_sealed_once_it_is_older_than_the_max_age() {
    let keys = tempfile::tempdir().expect("tempdir");
    let sim = SimFs::new();
    let config = LogConfig {
        segment_max_age: Duration::from_secs(1),
        ..LogConfig::default()
    };
    let wal = open(&sim, keys.path(), config);
    wal.append_blocking(&batch(5)).expect("append");
    assert_eq!(wal.segments()[0].sealed_ms, None);
    std::thread::sleep(Duration::from_millis(1600));
    assert!(
        wal.segments()[0].sealed_ms.is_some(),
        "sealed by age with no new write"
    );
    let r = wal.append_blocking(&batch(5)).expect("append");
    assert_eq!(r, 5..10);
    assert_eq!(wal.segments().len(), 2);
    assert_eq!(wal.segments()[1].base_offset, 5);
}
