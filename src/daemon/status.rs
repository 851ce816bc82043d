//! `status`: per tenant, the log's size, offsets and time range, and each consumer's lag and
//! dead letters. Served by the admin API of a running daemon, or read from a stopped
//! daemon's data directory; the JSON is the same.

use serde_json::{Value, json};

use crate::forward::ForwarderStatsSnapshot;
use crate::forward::dlq::DeadLetter;
use crate::spool::Spool;

/// Every tenant's status. `running` overlays live forwarder figures when the daemon runs.
pub fn collect(spool: &Spool, running: &[ForwarderStatsSnapshot]) -> Value {
    let mut tenants = Vec::new();
    for id in spool.tenants() {
        let t = match spool.tenant(&id) {
            Ok(t) => t,
            Err(e) => {
                tenants.push(json!({ "tenant": id.as_str(), "error": e.to_string() }));
                continue;
            }
        };
        let stats = t.stats();
        let segments = t.wal().segments();
        let oldest_ts = segments.iter().filter_map(|s| s.min_ts).min();
        let newest_ts = segments.iter().filter_map(|s| s.max_ts).max();
        let mut consumers = Vec::new();
        for (name, cursor) in t.cursors().list().unwrap_or_default() {
            let live = running.iter().find(|s| s.tenant == id && s.name == name);
            let dead = t
                .dead_letters(&name)
                .and_then(|d| d.list())
                .map(|l| {
                    l.iter()
                        .filter(|d| !d.redriven)
                        .map(|d| d.samples)
                        .sum::<u64>()
                })
                .ok();
            let mut c = json!({
                "name": name,
                "committed": cursor.committed,
                "in_flight": cursor.in_flight().len(),
                "lag_samples": stats.end_offset.saturating_sub(cursor.committed),
                "dead_letter_samples": dead,
            });
            if let Some(s) = live {
                c["type"] = json!(s.kind);
                c["lag_seconds"] = json!(s.lag_seconds);
                c["up"] = json!(s.up);
                c["delivered_samples"] = json!(s.delivered_samples);
                c["last_error"] = json!(s.last_error);
            }
            consumers.push(c);
        }
        tenants.push(json!({
            "tenant": id.as_str(),
            "log_bytes": stats.disk_bytes,
            "segments": stats.segments,
            "first_offset": stats.first_offset,
            "end_offset": stats.end_offset,
            "oldest_timestamp_ms": oldest_ts,
            "newest_timestamp_ms": newest_ts,
            "dropped": stats.dropped.iter().map(|(r, n)| (r.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "backends": consumers,
        }));
    }
    json!({ "tenants": tenants })
}

/// One dead letter as JSON.
pub fn dead_letter_json(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "offsets": [d.source.start, d.source.end],
        "samples": d.samples,
        "created_ms": d.created_ms,
        "redriven": d.redriven,
        "kind": format!("{:?}", d.kind),
        "status": d.status,
        "reason": d.reason,
    })
}

/// The status as text, one block per tenant.
pub fn render_text(status: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for t in status["tenants"].as_array().unwrap_or(&empty) {
        if let Some(e) = t.get("error") {
            out.push_str(&format!(
                "tenant {}: {e}\n",
                t["tenant"].as_str().unwrap_or("?")
            ));
            continue;
        }
        out.push_str(&format!(
            "tenant {}: {} bytes in {} segments, offsets {}..{}, timestamps {}..{}\n",
            t["tenant"].as_str().unwrap_or("?"),
            t["log_bytes"],
            t["segments"],
            t["first_offset"],
            t["end_offset"],
            t["oldest_timestamp_ms"],
            t["newest_timestamp_ms"],
        ));
        for b in t["backends"].as_array().unwrap_or(&empty) {
            out.push_str(&format!(
                "  {:<24} committed {:>12}  lag {:>10} samples  dead letters {}{}\n",
                b["name"].as_str().unwrap_or("?"),
                b["committed"],
                b["lag_samples"],
                b["dead_letter_samples"],
                match b.get("up") {
                    Some(Value::Bool(false)) => "  DOWN",
                    _ => "",
                }
            ));
        }
    }
    out
}
