//! How long `Spool::open` takes over a large backlog, after a clean close and after a crash.
//!
//! ```text
//! cargo run --release --example open_time -- DIR [GIB] [--segment-mib N] [--runs N]
//!                                              [--tail-mib N] [--level N] [--threads N]
//! ```
//!
//! 1. Backlog: one tenant in `DIR` (kept between runs; the master key is `DIR/master.key`).
//!    If the tenant holds less than `GIB` GiB (default 10), workload batches of 10,000
//!    samples (`benches/workload/mod.rs`, cycling over 20 pre-built batches) are appended by
//!    `--threads` threads (default 2) with `Durability::None`, zstd `--level` (default 1) and
//!    `--segment-mib` MiB segments (default 1024, the largest allowed) until it does. Records
//!    are real workload records (≈ 36 KB, 10,000 samples each), so the index sizes are what
//!    such a backlog really has.
//! 2. Clean opens: `--runs` times (default 5) `Spool::open` + `close`, timed, with the files in
//!    the page cache ("warm"), then as many with the tenant's segment and index files dropped
//!    from the page cache first (`dd iflag=nocache`, per file: nothing else on the machine
//!    is touched) ("cold").
//! 3. Crash opens: `--runs` times, a child process (this program, re-executed) opens the spool,
//!    appends `--tail-mib` MiB (default 64) of records into a new segment and exits with
//!    `std::process::exit` while its writer thread is running: the segment is never sealed
//!    and has no index, as after `kill -9`. The parent then times `Spool::open`, which scans
//!    that tail segment (checking every frame) and writes its index. Each crash run adds its
//!    tail to the backlog.

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metricspool::{Batch, Durability, LogConfig, MasterKey, Spool, SpoolConfig, TenantId};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct Args {
    dir: PathBuf,
    gib: f64,
    segment_mib: u64,
    runs: usize,
    tail_mib: u64,
    level: i32,
    threads: usize,
    crash_child: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: open_time DIR [GIB] [--segment-mib N] [--runs N] [--tail-mib N] [--level N] [--threads N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut dir = None;
    let mut a = Args {
        dir: PathBuf::new(),
        gib: 10.0,
        segment_mib: 1024,
        runs: 5,
        tail_mib: 64,
        level: 1,
        threads: 2,
        crash_child: false,
    };
    let mut it = std::env::args().skip(1);
    let mut positional = 0;
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> f64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--segment-mib" => a.segment_mib = num("--segment-mib") as u64,
            "--runs" => a.runs = num("--runs") as usize,
            "--tail-mib" => a.tail_mib = num("--tail-mib") as u64,
            "--level" => a.level = num("--level") as i32,
            "--threads" => a.threads = num("--threads") as usize,
            "--crash-child" => a.crash_child = true,
            "-h" | "--help" => usage(),
            s if s.starts_with("--") => usage(),
            s => {
                match positional {
                    0 => dir = Some(PathBuf::from(s)),
                    1 => a.gib = s.parse().unwrap_or_else(|_| usage()),
                    _ => usage(),
                }
                positional += 1;
            }
        }
    }
    a.dir = dir.unwrap_or_else(|| usage());
    a
}

fn config(a: &Args) -> Result<SpoolConfig, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&a.dir)?;
    let key_path = a.dir.join("master.key");
    let key = if key_path.exists() {
        MasterKey::from_file(&key_path)?
    } else {
        let k = MasterKey::generate()?;
        k.write_new_file(&key_path)?;
        k
    };
    let mut cfg = SpoolConfig::new(&a.dir, key);
    cfg.log = LogConfig {
        durability: Durability::None,
        segment_max_bytes: a.segment_mib * MIB,
        zstd_level: a.level,
        ..LogConfig::default()
    };
    Ok(cfg)
}

fn tenant_id() -> TenantId {
    TenantId::new("backlog").expect("a valid tenant id")
}

fn wal_dir(a: &Args) -> PathBuf {
    a.dir.join("tenants").join("backlog").join("wal")
}

/// Segment and index files of the tenant, with their sizes.
fn wal_files(a: &Args) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(wal_dir(a))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.path()
                        .extension()
                        .is_some_and(|x| x == "seg" || x == "idx")
                })
                .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn backlog(a: &Args) -> (u64, usize) {
    let files = wal_files(a);
    let bytes = files.iter().map(|(_, n)| n).sum();
    let segs = files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "seg"))
        .count();
    (bytes, segs)
}

