//! The writer thread: group commit, sealing, segment rolls, timed fsync, poisoning.

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::fs::FsFile;
use super::record::{FrameHeader, encode_frame};
use super::segment::{self, RecordLoc, SegmentHeader, SegmentIndex};
use super::{AppendReq, Request, Segment, SegmentInfo, Shared, cache_index};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::seal::{self, DataKey, RecordPosition};

/// Where an append's result goes.
type Reply = oneshot::Sender<Result<Range<u64>>>;

/// Most requests taken into one group.
const MAX_GROUP_REQUESTS: usize = 4096;

struct Active {
    base: u64,
    file: Arc<dyn FsFile>,
    /// Bytes written to the file so far.
    len: u64,
    key: Arc<DataKey>,
    opened: Instant,
    records: usize,
    min_ts: i64,
    max_ts: i64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    epoch: u32,
    counter: u64,
    next_offset: u64,
    active: Option<Active>,
    /// Set when bytes were written but not yet synced (interval and none policies).
    dirty_since: Option<Instant>,
    buf: Vec<u8>,
    locs: Vec<RecordLoc>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, epoch: u32) -> Self {
        let next_offset = shared.read_state().visible_end;
        Self {
            shared,
            epoch,
            counter: 0,
            next_offset,
            active: None,
            dirty_since: None,
            buf: Vec::new(),
            locs: Vec::new(),
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match self.deadline() {
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        self.on_timer();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut appends = Vec::new();
            let mut controls = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Append(a) => {
                        bytes += a.sealed.len();
                        appends.push(a);
                    }
                    other => controls.push(other),
                }
                if bytes < self.shared.config.max_group_bytes && appends.len() < MAX_GROUP_REQUESTS
                {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.write_group(appends);
            }
            for c in controls {
                match c {
                    Request::Sync(tx) => {
                        let _ = tx.send(self.guarded(|w| w.sync()));
                    }
                    Request::Roll(tx) => {
                        let _ = tx.send(self.guarded(|w| w.seal_active()));
                    }
                    Request::Close(tx) => {
                        let _ = tx.send(self.guarded(|w| w.seal_active()));
                        return;
                    }
                    Request::Append(_) => unreachable!("appends are sorted out above"),
                }
            }
        }
        let _ = self.guarded(|w| w.seal_active());
    }

    fn deadline(&self) -> Option<Instant> {
        let fsync = match (self.shared.config.durability, self.dirty_since) {
            (Durability::Interval(p), Some(t)) => Some(t + p),
            _ => None,
        };
        let age = self
            .active
            .as_ref()
            .filter(|a| a.records > 0)
            .map(|a| a.opened + self.shared.config.segment_max_age);
        match (fsync, age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if let (Durability::Interval(p), Some(t)) =
            (self.shared.config.durability, self.dirty_since)
            && now >= t + p
        {
            let _ = self.guarded(|w| w.sync());
        }
        let aged = self
            .active
            .as_ref()
            .is_some_and(|a| a.records > 0 && now >= a.opened + self.shared.config.segment_max_age);
        if aged {
            let _ = self.guarded(|w| w.seal_active());
        }
    }

    /// Runs `op` unless the log is poisoned; poisons it if `op` fails.
    fn guarded(&mut self, op: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        if let Some(cause) = self.shared.read_state().poisoned.clone() {
            return Err(self.poisoned_error(cause));
        }
        let r = op(self);
        if let Err(e) = &r {
            let cause = e.to_string();
            tracing::error!(tenant = %self.shared.tenant, error = %cause, "log poisoned");
            self.shared.write_state().poisoned = Some(cause);
        }
        r
    }

    fn poisoned_error(&self, cause: String) -> Error {
        Error::Poisoned {
            tenant: self.shared.tenant.to_string(),
            cause,
        }
    }

    fn write_group(&mut self, appends: Vec<AppendReq>) {
        let mut replies: Vec<(Reply, Range<u64>)> = Vec::with_capacity(appends.len());
        let mut rest = appends.into_iter();
        // The reply of an append whose segment roll or creation failed: it must hear the
        // error, not see its channel dropped (which reads as `Closed`).
        let mut failed: Option<Reply> = None;
        let result = self.guarded(|w| {
            for a in rest.by_ref() {
                if let Err(e) = w.make_room(a.sealed.len()) {
                    failed = Some(a.reply);
                    return Err(e);
                }
                replies.push(w.add_record(a));
            }
            w.flush_buf()?;
            w.commit()
        });
        match result {
            Ok(()) => {
                for (tx, range) in replies {
                    let _ = tx.send(Ok(range));
                }
            }
            Err(e) => {
                let cause = e.to_string();
                let mut first = Some(e);
                let unsent = rest.map(|a| a.reply);
                let all = replies
                    .into_iter()
                    .map(|(tx, _)| tx)
                    .chain(failed)
                    .chain(unsent);
                for tx in all {
                    let err = first
                        .take()
                        .unwrap_or_else(|| self.poisoned_error(cause.clone()));
                    let _ = tx.send(Err(err));
                }
            }
        }
    }

    /// Rolls the segment if a record of `sealed_len` compressed bytes does not fit, and
    /// creates the segment to write into if there is none.
    fn make_room(&mut self, sealed_len: usize) -> Result<()> {
        let frame_len = (super::record::FRAME_HEADER_LEN + sealed_len + seal::TAG_LEN) as u64;
        if self.needs_roll(frame_len) {
            self.flush_buf()?;
            self.seal_active()?;
        }
        if self.active.is_none() {
            self.create_segment()?;
        }
        Ok(())
    }

    /// Seals `a` into the group buffer of the active segment (see `make_room`).
    fn add_record(&mut self, mut a: AppendReq) -> (Reply, Range<u64>) {
        let active = self
            .active
            .as_ref()
            .expect("make_room created the active segment");
        let nonce = seal::nonce(self.epoch, self.counter);
        self.counter += 1;
        let header = FrameHeader {
            payload_len: 0,
            payload_crc: 0,
            sample_count: a.count,
            first_offset: self.next_offset,
            min_ts: a.min_ts,
            max_ts: a.max_ts,
            nonce,
        };
        let aad = header.aad_fields();
        let pos = RecordPosition {
            tenant: &self.shared.tenant,
            segment_base: active.base,
            header: &aad,
        };
        seal::encrypt(&active.key, &nonce, &pos, &mut a.sealed);
        let at = active.len + self.buf.len() as u64;
        encode_frame(header, &a.sealed, &mut self.buf);
        self.locs.push(RecordLoc {
            pos: at,
            first_offset: self.next_offset,
            count: a.count,
            min_ts: a.min_ts,
            max_ts: a.max_ts,
        });
        let range = self.next_offset..self.next_offset + u64::from(a.count);
        self.next_offset = range.end;
        (a.reply, range)
    }

    fn needs_roll(&self, frame_len: u64) -> bool {
        let Some(a) = &self.active else {
            return false;
        };
        let has_records = a.records > 0 || !self.locs.is_empty();
        let full = a.len + self.buf.len() as u64 + frame_len > self.shared.config.segment_max_bytes;
        let old = a.opened.elapsed() >= self.shared.config.segment_max_age;
        let rotated = self.shared.keys().current().key_id() != a.key.key_id();
        (has_records && (full || old)) || rotated
    }

    /// Writes the group buffer to the active segment and publishes the record locations
    /// (not yet visible to readers: see `commit`).
    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let a = self
            .active
            .as_mut()
            .expect("records are only buffered into a segment");
        let path = self.shared.path(&segment::segment_file_name(a.base));
        a.file
            .write_all_at(&self.buf, a.len)
            .map_err(|e| Error::io(&path, e))?;
        a.len += self.buf.len() as u64;
        a.records += self.locs.len();
        for l in &self.locs {
            a.min_ts = a.min_ts.min(l.min_ts);
            a.max_ts = a.max_ts.max(l.max_ts);
        }
        let mut s = self.shared.write_state();
        s.disk_bytes += self.buf.len() as u64;
        let seg = s
            .segments
            .get_mut(&a.base)
            .expect("the active segment is in the state");
        seg.info.end_offset = self.next_offset;
        seg.info.bytes = a.len;
        seg.info.min_ts = Some(a.min_ts);
        seg.info.max_ts = Some(a.max_ts);
        seg.records
            .get_or_insert_with(Vec::new)
            .append(&mut self.locs);
        drop(s);
        self.buf.clear();
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Applies the durability policy to what was written and makes it visible to readers.
    fn commit(&mut self) -> Result<()> {
        if self.shared.config.durability == Durability::Fsync {
            self.sync()?;
        }
        self.shared.write_state().visible_end = self.next_offset;
        self.shared.end_tx.send_replace(self.next_offset);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(a) = &self.active
            && self.dirty_since.is_some()
        {
            let path = self.shared.path(&segment::segment_file_name(a.base));
            let started = Instant::now();
            a.file.sync_data().map_err(|e| Error::io(&path, e))?;
            self.shared.fsync_latency.observe(started.elapsed());
        }
        self.dirty_since = None;
        Ok(())
    }

    fn create_segment(&mut self) -> Result<()> {
        let key = self.shared.keys().current();
        let base = self.next_offset;
        let name = segment::segment_file_name(base);
        let path = self.shared.path(&name);
        let fs = &self.shared.fs;
        let created_ms = crate::now_ms();
        let header = SegmentHeader {
            key_id: key.key_id(),
            base_offset: base,
            created_ms,
            epoch: self.epoch,
            tenant: self.shared.tenant.clone(),
        };
        let file = fs.create_new(&path).map_err(|e| Error::io(&path, e))?;
        file.write_all_at(&header.encode(), 0)
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(&self.shared.dir)
            .map_err(|e| Error::io(&self.shared.dir, e))?;
        let len = segment::SEGMENT_HEADER_LEN as u64;
        let info = SegmentInfo {
            path,
            base_offset: base,
            end_offset: base,
            min_ts: None,
            max_ts: None,
            key_id: key.key_id(),
            bytes: len,
            created_ms,
            sealed_ms: None,
        };
        let mut s = self.shared.write_state();
        s.disk_bytes += len;
        s.segments.insert(
            base,
            Segment {
                info,
                file: Arc::clone(&file),
                records: Some(Vec::new()),
            },
        );
        drop(s);
        self.active = Some(Active {
            base,
            file,
            len,
            key,
            opened: Instant::now(),
            records: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        });
        Ok(())
    }

    /// Syncs the active segment, writes its index and marks it sealed.
    fn seal_active(&mut self) -> Result<()> {
        self.flush_buf()?;
        let Some(a) = self.active.take() else {
            return Ok(());
        };
        let path = self.shared.path(&segment::segment_file_name(a.base));
        if a.records == 0 {
            // Nothing was ever acknowledged in it (the first write failed or a key rotation
            // came first): remove it so a new segment can take the same base offset.
            let fs = &self.shared.fs;
            fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
            fs.sync_dir(&self.shared.dir)
                .map_err(|e| Error::io(&self.shared.dir, e))?;
            let mut s = self.shared.write_state();
            s.segments.remove(&a.base);
            s.disk_bytes = s.disk_bytes.saturating_sub(a.len);
            return Ok(());
        }
        a.file.sync_data().map_err(|e| Error::io(&path, e))?;
        self.dirty_since = None;
        let records = {
            let s = self.shared.read_state();
            let seg = &s.segments[&a.base];
            seg.records.clone().unwrap_or_default()
        };
        let sealed_ms = crate::now_ms();
        let idx = SegmentIndex {
            base_offset: a.base,
            end_offset: self.next_offset,
            min_ts: a.min_ts,
            max_ts: a.max_ts,
            segment_len: a.len,
            sealed_ms,
            records,
        };
        let idx_len = write_index(&self.shared, &idx)?;
        let mut s = self.shared.write_state();
        s.disk_bytes += idx_len;
        let seg = s
            .segments
            .get_mut(&a.base)
            .expect("the active segment is in the state");
        seg.info.sealed_ms = Some(sealed_ms);
        seg.info.bytes = a.len + idx_len;
        seg.records = None;
        drop(s);
        cache_index(&self.shared, a.base, Arc::new(idx.records));
        Ok(())
    }
}

/// Writes a segment's index file atomically; returns its length.
pub(crate) fn write_index(shared: &Shared, idx: &SegmentIndex) -> Result<u64> {
    let bytes = idx.encode();
    let path = shared.path(&segment::index_file_name(idx.base_offset));
    let tmp = path.with_extension("idx.tmp");
    let fs = &shared.fs;
    let io = |e| Error::io(&path, e);
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let f = fs.create_new(&tmp).map_err(io)?;
    f.write_all_at(&bytes, 0).map_err(io)?;
    f.sync_data().map_err(io)?;
    fs.rename(&tmp, &path).map_err(io)?;
    fs.sync_dir(&shared.dir).map_err(io)?;
    Ok(bytes.len() as u64)
}
