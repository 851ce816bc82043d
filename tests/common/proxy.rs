//! A fault-injecting HTTP proxy in front of a real backend. It reads each request (head and
//! `Content-Length` body) from the forwarder, then does what the current [`Fault`] says; the
//! test switches the fault at runtime. Every request is counted and time-stamped, with the
//! fault it met, so a test can check how the forwarder reacted (e.g. the gap after a 429).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the backend and return its answer.
    Pass,
    /// Answer `429 Too Many Requests` with `Retry-After: <secs>`.
    TooManyRequests { retry_after_secs: u64 },
    /// Answer `503 Service Unavailable`.
    Unavailable,
    /// Reset the connection (RST) after reading the request.
    Reset,
    /// Read the request and never answer (the connection stays open until the client gives up).
    Stall,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Answer this status with a short body (a permanent refusal such as 401).
    Status(u16),
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub fault: Fault,
    pub body_bytes: usize,
}

#[derive(Debug)]
struct State {
    fault: Fault,
    /// Faults for the next requests, in order, before `fault` applies again.
    script: VecDeque<Fault>,
    seen: Vec<Seen>,
}

/// A running proxy; dropping it stops accepting (open connections end with their tasks).
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `127.0.0.1:<upstream>`. Call from a runtime.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(Mutex::new(State {
            fault: Fault::Pass,
            script: VecDeque::new(),
            seen: Vec::new(),
        }));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, upstream, Arc::clone(&st)));
            }
        });
        Self { port, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the behaviour for the following requests.
    pub fn set(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// The next requests meet `faults`, one each, before the current fault applies again.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().script.extend(faults);
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests seen so far.
    pub fn count(&self) -> usize {
        self.lock().seen.len()
    }

    /// Requests that met `fault`.
    pub fn count_of(&self, fault: Fault) -> usize {
        self.lock().seen.iter().filter(|s| s.fault == fault).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
/// `None` at EOF or on a malformed request.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end + 4].to_vec();
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if text.contains("transfer-encoding: chunked") {
                panic!("the fault proxy does not handle chunked request bodies");
            }
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 64 << 10];
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut chunk = [0u8; 64 << 10];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut conn: TcpStream, upstream: u16, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut conn, &mut buf).await {
        let fault = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let fault = s.script.pop_front().unwrap_or(s.fault);
            s.seen.push(Seen {
                at: Instant::now(),
                fault,
                body_bytes: body.len(),
            });
            fault
        };
        match fault {
            Fault::Pass => {
                if !pass(&mut conn, upstream, &head, &body).await {
                    return;
                }
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                if !pass(&mut conn, upstream, &head, &body).await {
                    return;
                }
            }
            Fault::TooManyRequests { retry_after_secs } => {
                let r = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after_secs}\r\nContent-Length: 4\r\n\r\nslow"
                );
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Status(code) => {
                let r = format!(
                    "HTTP/1.1 {code} Refused\r\nContent-Length: 20\r\n\r\nrefused by the proxy"
                );
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Unavailable => {
                let r = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown";
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Reset => {
                let _ = conn.set_zero_linger();
                return;
            }
            Fault::Stall => {
                // Hold the connection until the client closes it.
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// Forwards one request with `Connection: close` and copies the whole answer back, which
/// also closes the client's connection. False if the client connection should end.
async fn pass(conn: &mut TcpStream, upstream: u16, head: &[u8], body: &[u8]) -> bool {
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        // The backend is down: the client sees a broken connection, as it would without us.
        let _ = conn.set_zero_linger();
        return false;
    };
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).await.is_err() || up.write_all(body).await.is_err() {
        let _ = conn.set_zero_linger();
        return false;
    }
    let mut answer = Vec::new();
    if up.read_to_end(&mut answer).await.is_err() {
        let _ = conn.set_zero_linger();
        return false;
    }
    let _ = conn.write_all(&answer).await;
    false
}
