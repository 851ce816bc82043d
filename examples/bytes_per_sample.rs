//! Bytes on disk per sample for the benchmark workload (`benches/workload/mod.rs`).
//!
//! ```text
//! cargo run --release --example bytes_per_sample -- [BATCHES] [--levels 1,3,6] [--sharded N | --shuffled] [--sorted] [--breakdown]
//! ```
//!
//! Appends `BATCHES` (default 500, i.e. 5 M samples) batches of 10,000 samples into a fresh
//! [`Spool`] per zstd level (default config otherwise: fsync durability, 64 MiB segments), one
//! append per batch, closes each spool, and reports bytes on disk per sample: segment files and
//! index files divided by samples, split into compressed payload and framing (segment headers,
//! 56-byte frame headers, 16-byte GCM tags, index files). The payload figure is cross-checked
//! against `payload::encode` + `seal::compress` of the same batches.
//!
//! `--sharded N` and `--shuffled` change the order in which the workload sends series (see the
//! workload's docs); `--sorted` sorts each batch by series before appending it, to show what
//! canonicalising the order inside an append would save.
//!
//! `--breakdown` prints, for one round of batches (10 batches, all series once), plaintext and
//! compressed sizes and an ablation: the batch with all values and timestamps zeroed (series
//! identity only), with values zeroed (identity + timestamps), and complete. The differences
//! are what timestamps and values cost after zstd.

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::path::Path;

use metricspool::{Batch, LogConfig, MasterKey, Sample, Spool, SpoolConfig, TenantId};
use workload::{BATCH, DEFAULT_SEED, Order, Workload};

struct Args {
    batches: usize,
    levels: Vec<i32>,
    order: Order,
    sorted: bool,
    breakdown: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        batches: 500,
        levels: vec![1, 3, 6],
        order: Order::Scrape,
        sorted: false,
        breakdown: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--levels" => {
                let v = it.next().expect("--levels needs a list such as 1,3,6");
                a.levels = v
                    .split(',')
                    .map(|l| l.parse().expect("a zstd level"))
                    .collect();
            }
            "--shuffled" => a.order = Order::Shuffled,
            "--sharded" => {
                let n = it.next().expect("--sharded needs a shard count");
                a.order = Order::Sharded(n.parse().expect("a shard count"));
            }
            "--sorted" => a.sorted = true,
            "--breakdown" => a.breakdown = true,
            n => a.batches = n.parse().expect("the number of batches"),
        }
    }
    a
}

fn dir_bytes(dir: &Path, ext: &str) -> (u64, usize) {
    let mut total = 0;
    let mut files = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            let (t, f) = dir_bytes(&p, ext);
            total += t;
            files += f;
        } else if p.extension().is_some_and(|x| x == ext) {
            total += e.metadata().map_or(0, |m| m.len());
            files += 1;
        }
    }
    (total, files)
}

