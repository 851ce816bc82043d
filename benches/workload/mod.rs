//! A deterministic, realistic scrape workload for benchmarks and size measurements.
//!
//! Included from benches and examples with
//! `#[path = "workload/mod.rs"] mod workload;` (or `"../benches/workload/mod.rs"`).
//!
//! # What the workload is
//!
//! 100,000 distinct series ([`SERIES`]) scraped every 15 s from a fleet of GPU inference nodes.
//! Targets are laid out node by node; each node contributes, in this order:
//!
//! | target | job | series per target | labels per series |
//! |---|---|---|---|
//! | node-exporter, `instance="node-0042:9100"` | `node-exporter` | ~300–650 (16/32/48/64 CPUs × 8 modes, 11 memory gauges, 4 NICs × 8, 2–3 disks × 8, 3 filesystems × 5, misc) | 5–8: `cluster`, `region`, `instance`, `job`, `pod` + `cpu`,`mode` / `device` / `device`,`fstype`,`mountpoint` |
//! | dcgm-exporter, `instance="node-0042:9400"` | `dcgm-exporter` | 8 GPUs × 14 fields = 112 | 8: base 4 + `gpu`, `UUID`, `modelName`, `Hostname` |
//! | 1–3 inference pods on the node (vLLM 50 %, TGI 25 %, Triton 25 %), `instance="10.42.17.23:8000"` | `vllm` / `tgi` / `triton` | vLLM ~125, TGI ~86, Triton ~3 models × 10 + 4 GPUs × 4 | 5–8: base 4 + `namespace`, `pod` (with ReplicaSet hash and 5-char suffix), `model_name` / `model` (+`le`, `finished_reason`, `version`, `gpu_uuid`) |
//!
//! Nodes are generated until 100,000 series exist; the last node is cut at exactly 100,000.
//! With the default seed roughly 55 % of series are node-exporter, 15 % DCGM, 30 % inference
//! servers (of which about two thirds are histogram buckets). [`Workload::mix`] reports the
//! exact split for a seed.
//!
//! Series are listed in scrape order: target by target, metric family by family, as one
//! Prometheus remote-write queue with a single shard sends them ([`Order::Scrape`], the
//! default). Two other orders test how much the stored size depends on it:
//! [`Order::Sharded`]`(n)` assigns each series to one of `n` remote-write shards at random and
//! sends shard by shard, scrape order within a shard (a shard's request holds about one series
//! in `n` of each target it covers); [`Order::Shuffled`] is a fixed random permutation of all
//! series (the extreme: neighbours share nothing).
//!
//! # Batches and timestamps
//!
//! [`Workload::next_batch`] returns [`BATCH`] = 10,000 samples: the next 10,000 series
//! round-robin, one sample each (10 batches cover all series once: one "round"). Each target
//! has a fixed scrape phase in `[0, 15 s)` drawn from the seed; the timestamp of a series in
//! round `r` is `START_MS + 15_000·r + phase(target)`, so every (series, timestamp) pair is
//! unique and a batch holds a few dozen distinct timestamps (one per target it touches).
//!
//! # Values (per round, i.e. per 15 s scrape)
//!
//! - **Integer counters** (requests, tokens, bytes, packets, interrupts, energy in mJ): start
//!   at a random value of the metric's magnitude (e.g. 10^9–10^12 for NIC bytes) and grow by a
//!   non-negative integer increment drawn uniformly around a per-series rate (rates spread over
//!   a decade across series). Error/drop/preemption/failure counters stay idle (increment 0)
//!   on 90–98 % of scrapes. Disk byte counters grow in multiples of 512.
//! - **Fixed-decimal counters**: `node_cpu_seconds_total` with 2 decimals (USER_HZ = 100;
//!   the 8 modes of a CPU add up to ~15 s per scrape, idle dominant), disk `*_time_seconds_total`
//!   with 3 decimals. Values are the exact `f64` nearest to the decimal (as parsing the text
//!   exposition gives), typically 6–9 significant digits.
//! - **Gauges**: random walks. Integer gauges (GPU util %, temperatures, clocks, running /
//!   waiting requests, batch sizes, procs); byte gauges in units of 1 KiB (meminfo), 4 KiB
//!   (filesystems) or 1 MiB (GPU framebuffer); decimal gauges with 2–4 decimals (load
//!   averages, power in W with 3 decimals, KV-cache usage fractions with 4 decimals); DCGM
//!   profiling ratios with 6 decimals. Some gauges are constant (MemTotal, filesystem size,
//!   boot time, link up, SM clock). One gauge per node is full-precision:
//!   `node_time_seconds` (seconds with nanoseconds, as node-exporter reports it).
//! - **Histograms**: per histogram, a number of new observations per scrape drawn around a
//!   per-pod rate (≈ 0.5–20 req/s), each observation drawn log-normally around a typical value
//!   (TTFT ~0.15 s, inter-token ~0.03 s, end-to-end ~4 s, prompt ~600 tokens, ...). `_bucket`
//!   series are cumulative counts (monotone in `le` and in time), `_count` is the total, and
//!   `_sum` is the full-precision `f64` sum of the observations (seconds histograms) or an
//!   integer (token histograms). Bucket bounds follow vLLM / TGI conventions; `le` values are
//!   printed Python-style (`"1.0"`, `"+Inf"`) for vLLM and Go-style (`"1"`) for the others.
//!
//! The mix is "friendly" in one documented way: most gauges carry few significant digits and
//! most counters are integers, as exporters of this kind really report them; the only
//! full-mantissa values are histogram `_sum`s of seconds (≈ 2 % of series), `node_time_seconds`
//! and whatever a decimal with 6–9 significant digits costs in binary.
//!
//! # Raw sizes
//!
//! [`encode_remote_write`] produces the exact Prometheus remote-write v1 protobuf
//! (`WriteRequest`, one `TimeSeries` per series with `__name__` among its sorted labels,
//! uncompressed) of a batch, and [`text_exposition_len`] the length of the same samples in
//! the text exposition format (`name{labels} value timestamp\n`), for comparing with stored
//! sizes.

#![allow(dead_code)]

use metricspool::{Batch, MetricKind, Sample, Series};

/// Distinct series in the workload.
pub const SERIES: usize = 100_000;
/// Samples per batch.
pub const BATCH: usize = 10_000;
/// Scrape interval.
pub const SCRAPE_INTERVAL_MS: i64 = 15_000;
/// Timestamp of round 0 (2025-06-15T14:40:00Z), before the per-target phase.
pub const START_MS: i64 = 1_750_000_000_000;
/// Seed used when a caller has no reason to pick another.
pub const DEFAULT_SEED: u64 = 0x6d65_7472_6963_7370;

