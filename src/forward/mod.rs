//! Forwarders: one task per (tenant, backend) that reads batches from its durable cursor,
//! records them as in flight, sends them, and commits after the backend acknowledged.
//!
//! # Delivery guarantee
//!
//! Batch boundaries come from deterministic reads and are recorded (durably) before the
//! first send, so after a crash the same batch is resent. Every sample is sent at least
//! once; what makes a resend harmless is the backend's: Prometheus accepts a bit-identical
//! latest sample, InfluxDB overwrites the same point, VictoriaMetrics deduplicates with
//! `-dedup.minScrapeInterval` (without it a resend is stored twice). A rejection the backend
//! calls permanent moves the batch to the dead-letter log; nothing is dropped silently.
//!
//! # Ordering
//!
//! Cursor commits are always in offset order. For backends that need per-series timestamp
//! order (Prometheus-family without an out-of-order window) a batch is committed only after
//! every part of it was acknowledged, and the next batch starts after that, so for any series
//! an older batch is never sent after a newer one was acknowledged. Parallel requests
//! (`shards`) split a batch by series hash: a series always lands in the same shard. Backends
//! that accept out-of-order samples may have up to `max_in_flight` batches under way at once,
//! all recorded in flight before the first send and committed in order.

mod backoff;
pub mod dlq;
mod ratelimit;
pub mod routes;
mod stats;

use std::collections::VecDeque;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backoff::BackoffConfig;
pub use ratelimit::RateLimit;
pub use routes::{Forwarding, Route, TenantSelector};
pub use stats::{ForwarderStats, ForwarderStatsSnapshot};

use crate::backends::{Backend, Outcome, RejectKind, SendRequest};
use crate::error::{Error, Result};
use crate::sample::Batch;
use crate::spool::{StartAt, Tenant};
use crate::wal::{ReadBatch, ReadLimits};

/// When a forwarder cuts a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    /// Wait until `max_samples` are available or `linger` has passed since data became
    /// available, whichever comes first. Default, with a linger of 1 s.
    Batch {
        /// Longest wait for a full batch.
        linger: Duration,
    },
    /// Send as soon as data is durable.
    Streaming,
}

/// Settings of one forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Consumer (cursor) name; also names the dead-letter log. Required, unique per tenant.
    pub name: String,
    /// How batches are cut. Default `Batch { linger: 1 s }`.
    pub mode: BatchMode,
    /// Most samples per batch. Default 10,000; 1..=1,000,000.
    pub max_samples: usize,
    /// Stop a batch before it reads more than this many stored bytes. Default 4 MiB.
    pub max_bytes: u64,
    /// Parallel requests per batch, split by series hash. Default 1; 1..=64.
    pub shards: usize,
    /// Batches sent at once, committed in order. Only for backends that accept out-of-order
    /// samples; the others always send one batch at a time. Default 4; 1..=64.
    pub max_in_flight: usize,
    /// Retry delays. Default 100 ms doubling to 5 s, full jitter.
    pub backoff: BackoffConfig,
    /// Optional send rate limit. Default none.
    pub rate_limit: Option<RateLimit>,
    /// Where a new cursor starts. Default [`StartAt::Now`]; an existing cursor is kept.
    pub start: StartAt,
    /// Live lane: when more than this many samples wait, fresh data is forwarded by a second
    /// cursor while the backlog drains, and the two merge once the backlog is sent. Only for
    /// backends that accept out-of-order samples (VictoriaMetrics, InfluxDB, Prometheus or
    /// Mimir with an out-of-order window). Default none (strict offset order).
    pub live_lane: Option<u64>,
    /// A bounded run (a replay job): forward offsets below this, then finish. Default none
    /// (follow the log forever).
    pub until: Option<u64>,
    /// Only samples with `from <= timestamp < until` (ms) are read and sent; reads use the
    /// segments' time index, so records outside are never decrypted. Default none.
    pub time_window: Option<(i64, i64)>,
    /// The backend's time window: a sample older than this at send time is not sent but
    /// counted as too old (the backend would refuse it, and retrying cannot help). Default
    /// none; the daemon derives one per backend type (docs/replay.md).
    pub max_age: Option<Duration>,
}