fn compressed_len(
    batch: &Batch,
    level: i32,
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> (usize, usize) {
    metricspool::payload::encode(batch, plain);
    metricspool::seal::compress(plain, level, out);
    (plain.len(), out.len())
}

/// `batch` with its series in `Series` order (name, then labels): what the stored size would
/// be if appends were canonicalised before encoding.
fn sorted(batch: Batch) -> Batch {
    let mut entries = batch.into_entries();
    entries.sort_by(|a, b| a.series.cmp(&b.series));
    let mut b = Batch::new();
    for e in entries {
        b.push(e.series, e.kind, e.samples);
    }
    b
}

fn zeroed(batch: &Batch, keep_ts: bool) -> Batch {
    keep_values(batch, keep_ts, |_| false)
}

/// `batch` with the values of the series `keep` refuses set to 0 (and timestamps to 0
/// unless `keep_ts`).
fn keep_values(batch: &Batch, keep_ts: bool, keep: impl Fn(&str) -> bool) -> Batch {
    let mut b = Batch::new();
    for e in batch.entries() {
        let k = keep(e.series.name());
        let samples = e
            .samples
            .iter()
            .map(|s| {
                Sample::new(
                    if keep_ts { s.timestamp_ms } else { 0 },
                    if k { s.value } else { 0.0 },
                )
            })
            .collect();
        b.push(e.series.clone(), e.kind, samples);
    }
    b
}

/// Value groups for the breakdown: (label, predicate on the metric name).
type Group = (&'static str, fn(&str) -> bool);

const GROUPS: [Group; 8] = [
    ("node_cpu_seconds_total", |n| n == "node_cpu_seconds_total"),
    ("other node_*", |n| {
        n.starts_with("node_") && n != "node_cpu_seconds_total"
    }),
    ("DCGM_*", |n| n.starts_with("DCGM_")),
    ("*_bucket", |n| n.ends_with("_bucket")),
    ("*_sum", |n| n.ends_with("_sum")),
    ("*_count", |n| {
        n.ends_with("_count") && !n.starts_with("nv_")
    }),
    ("other vllm/tgi", |n| {
        (n.starts_with("vllm:") || n.starts_with("tgi_"))
            && !n.ends_with("_bucket")
            && !n.ends_with("_sum")
            && !n.ends_with("_count")
    }),
    ("nv_* (Triton)", |n| n.starts_with("nv_")),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let tenant = TenantId::new("bench")?;
    let mut spools = Vec::new();
    let mut dirs = Vec::new();
    for &level in &args.levels {
        let dir = tempfile::tempdir()?;
        let mut cfg = SpoolConfig::new(dir.path(), MasterKey::generate()?);
        cfg.log = LogConfig {
            zstd_level: level,
            ..LogConfig::default()
        };
        let spool = Spool::open(cfg)?;
        let t = spool.tenant(&tenant)?;
        spools.push((level, spool, t, 0usize));
        dirs.push(dir);
    }

    let mut w = Workload::with_order(DEFAULT_SEED, args.order);
    let mix = w.mix();
    println!(
        "workload: {} series ({} node-exporter, {} dcgm, {} vllm, {} tgi, {} triton; {} counters, {} gauges, {} histogram series), {} nodes, {} targets, {}-{} labels (mean {:.2}), order {:?}",
        workload::SERIES,
        mix.node_exporter,
        mix.dcgm,
        mix.vllm,
        mix.tgi,
        mix.triton,
        mix.counters,
        mix.gauges,
        mix.histogram_series,
        mix.nodes,
        mix.targets,
        mix.labels_min,
        mix.labels_max,
        mix.labels_mean,
        args.order
    );

    let mut plain = Vec::new();
    let mut comp = Vec::new();
    let mut proto = Vec::new();
    let (mut proto_bytes, mut snappy_bytes, mut text_bytes, mut plain_bytes) =
        (0u64, 0u64, 0u64, 0u64);
    let mut breakdown = Vec::new();
    let mut snappy = snap::raw::Encoder::new();
    let started = std::time::Instant::now();
    for i in 0..args.batches {
        let mut batch = w.next_batch();
        if args.sorted {
            batch = sorted(batch);
        }
        // Raw sizes on a sample of batches (every 10th), scaled up below.
        if i % 10 == 3 {
            workload::encode_remote_write(&batch, &mut proto);
            proto_bytes += proto.len() as u64;
            snappy_bytes += snappy.compress_vec(&proto)?.len() as u64;
            text_bytes += workload::text_exposition_len(&batch) as u64;
        }
        for (level, _, t, payload) in &mut spools {
            let (p, c) = compressed_len(&batch, *level, &mut plain, &mut comp);
            *payload += c;
            if *level == args.levels[0] {
                plain_bytes += p as u64;
            }
            t.append_blocking(&batch)?;
        }
        if args.breakdown && (10..20).contains(&i) {
            breakdown.push(batch);
        }
    }
    let elapsed = started.elapsed();
    let samples = (args.batches * BATCH) as f64;
    let sampled = args.batches.div_ceil(10).max(1) as f64 * BATCH as f64;
    let sampled = sampled.min(samples);
    println!(
        "{} batches × {} = {} samples appended to {} spools in {:.1} s",
        args.batches,
        BATCH,
        samples,
        spools.len(),
        elapsed.as_secs_f64()
    );
    if proto_bytes > 0 {
        println!(
            "raw: remote-write protobuf {:.1} B/sample, snappy-compressed {:.1} B/sample (vmagent's figure: 185 raw, 24.1 snappy), text exposition {:.1} B/sample, payload plaintext {:.1} B/sample",
            proto_bytes as f64 / sampled,
            snappy_bytes as f64 / sampled,
            text_bytes as f64 / sampled,
            plain_bytes as f64 / samples
        );
    }
    println!();
    println!(
        "| zstd level | B/sample on disk | payload | framing | segments | records | disk bytes | payload check |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((level, spool, t, payload), dir) in spools.into_iter().zip(&dirs) {
        let segments = t.stats().segments;
        drop(t);
        spool.close()?;
        let (seg, nseg) = dir_bytes(dir.path(), "seg");
        let (idx, _) = dir_bytes(dir.path(), "idx");
        let records = args.batches as u64;
        let frame_overhead = records * (56 + 16) + nseg as u64 * 128;
        let stored_payload = seg - frame_overhead;
        let framing = frame_overhead + idx;
        let check = if stored_payload == payload as u64 {
            "equal"
        } else {
            "DIFFERS"
        };
        println!(
            "| {level} | {:.3} | {:.3} | {:.4} | {} ({nseg} files) | {records} | {} | {check} |",
            (seg + idx) as f64 / samples,
            stored_payload as f64 / samples,
            framing as f64 / samples,
            segments,
            seg + idx,
        );
    }

    if !breakdown.is_empty() {
        println!();
        println!("breakdown over batches 10..20 (round 1: every series once), B/sample:");
        println!(
            "| level | plaintext | compressed | series only | + timestamps | + values | => timestamps | => values |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &level in &args.levels {
            let (mut p, mut full, mut ser, mut ser_ts) = (0usize, 0usize, 0usize, 0usize);
            for b in &breakdown {
                let (pl, c) = compressed_len(b, level, &mut plain, &mut comp);
                p += pl;
                full += c;
                ser += compressed_len(&zeroed(b, false), level, &mut plain, &mut comp).1;
                ser_ts += compressed_len(&zeroed(b, true), level, &mut plain, &mut comp).1;
            }
            let n = (breakdown.len() * BATCH) as f64;
            println!(
                "| {level} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                p as f64 / n,
                full as f64 / n,
                ser as f64 / n,
                ser_ts as f64 / n,
                full as f64 / n,
                (ser_ts - ser) as f64 / n,
                (full as f64 - ser_ts as f64) / n
            );
        }
        let level = args.levels[args.levels.len() / 2];
        println!();
        println!(
            "value cost by group at level {level} (compressed bytes with only that group's values kept, minus none kept):"
        );
        println!("| group | share of samples | B per sample of the group | B per sample overall |");
        println!("|---|---|---|---|");
        let n = (breakdown.len() * BATCH) as f64;
        let none: usize = breakdown
            .iter()
            .map(|b| compressed_len(&zeroed(b, true), level, &mut plain, &mut comp).1)
            .sum();
        for (label, pred) in GROUPS {
            let count = breakdown
                .iter()
                .flat_map(|b| b.iter())
                .filter(|(s, _, _)| pred(s.name()))
                .count();
            let with: usize = breakdown
                .iter()
                .map(|b| {
                    compressed_len(&keep_values(b, true, pred), level, &mut plain, &mut comp).1
                })
                .sum();
            let cost = with as f64 - none as f64;
            println!(
                "| {label} | {:.1} % | {:.2} | {:.3} |",
                100.0 * count as f64 / n,
                cost / count.max(1) as f64,
                cost / n
            );
        }
    }
    Ok(())
}
