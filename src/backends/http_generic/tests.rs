//! Protocol tests of `backends::http_generic` against the test server.

use std::io::Read as _;
use std::sync::Arc;

use super::*;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::testserver::{self, Forwarding, SeqAnswer};
use crate::sample::{MetricKind, Sample};
use crate::tenant::TenantId;

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant")
}

fn batch(samples: &[(i64, f64)]) -> Batch {
    let mut b = Batch::new();
    b.push(
        series("cpu", &[("host", "a"), ("dc", "eu \"1\""), ("empty", "")]),
        MetricKind::Counter,
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    );
    b
}

fn backend(url: &str) -> HttpGeneric {
    HttpGeneric::new(HttpGenericConfig::new(url)).expect("a valid config")
}

#[test]
fn json_layout_is_tenant_batch_id_and_samples() {
    let b = batch(&[
        (1_700_000_000_000, 12.5),
        (1_700_000_001_000, f64::NAN),
        (-5, -0.0),
    ]);
    let body = encode(HttpFormat::Json, "t1", "t1-0-3-0of1", &b);
    assert_eq!(
        body.text,
        "{\"tenant\":\"t1\",\"batch_id\":\"t1-0-3-0of1\",\"samples\":[\
         {\"name\":\"cpu\",\"labels\":{\"dc\":\"eu \\\"1\\\"\",\"host\":\"a\"},\"kind\":\"counter\",\"timestamp_ms\":1700000000000,\"value\":12.5},\
         {\"name\":\"cpu\",\"labels\":{\"dc\":\"eu \\\"1\\\"\",\"host\":\"a\"},\"kind\":\"counter\",\"timestamp_ms\":-5,\"value\":-0.0}]}"
    );
    assert_eq!((body.samples, body.skipped), (2, 1));
    serde_json::from_str::<serde_json::Value>(&body.text).expect("valid JSON");
}

#[test]
fn ndjson_layout_is_one_sample_per_line() {
    let b = batch(&[(1, 1.0), (2, 2.0)]);
    let body = encode(HttpFormat::Ndjson, "t1", "x", &b);
    let lines: Vec<&str> = body.text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(body.text.ends_with('\n'));
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert_eq!(v["name"], "cpu");
        assert_eq!(v["kind"], "counter");
    }
}

#[test]
fn status_sets_parse_numbers_ranges_and_nxx() {
    let c: HttpGenericConfig = toml::from_str(
        "url = \"http://x/{tenant}\"\nsuccess_status = [200, \"202-204\"]\nretry_status = [\"5xx\", 409]\n",
    )
    .expect("parses");
    let h = HttpGeneric::new(c).expect("valid");
    assert_eq!(h.success, vec![(200, 200), (202, 204)]);
    assert_eq!(h.retry, vec![(500, 599), (409, 409)]);
    for bad in ["[\"abc\"]", "[700]", "[\"300-200\"]"] {
        let c: HttpGenericConfig =
            toml::from_str(&format!("url = \"http://x\"\nretry_status = {bad}\n")).expect("parses");
        assert!(HttpGeneric::new(c).is_err(), "{bad}");
    }
    assert!(toml::from_str::<HttpGenericConfig>("url = \"http://x\"\nmethod = \"PATCH\"").is_err());
    assert!(toml::from_str::<HttpGenericConfig>("url = \"http://x\"\nbogus = 1").is_err());
}

#[test]
fn config_refuses_unknown_placeholders_and_reserved_headers() {
    let bad_url = HttpGenericConfig::new("http://x/{tenantt}");
    assert!(matches!(
        HttpGeneric::new(bad_url),
        Err(ConfigError::Field { field: "url", .. })
    ));
    let mut c = HttpGenericConfig::new("http://x");
    c.headers.insert("Idempotency-Key".into(), "x".into());
    assert!(matches!(
        HttpGeneric::new(c),
        Err(ConfigError::ReservedHeader { .. })
    ));
    let mut c = HttpGenericConfig::new("http://x");
    c.headers.insert("X-Scope".into(), "{nope}".into());
    assert!(matches!(
        HttpGeneric::new(c),
        Err(ConfigError::Header { .. })
    ));
    let mut c = HttpGenericConfig::new("http://x");
    c.auth = Some(HttpAuth::Bearer(Secret::Env("PATH".into())));
    c.headers.insert("Authorization".into(), "x".into());
    assert!(matches!(
        HttpGeneric::new(c),
        Err(ConfigError::ReservedHeader { .. })
    ));
}

