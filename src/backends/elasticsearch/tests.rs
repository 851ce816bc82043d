//! Protocol tests of `backends::elasticsearch` against the one-connection test server.

use std::io::Read as _;
use std::sync::Arc;

use super::*;
use crate::backends::prometheus::tests::{request, series};
use crate::backends::testserver::{self, Forwarding, SeqAnswer};
use crate::sample::{Batch, MetricKind, Sample};

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant")
}

/// 2026-12-04T10:00:00.000Z
const T0: i64 = 1_796_378_400_000;

fn batch(samples: &[(i64, f64)]) -> Batch {
    let mut b = Batch::new();
    let s = series("cpu", &[("host", "a"), ("empty", "")]);
    b.push(
        s,
        MetricKind::Gauge,
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    );
    b
}

fn backend(url: &str) -> Elasticsearch {
    let mut c = ElasticsearchConfig::new(url);
    c.item_retry_backoff = Duration::from_millis(1);
    Elasticsearch::new(c).expect("a valid config")
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .expect("a gzip body");
    text
}

fn items(statuses: &[u16]) -> String {
    let items: Vec<String> = statuses
        .iter()
        .map(|s| match s {
            200..=299 => format!("{{\"create\":{{\"status\":{s}}}}}"),
            409 => "{\"create\":{\"status\":409,\"error\":{\"type\":\"version_conflict_engine_exception\",\"reason\":\"exists\"}}}".to_owned(),
            429 => "{\"create\":{\"status\":429,\"error\":{\"type\":\"es_rejected_execution_exception\",\"reason\":\"queue full\"}}}".to_owned(),
            _ => format!("{{\"create\":{{\"status\":{s},\"error\":{{\"type\":\"mapper_parsing_exception\",\"reason\":\"failed to parse\"}}}}}}"),
        })
        .collect();
    format!("{{\"errors\":true,\"items\":[{}]}}", items.join(","))
}

const ALL_OK: &str = "{\"errors\":false,\"items\":[]}";

#[test]
fn a_document_has_timestamp_metric_labels_and_tenant_under_a_dated_index() {
    let t = tenant("t1");
    let b = batch(&[(T0, 12.5), (T0 + 86_400_000, -0.0)]);
    let docs = encode(DEFAULT_INDEX, IdScope::Series, &request(&t, &b)).expect("encodes");
    assert_eq!(docs.lines.len(), 2);
    let id = document_id(&t, &b.entries()[0].series, T0, None);
    assert_eq!(
        docs.lines[0],
        format!(
            "{{\"create\":{{\"_index\":\"metrics-t1-2026.12.04\",\"_id\":\"{id}\"}}}}\n\
             {{\"@timestamp\":\"2026-12-04T10:00:00.000Z\",\"metric\":{{\"name\":\"cpu\",\"kind\":\"gauge\",\"value\":12.5}},\"labels\":{{\"host\":\"a\"}},\"tenant\":\"t1\"}}\n"
        )
    );
    assert!(docs.lines[1].contains("\"_index\":\"metrics-t1-2026.12.05\""));
    assert!(docs.lines[1].contains("\"value\":-0.0}"));
    // Every line is valid JSON.
    for line in docs.lines.iter().flat_map(|l| l.lines()) {
        serde_json::from_str::<serde_json::Value>(line).expect("a JSON line");
    }
}

#[test]
fn nan_and_infinite_samples_are_skipped_and_counted() {
    let t = tenant("t1");
    let b = batch(&[(T0, f64::NAN), (T0 + 1, 1.0), (T0 + 2, f64::INFINITY)]);
    let docs = encode(DEFAULT_INDEX, IdScope::Series, &request(&t, &b)).expect("encodes");
    assert_eq!((docs.lines.len(), docs.skipped), (1, 2));
    assert_eq!(docs.sample_index, vec![1]);
}

