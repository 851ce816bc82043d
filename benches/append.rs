//! Append throughput per durability policy and writer count, and append-to-durable latency.
//!
//! ```text
//! cargo bench --bench append                 # everything (a few minutes)
//! cargo bench --bench append -- fsync        # one policy
//! cargo bench --bench append -- latency      # only the latency percentiles
//! ```
//!
//! Throughput: one spool per (policy, writers) in a temporary directory, on a tokio
//! multi-thread runtime (as many workers as cores). Each of `writers` tasks appends workload
//! batches of 10,000 samples (`benches/workload/mod.rs`, cycling over 20 pre-built batches)
//! one after the other with `Tenant::append`; a criterion iteration is one batch per writer,
//! so the throughput is in samples/s over all writers. Encoding and zstd run in the appending
//! tasks, the write and fsync in the log's writer thread (group commit).
//!
//! Latency: under `Durability::Fsync`, with 1 and 16 writers appending back to back for a few
//! seconds, the time from calling `append` to its return (the record is durable) of every
//! append, as p50 / p90 / p99 / max. Criterion reports means only, so this part is a plain
//! loop that prints its own table.
//!
//! Under `cargo test` (no `--bench` argument) everything runs once, briefly, as a smoke test.

#[path = "workload/mod.rs"]
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use metricspool::{Batch, Durability, LogConfig, MasterKey, Spool, SpoolConfig, Tenant, TenantId};

const POOL: usize = 20;
const WRITERS: [usize; 3] = [1, 4, 16];

fn policies() -> [(&'static str, Durability); 3] {
    [
        ("fsync", Durability::Fsync),
        ("interval_1s", Durability::Interval(Duration::from_secs(1))),
        ("none", Durability::None),
    ]
}

struct Log {
    _dir: tempfile::TempDir,
    spool: Spool,
    tenant: Arc<Tenant>,
}

fn open_log(durability: Durability) -> Log {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cfg = SpoolConfig::new(dir.path(), MasterKey::generate().expect("a key"));
    cfg.log = LogConfig {
        durability,
        ..LogConfig::default()
    };
    let spool = Spool::open(cfg).expect("the spool opens");
    let tenant = spool
        .tenant(&TenantId::new("bench").expect("valid"))
        .expect("the tenant opens");
    Log {
        _dir: dir,
        spool,
        tenant,
    }
}

/// `writers` tasks each append `per_writer` batches back to back; returns the wall time and,
/// if asked, every append's latency.
fn run_writers(
    rt: &tokio::runtime::Runtime,
    tenant: &Arc<Tenant>,
    pool: &Arc<Vec<Batch>>,
    writers: usize,
    per_writer: u64,
    latencies: bool,
) -> (Duration, Vec<Duration>) {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let tenant = Arc::clone(tenant);
                let pool = Arc::clone(pool);
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    for i in 0..per_writer {
                        let batch = &pool[(w + i as usize * writers) % pool.len()];
                        let t = Instant::now();
                        tenant.append(batch).await.expect("append");
                        if latencies {
                            lat.push(t.elapsed());
                        }
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("writer task"));
        }
        (start.elapsed(), all)
    })
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &Arc<Vec<Batch>>) {
    for (name, durability) in policies() {
        let mut g = c.benchmark_group(format!("append/{name}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for writers in WRITERS {
            let log = open_log(durability);
            g.throughput(Throughput::Elements((writers * workload::BATCH) as u64));
            g.bench_with_input(BenchmarkId::new("writers", writers), &writers, |b, &w| {
                b.iter_custom(|iters| run_writers(rt, &log.tenant, pool, w, iters, false).0);
            });
            log.spool.close().expect("close");
        }
        g.finish();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn latency(rt: &tokio::runtime::Runtime, pool: &Arc<Vec<Batch>>, full: bool) {
    let run_for = if full {
        Duration::from_secs(6)
    } else {
        Duration::from_millis(200)
    };
    println!();
    println!("append-to-durable latency, Durability::Fsync, batches of 10,000 samples");
    println!("| writers | appends | samples/s | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for writers in [1usize, 16] {
        let log = open_log(Durability::Fsync);
        // Warm up, then estimate how many appends per writer fill `run_for`.
        let (t, _) = run_writers(rt, &log.tenant, pool, writers, 2, false);
        let per_writer =
            ((run_for.as_secs_f64() / (t.as_secs_f64() / 2.0)) as u64).clamp(3, 100_000);
        let (wall, mut lat) = run_writers(rt, &log.tenant, pool, writers, per_writer, true);
        lat.sort_unstable();
        let samples = lat.len() * workload::BATCH;
        println!(
            "| {writers} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            lat.len(),
            samples as f64 / wall.as_secs_f64(),
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.90)),
            ms(percentile(&lat, 0.99)),
            ms(lat[lat.len() - 1]),
        );
        log.spool.close().expect("close");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    // A criterion filter (first argument that is not an option) also selects the latency part
    // when "append_latency" contains it.
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let pool = Arc::new(workload::batches(workload::DEFAULT_SEED, POOL));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut c = Criterion::default().configure_from_args();
    if filter.as_deref().is_none_or(|f| f != "latency") {
        throughput(&mut c, &rt, &pool);
    }
    if filter
        .as_deref()
        .is_none_or(|f| "append_latency".contains(f))
    {
        latency(&rt, &pool, full);
    }
    c.final_summary();
}
