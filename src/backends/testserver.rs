//! A one-request HTTP/1.1 server for backend unit tests: it records the request line,
//! headers and body, and answers a canned status. Enough for reqwest with a
//! `Content-Length` body; not a general server.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Longest request the server reads (headers plus body).
const MAX_REQUEST: usize = 16 << 20;

/// What the server received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// `POST`, `GET`...
    pub method: String,
    /// The request target: path and query, e.g. `/write?db=x`.
    pub target: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body bytes as sent (still compressed).
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }

    /// The query pairs of the target, decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let url =
            reqwest::Url::parse(&format!("http://x{}", self.target)).expect("a request target");
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A server waiting for its one request.
pub(crate) struct Server {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    handle: JoinHandle<Recorded>,
}

impl Server {
    /// Waits for the request to have been read and answered, and returns it.
    pub async fn request(self) -> Recorded {
        self.handle.await.expect("the test server task ran")
    }
}

/// Starts a server on 127.0.0.1 that answers one request with `status`, the extra
/// `headers` and `body`.
pub(crate) async fn serve_once(status: u16, headers: &[(&str, &str)], body: &str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    let mut response = format!(
        "HTTP/1.1 {status} Canned\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    let handle = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("a connection");
        let recorded = read_request(&mut stream).await;
        stream
            .write_all(response.as_bytes())
            .await
            .expect("write the answer");
        stream.shutdown().await.expect("close");
        recorded
    });
    Server { url, handle }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Recorded {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        read_more(stream, &mut buf).await;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII request head");
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().expect("a request line").split(' ');
    let method = request_line.next().expect("a method").to_owned();
    let target = request_line.next().expect("a target").to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a numeric content-length"));
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        read_more(stream, &mut buf).await;
    }
    Recorded {
        method,
        target,
        headers,
        body: buf[body_start..body_start + len].to_vec(),
    }
}

async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.expect("read the request");
    assert!(n > 0, "the client closed the connection mid-request");
    buf.extend_from_slice(&chunk[..n]);
    assert!(
        buf.len() <= MAX_REQUEST,
        "request larger than the test server reads"
    );
}