/// The order in which series are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Target by target, family by family (one remote-write shard).
    Scrape,
    /// Each series in one of `n` shards (at random); shard by shard, scrape order within.
    Sharded(u32),
    /// A fixed random permutation of all series (worst case for locality).
    Shuffled,
}

// ---------------------------------------------------------------------------------------
// Random numbers: SplitMix64 (deterministic, no dependency).

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
    /// Log-uniform in [lo, hi).
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.f64()).exp()
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// Value models.

#[derive(Debug, Clone)]
enum Model {
    /// Integer counter: `value += round(rate · U(0.5, 1.5)) · unit`, idle with `p_idle`.
    IntCounter {
        value: f64,
        rate: f64,
        unit: f64,
        p_idle: f64,
    },
    /// Counter in ticks of 10^-decimals.
    DecCounter {
        ticks: i64,
        rate: f64,
        decimals: u32,
        p_idle: f64,
    },
    /// Integer gauge: random walk of ±step in [lo, hi].
    IntGauge {
        value: i64,
        lo: i64,
        hi: i64,
        step: i64,
    },
    /// Gauge in ticks of 10^-decimals: random walk of up to ±step ticks in [lo, hi] ticks.
    DecGauge {
        ticks: i64,
        lo: i64,
        hi: i64,
        step: i64,
        decimals: u32,
    },
    /// Bytes gauge: `units · unit`, random walk of up to ±step units in [lo, hi].
    UnitGauge {
        units: i64,
        lo: i64,
        hi: i64,
        step: i64,
        unit: f64,
    },
    /// Constant.
    Const(f64),
    /// Wall clock in seconds with nanoseconds (node_time_seconds).
    Clock { ns_jitter: i64 },
    /// One series of histogram `hist`.
    Hist { hist: u32, part: HistPart },
}

#[derive(Debug, Clone, Copy)]
enum HistPart {
    Bucket(u16),
    Sum,
    Count,
}

#[derive(Debug, Clone)]
struct Hist {
    bounds: &'static [f64],
    /// Cumulative counts per finite bound.
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
    /// Mean observations per scrape.
    per_scrape: f64,
    /// log-normal parameters of one observation.
    mu: f64,
    sigma: f64,
    integer_obs: bool,
    /// Round the state was last advanced to.
    round: u64,
}

impl Hist {
    /// One scrape interval of observations. At most 256 are drawn; larger counts scale the
    /// drawn distribution up (cumulative counts rounded, so they stay monotone and integral).
    fn advance(&mut self, rng: &mut Rng) {
        let n = (self.per_scrape * rng.range(0.6, 1.4)).round() as u64;
        let draws = n.min(256);
        let mut add = vec![0u64; self.bounds.len()];
        let mut sum = 0.0;
        for _ in 0..draws {
            let mut x = (self.mu + self.sigma * rng.normal()).exp();
            if self.integer_obs {
                x = x.round().max(1.0);
            }
            sum += x;
            if let Some(i) = self.bounds.iter().position(|&b| x <= b) {
                add[i] += 1;
            }
        }
        let scale = n as f64 / draws.max(1) as f64;
        let mut cum = 0;
        for (b, a) in self.buckets.iter_mut().zip(&add) {
            cum += a;
            *b += (cum as f64 * scale).round() as u64;
        }
        self.sum += if self.integer_obs {
            (sum * scale).round()
        } else {
            sum * scale
        };
        self.count += n;
    }
}

#[derive(Debug, Clone)]
struct Def {
    series: Series,
    kind: MetricKind,
    model: Model,
    target: u32,
    source: Source,
}

/// Which exporter a series comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    NodeExporter,
    Dcgm,
    Vllm,
    Tgi,
    Triton,
}

/// How many series of each source and kind the workload holds.
#[derive(Debug, Clone, Default)]
pub struct Mix {
    pub node_exporter: usize,
    pub dcgm: usize,
    pub vllm: usize,
    pub tgi: usize,
    pub triton: usize,
    pub counters: usize,
    pub gauges: usize,
    pub histogram_series: usize,
    pub nodes: usize,
    pub targets: usize,
    pub labels_min: usize,
    pub labels_max: usize,
    pub labels_mean: f64,
}

/// The workload generator. Deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Workload {
    defs: Vec<Def>,
    hists: Vec<Hist>,
    phases: Vec<i64>,
    cursor: usize,
    round: u64,
    rng: Rng,
    nodes: usize,
}

impl Workload {
    /// Builds the 100,000 series in scrape order.
    pub fn new(seed: u64) -> Self {
        Self::with_order(seed, Order::Scrape)
    }

    pub fn with_order(seed: u64, order: Order) -> Self {
        let mut b = Builder {
            g: Gen {
                rng: Rng::new(seed),
                hists: Vec::new(),
            },
            out: Sink {
                defs: Vec::with_capacity(SERIES + 1000),
                phases: Vec::new(),
                base: Vec::new(),
                target: 0,
                source: Source::NodeExporter,
            },
        };
        let mut node = 0usize;
        while b.out.defs.len() < SERIES {
            b.node(node);
            node += 1;
        }
        b.out.defs.truncate(SERIES);
        let mut defs = b.out.defs;
        match order {
            Order::Scrape => {}
            Order::Sharded(n) => {
                let mut r = Rng::new(seed ^ 0x5348_4152);
                let mut keyed: Vec<(u64, Def)> = defs
                    .into_iter()
                    .map(|d| (r.next_u64() % u64::from(n.max(1)), d))
                    .collect();
                keyed.sort_by_key(|(shard, _)| *shard);
                defs = keyed.into_iter().map(|(_, d)| d).collect();
            }
            Order::Shuffled => {
                let mut r = Rng::new(seed ^ 0x5348_5546);
                for i in (1..defs.len()).rev() {
                    let j = (r.next_u64() % (i as u64 + 1)) as usize;
                    defs.swap(i, j);
                }
            }
        }
        Self {
            defs,
            hists: b.g.hists,
            phases: b.out.phases,
            cursor: 0,
            round: 0,
            rng: Rng::new(seed ^ 0x7661_6c75_6573),
            nodes: node,
        }
    }

    /// The next 10,000 samples: the next 10,000 series round-robin, one sample each.
    pub fn next_batch(&mut self) -> Batch {
        let mut batch = Batch::new();
        for _ in 0..BATCH {
            let (series, kind, sample) = self.next_sample();
            batch.push_one(series, kind, sample);
        }
        batch
    }

