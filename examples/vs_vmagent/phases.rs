//! The six phases, each run for one agent over the same pre-encoded requests. Every phase
//! starts from fresh temp dirs and is bounded in time and count.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::load::{Acks, PER_REQUEST, Requests, Target, send};
use crate::procs::{Agent, Kind, Vm, cpu_seconds, du, free_port, series_key, status_mib};
use crate::workload;

/// The run's parameters.
pub struct Params {
    pub conns: usize,
    /// Buffered-sample checkpoints (phase 5); the last is the phase 1/2 backlog.
    pub steps: Vec<u64>,
    pub pass_samples: u64,
    pub kill_after: Duration,
    /// Acknowledged samples after which phase 4 kills the agent.
    pub kill_at: u64,
}

/// What one agent measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub ingest_samples: u64,
    pub ingest_rate: f64,
    pub ingest_cores: f64,
    pub client_cores: f64,
    pub ingest_failed: u64,
    pub peak_rss_mib: f64,
    /// (buffered samples, RSS MiB, peak RSS MiB so far).
    pub rss_at: Vec<(u64, f64, f64)>,
    pub du_after_ingest: u64,
    pub du_after_stop: u64,
    pub apparent_after_stop: u64,
    pub stop_seconds: f64,
    pub restart_health: Option<f64>,
    pub restart_ready: Option<f64>,
    pub drain: Drain,
    pub drain_count: Option<u64>,
    pub pass_rate: f64,
    pub pass_ingest_rate: f64,
    pub pass_agent_cores: f64,
    pub pass_vm_cores: f64,
    pub pass_count: Option<u64>,
    pub kill: Kill,
}

impl Figures {
    pub fn bytes_per_sample(&self) -> f64 {
        self.du_after_stop as f64 / self.ingest_samples.max(1) as f64
    }
    pub fn per_core(&self) -> f64 {
        self.ingest_rate / self.ingest_cores
    }
}

/// A drain into VictoriaMetrics as VictoriaMetrics saw it.
#[derive(Debug, Default, Clone)]
pub struct Drain {
    /// From VictoriaMetrics being healthy to the first sample it received.
    pub first: Option<f64>,
    /// From the first to the last sample received.
    pub seconds: f64,
    pub received: u64,
    pub agent_cores: f64,
    pub vm_cores: f64,
}

impl Drain {
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }
}

/// The kill -9 phase.
#[derive(Debug, Default, Clone)]
pub struct Kill {
    pub issued: u64,
    pub acked: u64,
    pub stored: u64,
    /// Acknowledged samples missing after restart and drain: lower and upper bound (an
    /// unacknowledged request that was stored can hide a lost one in the same round).
    pub lost_lo: u64,
    pub lost_hi: u64,
    pub duplicated: u64,
    pub still_sending: bool,
    /// Seconds from the first request to SIGKILL.
    pub at_seconds: f64,
}

/// For one round whose count cannot tell which requests are missing: the samples stored per
/// request (each request is one tenth of the series, the same tenth every round), from
/// VictoriaMetrics' export. (acknowledged samples lost, duplicated samples).
fn per_request(
    vm: &Vm,
    from: i64,
    idx: std::ops::Range<usize>,
    acked: &[bool],
) -> Option<(u64, u64)> {
    let stored = vm.export_counts(from, from + workload::SCRAPE_INTERVAL_MS)?;
    let mut w = workload::Workload::new(workload::DEFAULT_SEED);
    let per_round = workload::SERIES / workload::BATCH;
    let (mut lost, mut dup) = (0, 0);
    for k in 0..per_round {
        let batch = w.next_batch();
        let i = idx.start / per_round * per_round + k;
        if !idx.contains(&i) {
            continue;
        }
        let mut have = 0u64;
        for e in batch.entries() {
            let mut labels: Vec<(String, String)> = e
                .series
                .labels()
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect();
            labels.push(("__name__".into(), e.series.name().to_owned()));
            let n = stored.get(&series_key(labels)).copied().unwrap_or(0);
            have += n.min(1);
            dup += n.saturating_sub(1);
        }
        if acked[i] {
            lost += PER_REQUEST - have.min(PER_REQUEST);
        }
    }
    Some((lost, dup))
}

fn target(a: &Agent) -> Target {
    Target {
        port: a.port,
        path: a.ingest_path(),
        auth: a.auth(),
    }
}

