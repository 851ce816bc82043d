//! Replay jobs: send a range of a tenant's log to one backend again, without moving that
//! backend's live cursor.
//!
//! A job is a file `tenants/<tenant>/replay/<name>.json` (docs/format.md) plus a cursor named
//! `replay.<name>` registered at the range's first offset. It runs as an ordinary
//! [`Forwarder`] with that cursor, bounded by `until` and filtered by a time window, so it
//! uses the backend's batching, rate limit, backoff and dead letters (its own dead-letter log,
//! `replay.<name>`), and its delivery guarantee: at least once, exactly once on a backend
//! that deduplicates. While the job runs its cursor holds retention back; when the job is
//! done or cancelled the cursor is removed and the file says so.
//!
//! # Invariants
//!
//! - The job file is written (temp file, fsync, rename, directory fsync) before its cursor
//!   is registered, and never changes its range or window afterwards: a resumed job reads
//!   exactly the batches the interrupted one recorded in flight.
//! - A sample older than the backend's `max_age` is never sent. Those the window excludes
//!   when the job is created are counted up front (`too_old_at_start`); those that age out
//!   while the job runs are counted when they would have been sent.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backends::Backend;
use crate::error::{Error, Result};
use crate::forward::{Forwarder, ForwarderConfig};
use crate::spool::{StartAt, Tenant};
use crate::wal::ReadLimits;

/// The `format` field of a job file.
pub const JOB_FORMAT: &str = "metricspool-replay-job";
/// The job file version this build writes and reads.
pub const JOB_VERSION: u32 = 1;
/// Cursor names of replay jobs start with this.
pub const CURSOR_PREFIX: &str = "replay.";
/// Longest job name, in bytes.
pub const MAX_NAME: usize = 64;

/// One end of a replay range: an offset, or a time (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A log offset.
    Offset(u64),
    /// A sample timestamp, ms.
    Time(i64),
}

impl Bound {
    /// Digits are an offset; anything else must be an RFC 3339 time.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Bound::Offset)
                .map_err(|e| format!("{s}: {e}"));
        }
        let t = humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("{s:?}: not an offset or RFC 3339 time: {e}"))?;
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("{s}: before 1970"))?
            .as_millis();
        i64::try_from(ms)
            .map(Bound::Time)
            .map_err(|e| e.to_string())
    }
}

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Job name; default `<backend>-<created ms>`.
    pub name: Option<String>,
    /// The backend (route) name.
    pub backend: String,
    /// Start; default the oldest retained sample.
    pub from: Option<Bound>,
    /// End, exclusive; default the log end when the job is created.
    pub until: Option<Bound>,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Not finished: resumed at start.
    Running,
    /// Every offset of the range was committed.
    Done,
    /// Cancelled by the operator.
    Cancelled,
}

/// A durable replay job (the job file's content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayJob {
    /// Always [`JOB_FORMAT`].
    pub format: String,
    /// Always [`JOB_VERSION`].
    pub version: u32,
    /// Job name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Backend (route) name.
    pub backend: String,
    /// First offset of the range.
    pub from: u64,
    /// One past the last offset of the range.
    pub until: u64,
    /// Only samples with `window.0 <= timestamp < window.1` are sent (ms); fixed at creation.
    pub window: Option<(i64, i64)>,
    /// The backend's `max_age` when the job was created, ms.
    pub max_age_ms: Option<u64>,
    /// Samples of the requested range already older than `max_age` at creation: not sent.
    pub too_old_at_start: u64,
    /// Time range of those samples (ms), if any.
    pub too_old_range: Option<(i64, i64)>,
    /// State.
    pub state: JobState,
    /// Creation time, ms.
    pub created_ms: i64,
    /// When it finished or was cancelled, ms.
    pub finished_ms: Option<i64>,
    /// Samples acknowledged by the backend, as of the last checkpoint (a crash may lose the
    /// count of the last few seconds, never data).
    pub sent_samples: u64,
    /// Samples that aged past `max_age` while the job ran, as of the last checkpoint.
    pub too_old_samples: u64,
    /// Samples moved to the job's dead-letter log, as of the last checkpoint.
    pub dead_letter_samples: u64,
}

impl ReplayJob {
    /// The job's cursor (consumer) name.
    pub fn cursor(&self) -> String {
        cursor_name(&self.name)
    }

    /// The offset range.
    pub fn range(&self) -> Range<u64> {
        self.from..self.until
    }