    /// The next sample (series round-robin).
    pub fn next_sample(&mut self) -> (Series, MetricKind, Sample) {
        let i = self.cursor;
        let round = self.round;
        let d = &self.defs[i];
        let ts = START_MS + SCRAPE_INTERVAL_MS * round as i64 + self.phases[d.target as usize];
        let value = next_value(
            &mut self.defs[i].model,
            &mut self.hists,
            round,
            ts,
            &mut self.rng,
        );
        let d = &self.defs[i];
        self.cursor += 1;
        if self.cursor == self.defs.len() {
            self.cursor = 0;
            self.round += 1;
        }
        (d.series.clone(), d.kind, Sample::new(ts, value))
    }

    /// Series and targets by kind.
    pub fn mix(&self) -> Mix {
        let mut m = Mix {
            nodes: self.nodes,
            targets: self.phases.len(),
            labels_min: usize::MAX,
            ..Mix::default()
        };
        let mut labels = 0usize;
        for d in &self.defs {
            match d.source {
                Source::NodeExporter => m.node_exporter += 1,
                Source::Dcgm => m.dcgm += 1,
                Source::Vllm => m.vllm += 1,
                Source::Tgi => m.tgi += 1,
                Source::Triton => m.triton += 1,
            }
            match d.kind {
                MetricKind::Counter => m.counters += 1,
                MetricKind::Gauge => m.gauges += 1,
                _ => m.histogram_series += 1,
            }
            let n = d.series.labels().len();
            labels += n;
            m.labels_min = m.labels_min.min(n);
            m.labels_max = m.labels_max.max(n);
        }
        m.labels_mean = labels as f64 / self.defs.len() as f64;
        m
    }

    /// The series, in send order.
    pub fn series(&self) -> impl Iterator<Item = (&Series, MetricKind)> {
        self.defs.iter().map(|d| (&d.series, d.kind))
    }
}

/// `n` batches from a fresh workload with `seed`.
pub fn batches(seed: u64, n: usize) -> Vec<Batch> {
    let mut w = Workload::new(seed);
    (0..n).map(|_| w.next_batch()).collect()
}

fn pow10(d: u32) -> f64 {
    10f64.powi(d as i32)
}