#[tokio::test]
async fn a_request_has_the_tenant_url_headers_idempotency_key_and_body() {
    let server = testserver::serve_once(204, &[], "").await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret\n").expect("write the key");
    let c: HttpGenericConfig = toml::from_str(&format!(
        r#"
        url = "{}/ingest/{{tenant}}?src=spool"
        format = "ndjson"
        method = "PUT"
        gzip = true
        headers = {{ "X-Tenant" = "tenant-{{tenant}}" }}
        auth = {{ header = {{ name = "X-Api-Key", value = {{ file = {:?} }} }} }}
        "#,
        server.url,
        key.display().to_string()
    ))
    .expect("parses");
    let h = HttpGeneric::new(c).expect("valid");
    let t = tenant("t1");
    let b = batch(&[(1, 1.0), (2, 2.0)]);
    let mut req = request(&t, &b);
    req.offsets = 10..12;
    let out = h.send(req.clone()).await;
    assert!(
        matches!(out, Outcome::Delivered { skipped: 0, .. }),
        "{out:?}"
    );
    let r = server.request().await;
    assert_eq!(r.method, "PUT");
    assert_eq!(r.target, "/ingest/t1?src=spool");
    assert_eq!(r.header("x-tenant"), Some("tenant-t1"));
    assert_eq!(r.header("x-api-key"), Some("s3cret"));
    assert_eq!(r.header("idempotency-key"), Some("t1-10-12-0of1"));
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut text)
        .expect("gzip");
    assert_eq!(
        text,
        encode(HttpFormat::Ndjson, "t1", &req.batch_id(), &b).text
    );
}

#[tokio::test]
async fn a_json_post_with_bearer_auth_is_plain_json() {
    let server = testserver::serve_once(200, &[], "ok").await;
    let mut c = HttpGenericConfig::new(format!("{}/m", server.url));
    c.auth = Some(HttpAuth::Bearer(Secret::Env("PATH".into())));
    let h = HttpGeneric::new(c).expect("valid");
    let t = tenant("t1");
    let b = batch(&[(1, 1.0)]);
    h.send(request(&t, &b)).await;
    let r = server.request().await;
    assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/m"));
    assert!(
        r.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["batch_id"], "t1-0-1-0of1");
    assert_eq!(v["samples"][0]["value"], 1.0);
}

#[tokio::test]
async fn statuses_map_to_delivered_retry_too_large_and_permanent() {
    let t = tenant("t1");
    let b = batch(&[(1, 1.0)]);
    let cases: &[(u16, &str)] = &[
        (200, "delivered"),
        (202, "delivered"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (501, "permanent"),
        (503, "retry"),
        (413, "too large"),
        (400, "permanent"),
        (401, "permanent"),
        (404, "permanent"),
        (302, "permanent"),
    ];
    for &(status, want) in cases {
        let s = testserver::serve_once(status, &[("Retry-After", "3")], "why").await;
        let out = backend(&s.url).send(request(&t, &b)).await;
        let got = testserver::outcome_word(&out, Duration::from_secs(3), "why");
        assert_eq!(got, want, "status {status}");
    }
}

#[tokio::test]
async fn a_batch_of_only_nan_is_not_sent() {
    let h = backend("http://127.0.0.1:9");
    let t = tenant("t1");
    let b = batch(&[(1, f64::NAN)]);
    assert_eq!(
        h.send(request(&t, &b)).await,
        Outcome::Delivered {
            bytes: 0,
            skipped: 1
        }
    );
}

#[tokio::test]
async fn a_forwarder_dead_letters_a_batch_refused_with_400() {
    let server = testserver::serve_seq(vec![SeqAnswer::new(400, "bad sample")]).await;
    let f = Forwarding::start(Arc::new(backend(&server.url)));
    f.append_and_settle(&batch(&[(1, 1.0), (2, 2.0)])).await;
    let dl = f.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        (dl[0].kind, dl[0].status, dl[0].samples),
        (RejectKind::Permanent, Some(400), 2)
    );
    assert!(dl[0].reason.contains("bad sample"));
}

#[tokio::test]
async fn a_forwarder_waits_for_retry_after_then_delivers_with_the_same_key() {
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(429, "slow down").header("Retry-After", "1"),
        SeqAnswer::new(202, ""),
    ])
    .await;
    let f = Forwarding::start(Arc::new(backend(&server.url)));
    f.append_and_settle(&batch(&[(1, 1.0)])).await;
    let (times, reqs) = (server.times(), server.requests());
    assert_eq!(reqs.len(), 2);
    assert!(times[1] - times[0] >= Duration::from_millis(950));
    assert_eq!(
        reqs[0].header("idempotency-key"),
        reqs[1].header("idempotency-key")
    );
    assert_eq!(reqs[0].body, reqs[1].body, "a resend is byte-identical");
    assert!(f.dead_letters().is_empty());
}