    /// The forwarder settings of this job: the route's, bounded and filtered.
    pub fn forwarder_config(&self, route: &ForwarderConfig) -> ForwarderConfig {
        let mut c = route.clone();
        c.name = self.cursor();
        c.start = StartAt::Offset(self.from);
        c.until = Some(self.until);
        c.time_window = self.window;
        c.live_lane = None;
        c.max_age = self.max_age_ms.map(Duration::from_millis);
        c
    }

    fn same_request(&self, other: &ReplayJob) -> bool {
        (self.backend == other.backend && self.from == other.from && self.until == other.until)
            && self.window.map(|w| w.1) == other.window.map(|w| w.1)
    }
}

/// The cursor name of job `name`.
pub fn cursor_name(name: &str) -> String {
    format!("{CURSOR_PREFIX}{name}")
}

fn invalid(tenant: &Tenant, job: &str, reason: impl Into<String>) -> Error {
    Error::Replay {
        tenant: tenant.id().to_string(),
        job: job.to_owned(),
        reason: reason.into(),
    }
}

fn check_job_name(tenant: &Tenant, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            tenant,
            name,
            "a job name is 1 to 64 characters of A-Z a-z 0-9 - _ . and does not start with a dot",
        ))
    }
}

/// The directory holding a tenant's job files.
pub fn jobs_dir(tenant: &Tenant) -> PathBuf {
    let wal = tenant.wal().dir();
    wal.parent().unwrap_or(wal).join("replay")
}

fn job_path(tenant: &Tenant, name: &str) -> PathBuf {
    jobs_dir(tenant).join(format!("{name}.json"))
}

/// The job named `name`, if its file exists.
pub fn load(tenant: &Tenant, name: &str) -> Result<Option<ReplayJob>> {
    check_job_name(tenant, name)?;
    read_job(&job_path(tenant, name))
}

fn read_job(path: &Path) -> Result<Option<ReplayJob>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let corrupt = |reason: String| Error::io(path, std::io::Error::other(reason));
    let job: ReplayJob = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not a replay job file: {e}")))?;
    if job.format != JOB_FORMAT || job.version != JOB_VERSION {
        return Err(corrupt(format!(
            "replay job format {:?} version {}; this build reads {JOB_FORMAT:?} version {JOB_VERSION}",
            job.format, job.version
        )));
    }
    Ok(Some(job))
}

/// Every job of a tenant, by name.
pub fn list(tenant: &Tenant) -> Result<Vec<ReplayJob>> {
    let dir = jobs_dir(tenant);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut jobs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        if path.extension().is_some_and(|x| x == "json")
            && let Some(j) = read_job(&path)?
        {
            jobs.push(j);
        }
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(jobs)
}

/// Writes the job file durably: temp file, fsync, rename, directory fsync.
fn store(tenant: &Tenant, job: &ReplayJob) -> Result<()> {
    use std::io::Write;
    let dir = jobs_dir(tenant);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = job_path(tenant, &job.name);
    let tmp = dir.join(format!("{}.json.tmp", job.name));
    let text = serde_json::to_vec_pretty(job).map_err(|e| Error::io(&path, e.into()))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(&dir, e))
}

/// Resolves a request into a job (offsets from the time index, the window, the samples too
/// old for the backend), without storing it. Reads (and decrypts) only the records of the
/// range that are too old, to count them.
pub fn plan(tenant: &Tenant, req: &ReplayRequest, max_age: Option<Duration>) -> Result<ReplayJob> {
    let now = crate::now_ms();
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{now}", req.backend));
    check_job_name(tenant, &name)?;
    crate::cursor::check_name(&cursor_name(&name))?;
    let wal = tenant.wal();
    let (mut from, mut until) = (wal.first_offset(), wal.end_offset());
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    match req.from {
        Some(Bound::Offset(o)) => from = from.max(o),
        Some(Bound::Time(ts)) => {
            lo = ts;
            from = from.max(wal.first_offset_at_or_after(ts));
        }
        None => {}
    }
    match req.until {
        Some(Bound::Offset(o)) => until = until.min(o),
        Some(Bound::Time(ts)) => {
            hi = ts;
            until = until.min(wal.end_offset_before(ts));
        }
        None => {}
    }
    until = until.max(from);
    if lo >= hi {
        return Err(invalid(
            tenant,
            &name,
            "the time range is empty (from >= until)",
        ));
    }
    let max_age_ms = max_age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
    let cutoff = max_age_ms.map(|a| now.saturating_sub(i64::try_from(a).unwrap_or(i64::MAX)));
    let (too_old, too_old_range) = match cutoff {
        Some(c) if c > lo => count_in(tenant, from..until, (lo, c.min(hi)))?,
        _ => (0, None),
    };
    if let Some(c) = cutoff {
        lo = lo.max(c);
    }
    let window = (lo != i64::MIN || hi != i64::MAX).then_some((lo, hi));
    Ok(ReplayJob {
        format: JOB_FORMAT.to_owned(),
        version: JOB_VERSION,
        name,
        tenant: tenant.id().to_string(),
        backend: req.backend.clone(),
        from,
        until,
        window,
        max_age_ms,
        too_old_at_start: too_old,
        too_old_range,
        state: JobState::Running,
        created_ms: now,
        finished_ms: None,
        sent_samples: 0,
        too_old_samples: 0,
        dead_letter_samples: 0,
    })
}