#[test]
fn series_scoped_ids_depend_on_tenant_series_and_timestamp_only() {
    let s = series("cpu", &[("host", "a")]);
    let id = document_id(&tenant("t1"), &s, T0, None);
    assert_eq!(id.len(), 40);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(id, document_id(&tenant("t1"), &s, T0, None));
    let others = [
        document_id(&tenant("t2"), &s, T0, None),
        document_id(&tenant("t1"), &series("cpu", &[("host", "b")]), T0, None),
        document_id(&tenant("t1"), &series("mem", &[("host", "a")]), T0, None),
        document_id(&tenant("t1"), &s, T0 + 1, None),
        document_id(&tenant("t1"), &s, T0, Some((0, 0))),
    ];
    assert!(others.iter().all(|o| *o != id));
    // Neither the batch boundaries nor the part of a split request change the ids.
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0 + 1, 2.0)]);
    let mut whole = request(&t, &b);
    whole.offsets = 100..102;
    let half = b.slice(1, 2);
    let mut second = request(&t, &half);
    second.offsets = 101..102;
    second.part = (1, 2);
    let a = encode(DEFAULT_INDEX, IdScope::Series, &whole).expect("encodes");
    let h = encode(DEFAULT_INDEX, IdScope::Series, &second).expect("encodes");
    assert_eq!(a.ids[1], h.ids[0]);
    // A repeated (series, timestamp) is one document.
    let b = batch(&[(T0, 1.0), (T0, 2.0)]);
    let docs = encode(DEFAULT_INDEX, IdScope::Series, &request(&t, &b)).expect("encodes");
    assert_eq!(docs.ids[0], docs.ids[1]);
}

#[test]
fn batch_scoped_ids_add_the_batch_start_and_the_occurrence_but_not_the_part() {
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0, 2.0)]);
    let mut req = request(&t, &b);
    req.offsets = 100..102;
    let docs = encode(DEFAULT_INDEX, IdScope::Batch, &req).expect("encodes");
    assert_ne!(
        docs.ids[0], docs.ids[1],
        "a repeated sample is its own document"
    );
    req.part = (1, 4);
    assert_eq!(
        encode(DEFAULT_INDEX, IdScope::Batch, &req)
            .expect("encodes")
            .ids,
        docs.ids
    );
    req.offsets = 101..102;
    assert_ne!(
        encode(DEFAULT_INDEX, IdScope::Batch, &req)
            .expect("encodes")
            .ids,
        docs.ids
    );
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339_ms(T0 + 3_723_004), "2026-12-04T11:02:03.004Z");
    assert_eq!(civil_date(253_402_300_799_999), (9999, 12, 31));
}

