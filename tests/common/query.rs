//! Reading samples back from the real backends, raw and exactly: every stored (timestamp,
//! value) per series, so a test can check presence, value bits and duplicates.

use std::collections::BTreeMap;

use super::http::{self, enc};
use super::json::Json;

/// Stored samples per series: key = `name{label="value",...}` (labels sorted, `__name__`
/// and backend-added labels left out), samples in the order the backend returned them.
pub type Samples = BTreeMap<String, Vec<(i64, f64)>>;

/// The canonical key of a series.
pub fn series_key<'a>(name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut l: Vec<_> = labels
        .into_iter()
        .filter(|(k, _)| *k != "__name__" && *k != "db")
        .collect();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn labels_of(metric: &Json) -> (String, Vec<(&str, &str)>) {
    let mut name = String::new();
    let mut labels = Vec::new();
    if let Json::Object(m) = metric {
        for (k, v) in m {
            let v = v.str().unwrap_or_default();
            if k == "__name__" {
                name = v.to_owned();
            } else {
                labels.push((k.as_str(), v));
            }
        }
    }
    (name, labels)
}

/// Milliseconds from a Prometheus timestamp such as `1700000000.123` (parsed from the text,
/// so no float rounding).
fn prom_ts_ms(j: &Json) -> i64 {
    let s = j.str().expect("a timestamp");
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut frac = frac.to_owned();
    frac.truncate(3);
    while frac.len() < 3 {
        frac.push('0');
    }
    secs.parse::<i64>().expect("seconds") * 1000 + frac.parse::<i64>().expect("millis")
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Raw samples of `selector` over the last `range` (e.g. `"5d"`), from Prometheus.
pub fn prometheus(port: u16, selector: &str, range: &str) -> Samples {
    let q = format!("{selector}[{range}]");
    let path = format!("/api/v1/query?query={}&time={}", enc(&q), now_s() + 3600);
    let r = http::get(port, &path).expect("prometheus answers");
    assert_eq!(
        r.status,
        200,
        "prometheus {q}: {}",
        &r.body[..r.body.len().min(500)]
    );
    let j = Json::parse(&r.body).expect("prometheus answers JSON");
    let mut out = Samples::new();
    for s in j.get("data").get("result").items() {
        let (name, labels) = labels_of(s.get("metric"));
        let v = out.entry(series_key(&name, labels)).or_default();
        for p in s.get("values").items() {
            v.push((prom_ts_ms(p.at(0)), p.at(1).f64().expect("a value")));
        }
    }
    out
}

/// Total samples of `selector` over the last `range` by `count_over_time`, from Prometheus
/// or VictoriaMetrics (both serve `/api/v1/query`; VictoriaMetrics applies its dedup here).
pub fn count_over_time(port: u16, selector: &str, range: &str) -> u64 {
    let q = format!("sum(count_over_time({selector}[{range}]))");
    let path = format!(
        "/api/v1/query?query={}&time={}&nocache=1",
        enc(&q),
        now_s() + 3600
    );
    let r = http::get(port, &path).expect("the backend answers");
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    let j = Json::parse(&r.body).expect("JSON");
    j.get("data")
        .get("result")
        .at(0)
        .get("value")
        .at(1)
        .f64()
        .map_or(0, |f| f as u64)
}

/// Makes VictoriaMetrics' recent writes searchable at once.
pub fn vm_flush(port: u16) {
    let r = http::get(port, "/internal/force_flush").expect("VictoriaMetrics answers");
    assert!((200..300).contains(&r.status), "force_flush: {}", r.body);
}

/// Raw samples matching `selector` from VictoriaMetrics' export (after a flush), the last
/// `days` days. A series exported in several blocks is merged, duplicates kept.
pub fn victoria_metrics(port: u16, selector: &str, days: u64) -> Samples {
    vm_flush(port);
    let now = now_s();
    let path = format!(
        "/api/v1/export?match[]={}&start={}&end={}",
        enc(selector),
        now - days * 86400,
        now + 3600
    );
    let r = http::get(port, &path).expect("VictoriaMetrics answers");
    assert_eq!(r.status, 200, "export {selector}: {}", r.body);
    let mut out = Samples::new();
    for line in r.body.lines().filter(|l| !l.trim().is_empty()) {
        let j = Json::parse(line).expect("a JSON line");
        let (name, labels) = labels_of(j.get("metric"));
        let v = out.entry(series_key(&name, labels)).or_default();
        let ts = j.get("timestamps").items();
        let vals = j.get("values").items();
        assert_eq!(ts.len(), vals.len(), "{line}");
        for (t, x) in ts.iter().zip(vals) {
            v.push((t.i64().expect("ts"), x.f64().expect("value")));
        }
    }
    out
}

/// Runs an InfluxQL query on database `db` with millisecond epochs; returns the JSON.
pub fn influx_query(port: u16, db: &str, q: &str) -> Json {
    let path = format!("/query?db={}&epoch=ms&q={}", enc(db), enc(q));
    let r = http::get(port, &path).expect("InfluxDB answers");
    assert_eq!(r.status, 200, "influx {q}: {}", r.body);
    let j = Json::parse(&r.body).expect("JSON");
    let err = j.get("results").at(0).get("error");
    assert!(matches!(err, Json::Null), "influx {q}: {err:?}");
    j
}

/// Raw points (field `value`, as the backend writes) of `measurement` whose `where_` clause
/// matches, every tag kept, from the harness' InfluxDB database.
pub fn influx(port: u16, measurement: &str, where_: &str) -> Samples {
    let q = format!("SELECT \"value\" FROM \"{measurement}\" WHERE {where_} GROUP BY *");
    let j = influx_query(port, super::servers::INFLUX_DB, &q);
    let mut out = Samples::new();
    for s in j.get("results").at(0).get("series").items() {
        let name = s.get("name").str().unwrap_or_default().to_owned();
        let (_, tags) = labels_of(s.get("tags"));
        let v = out.entry(series_key(&name, tags)).or_default();
        for p in s.get("values").items() {
            v.push((p.at(0).i64().expect("ts"), p.at(1).f64().expect("value")));
        }
    }
    out
}

/// `SELECT count(value)` over the matching points.
pub fn influx_count(port: u16, measurement: &str, where_: &str) -> u64 {
    let q = format!("SELECT count(\"value\") FROM \"{measurement}\" WHERE {where_}");
    let j = influx_query(port, super::servers::INFLUX_DB, &q);
    j.get("results")
        .at(0)
        .get("series")
        .at(0)
        .get("values")
        .at(0)
        .at(1)
        .i64()
        .map_or(0, |n| n as u64)
}

/// Samples in total.
pub fn total(s: &Samples) -> usize {
    s.values().map(Vec::len).sum()
}

/// What differs between what was sent and what a backend stored.
#[derive(Debug, Default)]
pub struct Diff {
    pub missing: usize,
    pub extra: usize,
    pub duplicates: usize,
    pub wrong_value: usize,
    pub examples: Vec<String>,
}

impl Diff {
    pub fn is_exact(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.duplicates == 0 && self.wrong_value == 0
    }
}

/// Compares per series and timestamp: every expected sample stored once, with the same bits.
pub fn diff(expected: &Samples, got: &Samples) -> Diff {
    let mut d = Diff::default();
    let note = |d: &mut Diff, s: String| {
        if d.examples.len() < 8 {
            d.examples.push(s);
        }
    };
    for (key, exp) in expected {
        let mut stored: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (t, v) in got.get(key).map(Vec::as_slice).unwrap_or_default() {
            stored.entry(*t).or_default().push(*v);
        }
        for (t, v) in exp {
            match stored.remove(t) {
                None => {
                    d.missing += 1;
                    note(&mut d, format!("{key} @{t} missing"));
                }
                Some(vs) => {
                    if vs.len() > 1 {
                        d.duplicates += vs.len() - 1;
                        note(&mut d, format!("{key} @{t} stored {} times", vs.len()));
                    }
                    if vs.iter().any(|x| x.to_bits() != v.to_bits()) {
                        d.wrong_value += 1;
                        note(&mut d, format!("{key} @{t}: sent {v}, stored {vs:?}"));
                    }
                }
            }
        }
        let left: usize = stored.values().map(Vec::len).sum();
        if left > 0 {
            d.extra += left;
            note(&mut d, format!("{key}: {left} samples never sent"));
        }
    }
    for (key, v) in got {
        if !expected.contains_key(key) {
            d.extra += v.len();
            note(
                &mut d,
                format!("{key}: a series never sent ({} samples)", v.len()),
            );
        }
    }
    d
}