/// Drops the tenant's files from the page cache (they are clean: sealed segments are synced).
fn drop_cache(a: &Args) {
    for (p, _) in wal_files(a) {
        let _ = Command::new("sync").arg("-d").arg(&p).status();
        let _ = Command::new("dd")
            .arg(format!("if={}", p.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status();
    }
}

fn fill(a: &Args, pool: &Arc<Vec<Batch>>) -> Result<(), Box<dyn std::error::Error>> {
    let target = (a.gib * GIB) as u64;
    let (have, _) = backlog(a);
    if have >= target {
        println!(
            "backlog: {:.2} GiB already in {} (target {:.2} GiB), reused",
            have as f64 / GIB,
            a.dir.display(),
            a.gib
        );
        return Ok(());
    }
    let spool = Spool::open(config(a)?)?;
    let t = spool.tenant(&tenant_id())?;
    println!(
        "backlog: filling {} from {:.2} to {:.2} GiB ({} threads, zstd {}, {} MiB segments, durability none)",
        a.dir.display(),
        have as f64 / GIB,
        a.gib,
        a.threads,
        a.level,
        a.segment_mib
    );
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let samples = AtomicU64::new(0);
    std::thread::scope(|s| {
        for th in 0..a.threads {
            let (t, pool, done, samples) = (&t, pool, &done, &samples);
            s.spawn(move || {
                let mut i = th;
                while !done.load(Ordering::Relaxed) {
                    let b = &pool[i % pool.len()];
                    t.append_blocking(b).expect("append");
                    samples.fetch_add(b.sample_count() as u64, Ordering::Relaxed);
                    i += a.threads;
                }
            });
        }
        let mut next_report = Instant::now() + Duration::from_secs(30);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let bytes = t.wal().disk_bytes();
            if Instant::now() >= next_report {
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "  {:.2} GiB, {:.0} M samples, {:.0} s, {:.1} MiB/s",
                    bytes as f64 / GIB,
                    samples.load(Ordering::Relaxed) as f64 / 1e6,
                    secs,
                    (bytes - have) as f64 / MIB as f64 / secs
                );
                next_report += Duration::from_secs(30);
            }
            if bytes >= target {
                done.store(true, Ordering::Relaxed);
                break;
            }
        }
    });
    spool.close()?;
    let (bytes, segs) = backlog(a);
    println!(
        "backlog: {:.2} GiB in {segs} segments, {:.0} M samples appended in {:.0} s",
        bytes as f64 / GIB,
        samples.load(Ordering::Relaxed) as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Child side of a crash run: append `tail_mib` MiB into a new segment, then exit without
/// closing (the writer thread is still running, the segment is never sealed).
fn crash_child(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let pool = workload::batches(workload::DEFAULT_SEED, 20);
    let spool = Spool::open(config(a)?)?;
    let t = spool.tenant(&tenant_id())?;
    // Start a fresh segment so that exactly the tail written here is left unindexed.
    t.wal().roll_blocking()?;
    let start_segments = t.wal().segments().len();
    let mut i = 0usize;
    loop {
        t.append_blocking(&pool[i % pool.len()])?;
        i += 1;
        let segs = t.wal().segments();
        let last = segs.last().expect("a segment was just written");
        if last.bytes >= a.tail_mib * MIB || segs.len() > start_segments + 1 {
            break;
        }
    }
    std::process::exit(0)
}

fn time_open(a: &Args) -> Result<(Duration, usize, usize), Box<dyn std::error::Error>> {
    let cfg = config(a)?;
    let t0 = Instant::now();
    let spool = Spool::open(cfg)?;
    let elapsed = t0.elapsed();
    let report = spool
        .recovery_reports()
        .into_iter()
        .next()
        .expect("one tenant");
    spool.close()?;
    Ok((elapsed, report.segments, report.scanned_segments))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(times: &[Duration]) -> String {
    let mut v: Vec<f64> = times.iter().map(|d| ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms (min {:.1}, max {:.1}; runs: {})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse_args();
    if a.crash_child {
        return crash_child(&a);
    }
    let pool = Arc::new(workload::batches(workload::DEFAULT_SEED, 20));
    fill(&a, &pool)?;

    let (bytes, segs) = backlog(&a);
    let idx_bytes: u64 = wal_files(&a)
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "idx"))
        .map(|(_, n)| n)
        .sum();
    println!(
        "clean opens over {:.2} GiB in {segs} segments ({:.1} MiB of index files):",
        bytes as f64 / GIB,
        idx_bytes as f64 / MIB as f64
    );
    let mut warm = Vec::new();
    time_open(&a)?; // bring the files into the page cache
    for _ in 0..a.runs {
        warm.push(time_open(&a)?.0);
    }
    println!("  warm page cache: {}", summary(&warm));
    let mut cold = Vec::new();
    for _ in 0..a.runs {
        drop_cache(&a);
        cold.push(time_open(&a)?.0);
    }
    println!("  files dropped from the page cache: {}", summary(&cold));

    println!(
        "crash opens (child appends {} MiB into a new segment, exits without closing; open scans it):",
        a.tail_mib
    );
    let exe = std::env::current_exe()?;
    for run in 0..a.runs {
        let before = backlog(&a).0;
        let status = Command::new(&exe)
            .arg(&a.dir)
            .args(["--crash-child", "--tail-mib", &a.tail_mib.to_string()])
            .args(["--segment-mib", &a.segment_mib.to_string()])
            .args(["--level", &a.level.to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("crash child failed: {status}").into());
        }
        let tail = backlog(&a).0 - before;
        let cold_run = run % 2 == 1;
        if cold_run {
            drop_cache(&a);
        }
        let (t, segments, scanned) = time_open(&a)?;
        println!(
            "  run {run}: {:.1} ms ({} page cache), {segments} segments, {scanned} scanned, tail {:.1} MiB, backlog {:.2} GiB",
            ms(t),
            if cold_run { "dropped" } else { "warm" },
            tail as f64 / MIB as f64,
            backlog(&a).0 as f64 / GIB
        );
    }
    Ok(())
}
