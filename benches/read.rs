//! Read throughput of `read_from` over a pre-filled log, and the codec costs behind it.
//!
//! ```text
//! cargo bench --bench read
//! ```
//!
//! The log: 200 workload batches of 10,000 samples (2 M samples, `benches/workload/mod.rs`)
//! appended with default settings except `Durability::None`, then closed and reopened, so
//! every segment is sealed and indexed. Each iteration reads the next 10,000 samples
//! (`ReadLimits { max_samples: 10_000, .. }`) and continues from the returned end, wrapping
//! around at the end of the log: authentication, decryption, zstd decompression and payload
//! decoding of one record per read. The files are in the page cache; this measures CPU, not
//! the disk.
//!
//! `codec/*` times the pieces on one batch: `payload::encode` + `seal::compress` (what an
//! appender spends per batch before the writer thread takes over) and `seal::decompress` +
//! `payload::decode`.
//!
//! Under `cargo test` (no `--bench` argument) each benchmark runs once as a smoke test.

#[path = "workload/mod.rs"]
mod workload;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricspool::{Durability, LogConfig, MasterKey, ReadLimits, Spool, SpoolConfig, TenantId};

/// Batches in the log (fewer as a smoke test under `cargo test`).
fn batches() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        200
    } else {
        5
    }
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cfg = SpoolConfig::new(dir.path(), MasterKey::generate().expect("a key"));
    cfg.log = LogConfig {
        durability: Durability::None,
        ..LogConfig::default()
    };
    let id = TenantId::new("bench").expect("valid");
    {
        let spool = Spool::open(cfg.clone()).expect("the spool opens");
        let t = spool.tenant(&id).expect("the tenant opens");
        let mut w = workload::Workload::new(workload::DEFAULT_SEED);
        for _ in 0..batches() {
            t.append_blocking(&w.next_batch()).expect("append");
        }
        spool.close().expect("close");
    }
    let spool = Spool::open(cfg).expect("the spool reopens");
    let t = spool.tenant(&id).expect("the tenant opens");
    let end = t.wal().end_offset();
    assert_eq!(end, (batches() * workload::BATCH) as u64);

    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(workload::BATCH as u64));
    let limits = ReadLimits {
        max_samples: workload::BATCH,
        ..ReadLimits::default()
    };
    let mut offset = 0u64;
    g.bench_function("read_from/10k", |b| {
        b.iter(|| {
            let r = t.read_from(offset, limits).expect("read");
            assert_eq!(r.batch.sample_count(), workload::BATCH);
            offset = if r.end >= end { 0 } else { r.end };
            black_box(r)
        });
    });
    g.finish();
    spool.close().expect("close");
}

fn codec(c: &mut Criterion) {
    let mut w = workload::Workload::new(workload::DEFAULT_SEED);
    // A batch of the second round: every value has moved once.
    let batch = (0..11).map(|_| w.next_batch()).last().expect("batches");
    let mut plain = Vec::new();
    let mut sealed = Vec::new();
    metricspool::payload::encode(&batch, &mut plain);
    metricspool::seal::compress(&plain, 3, &mut sealed);

    let mut g = c.benchmark_group("codec");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(workload::BATCH as u64));
    for level in [1, 3] {
        g.bench_function(format!("encode+compress/zstd{level}"), |b| {
            b.iter(|| {
                metricspool::payload::encode(black_box(&batch), &mut plain);
                metricspool::seal::compress(&plain, level, &mut sealed);
                black_box(sealed.len())
            });
        });
    }
    metricspool::payload::encode(&batch, &mut plain);
    metricspool::seal::compress(&plain, 3, &mut sealed);
    g.bench_function("decompress+decode", |b| {
        b.iter(|| {
            let p = metricspool::seal::decompress(black_box(&sealed)).expect("decompresses");
            black_box(metricspool::payload::decode(&p).expect("decodes"))
        });
    });
    g.finish();
}

criterion_group!(benches, read, codec);
criterion_main!(benches);
