//! A lock-free latency histogram (fixed exponential buckets) for figures taken on hot paths
//! (fsync, backend sends) and exported by the daemon's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, seconds: 100 µs doubling up to ~3.3 s (16 buckets), then +Inf.
pub const BOUNDS: [f64; 16] = {
    let mut b = [0.0; 16];
    let mut i = 0;
    let mut v = 0.0001;
    while i < 16 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// Counts of observations per bucket, their sum and count.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; 17],
    sum_nanos: AtomicU64,
}

/// A copy of a [`Latency`]: sum in seconds, count, and cumulative counts per upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Sum of all observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound in seconds, observations <= bound)`, cumulative, without +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Latency {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|&b| s <= b).unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The current figures.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(BOUNDS.len());
        for (i, b) in BOUNDS.iter().enumerate() {
            running += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*b, running));
        }
        let count = running + self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let l = Latency::default();
        l.observe(Duration::from_micros(50));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(10));
        let s = l.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(2));
        assert!((s.sum - 10.00305).abs() < 1e-9);
    }
}
