//! A real crash: a child process (this test binary, re-executed) appends from several threads
//! with fsync durability and prints every acknowledgement; the parent kills it with SIGKILL at
//! a random moment, reopens the spool and checks that every acknowledged range reads back with
//! exactly the samples the child appended. Many rounds run in the same data directory, so each
//! child also recovers what the previous one left behind.

use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use metricspool::{
    Batch, MasterKey, MetricKind, ReadLimits, RecoveryEvent, Sample, Series, Spool, SpoolConfig,
    TenantId,
};

/// Set to the data directory in the child.
const CHILD_ENV: &str = "METRICSPOOL_KILL9_CHILD";
/// The round number, which seeds the child's content.
const ROUND_ENV: &str = "METRICSPOOL_KILL9_ROUND";
/// Overrides the seed of the kill delays, to replay a failing run.
const SEED_ENV: &str = "METRICSPOOL_KILL9_SEED";
const THREADS: u64 = 4;
const MIN_ROUNDS: usize = 20;
const MAX_ROUNDS: usize = 25;
const TIME_BUDGET: Duration = Duration::from_secs(45);
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn tenant() -> TenantId {
    TenantId::new("kill9").expect("a valid tenant id")
}

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig::new(dir, MasterKey::from_bytes([3; 32]))
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// What child thread `thread` appends as its `counter`-th batch in round `round`: 1 to 3
/// series, 1 to 40 samples each, values from a seed of all three.
fn batch(round: u64, thread: u64, counter: u64) -> Batch {
    let mut rng = (round << 48 ^ thread << 40 ^ counter).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut b = Batch::new();
    for s in 0..1 + xorshift(&mut rng) % 3 {
        let series = Series::new(
            "kill9_samples",
            [("thread", thread.to_string()), ("series", s.to_string())],
        )
        .expect("a valid series");
        let n = 1 + xorshift(&mut rng) % 40;
        let samples = (0..n)
            .map(|k| {
                let ts = 1_700_000_000_000 + (counter * 100 + k) as i64;
                Sample::new(ts, f64::from_bits(xorshift(&mut rng)))
            })
            .collect();
        b.push(series, MetricKind::Gauge, samples);
    }
    b
}

/// The child: when `METRICSPOOL_KILL9_CHILD` is set, append from several threads until
/// killed, printing `ACK <start> <end> <thread> <counter>` after each acknowledged append.
/// Without it (an ordinary test run) it returns at once.
#[test]
fn kill9_child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV)
        .expect("the parent sets the round")
        .parse()
        .expect("the round is a number");
    let spool = Spool::open(config(Path::new(&dir))).expect("the child opens the spool");
    let t = spool.tenant(&tenant()).expect("the child opens the tenant");
    let deadline = Instant::now() + CHILD_LIFETIME;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let t = &t;
            scope.spawn(move || {
                let mut counter = 0;
                while Instant::now() < deadline {
                    let r = t
                        .append_blocking(&batch(round, thread, counter))
                        .expect("the child appends");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {} {thread} {counter}", r.start, r.end).expect("stdout");
                    out.flush().expect("stdout flushes");
                    counter += 1;
                }
            });
        }
    });
}

#[derive(Debug, Clone)]
struct Ack {
    round: u64,
    thread: u64,
    counter: u64,
    range: Range<u64>,
}

fn parse_ack(line: &str, round: u64) -> Option<Ack> {
    let mut it = line.strip_prefix("ACK ")?.split(' ');
    let mut next = || it.next().and_then(|w| w.parse::<u64>().ok());
    let (start, end, thread, counter) = (next()?, next()?, next()?, next()?);
    Some(Ack {
        round,
        thread,
        counter,
        range: start..end,
    })
}

/// Runs one child for `delay`, kills it with SIGKILL, and returns the acknowledgements it
/// printed (complete lines only).
fn run_child(dir: &Path, round: u64, delay: Duration) -> Vec<Ack> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([
            "kill9_child_appender",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = String::new();
        while r.read_line(&mut line).expect("the pipe reads") > 0 {
            // A line cut by the kill has no newline: it was not fully printed.
            if line.ends_with('\n') {
                acks.extend(parse_ack(line.trim_end(), round));
            }
            line.clear();
        }
        acks
    });
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL is sent");
    let status = child.wait().expect("the child is reaped");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died of SIGKILL, not on its own: {status}"
    );
    reader.join().expect("the reader thread")
}