#[test]
fn index_names_elasticsearch_would_refuse_are_refused_without_a_request() {
    let t = tenant("Edge-1");
    let b = batch(&[(T0, 1.0)]);
    let out = encode(DEFAULT_INDEX, IdScope::Series, &request(&t, &b));
    assert!(matches!(
        out,
        Err(Outcome::Rejected { kind: RejectKind::Permanent, ref reason, .. }) if reason.contains("upper-case")
    ));
    assert!(check_index_name("metrics-t1").is_ok());
    for bad in ["_x", "a b", "a*", "a:b", ""] {
        assert!(check_index_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn config_reads_toml_with_defaults_and_refuses_unknown_fields_and_placeholders() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let key = dir.path().join("es.key");
    std::fs::write(&key, "aWQ6a2V5\n").expect("write the key");
    let c: ElasticsearchConfig = toml::from_str(&format!(
        "url = \"http://es:9200\"\nauth = {{ api_key = {{ file = {:?} }} }}\ntimeout = \"5s\"\n",
        key.display().to_string()
    ))
    .expect("parses");
    assert_eq!(c.index, DEFAULT_INDEX);
    assert!(c.gzip && !c.data_stream);
    assert_eq!(c.document_id, IdScope::Series);
    assert_eq!(c.timeout, Duration::from_secs(5));
    let es = Elasticsearch::new(c).expect("valid");
    assert_eq!(
        es.auth,
        Auth::Scheme {
            scheme: "ApiKey".into(),
            token: "aWQ6a2V5".into()
        }
    );
    assert!(toml::from_str::<ElasticsearchConfig>("url = \"http://x\"\nindexx = \"a\"").is_err());
    assert!(
        toml::from_str::<ElasticsearchConfig>(
            "url = \"http://x\"\nauth = { api_key = \"inline\" }"
        )
        .is_err()
    );
    let mut c = ElasticsearchConfig::new("http://x");
    c.index = "m-{tenant}-{host}".into();
    assert!(matches!(
        Elasticsearch::new(c),
        Err(ConfigError::Field { field: "index", .. })
    ));
    let mut c = ElasticsearchConfig::new("http://x");
    c.data_stream = true;
    assert!(
        matches!(Elasticsearch::new(c), Err(ConfigError::Field { field: "index", reason }) if reason.contains("data stream")),
        "a data stream rolls over by itself: {{date}} is refused"
    );
    let mut c = ElasticsearchConfig::new("http://x");
    c.data_stream = true;
    c.index = "metrics-metricspool-{tenant}".into();
    assert!(Elasticsearch::new(c).is_ok());
    let mut c = ElasticsearchConfig::new("http://x");
    c.auth = Some(EsAuth::Bearer(Secret::Env(
        "METRICSPOOL_TEST_ES_UNSET".into(),
    )));
    assert!(matches!(
        Elasticsearch::new(c),
        Err(ConfigError::Field { field: "auth", .. })
    ));
}

#[tokio::test]
async fn a_bulk_request_has_the_path_headers_and_gzipped_ndjson_body() {
    let server = testserver::serve_once(200, &[], ALL_OK).await;
    let mut c = ElasticsearchConfig::new(format!("{}/prefix", server.url));
    c.auth = Some(EsAuth::Basic {
        user: "elastic".into(),
        password: Secret::Env("PATH".into()),
    });
    let es = Elasticsearch::new(c).expect("valid");
    let t = tenant("t1");
    let b = batch(&[(T0, 1.5), (T0 + 1000, 2.5)]);
    let out = es.send(request(&t, &b)).await;
    assert!(matches!(out, Outcome::Delivered { skipped: 0, bytes } if bytes > 0));
    let r = server.request().await;
    assert_eq!((r.method.as_str(), r.path()), ("POST", "/prefix/_bulk"));
    assert_eq!(
        r.query(),
        vec![("filter_path".to_owned(), FILTER_PATH.to_owned())]
    );
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(
        r.header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );
    let docs = encode(DEFAULT_INDEX, IdScope::Series, &request(&t, &b)).expect("encodes");
    assert_eq!(gunzip(&r.body), docs.lines.concat());
    assert!(gunzip(&r.body).ends_with('\n'));
}

#[tokio::test]
async fn without_gzip_the_body_is_plain_ndjson_and_an_api_key_is_sent() {
    let server = testserver::serve_once(200, &[], ALL_OK).await;
    let mut c = ElasticsearchConfig::new(&server.url);
    c.gzip = false;
    c.auth = Some(EsAuth::ApiKey(Secret::Env("PATH".into())));
    let es = Elasticsearch::new(c).expect("valid");
    let t = tenant("t1");
    let b = batch(&[(T0, 1.5)]);
    es.send(request(&t, &b)).await;
    let r = server.request().await;
    assert_eq!(r.header("content-encoding"), None);
    assert!(
        r.header("authorization")
            .is_some_and(|a| a.starts_with("ApiKey "))
    );
    assert!(String::from_utf8_lossy(&r.body).starts_with("{\"create\":"));
}

#[tokio::test]
async fn mixed_items_resend_only_the_throttled_one_and_dead_letter_the_refused_one() {
    // 201 stored, 409 already stored, 429 throttled, 400 refused; the resend of the
    // throttled document alone succeeds.
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(200, &items(&[201, 409, 429, 400])),
        SeqAnswer::new(200, &items(&[201]).replace("true", "false")),
    ])
    .await;
    let es = backend(&server.url);
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0 + 1, 2.0), (T0 + 2, 3.0), (T0 + 3, 4.0)]);
    let out = es.send(request(&t, &b)).await;
    let Outcome::Rejected {
        kind: RejectKind::Partial,
        status: Some(400),
        reason,
    } = out
    else {
        panic!("expected a partial rejection, got {out:?}");
    };
    assert!(reason.starts_with("1 of 4 documents refused"), "{reason}");
    assert!(reason.contains("sample 3") && reason.contains("mapper_parsing_exception"));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let docs = encode(DEFAULT_INDEX, IdScope::Series, &request(&t, &b)).expect("encodes");
    assert_eq!(
        gunzip(&reqs[1].body),
        docs.lines[2],
        "only the throttled document"
    );
}

#[tokio::test]
async fn items_still_throttled_after_the_inner_resends_give_retry() {
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(200, &items(&[201, 429])),
        SeqAnswer::new(200, &items(&[429])),
    ])
    .await;
    let es = backend(&server.url);
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0 + 1, 2.0)]);
    let out = es.send(request(&t, &b)).await;
    assert!(matches!(
        out,
        Outcome::Retry {
            reason: RetryReason::RateLimited,
            ..
        }
    ));
    // The first request, then one resend of the throttled document per inner retry.
    assert_eq!(server.requests().len(), 1 + DEFAULT_ITEM_RETRIES as usize);
}

#[tokio::test]
async fn every_item_already_stored_is_delivered() {
    let server = testserver::serve_once(200, &[], &items(&[409, 409])).await;
    let es = backend(&server.url);
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0 + 1, 2.0)]);
    assert!(matches!(
        es.send(request(&t, &b)).await,
        Outcome::Delivered { skipped: 0, .. }
    ));
}

