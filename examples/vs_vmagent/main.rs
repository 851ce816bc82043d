//! metricspool against vmagent, side by side, on the same pre-encoded workload.
//!
//! ```text
//! cargo build --release --bin metricspool --example vs_vmagent
//! target/release/examples/vs_vmagent [--steps 2M,5M,10M] [--pass 5M] [--conns 4]
//!     [--kill-at 3M] [--kill-after 60s] [--agents metricspool,vmagent] [--metricspool PATH]
//!     [--chart docs/bench/vs-vmagent.png]
//! ```
//!
//! (`scripts/bench-vs-vmagent.sh` installs the servers, builds and runs it.)
//!
//! The workload (`benches/workload/mod.rs`: 100k series of 5–8 labels, GPU inference and
//! node metrics, every (series, timestamp) unique) is encoded once into snappy remote-write
//! requests of 10,000 samples before anything is timed, and first sent to a null sink to show
//! the sender's own ceiling. Then, for each agent in turn, everything on 127.0.0.1 in temp
//! dirs, `--conns` keep-alive connections sending:
//!
//! 1. ingest with the backend down (VictoriaMetrics' port closed): samples/s, agent cores
//!    (`/proc/<pid>/stat`), peak RSS (`VmHWM`), bytes on disk per sample (`du` after a clean
//!    stop). metricspool runs with its default `durability = "fsync"` (acknowledged = on
//!    disk); vmagent with its defaults (fsync about once a second);
//! 5. RSS at each `--steps` checkpoint of that backlog;
//! 6. SIGTERM, restart over the backlog: time from spawn to `/healthz` (`/health`) and
//!    `/readyz`;
//! 2. start VictoriaMetrics: time to its first received sample, samples/s until the backlog is
//!    in, exact count (`count_over_time` after `/internal/force_flush`; VictoriaMetrics keeps
//!    duplicates, so the count shows loss and duplication alike);
//! 3. pass-through with VictoriaMetrics up: `--pass` samples end to end;
//! 4. SIGKILL once `--kill-at` samples are acknowledged (at most `--kill-after` in) during an
//!    ingest with the backend down, restart, start the backend, drain, count per 15 s round
//!    (and per request, from `/api/v1/export`, where a round's count is ambiguous):
//!    acknowledged samples lost.

#[path = "../shared/http.rs"]
mod http;
#[path = "../../benches/workload/mod.rs"]
mod workload;

mod chart;
mod load;
mod phases;
mod procs;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use load::{Acks, PER_REQUEST, Requests, Target};
use phases::{Figures, Params};
use procs::Kind;

struct Args {
    params: Params,
    agents: Vec<Kind>,
    bin: PathBuf,
    chart: Option<PathBuf>,
}

fn count(v: &str) -> u64 {
    let v = v.trim().replace('_', "");
    let (num, mul) = match v.chars().last() {
        Some('M' | 'm') => (&v[..v.len() - 1], 1e6),
        Some('k' | 'K') => (&v[..v.len() - 1], 1e3),
        _ => (&v[..], 1.0),
    };
    let n = (num.parse::<f64>().expect("a count such as 5M") * mul) as u64;
    n.div_ceil(PER_REQUEST) * PER_REQUEST
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().expect("the example's path");
    let mut a = Args {
        params: Params {
            conns: 4,
            steps: vec![2_000_000, 5_000_000, 10_000_000],
            pass_samples: 5_000_000,
            kill_after: Duration::from_secs(60),
            kill_at: 3_000_000,
        },
        agents: vec![Kind::Metricspool, Kind::Vmagent],
        bin: exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target/<profile>/examples")
            .join("metricspool"),
        chart: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--steps" => a.params.steps = val().split(',').map(count).collect(),
            "--pass" => a.params.pass_samples = count(&val()),
            "--conns" => a.params.conns = val().parse().expect("--conns: a number"),
            "--kill-after" => {
                a.params.kill_after =
                    humantime::parse_duration(&val()).expect("--kill-after: e.g. 6s")
            }
            "--kill-at" => a.params.kill_at = count(&val()),
            "--agents" => {
                a.agents = val()
                    .split(',')
                    .map(|s| match s {
                        "metricspool" => Kind::Metricspool,
                        "vmagent" => Kind::Vmagent,
                        o => panic!("unknown agent {o}"),
                    })
                    .collect()
            }
            "--metricspool" => a.bin = PathBuf::from(val()),
            "--chart" => a.chart = Some(PathBuf::from(val())),
            o => panic!("unknown argument {o} (see the doc comment of examples/vs_vmagent)"),
        }
    }
    assert!(
        !a.params.steps.is_empty(),
        "--steps needs at least one size"
    );
    assert!(
        a.params.steps.windows(2).all(|w| w[0] < w[1]),
        "--steps must grow"
    );
    a
}

fn main() {
    let args = parse_args();
    let p = &args.params;
    let last = *p.steps.last().expect("a step");
    let n = (last.max(p.pass_samples) / PER_REQUEST) as usize;
    eprintln!(
        "encoding {} samples ({n} requests)...",
        n as u64 * PER_REQUEST
    );
    let reqs = Arc::new(Requests::generate(n));
    let samples = n as u64 * PER_REQUEST;
    println!(
        "workload: {samples} samples, encoded in {:.1} s ({:.2} M samples/s); {:.1} B/sample raw protobuf, {:.1} B/sample snappy",
        reqs.encode_seconds,
        samples as f64 / reqs.encode_seconds / 1e6,
        reqs.raw_bytes as f64 / samples as f64,
        reqs.wire_bytes() as f64 / samples as f64,
    );
    let sink = null_sink(&reqs, p.conns);
    println!(
        "null sink: {:.2} M samples/s over {} connections, sender {:.2} cores",
        sink.0 / 1e6,
        p.conns,
        sink.1
    );
    let mut all = Vec::new();
    for &kind in &args.agents {
        let mut f = Figures::default();
        eprintln!("== {}: outage (phases 1, 5, 6, 2)", kind.name());
        phases::outage(kind, &args.bin, &reqs, p, &mut f);
        eprintln!("== {}: pass-through (phase 3)", kind.name());
        phases::pass_through(kind, &args.bin, &reqs, p, &mut f);
        eprintln!("== {}: kill -9 (phase 4)", kind.name());
        phases::kill9(kind, &args.bin, &reqs, p, &mut f);
        eprintln!("{f:#?}");
        all.push((kind, f));
    }
    print!("{}", chart::table(&all, p, sink));
    if let Some(path) = &args.chart {
        chart::png(&all, path);
        println!("chart: {}", path.display());
    }
}

/// (samples/s, sender cores) into a server that discards everything.
fn null_sink(reqs: &Arc<Requests>, conns: usize) -> (f64, f64) {
    let port = load::null_sink();
    let t = Target {
        port,
        path: "/api/v1/write",
        auth: None,
    };
    let acks = Arc::new(Acks::new(reqs.bodies.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let c0 = procs::cpu_seconds("self");
    // Repeat the whole set until 3 s have passed, so the CPU ticks mean something.
    let (mut acked, mut seconds) = (0, 0.0);
    while seconds < 3.0 {
        let s = load::send(
            &t,
            reqs,
            0..reqs.bodies.len(),
            conns,
            &acks,
            &stop,
            Duration::from_secs(120),
        );
        acked += s.acked;
        seconds += s.seconds;
    }
    let cores = (procs::cpu_seconds("self") - c0) / seconds;
    (acked as f64 * PER_REQUEST as f64 / seconds, cores)
}