/// Samples of `offsets` with `window.0 <= timestamp < window.1`, and their time range.
fn count_in(
    tenant: &Tenant,
    offsets: Range<u64>,
    window: (i64, i64),
) -> Result<(u64, Option<(i64, i64)>)> {
    let limits = ReadLimits {
        max_samples: 1 << 20,
        max_bytes: 64 << 20,
    };
    let (mut at, mut n, mut range) = (offsets.start, 0u64, None::<(i64, i64)>);
    while at < offsets.end {
        let r = tenant
            .wal()
            .read_time_range(window.0, window.1, at, limits)?;
        let kept = r.offsets().take_while(|&o| o < offsets.end).count();
        let part = r.batch.slice(0, kept);
        n += kept as u64;
        if let Some((a, b)) = part.time_range() {
            range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
        if r.end <= at {
            break;
        }
        at = r.end;
    }
    Ok((n, range))
}

/// Creates a job, or finds the unfinished job of the same name and range to resume. The job
/// file is durable before the cursor is registered.
pub fn create(
    tenant: &Tenant,
    req: &ReplayRequest,
    max_age: Option<Duration>,
) -> Result<ReplayJob> {
    let planned = plan(tenant, req, max_age)?;
    if let Some(existing) = load(tenant, &planned.name)? {
        return match existing.state {
            JobState::Running if req.from.is_none() && req.until.is_none() => Ok(existing),
            JobState::Running if existing.same_request(&planned) => Ok(existing),
            JobState::Running => Err(invalid(
                tenant,
                &planned.name,
                "a job of this name with another range is unfinished: cancel it or pick another name",
            )),
            s => Err(invalid(
                tenant,
                &planned.name,
                format!("a job of this name exists ({s:?}); pick another name"),
            )),
        };
    }
    store(tenant, &planned)?;
    tenant.register_consumer(&planned.cursor(), StartAt::Offset(planned.from))?;
    if planned.too_old_at_start > 0 {
        tracing::warn!(tenant = %tenant.id(), job = %planned.name, samples = planned.too_old_at_start, range = ?planned.too_old_range, "replay: samples older than the backend's max_age will not be sent");
    }
    Ok(planned)
}

/// Marks a job finished (`Done` or `Cancelled`) and removes its cursor, so retention no
/// longer keeps data for it. The file is updated first: a crash in between leaves a stale
/// cursor that the next [`finish`] (or resume) removes.
pub fn finish(tenant: &Tenant, job: &mut ReplayJob, state: JobState) -> Result<()> {
    job.state = state;
    job.finished_ms = Some(crate::now_ms());
    store(tenant, job)?;
    tenant.cursors().remove(&job.cursor())?;
    Ok(())
}

/// Removes the cursors of finished jobs (left by a crash between the two steps of
/// [`finish`]) and returns the unfinished jobs, to resume.
pub fn unfinished(tenant: &Tenant) -> Result<Vec<ReplayJob>> {
    let mut out = Vec::new();
    for job in list(tenant)? {
        if job.state == JobState::Running {
            out.push(job);
        } else {
            tenant.cursors().remove(&job.cursor())?;
        }
    }
    Ok(out)
}

/// Cancels an unfinished job (its forwarder must be stopped first).
pub fn cancel(tenant: &Tenant, name: &str) -> Result<ReplayJob> {
    let mut job = load(tenant, name)?.ok_or_else(|| invalid(tenant, name, "no such job"))?;
    if job.state == JobState::Running {
        finish(tenant, &mut job, JobState::Cancelled)?;
    }
    Ok(job)
}

/// A job's progress for `replay status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayStatus {
    /// The job as stored (counters as of the last checkpoint, or live when running here).
    #[serde(flatten)]
    pub job: ReplayJob,
    /// Offsets below this are done.
    pub committed: u64,
    /// Fraction of the offset range done, 0 to 1.
    pub progress: f64,
}

