//! Send rate limits, so a drained backlog does not flatten the backend (governor).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;

use crate::sample::Batch;

/// A send rate limit per forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// At most this many samples per second.
    SamplesPerSecond(NonZeroU32),
    /// At most this many (uncompressed, estimated at 16 bytes per sample plus labels)
    /// bytes per second.
    BytesPerSecond(NonZeroU32),
}

pub(crate) struct Limiter {
    limit: RateLimit,
    inner: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .finish()
    }
}

fn cost(limit: RateLimit, batch: &Batch) -> u64 {
    match limit {
        RateLimit::SamplesPerSecond(_) => batch.sample_count() as u64,
        RateLimit::BytesPerSecond(_) => batch
            .entries()
            .iter()
            .map(|e| {
                let labels: usize = e
                    .series
                    .labels()
                    .iter()
                    .map(|l| l.name.len() + l.value.len())
                    .sum();
                (e.series.name().len() + labels + 16 * e.samples.len()) as u64
            })
            .sum(),
    }
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let per_sec = match limit {
            RateLimit::SamplesPerSecond(n) | RateLimit::BytesPerSecond(n) => n,
        };
        Self {
            limit,
            inner: RateLimiter::direct(Quota::per_second(per_sec)),
        }
    }

    /// Waits until `batch` may be sent. Costs above one second's quota are taken in
    /// one-second pieces. Err when asked to stop.
    pub(crate) async fn acquire(
        &self,
        batch: &Batch,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), ()> {
        let per_sec = match self.limit {
            RateLimit::SamplesPerSecond(n) | RateLimit::BytesPerSecond(n) => u64::from(n.get()),
        };
        let mut left = cost(self.limit, batch);
        let mut stop = stop.clone();
        while left > 0 {
            let take = left.min(per_sec) as u32;
            let n = NonZeroU32::new(take).expect("take is at least 1");
            tokio::select! {
                r = self.inner.until_n_ready(n) => { r.map_err(|_| ())?; }
                _ = stop.changed() => return Err(()),
            }
            left -= u64::from(take);
        }
        Ok(())
    }
}