/// Reopens the spool and checks that every ack in `acks` reads back exactly; returns the end
/// of the log.
fn verify(dir: &Path, acks: &[Ack], what: &str) -> u64 {
    let spool = Spool::open(config(dir)).unwrap_or_else(|e| panic!("{what}: reopen fails: {e}"));
    for r in spool.recovery_reports() {
        for e in &r.events {
            assert!(
                !matches!(
                    e,
                    RecoveryEvent::CorruptRecordSkipped { .. }
                        | RecoveryEvent::SegmentQuarantined { .. }
                ),
                "{what}: a killed process leaves no corruption: {e:?}"
            );
        }
    }
    let t = spool.tenant(&tenant()).expect("the tenant opens");
    assert_eq!(t.wal().poisoned_cause(), None);
    let end = t.wal().end_offset();
    for a in acks {
        let expected = batch(a.round, a.thread, a.counter);
        assert_eq!(
            a.range.end - a.range.start,
            expected.sample_count() as u64,
            "{what}: {a:?}"
        );
        assert!(
            a.range.end <= end,
            "{what}: acknowledged {a:?} is past the end {end}"
        );
        let limits = ReadLimits {
            max_samples: expected.sample_count(),
            max_bytes: 1 << 20,
        };
        let rb = t
            .read_from(a.range.start, limits)
            .unwrap_or_else(|e| panic!("{what}: reading {a:?} fails: {e}"));
        assert!(
            rb.skipped.is_empty(),
            "{what}: {a:?} skipped {:?}",
            rb.skipped
        );
        assert_eq!(
            (rb.start, rb.end),
            (a.range.start, a.range.end),
            "{what}: {a:?}"
        );
        assert_eq!(rb.runs, vec![a.range.clone()], "{what}: {a:?}");
        assert_eq!(
            rb.batch.sample_count(),
            expected.sample_count(),
            "{what}: {a:?}"
        );
        for ((gs, gk, g), (es, ek, e)) in rb.batch.iter().zip(expected.iter()) {
            assert_eq!((gs, gk), (es, ek), "{what}: {a:?}");
            assert!(g.same_bits(&e), "{what}: {a:?}: {g:?} != {e:?}");
        }
    }
    drop(t);
    spool.close().expect("the spool closes");
    end
}

#[test]
fn acknowledged_appends_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill9: {SEED_ENV}={seed}");
    let mut rng = seed;
    let started = Instant::now();
    let mut all: Vec<Ack> = Vec::new();
    let mut end = 0;
    let mut rounds = 0;
    while rounds < MAX_ROUNDS && started.elapsed() < TIME_BUDGET {
        let round = rounds as u64;
        let delay = Duration::from_millis(50 + xorshift(&mut rng) % 351);
        let mut acks = run_child(dir.path(), round, delay);
        acks.sort_by_key(|a| a.range.start);
        for (i, a) in acks.iter().enumerate() {
            assert!(
                a.range.start >= end,
                "round {round}: {a:?} reuses offsets below {end}"
            );
            if let Some(prev) = i.checked_sub(1).map(|j| &acks[j]) {
                assert!(
                    prev.range.end <= a.range.start,
                    "overlapping acks {prev:?} {a:?}"
                );
            }
        }
        let what = format!(
            "round {round} (killed after {delay:?}, {} acks)",
            acks.len()
        );
        end = verify(dir.path(), &acks, &what);
        all.extend(acks);
        rounds += 1;
    }
    assert!(
        rounds >= MIN_ROUNDS,
        "only {rounds} rounds in {TIME_BUDGET:?}"
    );
    assert!(
        all.len() >= 100,
        "the children acknowledged only {} appends",
        all.len()
    );
    // Everything acknowledged in any round is still there after all the crashes.
    let final_end = verify(dir.path(), &all, "after every round");
    assert_eq!(final_end, end);
    eprintln!(
        "kill9: {rounds} rounds, {} acknowledged appends, {end} samples, {:?}",
        all.len(),
        started.elapsed()
    );
}