#[tokio::test]
async fn every_item_refused_is_a_permanent_rejection() {
    let server = testserver::serve_once(200, &[], &items(&[400, 400])).await;
    let es = backend(&server.url);
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0 + 1, 2.0)]);
    assert!(matches!(
        es.send(request(&t, &b)).await,
        Outcome::Rejected {
            kind: RejectKind::Permanent,
            ..
        }
    ));
}

#[tokio::test]
async fn http_statuses_map_to_retry_too_large_and_permanent() {
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0)]);
    let s = testserver::serve_once(429, &[("Retry-After", "7")], "busy").await;
    let out = backend(&s.url).send(request(&t, &b)).await;
    assert!(matches!(
        out,
        Outcome::Retry { reason: RetryReason::RateLimited, retry_after: Some(d), .. } if d == Duration::from_secs(7)
    ));
    let s = testserver::serve_once(503, &[], "down").await;
    let out = backend(&s.url).send(request(&t, &b)).await;
    assert!(matches!(
        out,
        Outcome::Retry {
            reason: RetryReason::ServerError,
            ..
        }
    ));
    let s = testserver::serve_once(413, &[], "").await;
    let out = backend(&s.url).send(request(&t, &b)).await;
    assert!(matches!(
        out,
        Outcome::Rejected {
            kind: RejectKind::TooLarge,
            ..
        }
    ));
    for status in [400, 401, 403] {
        let s = testserver::serve_once(status, &[], "{\"error\":\"no\"}").await;
        let out = backend(&s.url).send(request(&t, &b)).await;
        assert!(
            matches!(out, Outcome::Rejected { kind: RejectKind::Permanent, status: Some(st), ref reason } if st == status && reason.contains("{\"error\":\"no\"}")),
            "{status}: {out:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_or_mismatched_response_is_retried_not_trusted() {
    let t = tenant("t1");
    let b = batch(&[(T0, 1.0), (T0 + 1, 2.0)]);
    for body in [
        "not json",
        &items(&[201]),
        "{\"errors\":true,\"items\":[{},{}]}",
    ] {
        let s = testserver::serve_once(200, &[], body).await;
        let out = backend(&s.url).send(request(&t, &b)).await;
        assert!(
            matches!(
                out,
                Outcome::Retry {
                    reason: RetryReason::ServerError,
                    ..
                }
            ),
            "{body}: {out:?}"
        );
    }
}

#[tokio::test]
async fn a_forwarder_dead_letters_a_batch_refused_with_400() {
    let server = testserver::serve_seq(vec![SeqAnswer::new(
        400,
        "{\"error\":{\"type\":\"parse_exception\"}}",
    )])
    .await;
    let f = Forwarding::start(Arc::new(backend(&server.url)));
    f.append_and_settle(&batch(&[(T0, 1.0), (T0 + 1, 2.0)]))
        .await;
    let dl = f.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        (dl[0].kind, dl[0].status, dl[0].samples),
        (RejectKind::Permanent, Some(400), 2)
    );
    assert!(dl[0].reason.contains("parse_exception"));
}

#[tokio::test]
async fn a_forwarder_waits_for_retry_after_then_delivers() {
    let server = testserver::serve_seq(vec![
        SeqAnswer::new(429, "busy").header("Retry-After", "1"),
        SeqAnswer::new(200, ALL_OK),
    ])
    .await;
    let f = Forwarding::start(Arc::new(backend(&server.url)));
    f.append_and_settle(&batch(&[(T0, 1.0)])).await;
    let times = server.times();
    assert_eq!(times.len(), 2);
    assert!(times[1] - times[0] >= Duration::from_millis(950));
    assert!(f.dead_letters().is_empty());
}

proptest::proptest! {
    /// The bulk response decoder takes untrusted bytes: it returns an error, never panics.
    #[test]
    fn any_bytes_as_a_bulk_response_never_panic(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        sent in 0usize..8,
    ) {
        let _ = parse_response(&body, sent);
    }

    /// Bulk-shaped JSON with arbitrary statuses and keys decodes or errs, never panics.
    #[test]
    fn bulk_shaped_responses_never_panic(
        statuses in proptest::collection::vec(0u32..70_000, 0..6),
        errors in proptest::prelude::any::<bool>(),
        sent in 0usize..8,
    ) {
        let items: Vec<String> = statuses
            .iter()
            .map(|s| format!("{{\"index\":{{\"status\":{s},\"error\":{{\"type\":\"x\"}}}}}}"))
            .collect();
        let body = format!("{{\"errors\":{errors},\"items\":[{}]}}", items.join(","));
        if let Ok(results) = parse_response(body.as_bytes(), sent) {
            proptest::prop_assert_eq!(results.len(), sent);
        }
    }
}