impl ForwarderConfig {
    /// Defaults for everything but the name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mode: BatchMode::Batch {
                linger: Duration::from_secs(1),
            },
            max_samples: 10_000,
            max_bytes: 4 << 20,
            shards: 1,
            max_in_flight: 4,
            backoff: BackoffConfig::default(),
            rate_limit: None,
            start: StartAt::Now,
            live_lane: None,
            until: None,
            time_window: None,
            max_age: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| {
            Err(crate::InvalidInput::Batch(format!("forwarder {}: {m}", self.name)).into())
        };
        if !(1..=1_000_000).contains(&self.max_samples) {
            return bad("max_samples must be 1 to 1,000,000");
        }
        if !(1..=64).contains(&self.shards) {
            return bad("shards must be 1 to 64");
        }
        if !(1..=64).contains(&self.max_in_flight) {
            return bad("max_in_flight must be 1 to 64");
        }
        if self.live_lane.is_some() && self.until.is_some() {
            return bad("a bounded run (until) cannot have a live lane");
        }
        Ok(())
    }
}

/// A running forwarder.
#[derive(Debug)]
pub struct Forwarder {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    tenant: Arc<Tenant>,
    backend: Arc<dyn Backend>,
    config: ForwarderConfig,
    stats: Arc<ForwarderStats>,
    limiter: Option<ratelimit::Limiter>,
    shutdown: watch::Receiver<bool>,
}

/// The forwarder was asked to stop while a batch was unfinished; it stays in flight and is
/// resent after the restart.
struct Stopped;

impl Forwarder {
    /// Registers the cursor (if new) and starts forwarding `tenant` to `backend` on the
    /// current tokio runtime.
    pub fn spawn(
        tenant: Arc<Tenant>,
        backend: Arc<dyn Backend>,
        config: ForwarderConfig,
    ) -> Result<Self> {
        config.validate()?;
        if config.live_lane.is_some() && !backend.accepts_out_of_order() {
            return Err(crate::InvalidInput::Batch(format!(
                "forwarder {}: a live lane needs a backend that accepts out-of-order samples; {} does not",
                config.name,
                backend.kind()
            ))
            .into());
        }
        tenant.register_consumer(&config.name, config.start)?;
        let (tx, rx) = watch::channel(false);
        let stats = Arc::new(ForwarderStats::new(
            tenant.id().clone(),
            config.name.clone(),
            backend.kind(),
        ));
        let inner = Arc::new(Inner {
            limiter: config.rate_limit.map(ratelimit::Limiter::new),
            tenant,
            backend,
            config,
            stats,
            shutdown: rx,
        });
        let task = tokio::spawn(Arc::clone(&inner).run());
        Ok(Self {
            inner,
            shutdown: tx,
            task,
        })
    }

    /// Counters and lag.
    pub fn stats(&self) -> ForwarderStatsSnapshot {
        self.inner
            .stats
            .snapshot(self.inner.tenant.wal().end_offset())
    }

    /// The shared counters (for exporters).
    pub fn stats_handle(&self) -> Arc<ForwarderStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Sends dead letter `id` again. On success it is marked re-driven; a new permanent
    /// rejection creates a new dead letter (and also marks this one re-driven).
    pub async fn redrive(&self, id: u64) -> Result<bool> {
        let dl = self.inner.tenant.dead_letters(&self.inner.config.name)?;
        let d = Arc::clone(&dl);
        let found = tokio::task::spawn_blocking(move || d.get(id))
            .await
            .map_err(|_| Error::Closed)??;
        let Some((entry, batch)) = found else {
            return Ok(false);
        };
        let inner = Arc::clone(&self.inner);
        if inner
            .send_part(batch, entry.source.clone(), (0, 1), false)
            .await
            .is_err()
        {
            return Err(Error::Closed);
        }
        tokio::task::spawn_blocking(move || dl.mark_redriven(id))
            .await
            .map_err(|_| Error::Closed)??;
        Ok(true)
    }