/// The status of `job`, with its cursor's position.
pub fn status(tenant: &Tenant, job: &ReplayJob) -> Result<ReplayStatus> {
    let committed = match job.state {
        JobState::Done => job.until,
        _ => tenant
            .cursors()
            .get(&job.cursor())?
            .map_or(job.from, |c| c.committed),
    }
    .clamp(job.from, job.until.max(job.from));
    let len = job.until.saturating_sub(job.from);
    let progress = if len == 0 {
        1.0
    } else {
        (committed - job.from) as f64 / len as f64
    };
    Ok(ReplayStatus {
        job: job.clone(),
        committed,
        progress,
    })
}

/// A running job: its forwarder and the counters it started from.
#[derive(Debug)]
pub struct ReplayRun {
    tenant: Arc<Tenant>,
    job: ReplayJob,
    forwarder: Forwarder,
    base: (u64, u64, u64),
}

impl ReplayRun {
    /// Starts (or resumes) `job` with a forwarder over `backend`, configured from the route.
    pub fn start(
        tenant: Arc<Tenant>,
        backend: Arc<dyn Backend>,
        route: &ForwarderConfig,
        job: ReplayJob,
    ) -> Result<Self> {
        let forwarder =
            Forwarder::spawn(Arc::clone(&tenant), backend, job.forwarder_config(route))?;
        let base = (
            job.sent_samples,
            job.too_old_samples,
            job.dead_letter_samples,
        );
        Ok(Self {
            tenant,
            job,
            forwarder,
            base,
        })
    }

    /// The job with live counters.
    pub fn job(&self) -> ReplayJob {
        let s = self.forwarder.stats();
        let mut j = self.job.clone();
        j.sent_samples = self.base.0 + s.delivered_samples + s.already_delivered_samples;
        j.too_old_samples = self.base.1 + s.too_old_samples;
        j.dead_letter_samples = self.base.2 + s.dead_letter_samples;
        j
    }

    /// Live status.
    pub fn status(&self) -> Result<ReplayStatus> {
        status(&self.tenant, &self.job())
    }

    /// True when the forwarder committed the whole range.
    pub fn is_complete(&self) -> Result<bool> {
        let c = self.tenant.cursors().get(&self.job.cursor())?;
        Ok(self.forwarder.is_finished() && c.is_none_or(|c| c.committed >= self.job.until))
    }

    /// Writes the live counters to the job file.
    pub fn checkpoint(&self) -> Result<()> {
        store(&self.tenant, &self.job())
    }

    /// Waits until the range is committed (then marks the job done and returns it) or
    /// `stop` turns true (then the job stays unfinished, to resume later, and `None` is
    /// returned). `tick` sees the live status every 200 ms.
    pub async fn run_to_end(
        &self,
        mut tick: impl FnMut(&ReplayStatus),
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<ReplayJob>> {
        let mut since_checkpoint = 0u32;
        loop {
            if self.is_complete()? {
                let mut job = self.job();
                finish(&self.tenant, &mut job, JobState::Done)?;
                tick(&status(&self.tenant, &job)?);
                tracing::info!(tenant = %self.tenant.id(), job = %job.name, sent = job.sent_samples, "replay done");
                return Ok(Some(job));
            }
            tick(&self.status()?);
            since_checkpoint += 1;
            if since_checkpoint >= 10 {
                since_checkpoint = 0;
                self.checkpoint()?;
            }
            if *stop.borrow() {
                self.stop().await;
                self.checkpoint()?;
                return Ok(None);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Stops the forwarder (an unfinished batch stays in flight), waiting at most 10 s.
    pub async fn stop(&self) {
        self.forwarder.stop();
        for _ in 0..200 {
            if self.forwarder.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the forwarder and cancels the job.
    pub async fn cancel(&self) -> Result<ReplayJob> {
        self.stop().await;
        let mut job = self.job();
        finish(&self.tenant, &mut job, JobState::Cancelled)?;
        Ok(job)
    }
}
