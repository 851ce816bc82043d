//! File backend: JSON lines, one file per tenant (`<dir>/<tenant>.jsonl`).
//!
//! The daemon's embedded default: with no external server, forwarded samples land here, so a
//! user can see what metricspool would send. One line per sample:
//!
//! ```text
//! {"batch":"edge-1-0-1-0of1","tenant":"edge-1","name":"cpu","labels":{"host":"a"},"kind":"gauge","timestamp_ms":1700000000000,"value":0.5}
//! ```
//!
//! `value` is a JSON number, or the string `"NaN"`, `"+Inf"` or `"-Inf"` (JSON has no such
//! numbers). Labels are in the series' (sorted) order.
//!
//! **Guarantee: exactly once.** A batch's lines are written in one `write` and fsynced before
//! the send returns `Delivered`, so the forwarder commits only what is on disk. A torn last
//! line (crash during the write) is cut off before the next write. A resend (the batch was in
//! flight when the process died) is recognised by the `batch` id of the file's last line and
//! not written twice — batches reach this backend one at a time and in order, so only the last
//! one can be a duplicate.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{Backend, BoxFuture, Outcome, RejectKind, RetryReason, SendRequest};
use crate::sample::Batch;
use crate::tenant::TenantId;

/// File backend settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the `<tenant>.jsonl` files; created if missing. Required.
    pub path: PathBuf,
    /// fsync each batch before acknowledging it (default true). Without it a power cut can
    /// lose lines the cursor has already passed.
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn yes() -> bool {
    true
}

impl FileConfig {
    /// Files in `path`, fsynced.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: true,
        }
    }
}

/// Writes JSON lines per tenant. See the module docs.
#[derive(Debug)]
pub struct FileBackend {
    config: FileConfig,
    /// Open files, checked for a torn tail on first use.
    files: Mutex<HashMap<TenantId, Arc<Mutex<File>>>>,
}

impl FileBackend {
    /// Creates the directory if needed.
    pub fn new(config: FileConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.path)?;
        Ok(Self {
            config,
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The file a tenant's samples go to.
    pub fn file_path(&self, tenant: &TenantId) -> PathBuf {
        self.config.path.join(format!("{tenant}.jsonl"))
    }

    fn file(&self, tenant: &TenantId) -> std::io::Result<Arc<Mutex<File>>> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = files.get(tenant) {
            return Ok(f.clone());
        }
        let path = self.file_path(tenant);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        cut_torn_tail(&mut file)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = Arc::new(Mutex::new(file));
        files.insert(tenant.clone(), file.clone());
        Ok(file)
    }

    async fn write(&self, req: &SendRequest<'_>) -> std::io::Result<Outcome> {
        let file = self.file(req.tenant)?;
        let id = req.batch_id();
        let text = json_lines(&id, req.tenant, req.batch);
        let (resend, fsync) = (req.resend, self.config.fsync);
        let write = move || {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            if resend && last_batch_id(&mut file)?.as_deref() == Some(id.as_str()) {
                return Ok(Outcome::Delivered {
                    bytes: 0,
                    skipped: 0,
                });
            }
            file.write_all(text.as_bytes())?;
            if fsync {
                file.sync_data()?;
            }
            Ok(Outcome::Delivered {
                bytes: text.len() as u64,
                skipped: 0,
            })
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(std::io::Error::other)?
    }
}

impl Backend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn send<'a>(&'a self, req: SendRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.write(&req).await {
                Ok(outcome) => outcome,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Outcome::Rejected {
                    kind: RejectKind::Permanent,
                    status: None,
                    reason: format!("cannot write {}: {e}", self.file_path(req.tenant).display()),
                },
                Err(e) => Outcome::Retry {
                    reason: RetryReason::Network,
                    retry_after: None,
                    detail: format!("cannot write {}: {e}", self.file_path(req.tenant).display()),
                },
            }
        })
    }
}

/// Renders a batch as JSON lines (see the module docs).
pub fn json_lines(batch_id: &str, tenant: &TenantId, batch: &Batch) -> String {
    let mut out = String::with_capacity(batch.sample_count() * 128);
    let prefix = format!(
        "{{\"batch\":{},\"tenant\":{}",
        json_str(batch_id),
        json_str(tenant.as_str())
    );
    for entry in batch.entries() {
        let mut series = format!(",\"name\":{},\"labels\":{{", json_str(entry.series.name()));
        for (i, l) in entry.series.labels().iter().enumerate() {
            if i > 0 {
                series.push(',');
            }
            let _ = write!(series, "{}:{}", json_str(&l.name), json_str(&l.value));
        }
        let _ = write!(series, "}},\"kind\":\"{}\"", entry.kind.as_str());
        for s in &entry.samples {
            out.push_str(&prefix);
            out.push_str(&series);
            let _ = writeln!(
                out,
                ",\"timestamp_ms\":{},\"value\":{}}}",
                s.timestamp_ms,
                json_f64(s.value)
            );
        }
    }
    out
}