    /// True once the forwarder's task ended: a bounded run (`until`) that committed its
    /// end, or a stopped forwarder.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the forwarder to stop without waiting for it.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stops the forwarder: a send under way finishes (bounded by the backend's timeout), an
    /// unfinished batch stays in flight for the next start. Waits at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            abort.abort();
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Closed)?
}

impl Inner {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs until asked to stop. A local failure (a read, a cursor commit, the dead-letter
    /// log) restarts the forwarder from its durable cursor after a pause, which resends what
    /// was in flight: the same path as a crash, so nothing is lost or skipped.
    async fn run(self: Arc<Self>) {
        let mut pause = Duration::from_secs(1);
        loop {
            match self.clone().forward().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(tenant = %self.tenant.id(), backend = %self.config.name, error = %e, retry_in = ?pause, "forwarder failed; restarting from its cursor");
                    self.stats.set_error(e.to_string());
                }
            }
            let mut stop = self.shutdown.clone();
            if self.stopping() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    async fn forward(self: Arc<Self>) -> Result<()> {
        let main = self.config.name.clone();
        loop {
            let live = self.live_cursor().await?;
            let outcome = match live {
                // A live lane exists: drain the backlog up to where it started, while it
                // forwards fresh data; then hand its position over to the main cursor.
                Some((live_name, split)) => {
                    let (pause_tx, pause_rx) = watch::channel(false);
                    let me = Arc::clone(&self);
                    let ln = live_name.clone();
                    let live_task =
                        tokio::spawn(async move { me.lane(&ln, None, Some(pause_rx)).await });
                    let backlog = self.lane(&main, Some(split), None).await;
                    let _ = pause_tx.send(true);
                    let live_end = live_task.await.map_err(|_| Error::Closed)??;
                    match (backlog?, live_end) {
                        (LaneEnd::Reached, LaneEnd::Paused) => {
                            self.hand_over(&live_name).await?;
                            continue;
                        }
                        _ => LaneEnd::Stopped,
                    }
                }
                None => self.lane(&main, self.config.until, None).await?,
            };
            match outcome {
                LaneEnd::SplitAt(split) => {
                    let t = Arc::clone(&self.tenant);
                    let name = format!("{main}{LIVE_SUFFIX}{split}");
                    blocking(move || t.register_consumer(&name, StartAt::Offset(split))).await?;
                    tracing::info!(tenant = %self.tenant.id(), backend = %main, split, "backlog large: fresh data now goes through a live lane");
                }
                _ => return Ok(()),
            }
        }
    }

    /// The live lane's cursor name and split offset, if one exists.
    async fn live_cursor(&self) -> Result<Option<(String, u64)>> {
        let t = Arc::clone(&self.tenant);
        let prefix = format!("{}{LIVE_SUFFIX}", self.config.name);
        blocking(move || {
            Ok(t.cursors().list()?.into_iter().find_map(|(n, _)| {
                let split = n.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, split))
            }))
        })
        .await
    }

    /// The backlog reached the split: the main cursor takes the live lane's position, in one
    /// durable step.
    async fn hand_over(&self, live: &str) -> Result<()> {
        let t = Arc::clone(&self.tenant);
        let (main, live) = (self.config.name.clone(), live.to_owned());
        let state = blocking(move || t.cursors().replace(&main, &live)).await?;
        self.stats.set_committed(state.committed);
        tracing::info!(tenant = %self.tenant.id(), backend = %self.config.name, at = state.committed, "backlog drained: live lane merged back");
        Ok(())
    }

    /// Forwards with cursor `cursor` until `stop_at` (exclusive) is committed, a pause is
    /// asked for, a live lane is needed, or the forwarder stops.
    async fn lane(
        self: &Arc<Self>,
        cursor: &str,
        stop_at: Option<u64>,
        pause: Option<watch::Receiver<bool>>,
    ) -> Result<LaneEnd> {
        let t = Arc::clone(&self.tenant);
        let name = cursor.to_owned();
        let state = blocking(move || t.cursors().get(&name)?.ok_or(Error::Closed)).await?;
        let is_main = cursor == self.config.name;
        if is_main {
            self.stats.set_committed(state.committed);
        }
        // Batches recorded before a crash are resent exactly as they were.
        for r in state.in_flight() {
            let read = self.read_exact(r.clone()).await?;
            if self.deliver(read, true).await.is_err() {
                return self.stopped();
            }
            self.commit(cursor, r.end).await?;
        }
        let mut next = state.next_read();
        // The read of the next batch, started while the current one is sent (reads are
        // deterministic, so it is the read the loop would make).
        let mut prefetched: Option<(u64, JoinHandle<Result<ReadBatch>>)> = None;
        // Batches being sent, oldest first; committed strictly in this order.
        let mut sending: VecDeque<(u64, JoinHandle<Result<(), Stopped>>)> = VecDeque::new();
        let window = self.in_flight_window();
        loop {
            while sending.front().is_some_and(|(_, h)| h.is_finished()) {
                if let Some(end) = self.settle_front(cursor, &mut sending).await? {
                    return Ok(end);
                }
            }
            let settle_all =
                stop_at.is_some_and(|p| next >= p) || pause.as_ref().is_some_and(|p| *p.borrow());
            let must_wait = sending.len() >= window
                || (!sending.is_empty() && self.tenant.wal().end_offset() <= next);
            if settle_all || must_wait {
                if sending.is_empty() {
                    return Ok(if stop_at.is_some_and(|p| next >= p) {
                        LaneEnd::Reached
                    } else {
                        LaneEnd::Paused
                    });
                }
                if let Some(end) = self.settle_front(cursor, &mut sending).await? {
                    return Ok(end);
                }
                continue;
            }
            if !self.wait_for_data(next, pause.clone()).await {
                if self.stopping() {
                    return Ok(LaneEnd::Stopped);
                }
                continue;
            }
            if let Some(split) = self.split_point(is_main && stop_at.is_none(), next) {
                while !sending.is_empty() {
                    if let Some(end) = self.settle_front(cursor, &mut sending).await? {
                        return Ok(end);
                    }
                }
                return Ok(LaneEnd::SplitAt(split));
            }
            let mut read = match prefetched.take() {
                Some((from, h)) if from == next => h.await.map_err(|_| Error::Closed)??,
                _ => self.read(next).await?,
            };
            if let Some(p) = stop_at {
                read = truncate(read, p);
            }
            if read.end <= next {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let end = read.end;
            let t = Arc::clone(&self.tenant);
            let name = cursor.to_owned();
            blocking(move || t.begin_batch(&name, end)).await?;
            if self.prefetch_worthwhile(end, stop_at) {
                prefetched = Some((end, self.spawn_read(end)));
            }
            let me = Arc::clone(self);
            sending.push_back((
                end,
                tokio::spawn(async move { me.deliver(read, false).await }),
            ));
            next = end;
        }
    }

    /// Batches sent at once: the configured window for backends that accept out-of-order
    /// samples, one for the others (an older batch of a series must never follow a newer
    /// acknowledged one).
    fn in_flight_window(&self) -> usize {
        if self.backend.accepts_out_of_order() {
            self.config.max_in_flight
        } else {
            1
        }
    }

    /// Waits for the oldest batch being sent and commits it. `Some` when the lane must end.
    async fn settle_front(
        &self,
        cursor: &str,
        sending: &mut VecDeque<(u64, JoinHandle<Result<(), Stopped>>)>,
    ) -> Result<Option<LaneEnd>> {
        let Some((end, handle)) = sending.pop_front() else {
            return Ok(None);
        };
        match handle.await {
            Ok(Ok(())) => {
                self.commit(cursor, end).await?;
                Ok(None)
            }
            // The batch (and every later one) stays in flight and is resent on restart.
            _ => self.stopped().map(Some),
        }
    }

    /// A batch could not be settled: fine when stopping (it stays in flight), a failure
    /// otherwise (the dead-letter log could not store it, or a send task died).
    fn stopped(&self) -> Result<LaneEnd> {
        if self.stopping() {
            return Ok(LaneEnd::Stopped);
        }
        Err(Error::Database(
            "a batch could not be settled (dead-letter log failure); it stays in flight".into(),
        ))
    }

    /// Where a live lane should start, when the main lane's backlog passed the threshold.
    fn split_point(&self, eligible: bool, next: u64) -> Option<u64> {
        let threshold = self.config.live_lane?;
        let end = self.tenant.wal().end_offset();
        (eligible && end - next > threshold).then_some(end)
    }

    async fn commit(&self, cursor: &str, end: u64) -> Result<()> {
        let t = Arc::clone(&self.tenant);
        let name = cursor.to_owned();
        blocking(move || t.commit(&name, end)).await?;
        if cursor == self.config.name {
            self.stats.set_committed(end);
        }
        Ok(())
    }

    async fn read(&self, from: u64) -> Result<ReadBatch> {
        self.spawn_read(from).await.map_err(|_| Error::Closed)?
    }

    fn spawn_read(&self, from: u64) -> JoinHandle<Result<ReadBatch>> {
        let t = Arc::clone(&self.tenant);
        let limits = ReadLimits {
            max_samples: self.config.max_samples,
            max_bytes: self.config.max_bytes,
        };
        let window = self.config.time_window;
        tokio::task::spawn_blocking(move || match window {
            Some((lo, hi)) => t.wal().read_time_range(lo, hi, from, limits),
            None => t.read_from(from, limits),
        })
    }

    /// True when the batch after `end` can be read now, during the current send, without
    /// changing where it is cut: data past `end` is durable (in batch mode, a full batch of
    /// it, so the linger would not wait) and `end` is short of the lane's stop.
    fn prefetch_worthwhile(&self, end: u64, stop_at: Option<u64>) -> bool {
        let available = self.tenant.wal().end_offset().saturating_sub(end);
        let enough = match self.config.mode {
            BatchMode::Streaming => available > 0,
            BatchMode::Batch { .. } => available >= self.config.max_samples as u64,
        };
        enough && stop_at.is_none_or(|p| end < p)
    }

    /// Reads exactly `[r.start, r.end)`: what a batch recorded in flight held.
    async fn read_exact(&self, r: Range<u64>) -> Result<ReadBatch> {
        let t = Arc::clone(&self.tenant);
        let limits = ReadLimits {
            max_samples: (r.end - r.start) as usize,
            max_bytes: u64::MAX,
        };
        let window = self.config.time_window;
        blocking(move || match window {
            // The same filtered samples of [start, end) the first read returned.
            Some((lo, hi)) => Ok(truncate(
                t.wal().read_time_range(lo, hi, r.start, limits)?,
                r.end,
            )),
            None => t.read_from(r.start, limits),
        })
        .await
    }

    /// Waits until data past `next` is readable (and, in batch mode, a full batch or the
    /// linger time). False when asked to stop.
    async fn wait_for_data(&self, next: u64, pause: Option<watch::Receiver<bool>>) -> bool {
        let mut end_rx = self.tenant.wal().subscribe();
        let mut stop = self.shutdown.clone();
        let (_keep, mut pause) = match pause {
            Some(p) => (None, p),
            None => {
                let (tx, rx) = watch::channel(false);
                (Some(tx), rx)
            }
        };
        loop {
            if self.stopping() || *pause.borrow() {
                return false;
            }
            if *end_rx.borrow_and_update() > next {
                break;
            }
            tokio::select! {
                r = end_rx.changed() => if r.is_err() { return false },
                _ = stop.changed() => {}
                _ = pause.changed() => {}
            }
        }
        if let BatchMode::Batch { linger } = self.config.mode {
            let deadline = tokio::time::Instant::now() + linger;
            // A bounded run never waits for data past its end.
            let wanted =
                (next + self.config.max_samples as u64).min(self.config.until.unwrap_or(u64::MAX));
            while *end_rx.borrow_and_update() < wanted {
                tokio::select! {
                    r = end_rx.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => return false,
                    _ = pause.changed() => return false,
                }
            }
        }
        !self.stopping() && !*pause.borrow()
    }

    /// Sends every part of a batch; all must be settled (delivered, or dead-lettered).
    async fn deliver(self: &Arc<Self>, mut read: ReadBatch, resend: bool) -> Result<(), Stopped> {
        if let Some(age) = self.config.max_age {
            read.batch = self.drop_too_old(read.batch, age);
        }
        if read.batch.is_empty() {
            return Ok(());
        }
        self.stats
            .set_oldest_unsent(read.batch.time_range().map(|(lo, _)| lo));
        let offsets = read.start..read.end;
        let parts = shard(read.batch, self.config.shards);
        let n = parts.len() as u32;
        let mut set = tokio::task::JoinSet::new();
        for (i, part) in parts.into_iter().enumerate() {
            let me = Arc::clone(self);
            let offsets = offsets.clone();
            set.spawn(async move { me.send_part(part, offsets, (i as u32, n), resend).await });
        }
        let mut result = Ok(());
        while let Some(r) = set.join_next().await {
            if !matches!(r, Ok(Ok(()))) {
                result = Err(Stopped);
            }
        }
        self.stats.set_oldest_unsent(None);
        result
    }

    /// Leaves out (and counts) the samples older than the backend's time window: the backend
    /// would refuse them, and retrying cannot make them younger.
    fn drop_too_old(&self, batch: Batch, age: Duration) -> Batch {
        let cutoff =
            crate::now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        if batch.time_range().is_none_or(|(lo, _)| lo >= cutoff) {
            return batch;
        }
        let before = batch.sample_count();
        let mut kept = Batch::new();
        for e in batch.into_entries() {
            let samples: Vec<_> = e
                .samples
                .into_iter()
                .filter(|s| s.timestamp_ms >= cutoff)
                .collect();
            if !samples.is_empty() {
                kept.push(e.series, e.kind, samples);
            }
        }
        let dropped = (before - kept.sample_count()) as u64;
        self.stats.too_old(dropped);
        tracing::warn!(tenant = %self.tenant.id(), backend = %self.config.name, samples = dropped, "samples older than the backend's max_age were not sent");
        kept
    }

    /// Sends one part until it is delivered or dead-lettered.
    async fn send_part(
        self: &Arc<Self>,
        batch: Batch,
        offsets: Range<u64>,
        part: (u32, u32),
        resend: bool,
    ) -> Result<(), Stopped> {
        let mut resend = resend;
        let mut backoff = self.config.backoff.schedule();
        let samples = batch.sample_count() as u64;
        loop {
            if let Some(l) = &self.limiter {
                l.acquire(&batch, &self.shutdown)
                    .await
                    .map_err(|_| Stopped)?;
            }
            let req = SendRequest {
                tenant: self.tenant.id(),
                batch: &batch,
                offsets: offsets.clone(),
                part,
                resend,
            };
            let started = std::time::Instant::now();
            let outcome = self.backend.send(req).await;
            self.stats.sent(started.elapsed());
            match outcome {
                Outcome::Delivered { bytes, skipped } => {
                    self.stats.delivered(samples - skipped.min(samples), bytes);
                    if skipped > 0 {
                        self.stats.unsupported(skipped);
                        tracing::warn!(tenant = %self.tenant.id(), backend = %self.config.name, skipped, "samples the backend cannot represent were left out");
                    }
                    return Ok(());
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                    detail,
                } => {
                    self.stats.retry(reason, detail.clone());
                    tracing::debug!(tenant = %self.tenant.id(), backend = %self.config.name, reason = reason.as_str(), %detail, "send failed, retrying");
                    resend |= reason.is_ambiguous();
                    let delay = backoff.next_delay(retry_after);
                    let mut stop = self.shutdown.clone();
                    if self.stopping() {
                        return Err(Stopped);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return Err(Stopped),
                    }
                }
                Outcome::Rejected {
                    kind: RejectKind::Duplicate,
                    ..
                } if resend => {
                    self.stats.already_delivered(samples);
                    return Ok(());
                }
                Outcome::Rejected {
                    kind: RejectKind::TooLarge,
                    ..
                } if batch.sample_count() > 1 => {
                    let half = batch.sample_count() / 2;
                    let (a, b) = (
                        batch.slice(0, half),
                        batch.slice(half, batch.sample_count()),
                    );
                    let sub = |i: u32| (part.0 * 2 + i, part.1 * 2);
                    Box::pin(self.send_part(a, offsets.clone(), sub(0), resend)).await?;
                    return Box::pin(self.send_part(b, offsets, sub(1), resend)).await;
                }
                Outcome::Rejected {
                    kind,
                    status,
                    reason,
                } => {
                    return self.dead_letter(batch, offsets, kind, status, reason).await;
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        batch: Batch,
        offsets: Range<u64>,
        kind: RejectKind,
        status: Option<u16>,
        reason: String,
    ) -> Result<(), Stopped> {
        let samples = batch.sample_count() as u64;
        tracing::warn!(tenant = %self.tenant.id(), backend = %self.config.name, ?kind, ?status, %reason, samples, "batch moved to the dead-letter log");
        self.stats.dead_lettered(samples, reason.clone());
        let t = Arc::clone(&self.tenant);
        let name = self.config.name.clone();
        let stored = blocking(move || {
            t.dead_letters(&name)?
                .add(&batch, offsets, kind, status, &reason)
        })
        .await;
        match stored {
            Ok(_) => Ok(()),
            Err(e) => {
                // Not stored: keep the batch in flight rather than lose it.
                tracing::error!(tenant = %self.tenant.id(), backend = %self.config.name, error = %e, "dead-letter log failed; the batch stays in flight");
                self.stats.set_error(e.to_string());
                Err(Stopped)
            }
        }
    }
}

/// How a lane ended.
enum LaneEnd {
    /// The forwarder is stopping.
    Stopped,
    /// The backlog lane committed up to its split point.
    Reached,
    /// The live lane paused at a batch boundary, as asked.
    Paused,
    /// The main lane's backlog passed the threshold: start a live lane at this offset.
    SplitAt(u64),
}

/// Marks live-lane cursors: `<name>.live@<split offset>`.
const LIVE_SUFFIX: &str = ".live@";

/// Drops the samples at or past `limit` from a read (a backlog lane must not send what the
/// live lane sends).
fn truncate(read: ReadBatch, limit: u64) -> ReadBatch {
    if read.end <= limit {
        return read;
    }
    let keep = read.offsets().take_while(|&o| o < limit).count();
    ReadBatch {
        start: read.start,
        end: limit.max(read.start),
        batch: read.batch.slice(0, keep),
        runs: read
            .runs
            .iter()
            .filter(|r| r.start < limit)
            .map(|r| r.start..r.end.min(limit))
            .collect(),
        skipped: read.skipped,
    }
}

/// Splits a batch into `n` parts by series hash (deterministically). Empty parts are dropped.
fn shard(batch: Batch, n: usize) -> Vec<Batch> {
    if n <= 1 {
        return vec![batch];
    }
    let mut parts = vec![Batch::new(); n];
    for e in batch.into_entries() {
        let mut h = DefaultHasher::new();
        e.series.hash(&mut h);
        let i = (h.finish() % n as u64) as usize;
        parts[i].push(e.series, e.kind, e.samples);
    }
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{MetricKind, Sample, Series};

    #[test]
    fn sharding_keeps_every_series_in_one_part() {
        let mut b = Batch::new();
        for i in 0..100 {
            let s = Series::new("m", [("i", format!("{}", i % 10))]).expect("valid");
            b.push_one(s, MetricKind::Gauge, Sample::new(i, 0.0));
        }
        let parts = shard(b, 4);
        assert_eq!(parts.iter().map(Batch::sample_count).sum::<usize>(), 100);
        for (i, p) in parts.iter().enumerate() {
            for (j, q) in parts.iter().enumerate() {
                if i != j {
                    assert!(p.iter().all(|(s, _, _)| q.iter().all(|(t, _, _)| s != t)));
                }
            }
        }
    }
}