/// Phases 1, 5, 6 and 2: buffer the backlog with the backend down (RSS at each step),
/// restart over it, then start VictoriaMetrics and watch the drain.
pub fn outage(kind: Kind, bin: &Path, reqs: &Arc<Requests>, p: &Params, f: &mut Figures) {
    let vm_port = free_port();
    let mut a = Agent::start(kind, bin, vm_port);
    let pid = a.pid().to_string();
    let t = target(&a);
    let acks = Arc::new(Acks::new(reqs.bodies.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let (cpu0, me0) = (cpu_seconds(&pid), cpu_seconds("self"));
    let (mut from, mut seconds) = (0usize, 0.0);
    for &step in &p.steps {
        let to = (step / PER_REQUEST) as usize;
        let s = send(
            &t,
            reqs,
            from..to,
            p.conns,
            &acks,
            &stop,
            Duration::from_secs(600),
        );
        seconds += s.seconds;
        f.ingest_failed += s.failed;
        if let Some(e) = s.first_error {
            eprintln!("  {}: send error: {e}", kind.name());
        }
        f.ingest_samples += s.acked * PER_REQUEST;
        let (rss, hwm) = (status_mib(a.pid(), "VmRSS:"), status_mib(a.pid(), "VmHWM:"));
        eprintln!(
            "  {}: {} buffered, RSS {rss:.0} MiB, peak {hwm:.0} MiB",
            kind.name(),
            f.ingest_samples
        );
        f.rss_at.push((f.ingest_samples, rss, hwm));
        from = to;
    }
    f.ingest_cores = (cpu_seconds(&pid) - cpu0) / seconds;
    f.client_cores = (cpu_seconds("self") - me0) / seconds;
    f.ingest_rate = f.ingest_samples as f64 / seconds;
    f.peak_rss_mib = status_mib(a.pid(), "VmHWM:");
    f.du_after_ingest = du(&a.data_dir()).0;
    f.stop_seconds = a.stop().as_secs_f64();
    (f.du_after_stop, f.apparent_after_stop) = du(&a.data_dir());
    a.spawn();
    f.restart_health = a
        .wait_for(a.health_path(), Duration::from_secs(300))
        .map(|d| d.as_secs_f64());
    f.restart_ready = a
        .ready_path()
        .and_then(|r| a.wait_for(r, Duration::from_secs(300)))
        .map(|d| d.as_secs_f64());
    let (vm, _) = Vm::start(vm_port);
    f.drain = watch(&vm, &a, f.ingest_samples, Duration::from_secs(90));
    vm.flush();
    f.drain_count = vm.count(reqs.start_ms, reqs.end_ms());
    if let Some(lag) = a.lag() {
        eprintln!("  {}: forward lag after the drain: {lag}", kind.name());
    }
    a.stop();
}

/// Polls VictoriaMetrics' received-rows counter until `expected` rows arrived, or nothing
/// arrived for `idle` after the first (or for `idle` + 60 s before it: vmagent's backoff).
pub fn watch(vm: &Vm, a: &Agent, expected: u64, idle: Duration) -> Drain {
    let (apid, vpid) = (a.pid().to_string(), vm.pid().to_string());
    let (a0, v0, t0) = (cpu_seconds(&apid), cpu_seconds(&vpid), Instant::now());
    let (mut first, mut last_change, mut last) = (None, t0, 0u64);
    let mut last_at = t0;
    loop {
        let rows = vm.rows_received();
        let now = Instant::now();
        if rows > last {
            first.get_or_insert(now);
            last = rows;
            last_change = now;
            last_at = now;
        }
        let waited = if first.is_some() {
            idle
        } else {
            idle + Duration::from_secs(60)
        };
        if rows >= expected || now - last_change > waited || t0.elapsed() > Duration::from_secs(900)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let span = last_at - t0;
    Drain {
        first: first.map(|f: Instant| (f - t0).as_secs_f64()),
        seconds: first.map_or(0.0, |f| (last_at - f).as_secs_f64()),
        received: last,
        agent_cores: (cpu_seconds(&apid) - a0) / span.as_secs_f64().max(1e-9),
        vm_cores: (cpu_seconds(&vpid) - v0) / span.as_secs_f64().max(1e-9),
    }
}

/// Phase 3: the backend is up; end-to-end rate from the first request sent to the last
/// sample received by VictoriaMetrics.
pub fn pass_through(kind: Kind, bin: &Path, reqs: &Arc<Requests>, p: &Params, f: &mut Figures) {
    let vm_port = free_port();
    let (vm, _) = Vm::start(vm_port);
    let a = Agent::start(kind, bin, vm_port);
    let (apid, vpid) = (a.pid().to_string(), vm.pid().to_string());
    let n = (p.pass_samples / PER_REQUEST) as usize;
    let acks = Arc::new(Acks::new(reqs.bodies.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let (a0, v0, t0) = (cpu_seconds(&apid), cpu_seconds(&vpid), Instant::now());
    let s = send(
        &target(&a),
        reqs,
        0..n,
        p.conns,
        &acks,
        &stop,
        Duration::from_secs(600),
    );
    let sent = s.acked * PER_REQUEST;
    f.pass_ingest_rate = sent as f64 / s.seconds;
    let d = watch(&vm, &a, sent, Duration::from_secs(20));
    let e2e = t0
        .elapsed()
        .as_secs_f64()
        .min(s.seconds + d.first.unwrap_or(0.0) + d.seconds);
    f.pass_rate = d.received.min(sent) as f64 / e2e;
    f.pass_agent_cores = (cpu_seconds(&apid) - a0) / e2e;
    f.pass_vm_cores = (cpu_seconds(&vpid) - v0) / e2e;
    vm.flush();
    f.pass_count = vm.count(reqs.start_ms, reqs.end_ms());
}

/// Phase 4: ingest with the backend down, SIGKILL after `kill_after`, restart, start the
/// backend, drain, then count every 15 s round of the workload in VictoriaMetrics.
pub fn kill9(kind: Kind, bin: &Path, reqs: &Arc<Requests>, p: &Params, f: &mut Figures) {
    let vm_port = free_port();
    let mut a = Agent::start(kind, bin, vm_port);
    let acks = Arc::new(Acks::new(reqs.bodies.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let n = reqs.bodies.len();
    let sender = {
        let (t, reqs, acks, stop, conns) = (
            target(&a),
            Arc::clone(reqs),
            Arc::clone(&acks),
            Arc::clone(&stop),
            p.conns,
        );
        std::thread::spawn(move || {
            send(
                &t,
                &reqs,
                0..n,
                conns,
                &acks,
                &stop,
                Duration::from_secs(600),
            )
        })
    };
    // Kill once `kill_at` samples are acknowledged (mid-load for both agents), or after
    // `kill_after` at the latest.
    let t0 = Instant::now();
    let want = (p.kill_at / PER_REQUEST) as usize;
    while t0.elapsed() < p.kill_after
        && (0..n).filter(|&i| acks.get(i)).count() < want
        && !sender.is_finished()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    f.kill.at_seconds = t0.elapsed().as_secs_f64();
    f.kill.still_sending = !sender.is_finished();
    a.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let s = sender.join().expect("the sender thread");
    a.spawn();
    a.wait_for(a.health_path(), Duration::from_secs(300))
        .unwrap_or_else(|| panic!("{} does not restart:\n{}", kind.name(), a.log()));
    let acked: Vec<bool> = (0..n).map(|i| acks.get(i)).collect();
    // Requests are taken in index order and each one taken ends acknowledged or failed, so
    // the issued ones are exactly the first `acked + failed`.
    let last = acked.iter().rposition(|&x| x).map_or(0, |i| i + 1);
    let upto = ((s.acked + s.failed) as usize).max(last).min(n);
    f.kill.acked = acked.iter().filter(|&&x| x).count() as u64 * PER_REQUEST;
    f.kill.issued = upto as u64 * PER_REQUEST;
    let (vm, _) = Vm::start(vm_port);
    let _ = watch(&vm, &a, f.kill.issued, Duration::from_secs(15));
    vm.flush();
    let per_round = workload::SERIES / workload::BATCH;
    for r in 0..upto.div_ceil(per_round) {
        let idx = r * per_round..((r + 1) * per_round).min(upto);
        let ack_r = idx.clone().filter(|&i| acked[i]).count() as u64 * PER_REQUEST;
        let unack_r = idx.len() as u64 * PER_REQUEST - ack_r;
        let from = reqs.start_ms + r as i64 * workload::SCRAPE_INTERVAL_MS;
        let stored = vm
            .count(from, from + workload::SCRAPE_INTERVAL_MS)
            .unwrap_or(0);
        f.kill.stored += stored;
        let ambiguous = ack_r > 0 && unack_r > 0 && stored < ack_r + unack_r;
        let exact = if ambiguous {
            per_request(&vm, from, idx.clone(), &acked)
        } else {
            None
        };
        if let Some((lost, dup)) = exact {
            f.kill.lost_lo += lost;
            f.kill.lost_hi += lost;
            f.kill.duplicated += dup;
        } else {
            f.kill.lost_lo += ack_r.saturating_sub(stored);
            f.kill.lost_hi += ack_r.min((ack_r + unack_r).saturating_sub(stored));
            f.kill.duplicated += stored.saturating_sub(ack_r + unack_r);
        }
    }
    a.stop();
}
