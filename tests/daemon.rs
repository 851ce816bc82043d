//! The daemon end to end, as a real process: authentication, bad input, limits, shutdown
//! and restart, the embedded defaults, `config check`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, TOKEN_A, TOKEN_B, run_cli};
use common::http;
use common::wait_until;

fn push_body(metric: &str, value: f64, ts: i64) -> Vec<u8> {
    format!(r#"{{"metrics": {{"{metric}": {value}}}, "labels": {{"model": "rec-v2"}}, "timestamp": {ts}}}"#)
        .into_bytes()
}

/// Headers, path, expected status, expected message.
type AuthCase<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);

/// Path, headers, body, expected status, expected message.
type BadCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

fn two_tenants(extra: &str) -> DaemonProc {
    let tenants = DaemonProc::tenant("a", TOKEN_A, "") + &DaemonProc::tenant("b", TOKEN_B, "");
    let mut d = DaemonProc::new(&format!("{tenants}\n{extra}"));
    d.start();
    d
}

#[test]
fn tokens_decide_the_tenant_and_refusals_store_nothing() {
    let d = two_tenants("");
    let body = push_body("tracks_generated", 125.0, common::now_ms());
    let basic_b = format!("Basic {}", base64_encode(format!("b:{TOKEN_A}").as_bytes()));
    let bearer_a = format!("Bearer {TOKEN_A}");
    let cases: Vec<AuthCase> = vec![
        (vec![], "/api/v1/push", 401, "missing token"),
        (
            vec![("Authorization", "Bearer nope")],
            "/api/v1/push",
            401,
            "invalid token",
        ),
        (
            vec![("Authorization", "Basic Zm9v")],
            "/api/v1/push",
            401,
            "missing token",
        ),
        (
            vec![("Authorization", &bearer_a), ("X-Scope-OrgID", "b")],
            "/api/v1/push",
            403,
            "writes as tenant a",
        ),
        (
            vec![("Authorization", &bearer_a), ("X-Metricspool-Tenant", "b")],
            "/api/v1/push",
            403,
            "not \"b\"",
        ),
        (
            vec![("Authorization", &bearer_a)],
            "/api/v1/push?tenant=b",
            403,
            "tenant a",
        ),
        (
            vec![("Authorization", &basic_b)],
            "/api/v1/push",
            403,
            "tenant a",
        ),
        (vec![], "/write?u=b&p=token-for-tenant-a", 403, "tenant a"),
        // Authentication comes before any look at the request.
        (vec![], "/write?precision=fortnight", 401, "missing token"),
    ];
    for (headers, path, status, message) in &cases {
        let r = d.req("POST", path, headers, &body);
        assert_eq!(r.status, *status, "{headers:?} {path}: {}", r.body);
        assert!(r.body.contains(message), "{headers:?}: {}", r.body);
    }
    assert_eq!(d.stored("a"), 0, "refused requests stored something");
    assert_eq!(d.stored("b"), 0);
    // The same request with the right tenant (or none named) is stored as a.
    let r = d.req(
        "POST",
        "/api/v1/push",
        &[("Authorization", bearer_a.as_str()), ("X-Scope-OrgID", "a")],
        &body,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(d.stored("a"), 1);
    assert_eq!(d.stored("b"), 0);
    // The admin API needs the admin token, not a tenant's.
    let r = d.req("GET", "/admin/status", &[("Authorization", &bearer_a)], b"");
    assert_eq!(r.status, 401);
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn bad_input_is_refused_with_a_reason_and_stores_nothing() {
    let tenants = DaemonProc::tenant("a", TOKEN_A, "");
    let mut d = DaemonProc::with_server(
        "max_samples_per_request = 1000\nmax_body_bytes = 1048576",
        &tenants,
    );
    d.start();
    let now = common::now_ms();
    let long = "x".repeat(5000);
    let many: String = (0..1001)
        .map(|i| format!("m{i} value=1 {now}000000\n"))
        .collect();
    let bomb = gzip(&vec![b'a'; 8 << 20]);
    let cases: Vec<BadCase> = vec![
        (
            "/api/v1/write",
            vec![],
            b"not snappy at all".to_vec(),
            400,
            "snappy",
        ),
        (
            "/api/v1/write",
            vec![],
            snap::raw::Encoder::new()
                .compress_vec(b"\xff\xff\xff garbage")
                .expect("snappy"),
            400,
            "remote write",
        ),
        (
            "/api/v1/write",
            vec![("Content-Encoding", "gzip")],
            b"x".to_vec(),
            415,
            "snappy",
        ),
        (
            "/write?precision=ms",
            vec![],
            format!("ok value=1 {now}\nbad line here\n").into_bytes(),
            400,
            "line 2",
        ),
        (
            "/write?precision=fortnight",
            vec![],
            b"m value=1".to_vec(),
            400,
            "precision",
        ),
        ("/write", vec![], many.into_bytes(), 413, "1000"),
        (
            "/write",
            vec![("Content-Encoding", "gzip")],
            bomb,
            413,
            "1048576",
        ),
        (
            "/api/v2/write?org=o&bucket=b",
            vec![("Content-Encoding", "gzip")],
            b"not gzip".to_vec(),
            400,
            "gzip",
        ),
        (
            "/api/v1/push",
            vec![],
            b"{\"metrics\": {\"a\": 1}".to_vec(),
            400,
            "json",
        ),
        (
            "/api/v1/push",
            vec![],
            b"{\"metric\": {\"a\": 1}}".to_vec(),
            400,
            "metric",
        ),
        (
            "/api/v1/push",
            vec![],
            br#"{"metrics": {"0bad name": 1}}"#.to_vec(),
            400,
            "0bad name",
        ),
        (
            "/api/v1/push",
            vec![],
            br#"{"metrics": {"a": 1}, "timestamp": "NaN"}"#.to_vec(),
            400,
            "timestamp",
        ),
        (
            "/api/v1/push",
            vec![],
            format!(r#"{{"metrics": {{"a": 1}}, "labels": {{"l": "{long}"}}}}"#).into_bytes(),
            400,
            "4096",
        ),
    ];
    let auth = format!("Bearer {TOKEN_A}");
    for (path, mut headers, body, status, message) in cases {
        headers.push(("Authorization", &auth));
        let r = d.req("POST", path, &headers, &body);
        assert_eq!(r.status, status, "{path} {headers:?}: {}", r.body);
        assert!(
            r.body.to_lowercase().contains(&message.to_lowercase()),
            "{path}: {:?} does not mention {message:?}",
            r.body
        );
        assert_eq!(d.stored("a"), 0, "{path}: a refused request stored samples");
    }
    // Still serving, and good input of each kind is stored.
    assert_eq!(
        d.post("/api/v1/push", TOKEN_A, &push_body("ok_total", 1.0, now))
            .status,
        204
    );
    assert_eq!(
        d.post(
            "/write?precision=ms",
            TOKEN_A,
            format!("cpu,host=a usage=0.5 {now}").as_bytes()
        )
        .status,
        204
    );
    assert_eq!(d.stored("a"), 2);
    let metrics = http::get(d.port, "/metrics").expect("metrics").body;
    assert!(
        metrics.contains(r#"metricspool_ingest_rejections_total{tenant="a",reason="bad_request"}"#),
        "{metrics}"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after_and_a_later_retry_succeeds() {
    let tenants = DaemonProc::tenant(
        "a",
        TOKEN_A,
        "rate_limit = { samples_per_second = 20, burst = 20 }",
    );
    let mut d = DaemonProc::new(&tenants);
    d.start();
    let now = common::now_ms();
    let lp = |from: i64| -> Vec<u8> {
        (0..20)
            .map(|i| format!("m value={i} {}\n", from + i))
            .collect::<String>()
            .into_bytes()
    };
    assert_eq!(d.post("/write?precision=ms", TOKEN_A, &lp(now)).status, 204);
    let r = d.post("/write?precision=ms", TOKEN_A, &lp(now + 100));
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    assert!(r.body.contains("rate limit"), "{}", r.body);
    assert_eq!(d.stored("a"), 20);
    std::thread::sleep(Duration::from_secs(wait));
    let r = d.post("/write?precision=ms", TOKEN_A, &lp(now + 100));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(d.stored("a"), 40);
    // A request larger than the burst can never pass: 413, not 429.
    let big: String = (0..21)
        .map(|i| format!("m value={i} {}\n", now + 1000 + i))
        .collect();
    assert_eq!(
        d.post("/write?precision=ms", TOKEN_A, big.as_bytes())
            .status,
        413
    );
}

#[test]
fn a_full_quota_answers_429_with_retry_after() {
    let tenants = DaemonProc::tenant(
        "a",
        TOKEN_A,
        "log = { quota_bytes = 1048576, quota_policy = \"reject\", segment_max_bytes = 65536 }",
    );
    let mut d = DaemonProc::new(&tenants);
    d.start();
    let now = common::now_ms();
    let mut refused = None;
    for round in 0..400 {
        // Random-looking values compress badly, so the quota fills in a few rounds.
        let body: String = (0..5000u64)
            .map(|i| {
                let v = (i + 1)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(round) as f64;
                format!(
                    "noise,s=s{} v={v} {}\n",
                    i % 50,
                    now + i64::from(round) * 5000 + i as i64
                )
            })
            .collect();
        let r = d.post("/write?precision=ms", TOKEN_A, body.as_bytes());
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let r = refused.expect("the quota filled up");
    assert!(r.body.contains("quota"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn sigterm_during_heavy_ingest_keeps_every_acknowledged_request() {
    let tenants = DaemonProc::tenant("a", TOKEN_A, "");
    let mut d = DaemonProc::new(&tenants);
    d.start();
    let port = d.port;
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let next = Arc::new(AtomicU64::new(0));
    let per = 500u64;
    let base = common::now_ms();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (acked, next) = (acked.clone(), next.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {TOKEN_A}");
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(20) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body: String = (0..per)
                        .map(|i| format!("load,req=r{n} v={i} {}\n", base + (n * per + i) as i64))
                        .collect();
                    match http::request_with(
                        "POST",
                        port,
                        "/write?precision=ms",
                        &[("Authorization", &auth)],
                        body.as_bytes(),
                        Duration::from_secs(20),
                    ) {
                        Ok(r) if r.status == 204 => acked.lock().expect("lock").push(n),
                        Ok(_) => {}
                        Err(_) => break, // the listener closed
                    }
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(20), || acked
            .lock()
            .expect("lock")
            .len()
            >= 20)
        .is_some()
    );
    let status = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}: {}", d.log());
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    // Every acknowledged request is in the log after the restart: count by request label.
    let (code, out, err) = d.cli(&["dump", "--tenant", "a", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let mut per_req = std::collections::HashMap::<u64, u64>::new();
    for line in out.lines().skip(1) {
        let n: u64 = line
            .split("req=\"\"r")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .expect("req label");
        *per_req.entry(n).or_default() += 1;
    }
    for n in &acked {
        assert_eq!(
            per_req.get(n),
            Some(&per),
            "request {n} was acknowledged but is not stored whole"
        );
    }
    // Unacknowledged requests are either wholly stored (acked just as the connection closed)
    // or absent, never partly.
    assert!(
        per_req.values().all(|&c| c == per),
        "a request was stored partly"
    );
    d.start();
    assert_eq!(
        d.stored("a"),
        per_req.len() as u64 * per,
        "restart changed the log"
    );
}

#[test]
fn restart_resumes_the_forwarder_from_its_cursor_without_duplicates() {
    let tenants = DaemonProc::tenant("a", TOKEN_A, "");
    let export = tempfile::tempdir().expect("dir");
    let backend = format!(
        "[backends.out]\ntype = \"file\"\npath = \"{}\"\nbatch = {{ linger = \"50ms\" }}\n",
        export.path().display()
    );
    let mut d = DaemonProc::new(&format!("{tenants}\n{backend}"));
    d.start();
    let file = export.path().join("a.jsonl");
    let lines = || std::fs::read_to_string(&file).map_or(0, |t| t.lines().count());
    let now = common::now_ms();
    for i in 0..10 {
        let body: String = (0..100)
            .map(|j| format!("m v={j} {}\n", now + i * 100 + j))
            .collect();
        assert_eq!(
            d.post("/write?precision=ms", TOKEN_A, body.as_bytes())
                .status,
            204
        );
    }
    assert!(
        wait_until(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || lines() == 1000
        )
        .is_some(),
        "{}",
        lines()
    );
    assert!(d.terminate(Duration::from_secs(20)).success());
    d.start();
    for i in 10..20 {
        let body: String = (0..100)
            .map(|j| format!("m v={j} {}\n", now + i * 100 + j))
            .collect();
        assert_eq!(
            d.post("/write?precision=ms", TOKEN_A, body.as_bytes())
                .status,
            204
        );
    }
    assert!(
        wait_until(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || lines() == 2000
        )
        .is_some(),
        "{}",
        lines()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(), 2000, "duplicates after restart");
    let s = d.status();
    let b = s.get("tenants").at(0).get("backends").at(0);
    assert_eq!(b.get("committed").i64(), Some(2000));
    assert_eq!(b.get("lag_samples").i64(), Some(0));
}

#[test]
fn privacy_rules_apply_before_anything_is_stored_or_forwarded() {
    let tenants = DaemonProc::tenant(
        "a",
        TOKEN_A,
        "privacy = [{ label = \"user_id\", action = \"hash\" }, { label = \"email\", action = \"drop\" }]",
    );
    let export = tempfile::tempdir().expect("dir");
    let backend = format!(
        "[backends.out]\ntype = \"file\"\npath = \"{}\"\nbatch = {{ linger = \"50ms\" }}\n",
        export.path().display()
    );
    let mut d = DaemonProc::new(&format!("{tenants}\n{backend}"));
    d.start();
    let body = format!(
        r#"{{"metrics": {{"logins_total": 3}}, "labels": {{"user_id": "alice-4711", "email": "alice@example.org", "app": "web"}}, "timestamp": {}}}"#,
        common::now_ms()
    );
    assert_eq!(d.post("/api/v1/push", TOKEN_A, body.as_bytes()).status, 204);
    let file = export.path().join("a.jsonl");
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(20), || file
            .exists()
            && std::fs::read_to_string(&file).is_ok_and(|t| !t.is_empty()))
        .is_some()
    );
    let line = std::fs::read_to_string(&file).expect("export");
    assert!(!line.contains("alice"), "{line}");
    assert!(line.contains("\"app\":\"web\""), "{line}");
    assert!(line.contains("\"user_id\":\"h_"), "{line}");
    assert!(!line.contains("email"), "{line}");
    assert!(d.terminate(Duration::from_secs(20)).success());
    // Nothing under the data directory holds the plaintext (segments are encrypted anyway;
    // this also covers cursors, dead letters and indexes).
    for entry in walk(&d.data()) {
        let bytes = std::fs::read(&entry).expect("read");
        for needle in [&b"alice-4711"[..], b"alice@example.org"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                entry.display()
            );
        }
    }
    // And the decrypted log holds the pseudonym, not the value.
    let (code, out, err) = d.cli(&["dump", "--tenant", "a"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"user_id\":\"h_") && !out.contains("alice"),
        "{out}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn embedded_defaults_quickstart_push_then_see_it_in_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let port = common::servers::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_metricspool"))
        .arg("serve")
        .current_dir(dir.path())
        .env("METRICSPOOL_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("serve");
    let ready = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        http::get(port, "/healthz").is_ok_and(|r| r.status == 200)
    });
    assert!(ready.is_some());
    let key = dir.path().join("metricspool.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(log.contains("move it somewhere safer"), "{log}");
    let token = std::fs::read_to_string(dir.path().join("metricspool.token")).expect("token");
    let auth = format!("Bearer {}", token.trim());
    let body = br#"{"metrics": {"model_inference_time": 0.045, "tracks_generated": 125}, "labels": {"model": "rec-v2"}}"#;
    let r = http::request_with(
        "POST",
        port,
        "/api/v1/push",
        &[("Authorization", &auth)],
        body,
        Duration::from_secs(10),
    )
    .expect("push");
    assert_eq!(r.status, 204, "{}", r.body);
    let file = dir.path().join("metricspool-data/export/default.jsonl");
    let seen = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() == 2)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.is_some(),
        "export: {:?}",
        std::fs::read_to_string(&file)
    );
    let text = std::fs::read_to_string(&file).expect("export");
    assert!(
        text.contains("\"name\":\"tracks_generated\"") && text.contains("\"value\":125.0"),
        "{text}"
    );
}

#[test]
fn config_check_reports_field_paths_and_lines() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (
            "[storage.log]\ndurability = \"sometimes\"\n",
            "line 2: storage.log.durability",
        ),
        (
            "[tenants.a]\ntoken_sha256 = [\"short\"]\n",
            "line 2: tenants.a.token_sha256",
        ),
        (
            "[backends.vm]\ntype = \"victoriametrics\"\nurl = \"ftp://x\"\n",
            "backends.vm",
        ),
        (
            "[backends.vm]\ntype = \"victoriametrics\"\nurl = \"http://127.0.0.1:1\"\nbatch = { max_samples = 0 }\n",
            "line 4: backends.vm.batch",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "line 2: server.listen"),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&p, text).expect("write");
        let (code, out, _) = run_cli(
            &["config", "check", "--config", p.to_str().expect("utf-8")],
            None,
        );
        assert_eq!(code, 1, "{text}: {out}");
        assert!(out.contains(expect), "{text}: {out:?} lacks {expect:?}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[backends.out]\ntype = \"file\"\npath = \"/tmp/x\"\n",
    )
    .expect("write");
    let (code, out, _) = run_cli(
        &["config", "check", "--config", good.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_tls() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    // A CA and a leaf signed by it (webpki refuses a CA certificate as the server's).
    let script = "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr
printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile leaf.ext -out cert.pem";
    let ok = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(certs.path())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    let tenants = DaemonProc::tenant("a", TOKEN_A, "");
    let mut d = DaemonProc::with_server(
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
        &tenants,
    );
    d.plain = false;
    tokio::task::block_in_place(|| d.start());

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_file(certs.path().join("ca.pem"))
                .expect("cert"),
        )
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", d.port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let body = push_body("tls_pushed", 1.0, common::now_ms());
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(&body).await.expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::task::spawn_blocking({
        let port = d.port;
        move || http::request("GET", port, "/healthz", b"", Duration::from_secs(5))
    })
    .await
    .expect("join");
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status != 200));
    let stored = tokio::task::block_in_place(|| {
        assert!(d.terminate(Duration::from_secs(20)).success());
        let (code, out, err) = d.cli(&["dump", "--tenant", "a"]);
        assert_eq!(code, 0, "{err}");
        out
    });
    assert!(stored.contains("tls_pushed"), "{stored}");
}
