//! The load side: the workload pre-encoded as snappy remote-write bodies, a keep-alive
//! HTTP/1.1 sender over several connections, and a null sink that proves the sender is not
//! the bottleneck.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metricspool::Batch;

use crate::workload::{self, DEFAULT_SEED, Workload};

/// Every request of the run, encoded before any timing starts.
pub struct Requests {
    /// Snappy-compressed remote-write `WriteRequest`s, 10,000 samples each.
    pub bodies: Vec<Vec<u8>>,
    /// Timestamp of round 0 after the shift (round `r` covers `[start + 15 s·r, +15 s)`).
    pub start_ms: i64,
    /// Raw (uncompressed) protobuf bytes over all bodies.
    pub raw_bytes: u64,
    /// Seconds the generator and encoder took.
    pub encode_seconds: f64,
}

impl Requests {
    /// Encodes `n` requests of the workload; timestamps end an hour before now so every
    /// backend accepts them as recent data.
    pub fn generate(n: usize) -> Requests {
        let t0 = Instant::now();
        let rounds = (n * workload::BATCH).div_ceil(workload::SERIES) as i64;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as i64;
        let start_ms = (now_ms - 3_600_000 - rounds * workload::SCRAPE_INTERVAL_MS) / 1000 * 1000;
        let shift = start_ms - workload::START_MS;
        let mut w = Workload::new(DEFAULT_SEED);
        let mut raw = Vec::with_capacity(4 << 20);
        let mut enc = snap::raw::Encoder::new();
        let (mut bodies, mut raw_bytes) = (Vec::with_capacity(n), 0u64);
        for _ in 0..n {
            let mut shifted = Batch::new();
            for e in w.next_batch().into_entries() {
                let samples = e
                    .samples
                    .into_iter()
                    .map(|mut s| {
                        s.timestamp_ms += shift;
                        s
                    })
                    .collect();
                shifted.push(e.series, e.kind, samples);
            }
            workload::encode_remote_write(&shifted, &mut raw);
            raw_bytes += raw.len() as u64;
            bodies.push(enc.compress_vec(&raw).expect("snappy compresses"));
        }
        Requests {
            bodies,
            start_ms,
            raw_bytes,
            encode_seconds: t0.elapsed().as_secs_f64(),
        }
    }

    /// The end of the last round's timestamps (exclusive).
    pub fn end_ms(&self) -> i64 {
        let rounds = (self.bodies.len() * workload::BATCH).div_ceil(workload::SERIES) as i64;
        self.start_ms + rounds * workload::SCRAPE_INTERVAL_MS
    }

    /// Compressed bytes over all bodies.
    pub fn wire_bytes(&self) -> u64 {
        self.bodies.iter().map(|b| b.len() as u64).sum()
    }
}

/// Samples per request.
pub const PER_REQUEST: u64 = workload::BATCH as u64;

/// Where and how to send.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub path: &'static str,
    /// `Authorization` header value, if any.
    pub auth: Option<String>,
}

/// What a send run achieved.
#[derive(Debug, Default)]
pub struct Sent {
    /// Requests answered 2xx.
    pub acked: u64,
    /// Requests given up on (non-2xx after retries, or the connection died).
    pub failed: u64,
    /// The first failure, for the log.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Per-request acknowledgement flags, shared across runs over the same [`Requests`].
pub struct Acks(pub Vec<AtomicBool>);

impl Acks {
    pub fn new(n: usize) -> Acks {
        Acks((0..n).map(|_| AtomicBool::new(false)).collect())
    }
    pub fn get(&self, i: usize) -> bool {
        self.0[i].load(Ordering::Relaxed)
    }
}

/// Sends `reqs.bodies[range]` over `conns` keep-alive connections, each request once (a
/// non-2xx answer is retried up to 3 times, 50 ms apart). Stops early when `stop` is set or
/// `deadline` passes; a dead connection ends its worker (the kill -9 phase relies on it).
pub fn send(
    target: &Target,
    reqs: &Arc<Requests>,
    range: Range<usize>,
    conns: usize,
    acks: &Arc<Acks>,
    stop: &Arc<AtomicBool>,
    deadline: Duration,
) -> Sent {
    let next = Arc::new(AtomicUsize::new(range.start));
    let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (target, reqs, next, acks, stop) = (
                target.clone(),
                Arc::clone(reqs),
                Arc::clone(&next),
                Arc::clone(acks),
                Arc::clone(stop),
            );
            let (acked, failed, first_error) = (
                Arc::clone(&acked),
                Arc::clone(&failed),
                Arc::clone(&first_error),
            );
            let end = range.end;
            std::thread::spawn(move || {
                let mut conn = match Conn::open(target.port) {
                    Ok(c) => c,
                    Err(e) => {
                        first_error
                            .lock()
                            .expect("error slot")
                            .get_or_insert(e.to_string());
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) && t0.elapsed() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    match conn.post_retrying(&target, &reqs.bodies[i]) {
                        Ok(()) => {
                            acks.0[i].store(true, Ordering::Relaxed);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err((e, alive)) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().expect("error slot").get_or_insert(e);
                            if !alive {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a sender thread panicked");
    }
    let first_error = first_error.lock().expect("error slot").take();
    Sent {
        acked: acked.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// One keep-alive client connection.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let w = TcpStream::connect(("127.0.0.1", port))?;
        w.set_nodelay(true)?;
        w.set_read_timeout(Some(Duration::from_secs(120)))?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Conn { w, r })
    }

    /// `Err((reason, connection still usable))`.
    fn post_retrying(&mut self, t: &Target, body: &[u8]) -> Result<(), (String, bool)> {
        let mut last = String::new();
        for attempt in 0..4 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            match self.post(t, body) {
                Ok((200..=299, _)) => return Ok(()),
                Ok((status, text)) => last = format!("HTTP {status}: {text}"),
                Err(e) => return Err((e.to_string(), false)),
            }
        }
        Err((last, true))
    }

    fn post(&mut self, t: &Target, body: &[u8]) -> std::io::Result<(u16, String)> {
        let auth = t
            .auth
            .as_ref()
            .map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Content-Type: application/x-protobuf\r\n\
             Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
             Content-Length: {}\r\n\r\n",
            t.path,
            t.port,
            body.len()
        );
        self.w.write_all(head.as_bytes())?;
        self.w.write_all(body)?;
        read_response(&mut self.r)
    }
}

/// Reads one response: status and (short) body text; handles Content-Length and chunked.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut len, mut chunked) = (0usize, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    Ok((status, text))
}

/// A local HTTP server that discards every request body and answers 204 (the upper bound of
/// what the sender can push). Lives until the process ends.
pub fn null_sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the null sink");
    let port = l.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve_null(s);
            });
        }
    });
    port
}

fn serve_null(s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(64 << 10, s);
    let mut line = String::new();
    loop {
        let mut len = 0u64;
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
        w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
    }
}