fn next_value(model: &mut Model, hists: &mut [Hist], round: u64, ts: i64, rng: &mut Rng) -> f64 {
    // Round 0 reports the initial state; later rounds advance first.
    let advance = round > 0;
    match model {
        Model::IntCounter {
            value,
            rate,
            unit,
            p_idle,
        } => {
            if advance && !rng.chance(*p_idle) {
                *value += (*rate * rng.range(0.5, 1.5)).round().max(0.0) * *unit;
            }
            *value
        }
        Model::DecCounter {
            ticks,
            rate,
            decimals,
            p_idle,
        } => {
            if advance && !rng.chance(*p_idle) {
                *ticks += (*rate * rng.range(0.5, 1.5)).round().max(0.0) as i64;
            }
            *ticks as f64 / pow10(*decimals)
        }
        Model::IntGauge {
            value,
            lo,
            hi,
            step,
        } => {
            if advance {
                *value = (*value + rng.int(-*step, *step)).clamp(*lo, *hi);
            }
            *value as f64
        }
        Model::DecGauge {
            ticks,
            lo,
            hi,
            step,
            decimals,
        } => {
            if advance {
                *ticks = (*ticks + rng.int(-*step, *step)).clamp(*lo, *hi);
            }
            *ticks as f64 / pow10(*decimals)
        }
        Model::UnitGauge {
            units,
            lo,
            hi,
            step,
            unit,
        } => {
            if advance {
                *units = (*units + rng.int(-*step, *step)).clamp(*lo, *hi);
            }
            *units as f64 * *unit
        }
        Model::Const(v) => *v,
        Model::Clock { ns_jitter } => {
            let ns = ts * 1_000_000 + *ns_jitter + rng.int(0, 999_999);
            ns as f64 / 1e9
        }
        Model::Hist { hist, part } => {
            let h = &mut hists[*hist as usize];
            if h.round < round {
                while h.round < round {
                    h.advance(rng);
                    h.round += 1;
                }
            }
            match *part {
                HistPart::Bucket(i) => match h.buckets.get(i as usize) {
                    Some(&c) => c as f64,
                    None => h.count as f64,
                },
                HistPart::Sum => h.sum,
                HistPart::Count => h.count as f64,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Building the series.

const REGIONS: [(&str, &str); 3] = [
    ("us-east-1", "gpu-prod-use1"),
    ("us-west-2", "gpu-prod-usw2"),
    ("eu-west-1", "gpu-prod-euw1"),
];
const POD_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const TTFT: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const TPOT: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const E2E: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const TOKENS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
const TGI_DURATION: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const TGI_TOKENS: &[f64] = &[
    16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

const VLLM_MODELS: &[&str] = &[
    "llama-3-8b-instruct",
    "llama-3.1-70b-instruct",
    "mistral-7b-instruct-v0.3",
    "qwen2.5-32b-instruct",
    "mixtral-8x7b-instruct",
];
const TGI_MODELS: &[&str] = &["gemma-2-9b-it", "falcon-40b-instruct", "starcoder2-15b"];
const TRITON_MODELS: &[&str] = &[
    "resnet50",
    "bert-large-uncased",
    "yolov8x",
    "whisper-large-v3",
    "sdxl-vae-decoder",
    "e5-large-v2",
];
const GPU_MODELS: &[&str] = &[
    "NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA L40S",
];

/// Python's `str(float)` for bucket bounds (vLLM): "1.0", "0.25", "2560.0".
fn le_python(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// Go's shortest formatting (TGI, Triton exporters): "1", "0.25".
fn le_go(v: f64) -> String {
    format!("{v}")
}

struct Builder {
    g: Gen,
    out: Sink,
}

/// Random choices and histogram state.
struct Gen {
    rng: Rng,
    hists: Vec<Hist>,
}

/// The series built so far and the current target.
struct Sink {
    defs: Vec<Def>,
    phases: Vec<i64>,
    /// Labels shared by the current target.
    base: Vec<(String, String)>,
    target: u32,
    source: Source,
}

impl Builder {
    fn start_target(&mut self, source: Source, base: Vec<(String, String)>) {
        let o = &mut self.out;
        o.target = o.phases.len() as u32;
        o.phases.push(self.g.rng.int(0, SCRAPE_INTERVAL_MS - 1));
        o.base = base;
        o.source = source;
    }
}

impl Sink {
    fn add(&mut self, name: &str, extra: &[(&str, String)], kind: MetricKind, model: Model) {
        let labels = self
            .base
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .chain(extra.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
        let series = Series::new(name, labels).expect("workload series are valid");
        debug_assert!((5..=8).contains(&series.labels().len()), "{series:?}");
        self.defs.push(Def {
            series,
            kind,
            model,
            target: self.target,
            source: self.source,
        });
    }

    fn histogram(
        &mut self,
        name: &str,
        extra: &[(&str, String)],
        bounds: &'static [f64],
        python_le: bool,
        hist: u32,
    ) {
        for (i, &b) in bounds.iter().enumerate() {
            let le = if python_le { le_python(b) } else { le_go(b) };
            let mut labels = extra.to_vec();
            labels.push(("le", le));
            self.add(
                &format!("{name}_bucket"),
                &labels,
                MetricKind::Histogram,
                Model::Hist {
                    hist,
                    part: HistPart::Bucket(i as u16),
                },
            );
        }
        let mut labels = extra.to_vec();
        labels.push(("le", "+Inf".to_owned()));
        self.add(
            &format!("{name}_bucket"),
            &labels,
            MetricKind::Histogram,
            Model::Hist {
                hist,
                part: HistPart::Bucket(bounds.len() as u16),
            },
        );
        self.add(
            &format!("{name}_sum"),
            extra,
            MetricKind::Histogram,
            Model::Hist {
                hist,
                part: HistPart::Sum,
            },
        );
        self.add(
            &format!("{name}_count"),
            extra,
            MetricKind::Histogram,
            Model::Hist {
                hist,
                part: HistPart::Count,
            },
        );
    }
}

impl Gen {
    fn pod_suffix(&mut self, n: usize) -> String {
        (0..n).map(|_| *self.rng.pick(POD_CHARS) as char).collect()
    }

    fn counter(
        &mut self,
        start_lo: f64,
        start_hi: f64,
        rate_lo: f64,
        rate_hi: f64,
        unit: f64,
        p_idle: f64,
    ) -> Model {
        let start = (self.rng.log_range(start_lo, start_hi) / unit).round() * unit;
        Model::IntCounter {
            value: start,
            rate: self.rng.log_range(rate_lo, rate_hi),
            unit,
            p_idle,
        }
    }

    fn dec_counter(
        &mut self,
        start_lo: f64,
        start_hi: f64,
        per_scrape: f64,
        decimals: u32,
    ) -> Model {
        let scale = pow10(decimals);
        Model::DecCounter {
            ticks: (self.rng.range(start_lo, start_hi) * scale).round() as i64,
            rate: per_scrape * scale,
            decimals,
            p_idle: 0.0,
        }
    }

    fn int_gauge(&mut self, lo: i64, hi: i64, step: i64) -> Model {
        Model::IntGauge {
            value: self.rng.int(lo, hi),
            lo,
            hi,
            step,
        }
    }

    fn dec_gauge(&mut self, lo: f64, hi: f64, step: f64, decimals: u32) -> Model {
        let s = pow10(decimals);
        let (lo, hi) = ((lo * s).round() as i64, (hi * s).round() as i64);
        Model::DecGauge {
            ticks: self.rng.int(lo, hi),
            lo,
            hi,
            step: (step * s).round().max(1.0) as i64,
            decimals,
        }
    }

    fn unit_gauge(&mut self, lo: f64, hi: f64, step: f64, unit: f64) -> Model {
        let (lo, hi) = ((lo / unit) as i64, (hi / unit) as i64);
        Model::UnitGauge {
            units: self.rng.int(lo, hi),
            lo,
            hi,
            step: (step / unit).max(1.0) as i64,
            unit,
        }
    }

    fn hist(
        &mut self,
        bounds: &'static [f64],
        per_scrape: f64,
        typical: f64,
        sigma: f64,
        integer_obs: bool,
    ) -> u32 {
        let mut h = Hist {
            bounds,
            buckets: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
            per_scrape,
            mu: typical.ln(),
            sigma,
            integer_obs,
            round: 0,
        };
        // A history: the server has been up for a while (100–3000 scrapes' worth).
        let history = self.rng.int(100, 3000) as f64;
        let saved = h.per_scrape;
        h.per_scrape = saved * history;
        // Approximate the history with a few hundred observations scaled up.
        let mut tmp = Hist {
            per_scrape: 300.0,
            ..h.clone()
        };
        tmp.advance(&mut self.rng);
        let scale = (saved * history / tmp.count.max(1) as f64).max(1.0);
        h.buckets = tmp
            .buckets
            .iter()
            .map(|&c| (c as f64 * scale).round() as u64)
            .collect();
        h.count = (tmp.count as f64 * scale).round() as u64;
        // Keep the cumulative invariant after rounding.
        let mut prev = 0;
        for b in &mut h.buckets {
            *b = (*b).max(prev);
            prev = *b;
        }
        h.count = h.count.max(prev);
        h.sum = tmp.sum * scale;
        if integer_obs {
            h.sum = h.sum.round();
        }
        h.per_scrape = saved;
        self.hists.push(h);
        (self.hists.len() - 1) as u32
    }
}

impl Builder {
    fn node(&mut self, n: usize) {
        let (region, cluster) = REGIONS[n % REGIONS.len()];
        let host = format!("node-{n:04}");
        let gpus = 8usize;
        let gpu_model = *self.g.rng.pick(GPU_MODELS);
        self.node_exporter(region, cluster, &host);
        self.dcgm(region, cluster, &host, gpus, gpu_model);
        let pods = self.g.rng.int(1, 3) as usize;
        for p in 0..pods {
            let ip = format!(
                "10.42.{}.{}:",
                n % 256,
                10 + p * 7 + self.g.rng.int(0, 6) as usize
            );
            match self.g.rng.int(0, 3) {
                0 | 1 => self.vllm(region, cluster, &ip),
                2 => self.tgi(region, cluster, &ip),
                _ => self.triton(region, cluster, &ip, gpus / pods),
            }
        }
    }

    fn base(
        &self,
        region: &str,
        cluster: &str,
        instance: String,
        job: &str,
    ) -> Vec<(String, String)> {
        vec![
            ("cluster".into(), cluster.into()),
            ("region".into(), region.into()),
            ("instance".into(), instance),
            ("job".into(), job.into()),
        ]
    }

    fn node_exporter(&mut self, region: &str, cluster: &str, host: &str) {
        let mut base = self.base(region, cluster, format!("{host}:9100"), "node-exporter");
        base.push((
            "pod".into(),
            format!("node-exporter-{}", self.g.pod_suffix(5)),
        ));
        self.start_target(Source::NodeExporter, base);
        use MetricKind::{Counter, Gauge};
        let cpus = *self.g.rng.pick(&[16usize, 32, 48, 64]);
        let uptime = self.g.rng.range(2e5, 5e6);
        let busy = self.g.rng.range(0.05, 0.6);
        // node_boot_time_seconds, node_context_switches_total, ... (alphabetical, as exposed)
        self.out.add(
            "node_boot_time_seconds",
            &[],
            Gauge,
            Model::Const(((START_MS as f64 / 1e3) - uptime).round()),
        );
        self.out.add(
            "node_context_switches_total",
            &[],
            Counter,
            self.g.counter(1e9, 1e11, 2e5, 5e6, 1.0, 0.0),
        );
        let modes: [(&str, f64); 8] = [
            ("idle", 1.0 - busy),
            ("iowait", 0.01),
            ("irq", 0.003),
            ("nice", 0.0),
            ("softirq", 0.01),
            ("steal", 0.0),
            ("system", busy * 0.25),
            ("user", busy * 0.7),
        ];
        for c in 0..cpus {
            for (mode, share) in modes {
                let per_scrape = 15.0 * share * self.g.rng.range(0.8, 1.2);
                let m = if per_scrape == 0.0 {
                    Model::Const(0.0)
                } else {
                    self.g
                        .dec_counter(uptime * share * 0.9, uptime * share * 1.1, per_scrape, 2)
                };
                self.out.add(
                    "node_cpu_seconds_total",
                    &[("cpu", c.to_string()), ("mode", mode.to_owned())],
                    Counter,
                    m,
                );
            }
        }
        let disks: &[&str] = if self.g.rng.chance(0.5) {
            &["nvme0n1", "nvme1n1", "sda"]
        } else {
            &["nvme0n1", "sda"]
        };
        for d in disks {
            let dev = [("device", (*d).to_owned())];
            self.out
                .add("node_disk_io_now", &dev, Gauge, self.g.int_gauge(0, 12, 3));
            let r1 = self.g.rng.range(0.05, 3.0);
            let m = self.g.dec_counter(uptime * 0.01, uptime * 0.2, r1, 3);
            self.out
                .add("node_disk_io_time_seconds_total", &dev, Counter, m);
            self.out.add(
                "node_disk_read_bytes_total",
                &dev,
                Counter,
                self.g.counter(1e10, 1e13, 1e3, 5e6, 512.0, 0.3),
            );
            let r1 = self.g.rng.range(0.01, 0.5);
            let m = self.g.dec_counter(uptime * 0.001, uptime * 0.05, r1, 3);
            self.out
                .add("node_disk_read_time_seconds_total", &dev, Counter, m);
            self.out.add(
                "node_disk_reads_completed_total",
                &dev,
                Counter,
                self.g.counter(1e6, 1e9, 1.0, 2e3, 1.0, 0.3),
            );
            let r1 = self.g.rng.range(0.01, 2.0);
            let m = self.g.dec_counter(uptime * 0.001, uptime * 0.1, r1, 3);
            self.out
                .add("node_disk_write_time_seconds_total", &dev, Counter, m);
            self.out.add(
                "node_disk_writes_completed_total",
                &dev,
                Counter,
                self.g.counter(1e6, 1e9, 10.0, 5e3, 1.0, 0.05),
            );
            self.out.add(
                "node_disk_written_bytes_total",
                &dev,
                Counter,
                self.g.counter(1e10, 1e13, 1e4, 5e7, 512.0, 0.05),
            );
        }
        for (mnt, dev, fs, size) in [
            ("/", "/dev/nvme0n1p2", "ext4", 1.9e12),
            ("/boot/efi", "/dev/nvme0n1p1", "vfat", 5.3e8),
            ("/var/lib/containerd", "/dev/nvme1n1", "xfs", 7.6e12),
        ] {
            let l = [
                ("device", dev.to_owned()),
                ("fstype", fs.to_owned()),
                ("mountpoint", mnt.to_owned()),
            ];
            let size = (size / 4096.0f64).round() * 4096.0;
            self.out.add(
                "node_filesystem_avail_bytes",
                &l,
                Gauge,
                self.g
                    .unit_gauge(size * 0.2, size * 0.7, size * 1e-5, 4096.0),
            );
            self.out.add(
                "node_filesystem_files",
                &l,
                Gauge,
                Model::Const((size / 16384.0).round()),
            );
            self.out.add(
                "node_filesystem_files_free",
                &l,
                Gauge,
                self.g.int_gauge(
                    (size / 16384.0 * 0.5) as i64,
                    (size / 16384.0 * 0.9) as i64,
                    40,
                ),
            );
            self.out.add(
                "node_filesystem_free_bytes",
                &l,
                Gauge,
                self.g
                    .unit_gauge(size * 0.25, size * 0.75, size * 1e-5, 4096.0),
            );
            self.out
                .add("node_filesystem_size_bytes", &l, Gauge, Model::Const(size));
        }
        self.out.add(
            "node_forks_total",
            &[],
            Counter,
            self.g.counter(1e6, 1e8, 20.0, 2e3, 1.0, 0.0),
        );
        self.out.add(
            "node_intr_total",
            &[],
            Counter,
            self.g.counter(1e9, 1e11, 1e5, 3e6, 1.0, 0.0),
        );
        for (name, lo, hi) in [
            ("node_load1", 0.0, 40.0),
            ("node_load15", 0.0, 30.0),
            ("node_load5", 0.0, 35.0),
        ] {
            self.out
                .add(name, &[], Gauge, self.g.dec_gauge(lo, hi, 0.8, 2));
        }
        let total = *self.g.rng.pick(&[5.4e11, 1.08e12, 2.16e12]);
        let kib = 1024.0;
        for (name, lo, hi, step) in [
            ("node_memory_Active_bytes", 0.1, 0.5, 1e-3),
            ("node_memory_Buffers_bytes", 0.001, 0.005, 1e-5),
            ("node_memory_Cached_bytes", 0.1, 0.6, 1e-3),
            ("node_memory_Dirty_bytes", 1e-6, 1e-4, 5e-6),
            ("node_memory_Inactive_bytes", 0.1, 0.4, 1e-3),
            ("node_memory_MemAvailable_bytes", 0.3, 0.8, 2e-3),
            ("node_memory_MemFree_bytes", 0.05, 0.4, 2e-3),
            ("node_memory_Shmem_bytes", 0.001, 0.02, 1e-5),
            ("node_memory_Slab_bytes", 0.005, 0.02, 1e-5),
        ] {
            self.out.add(
                name,
                &[],
                Gauge,
                self.g.unit_gauge(total * lo, total * hi, total * step, kib),
            );
        }
        self.out.add(
            "node_memory_MemTotal_bytes",
            &[],
            Gauge,
            Model::Const(((total / kib).round()) * kib),
        );
        self.out
            .add("node_memory_SwapTotal_bytes", &[], Gauge, Model::Const(0.0));
        for nic in ["bond0", "eth0", "eth1", "ib0"] {
            let dev = [("device", nic.to_owned())];
            let (rx_rate, tx_rate) = (
                self.g.rng.log_range(1e5, 2e9),
                self.g.rng.log_range(1e5, 2e9),
            );
            let rx_start = self.g.rng.log_range(1e10, 1e14).round();
            let tx_start = self.g.rng.log_range(1e10, 1e14).round();
            self.out.add(
                "node_network_receive_bytes_total",
                &dev,
                Counter,
                Model::IntCounter {
                    value: rx_start,
                    rate: rx_rate,
                    unit: 1.0,
                    p_idle: 0.0,
                },
            );
            self.out.add(
                "node_network_receive_drop_total",
                &dev,
                Counter,
                self.g.counter(1.0, 1e5, 0.5, 5.0, 1.0, 0.95),
            );
            self.out.add(
                "node_network_receive_errs_total",
                &dev,
                Counter,
                self.g.counter(1.0, 1e3, 0.5, 3.0, 1.0, 0.98),
            );
            self.out.add(
                "node_network_receive_packets_total",
                &dev,
                Counter,
                Model::IntCounter {
                    value: (rx_start / 900.0).round(),
                    rate: rx_rate / 900.0,
                    unit: 1.0,
                    p_idle: 0.0,
                },
            );
            self.out.add(
                "node_network_transmit_bytes_total",
                &dev,
                Counter,
                Model::IntCounter {
                    value: tx_start,
                    rate: tx_rate,
                    unit: 1.0,
                    p_idle: 0.0,
                },
            );
            self.out.add(
                "node_network_transmit_drop_total",
                &dev,
                Counter,
                self.g.counter(1.0, 1e4, 0.5, 3.0, 1.0, 0.97),
            );
            self.out.add(
                "node_network_transmit_errs_total",
                &dev,
                Counter,
                self.g.counter(1.0, 1e3, 0.5, 3.0, 1.0, 0.98),
            );
            self.out.add(
                "node_network_transmit_packets_total",
                &dev,
                Counter,
                Model::IntCounter {
                    value: (tx_start / 1100.0).round(),
                    rate: tx_rate / 1100.0,
                    unit: 1.0,
                    p_idle: 0.0,
                },
            );
            self.out
                .add("node_network_up", &dev, Gauge, Model::Const(1.0));
        }
        self.out
            .add("node_procs_blocked", &[], Gauge, self.g.int_gauge(0, 4, 1));
        self.out
            .add("node_procs_running", &[], Gauge, self.g.int_gauge(1, 40, 4));
        let jitter = self.g.rng.int(0, 999_999_999);
        self.out.add(
            "node_time_seconds",
            &[],
            Gauge,
            Model::Clock {
                ns_jitter: jitter % 1_000_000,
            },
        );
    }

    fn dcgm(&mut self, region: &str, cluster: &str, host: &str, gpus: usize, gpu_model: &str) {
        let base = self.base(region, cluster, format!("{host}:9400"), "dcgm-exporter");
        self.start_target(Source::Dcgm, base);
        use MetricKind::{Counter, Gauge};
        let fb_total = if gpu_model.contains("80GB") {
            81559.0
        } else {
            46068.0
        };
        let uuids: Vec<String> = (0..gpus)
            .map(|_| {
                let r = self.g.rng.next_u64();
                let s = self.g.rng.next_u64();
                format!(
                    "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    r >> 32,
                    (r >> 16) & 0xffff,
                    r & 0xffff,
                    s >> 48,
                    s & 0xffff_ffff_ffff
                )
            })
            .collect();
        // dcgm-exporter lists field by field, GPU by GPU within each field.
        let fields: [&str; 14] = [
            "DCGM_FI_DEV_SM_CLOCK",
            "DCGM_FI_DEV_MEM_CLOCK",
            "DCGM_FI_DEV_MEMORY_TEMP",
            "DCGM_FI_DEV_GPU_TEMP",
            "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_MEM_COPY_UTIL",
            "DCGM_FI_DEV_XID_ERRORS",
            "DCGM_FI_DEV_FB_FREE",
            "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        ];
        for f in fields {
            for (g, uuid) in uuids.iter().enumerate() {
                let l = [
                    ("gpu", g.to_string()),
                    ("UUID", uuid.clone()),
                    ("modelName", gpu_model.to_owned()),
                    ("Hostname", host.to_owned()),
                ];
                let (kind, m) = match f {
                    "DCGM_FI_DEV_SM_CLOCK" => (Gauge, Model::Const(1980.0)),
                    "DCGM_FI_DEV_MEM_CLOCK" => (Gauge, Model::Const(2619.0)),
                    "DCGM_FI_DEV_MEMORY_TEMP" => (Gauge, self.g.int_gauge(35, 80, 1)),
                    "DCGM_FI_DEV_GPU_TEMP" => (Gauge, self.g.int_gauge(30, 85, 2)),
                    "DCGM_FI_DEV_POWER_USAGE" => (Gauge, self.g.dec_gauge(60.0, 700.0, 40.0, 3)),
                    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" => {
                        (Counter, self.g.counter(1e10, 1e12, 1e6, 1e7, 1.0, 0.0))
                    }
                    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" => (Counter, Model::Const(0.0)),
                    "DCGM_FI_DEV_GPU_UTIL" => (Gauge, self.g.int_gauge(0, 100, 15)),
                    "DCGM_FI_DEV_MEM_COPY_UTIL" => (Gauge, self.g.int_gauge(0, 100, 10)),
                    "DCGM_FI_DEV_XID_ERRORS" => (Gauge, Model::Const(0.0)),
                    "DCGM_FI_DEV_FB_FREE" => {
                        (Gauge, self.g.int_gauge(500, fb_total as i64 / 2, 200))
                    }
                    "DCGM_FI_DEV_FB_USED" => (
                        Gauge,
                        self.g
                            .int_gauge(fb_total as i64 / 2, fb_total as i64 - 500, 200),
                    ),
                    _ => (Gauge, self.g.dec_gauge(0.0, 1.0, 0.1, 6)),
                };
                self.out.add(f, &l, kind, m);
            }
        }
    }

    fn pod_name(&mut self, prefix: &str) -> String {
        let r1 = self.g.rng.int(9, 10);
        let rs = self.g.pod_suffix(r1 as usize);
        let p = self.g.pod_suffix(5);
        format!("{prefix}-{rs}-{p}")
    }

    fn inference_base(
        &mut self,
        region: &str,
        cluster: &str,
        instance: String,
        job: &str,
        pod: String,
    ) -> Vec<(String, String)> {
        let mut b = self.base(region, cluster, instance, job);
        b.push(("namespace".into(), "inference".into()));
        b.push(("pod".into(), pod));
        b
    }

    fn vllm(&mut self, region: &str, cluster: &str, ip: &str) {
        let model = *self.g.rng.pick(VLLM_MODELS);
        let pod = self.pod_name(&format!("vllm-{model}").replace('.', "-"));
        let base = self.inference_base(region, cluster, format!("{ip}8000"), "vllm", pod);
        self.start_target(Source::Vllm, base);
        use MetricKind::{Counter, Gauge};
        let m = [("model_name", model.to_owned())];
        let rps = self.g.rng.log_range(0.5, 20.0);
        let per = rps * 15.0;
        self.out
            .add("vllm:cpu_cache_usage_perc", &m, Gauge, Model::Const(0.0));
        let r1 = self.g.rng.range(2.0, 8.0);
        let h = self.g.hist(E2E, per, r1, 0.8, false);
        self.out
            .histogram("vllm:e2e_request_latency_seconds", &m, E2E, true, h);
        let g = self.g.counter(1e6, 1e9, per * 250.0, per * 400.0, 1.0, 0.0);
        self.out.add("vllm:generation_tokens_total", &m, Counter, g);
        self.out.add(
            "vllm:gpu_cache_usage_perc",
            &m,
            Gauge,
            self.g.dec_gauge(0.0, 0.95, 0.08, 4),
        );
        self.out.add(
            "vllm:gpu_prefix_cache_hit_rate",
            &m,
            Gauge,
            self.g.dec_gauge(0.0, 0.9, 0.02, 4),
        );
        self.out.add(
            "vllm:num_preemptions_total",
            &m,
            Counter,
            self.g.counter(1.0, 500.0, 0.5, 3.0, 1.0, 0.9),
        );
        self.out.add(
            "vllm:num_requests_running",
            &m,
            Gauge,
            self.g.int_gauge(0, 64, 6),
        );
        self.out
            .add("vllm:num_requests_swapped", &m, Gauge, Model::Const(0.0));
        self.out.add(
            "vllm:num_requests_waiting",
            &m,
            Gauge,
            self.g.int_gauge(0, 8, 2),
        );
        let p = self
            .g
            .counter(1e6, 1e10, per * 400.0, per * 900.0, 1.0, 0.0);
        self.out.add("vllm:prompt_tokens_total", &m, Counter, p);
        let r1 = self.g.rng.range(100.0, 300.0);
        let h = self.g.hist(TOKENS, per, r1, 1.0, true);
        self.out
            .histogram("vllm:request_generation_tokens", &m, TOKENS, true, h);
        let r1 = self.g.rng.range(300.0, 1500.0);
        let h = self.g.hist(TOKENS, per, r1, 1.0, true);
        self.out
            .histogram("vllm:request_prompt_tokens", &m, TOKENS, true, h);
        let r1 = self.g.rng.range(0.005, 0.05);
        let h = self.g.hist(TTFT, per, r1, 1.5, false);
        self.out
            .histogram("vllm:request_queue_time_seconds", &m, TTFT, true, h);
        for (reason, share) in [("abort", 0.01), ("length", 0.2), ("stop", 0.79)] {
            let l = [
                ("finished_reason", reason.to_owned()),
                ("model_name", model.to_owned()),
            ];
            let c = self.g.counter(
                100.0,
                1e6,
                per * share * 0.7,
                per * share * 1.3 + 0.01,
                1.0,
                0.0,
            );
            self.out.add("vllm:request_success_total", &l, Counter, c);
        }
        let r1 = self.g.rng.range(0.05, 0.4);
        let h = self.g.hist(TTFT, per, r1, 0.9, false);
        self.out
            .histogram("vllm:time_to_first_token_seconds", &m, TTFT, true, h);
        let r1 = self.g.rng.range(0.015, 0.06);
        let h = self.g.hist(TPOT, per * 200.0, r1, 0.4, false);
        self.out
            .histogram("vllm:time_per_output_token_seconds", &m, TPOT, true, h);
    }

    fn tgi(&mut self, region: &str, cluster: &str, ip: &str) {
        let model = *self.g.rng.pick(TGI_MODELS);
        let pod = self.pod_name(&format!("tgi-{model}"));
        let mut base = self.inference_base(region, cluster, format!("{ip}80"), "tgi", pod);
        base.push(("model".into(), model.to_owned()));
        self.start_target(Source::Tgi, base);
        use MetricKind::{Counter, Gauge};
        let per = self.g.rng.log_range(0.5, 10.0) * 15.0;
        self.out.add(
            "tgi_batch_current_max_tokens",
            &[],
            Gauge,
            self.g.int_gauge(0, 32768, 2000),
        );
        self.out.add(
            "tgi_batch_current_size",
            &[],
            Gauge,
            self.g.int_gauge(0, 32, 4),
        );
        let h = self.g.hist(TGI_DURATION, per / 4.0, 0.05, 0.7, false);
        self.out
            .histogram("tgi_batch_forward_duration", &[], TGI_DURATION, false, h);
        self.out
            .add("tgi_queue_size", &[], Gauge, self.g.int_gauge(0, 10, 2));
        self.out.add(
            "tgi_request_count",
            &[],
            Counter,
            self.g.counter(1e3, 1e7, per * 0.9, per * 1.1, 1.0, 0.0),
        );
        let r1 = self.g.rng.range(1.0, 6.0);
        let h = self.g.hist(TGI_DURATION, per, r1, 0.8, false);
        self.out
            .histogram("tgi_request_duration", &[], TGI_DURATION, false, h);
        self.out.add(
            "tgi_request_failure",
            &[("err", "validation".to_owned())],
            Counter,
            self.g.counter(1.0, 1e3, 0.5, 3.0, 1.0, 0.95),
        );
        let r1 = self.g.rng.range(100.0, 300.0);
        let h = self.g.hist(TGI_TOKENS, per, r1, 1.0, true);
        self.out
            .histogram("tgi_request_generated_tokens", &[], TGI_TOKENS, false, h);
        let r1 = self.g.rng.range(300.0, 1500.0);
        let h = self.g.hist(TGI_TOKENS, per, r1, 1.0, true);
        self.out
            .histogram("tgi_request_input_length", &[], TGI_TOKENS, false, h);
        let r1 = self.g.rng.range(0.01, 0.1);
        let h = self.g.hist(TGI_DURATION, per, r1, 1.2, false);
        self.out
            .histogram("tgi_request_queue_duration", &[], TGI_DURATION, false, h);
        self.out.add(
            "tgi_request_success",
            &[],
            Counter,
            self.g.counter(1e3, 1e7, per * 0.9, per * 1.1, 1.0, 0.0),
        );
    }

    fn triton(&mut self, region: &str, cluster: &str, ip: &str, gpus: usize) {
        let pod = self.pod_name("triton-inference-server");
        let base = self.base(region, cluster, format!("{ip}8002"), "triton");
        let mut base = base;
        base.push(("pod".into(), pod));
        self.start_target(Source::Triton, base);
        use MetricKind::{Counter, Gauge};
        let mut models: Vec<&str> = TRITON_MODELS.to_vec();
        for i in (1..models.len()).rev() {
            let j = (self.g.rng.next_u64() % (i as u64 + 1)) as usize;
            models.swap(i, j);
        }
        models.truncate(3);
        for model in &models {
            let l = [("model", (*model).to_owned()), ("version", "1".to_owned())];
            let per = self.g.rng.log_range(1.0, 200.0) * 15.0;
            let lat_us = self.g.rng.log_range(2e3, 2e5);
            self.out.add(
                "nv_inference_compute_infer_duration_us",
                &l,
                Counter,
                self.g
                    .counter(1e8, 1e12, per * lat_us * 0.6, per * lat_us * 0.8, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_compute_input_duration_us",
                &l,
                Counter,
                self.g.counter(1e6, 1e10, per * 50.0, per * 200.0, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_compute_output_duration_us",
                &l,
                Counter,
                self.g.counter(1e6, 1e10, per * 20.0, per * 100.0, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_count",
                &l,
                Counter,
                self.g.counter(1e5, 1e9, per * 0.9, per * 4.0, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_exec_count",
                &l,
                Counter,
                self.g.counter(1e5, 1e9, per * 0.3, per * 0.9, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_pending_request_count",
                &l,
                Gauge,
                self.g.int_gauge(0, 20, 3),
            );
            self.out.add(
                "nv_inference_queue_duration_us",
                &l,
                Counter,
                self.g
                    .counter(1e6, 1e10, per * 100.0, per * 5000.0, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_request_duration_us",
                &l,
                Counter,
                self.g
                    .counter(1e8, 1e12, per * lat_us * 0.9, per * lat_us * 1.1, 1.0, 0.0),
            );
            self.out.add(
                "nv_inference_request_failure",
                &l,
                Counter,
                self.g.counter(1.0, 1e3, 0.5, 2.0, 1.0, 0.97),
            );
            self.out.add(
                "nv_inference_request_success",
                &l,
                Counter,
                self.g.counter(1e5, 1e9, per * 0.9, per * 1.1, 1.0, 0.0),
            );
        }
        for g in 0..gpus.max(1) {
            let r = self.g.rng.next_u64();
            let l = [(
                "gpu_uuid",
                format!(
                    "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    r >> 32,
                    (r >> 16) & 0xffff,
                    r & 0xffff,
                    g,
                    r & 0xffff_ffff_ffff
                ),
            )];
            let r1 = self.g.rng.int(1_000_000_000, 100_000_000_000);
            let r2 = self.g.rng.range(900.0, 9000.0);
            self.out.add(
                "nv_energy_consumption",
                &l,
                Counter,
                Model::DecCounter {
                    ticks: r1,
                    rate: r2 * 1000.0,
                    decimals: 3,
                    p_idle: 0.0,
                },
            );
            self.out.add(
                "nv_gpu_memory_used_bytes",
                &l,
                Gauge,
                self.g.unit_gauge(1e9, 7e10, 5e8, 1048576.0),
            );
            self.out.add(
                "nv_gpu_power_usage",
                &l,
                Gauge,
                self.g.dec_gauge(60.0, 700.0, 40.0, 3),
            );
            self.out.add(
                "nv_gpu_utilization",
                &l,
                Gauge,
                self.g.dec_gauge(0.0, 1.0, 0.15, 2),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw sizes.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The Prometheus remote-write v1 `WriteRequest` protobuf of `batch` (uncompressed), one
/// `TimeSeries` per series entry, labels sorted by name with `__name__` among them.
pub fn encode_remote_write(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    let mut ts_msg = Vec::with_capacity(512);
    let mut label = Vec::with_capacity(256);
    for e in batch.entries() {
        ts_msg.clear();
        let mut labels: Vec<(&str, &str)> = e
            .series
            .labels()
            .iter()
            .map(|l| (&*l.name, &*l.value))
            .collect();
        labels.push(("__name__", e.series.name()));
        labels.sort_unstable();
        for (n, v) in labels {
            label.clear();
            put_bytes_field(&mut label, 0x0a, n.as_bytes());
            put_bytes_field(&mut label, 0x12, v.as_bytes());
            put_bytes_field(&mut ts_msg, 0x0a, &label);
        }
        for s in &e.samples {
            let mut sm = Vec::with_capacity(20);
            if s.value.to_bits() != 0 {
                sm.push(0x09);
                sm.extend_from_slice(&s.value.to_bits().to_le_bytes());
            }
            if s.timestamp_ms != 0 {
                sm.push(0x10);
                put_varint(&mut sm, s.timestamp_ms as u64);
            }
            put_bytes_field(&mut ts_msg, 0x12, &sm);
        }
        put_bytes_field(out, 0x0a, &ts_msg);
    }
}

/// Bytes of `batch` in the text exposition format with timestamps
/// (`name{a="b",...} value timestamp\n`).
pub fn text_exposition_len(batch: &Batch) -> usize {
    use std::fmt::Write;
    let mut line = String::with_capacity(512);
    let mut total = 0;
    for (series, _, s) in batch.iter() {
        line.clear();
        line.push_str(series.name());
        line.push('{');
        for (i, l) in series.labels().iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{}=\"{}\"", l.name, l.value);
        }
        let _ = writeln!(line, "}} {} {}", s.value, s.timestamp_ms);
        total += line.len();
    }
    total
}

#[cfg(test)]
mod tests {
    /// Same seed, same batches; every (series, timestamp) unique; timestamps advance 15 s a
    /// round; counters and histogram series never decrease.
    #[test]
    fn deterministic_unique_monotone() {
        use super::*;
        let mut a = Workload::new(1);
        let mut b = Workload::new(1);
        let mut last = std::collections::HashMap::new();
        for _ in 0..12 {
            let x = a.next_batch();
            assert_eq!(x, b.next_batch());
            assert_eq!(x.sample_count(), BATCH);
            for (s, k, smp) in x.iter() {
                assert!((5..=8).contains(&s.labels().len()), "{s:?}");
                if let Some((t, v)) = last.insert(s.clone(), (smp.timestamp_ms, smp.value)) {
                    assert_eq!(smp.timestamp_ms, t + SCRAPE_INTERVAL_MS);
                    if k != MetricKind::Gauge && s.name() != "node_time_seconds" {
                        assert!(smp.value >= v, "{s:?} {v} -> {}", smp.value);
                    }
                }
            }
        }
        assert_eq!(last.len(), SERIES);
    }
}