/// A JSON number, or `"NaN"` / `"+Inf"` / `"-Inf"`.
pub fn json_f64(v: f64) -> String {
    if v.is_nan() {
        "\"NaN\"".into()
    } else if v.is_infinite() {
        if v > 0.0 { "\"+Inf\"" } else { "\"-Inf\"" }.into()
    } else {
        // `{:?}` prints the shortest representation that round-trips.
        format!("{v:?}")
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Cuts everything after the last newline: a line torn by a crash during a write.
fn cut_torn_tail(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let keep = last_line_start(file, len)?.map_or(0, |(_, end)| end);
    if keep != len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(())
}

/// The last line ending in a newline, as `(start, end)` byte offsets (end past the newline).
fn last_line_start(file: &mut File, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = None;
    let mut pos = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while pos > 0 {
        let from = pos.saturating_sub(CHUNK);
        let n = (pos - from) as usize;
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            let at = from + i as u64;
            match end {
                None => end = Some(at + 1),
                Some(e) => return Ok(Some((at + 1, e))),
            }
        }
        pos = from;
    }
    Ok(end.map(|e| (0, e)))
}

/// The `batch` field of the file's last complete line.
fn last_batch_id(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.metadata()?.len();
    let Some((start, end)) = last_line_start(file, len)? else {
        return Ok(None);
    };
    let mut line = vec![0u8; (end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    #[derive(Deserialize)]
    struct Line {
        batch: String,
    }
    Ok(serde_json::from_slice::<Line>(&line).ok().map(|l| l.batch))
}

/// Reads a tenant file back: every line parsed, for tests and `status`.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{MetricKind, Sample, Series};

    fn batch(n: usize) -> Batch {
        let mut b = Batch::new();
        let s =
            Series::new("cpu_seconds_total", [("host", "a\"b"), ("z", "1")]).expect("test setup");
        for i in 0..n {
            b.push_one(
                s.clone(),
                MetricKind::Counter,
                Sample::new(i as i64, i as f64 + 0.5),
            );
        }
        b.push_one(s, MetricKind::Gauge, Sample::new(99, f64::NAN));
        b
    }

    fn req<'a>(t: &'a TenantId, b: &'a Batch, start: u64, resend: bool) -> SendRequest<'a> {
        SendRequest {
            tenant: t,
            batch: b,
            offsets: start..start + 1,
            part: (0, 1),
            resend,
        }
    }

    #[tokio::test]
    async fn writes_lines_and_skips_a_resent_last_batch() {
        let dir = tempfile::tempdir().expect("test setup");
        let be = FileBackend::new(FileConfig::new(dir.path())).expect("test setup");
        let t = TenantId::new("edge-1").expect("test setup");
        let b = batch(3);
        assert!(matches!(
            be.send(req(&t, &b, 0, false)).await,
            Outcome::Delivered { .. }
        ));
        // The same batch resent after a crash: not written again.
        assert!(matches!(
            be.send(req(&t, &b, 0, true)).await,
            Outcome::Delivered { bytes: 0, .. }
        ));
        // A resend of a batch that never arrived is written.
        be.send(req(&t, &b, 1, true)).await;
        let lines = read_lines(&be.file_path(&t)).expect("test setup");
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[0]["labels"]["host"], "a\"b");
        assert_eq!(lines[0]["kind"], "counter");
        assert_eq!(lines[1]["value"], 1.5);
        assert_eq!(lines[3]["value"], "NaN");
        assert_eq!(lines[4]["batch"], "edge-1-1-2-0of1");
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_before_writing() {
        let dir = tempfile::tempdir().expect("test setup");
        let t = TenantId::new("a").expect("test setup");
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "{\"batch\":\"x\"}\n{\"batch\":\"y\",\"tru").expect("test setup");
        let be = FileBackend::new(FileConfig::new(dir.path())).expect("test setup");
        be.send(req(&t, &batch(1), 5, false)).await;
        let lines = read_lines(&path).expect("test setup");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["batch"], "x");
        assert_eq!(lines[1]["batch"], "a-5-6-0of1");
    }

    #[test]
    fn floats_round_trip() {
        for v in [0.1, 1e300, -0.0, 125.0, f64::MIN_POSITIVE] {
            let back: f64 = json_f64(v).parse().expect("test setup");
            assert_eq!(back.to_bits(), v.to_bits());
        }
        assert_eq!(json_f64(f64::NEG_INFINITY), "\"-Inf\"");
    }
}
