//! A blocking HTTP/1.0 client for readiness checks and queries: one request per connection,
//! the answer read to EOF (Go servers neither chunk nor keep alive for HTTP/1.0), so it
//! works from plain threads and from the crash test's parent without a runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    #[allow(dead_code)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `127.0.0.1:port`. `path` must already be percent-encoded.
pub fn request(
    method: &str,
    port: u16,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    request_with(method, port, path, &[], body, timeout)
}

/// [`request`] with a JSON body (`Content-Type: application/json`), 60 s timeout.
pub fn json(method: &str, port: u16, path: &str, body: &[u8]) -> std::io::Result<Reply> {
    request_typed(
        method,
        port,
        path,
        body,
        "application/json",
        Duration::from_secs(60),
    )
}

/// [`request`] with the given `Content-Type`.
pub fn request_typed(
    method: &str,
    port: u16,
    path: &str,
    body: &[u8],
    content_type: &str,
    timeout: Duration,
) -> std::io::Result<Reply> {
    request_with(
        method,
        port,
        path,
        &[("Content-Type", content_type)],
        body,
        timeout,
    )
}

/// [`request`] with extra headers (a `Content-Type` among them replaces the default form
/// type).
pub fn request_with(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let content_type = if headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        ""
    } else {
        "Content-Type: application/x-www-form-urlencoded\r\n"
    };
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n{content_type}{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ),
        )
    })
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// GET with a 60 s timeout.
pub fn get(port: u16, path: &str) -> std::io::Result<Reply> {
    request("GET", port, path, b"", Duration::from_secs(60))
}

/// POST with a 60 s timeout.
pub fn post(port: u16, path: &str, body: &[u8]) -> std::io::Result<Reply> {
    request("POST", port, path, body, Duration::from_secs(60))
}

/// Percent-encodes a query-string value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
