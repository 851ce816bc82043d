//! Retry delays: exponential growth from backon's schedule, with full jitter on top, and the
//! backend's `Retry-After` honoured (up to a cap).

use std::time::Duration;

use backon::BackoffBuilder;

/// Retry delay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay. Default 100 ms.
    pub min: Duration,
    /// Largest delay, so a recovered backend is probed soon. Default 5 s (vmagent grows to
    /// 60 s and leaves a recovered backend idle for up to a minute).
    pub max: Duration,
    /// Longest `Retry-After` obeyed; longer ones are cut to this. Default 5 min.
    pub max_retry_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl BackoffConfig {
    pub(crate) fn schedule(&self) -> Schedule {
        let inner = backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Schedule {
            inner,
            max_retry_after: self.max_retry_after,
            max: self.max,
            rng: seed(),
        }
    }
}

/// The delays of one request's retries.
pub(crate) struct Schedule {
    inner: backon::ExponentialBackoff,
    max_retry_after: Duration,
    max: Duration,
    rng: u64,
}

fn seed() -> u64 {
    getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15) | 1
}

impl Schedule {
    /// The next delay: the backend's `Retry-After` when given, else a uniformly random
    /// delay in `[0, exponential step]` ("full jitter").
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.inner.next().unwrap_or(self.max);
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        step.mul_f64(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_cap_and_retry_after_wins() {
        let c = BackoffConfig {
            min: Duration::from_millis(10),
            max: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(2),
        };
        let mut s = c.schedule();
        for _ in 0..50 {
            assert!(s.next_delay(None) <= Duration::from_millis(200));
        }
        assert_eq!(
            s.next_delay(Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.next_delay(Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }
}
