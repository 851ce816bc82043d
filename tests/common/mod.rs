//! Shared harness of the forwarder tests: real backend servers ([`servers`]), exact read-back
//! ([`query`]), a fault-injecting proxy ([`proxy`]) and deterministic data sets.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

pub mod brokers;
pub mod daemon;
pub mod http;
pub mod json;
pub mod process;
pub mod proxy;
pub mod query;
pub mod servers;

use std::path::Path;
use std::time::{Duration, Instant};

use metricspool::{Batch, Durability, MasterKey, MetricKind, Sample, Series, Spool, SpoolConfig};

pub use query::Samples;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

/// A spool in `dir` with a fixed key. `Durability::None` keeps appends fast; a process
/// crash (the crash test's SIGKILL) still loses nothing acknowledged.
pub fn open_spool(dir: &Path) -> Spool {
    let mut c = SpoolConfig::new(dir, MasterKey::from_bytes([7; 32]));
    c.log.durability = Durability::None;
    Spool::open(c).expect("the spool opens")
}

/// A deterministic data set: `series` gauges `metric{tenant=<tenant>, s=<i>, g=<i % groups>}`
/// with `per_series` samples each, `step_ms` apart from `start_ms`. The `g` label lets
/// read-back queries take the set in slices.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub metric: String,
    pub tenant: String,
    pub series: usize,
    pub per_series: usize,
    pub start_ms: i64,
    pub step_ms: i64,
    /// Distinguishes the values of data sets that share a series.
    pub seed: u64,
}

/// Groups of series (the `g` label).
pub const GROUPS: usize = 10;

impl DataSet {
    pub fn new(metric: &str, tenant: &str, series: usize, per_series: usize) -> Self {
        // A few hours back, aligned to a second; every sample stays in the past.
        let span = per_series as i64 * 1000;
        let start_ms = (now_ms() - span - 3 * 3_600_000) / 1000 * 1000;
        Self {
            metric: metric.to_owned(),
            tenant: tenant.to_owned(),
            series,
            per_series,
            start_ms,
            step_ms: 1000,
            seed: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.series * self.per_series
    }

    fn series_of(&self, s: usize) -> Series {
        Series::new(
            self.metric.as_str(),
            [
                ("tenant", self.tenant.clone()),
                ("s", s.to_string()),
                ("g", (s % GROUPS).to_string()),
            ],
        )
        .expect("a valid series")
    }

    /// Integral values below 2^53 divided by 4: exact in every backend's text format and in
    /// VictoriaMetrics' decimal encoding.
    pub fn value(&self, s: usize, i: usize) -> f64 {
        let n = (self.seed % 1000) * 10_000_000_000 + (s as u64) * 1_000_000 + i as u64;
        n as f64 / 4.0
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start_ms + i as i64 * self.step_ms
    }

    /// The set cut in appends of about `per_append` samples: each append holds a time slice
    /// of every series, so each series is appended in time order.
    pub fn batches(&self, per_append: usize) -> Vec<Batch> {
        let per = (per_append / self.series.max(1)).max(1);
        let series: Vec<Series> = (0..self.series).map(|s| self.series_of(s)).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.per_series {
            let end = (i + per).min(self.per_series);
            let mut b = Batch::new();
            for (s, ser) in series.iter().enumerate() {
                let samples = (i..end)
                    .map(|k| Sample::new(self.ts(k), self.value(s, k)))
                    .collect();
                b.push(ser.clone(), MetricKind::Gauge, samples);
            }
            out.push(b);
            i = end;
        }
        out
    }

    /// What a backend should hold, keyed like [`query::series_key`].
    pub fn expected(&self) -> Samples {
        self.expected_groups(0..GROUPS)
    }

    /// The expected samples of the series in groups `groups`.
    pub fn expected_groups(&self, groups: std::ops::Range<usize>) -> Samples {
        let mut out = Samples::new();
        for s in (0..self.series).filter(|s| groups.contains(&(s % GROUPS))) {
            let key = query::series_key(
                &self.metric,
                [
                    ("tenant", self.tenant.as_str()),
                    ("s", s.to_string().as_str()),
                    ("g", (s % GROUPS).to_string().as_str()),
                ],
            );
            let v = (0..self.per_series)
                .map(|i| (self.ts(i), self.value(s, i)))
                .collect();
            out.insert(key, v);
        }
        out
    }

    /// A PromQL / MetricsQL selector of this set (optionally one group).
    pub fn selector(&self, group: Option<usize>) -> String {
        match group {
            Some(g) => format!("{}{{tenant=\"{}\",g=\"{g}\"}}", self.metric, self.tenant),
            None => format!("{}{{tenant=\"{}\"}}", self.metric, self.tenant),
        }
    }
}

/// Polls `f` every `every` until it returns true or `timeout` passes; returns how long it
/// took, or `None` on timeout.
pub fn wait_until(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// [`wait_until`] for async tests.
pub async fn wait_until_async(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs blocking work (queries, server starts) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the blocking task finishes")
}
