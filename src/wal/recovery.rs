//! Opening a log: read segment headers and indexes, scan only what has no valid index,
//! truncate a torn tail, skip and report corrupt records, bump the writer epoch.
//!
//! What recovery never does: it never deletes a segment that holds a readable record, never
//! rewrites a record, never moves offsets backwards (the state file keeps a floor under the
//! next offset even when retention deleted every segment), and never guesses a record's
//! content. Outcomes are values in the [`RecoveryReport`], not errors.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::fs::FsFile;
use super::record::{self, FRAME_HEADER_LEN};
use super::segment::{self, RecordLoc, SEGMENT_HEADER_LEN, SegmentHeader, SegmentIndex};
use super::{Segment, SegmentInfo, Shared, writer::write_index};
use crate::error::{Corruption, Error, Result};
use crate::tenant::TenantId;

/// What recovery found and did, per event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// A torn tail (an incomplete last write) was cut off. Never holds acknowledged data
    /// under `fsync` durability.
    TornTailTruncated {
        /// The segment file.
        segment: PathBuf,
        /// New length of the file.
        at: u64,
        /// Bytes removed.
        bytes: u64,
    },
    /// A record that fails its checksum, followed by valid records, was skipped.
    CorruptRecordSkipped {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad frame.
        position: u64,
        /// Bytes skipped up to the next valid frame.
        skipped_bytes: u64,
        /// Offsets that cannot be read.
        offsets: Range<u64>,
        /// What was wrong.
        reason: Corruption,
    },
    /// A segment had no valid index (it was being written at the crash, or the index was
    /// damaged); it was scanned and a new index written.
    IndexRebuilt {
        /// The segment file.
        segment: PathBuf,
    },
    /// A segment whose header is unreadable or names another tenant was renamed to
    /// `*.corrupt` and left for the operator.
    SegmentQuarantined {
        /// The original path.
        segment: PathBuf,
        /// Why.
        reason: Corruption,
    },
    /// A segment with no readable record (a crash right after it was created) was removed.
    EmptySegmentRemoved {
        /// The segment file.
        segment: PathBuf,
    },
}

/// The outcome of opening a log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryReport {
    /// The tenant.
    pub tenant: TenantId,
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Segments whose records were scanned (those without a valid index).
    pub scanned_segments: usize,
    /// One past the last readable offset.
    pub end_offset: u64,
    /// Everything unusual, in the order found.
    pub events: Vec<RecoveryEvent>,
}

impl RecoveryReport {
    /// True when recovery found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.events.is_empty()
    }
}

/// The result of scanning one segment's bytes.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) records: Vec<RecordLoc>,
    pub(crate) corrupt: Vec<(u64, u64, Range<u64>, Corruption)>,
    /// `(valid_len, torn_bytes, reason)` when the file ends in an incomplete or bad frame.
    pub(crate) torn: Option<(u64, u64, Corruption)>,
}

fn valid_frame_at(
    bytes: &[u8],
    pos: usize,
    expected: u64,
) -> Result<record::FrameHeader, Corruption> {
    let (h, _) = record::decode_frame(&bytes[pos..])?;
    if h.first_offset < expected {
        return Err(Corruption::InvalidField {
            field: "first_offset",
            reason: format!("{} goes back before {expected}", h.first_offset),
        });
    }
    Ok(h)
}

/// Scans a whole segment file (header included). Pure; bounded; never panics.
pub(crate) fn scan(bytes: &[u8], base: u64) -> Scan {
    let mut out = Scan::default();
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut expected = base;
    while pos < bytes.len() {
        match valid_frame_at(bytes, pos, expected) {
            Ok(h) => {
                out.records.push(RecordLoc {
                    pos: pos as u64,
                    first_offset: h.first_offset,
                    count: h.sample_count,
                    min_ts: h.min_ts,
                    max_ts: h.max_ts,
                });
                pos += h.frame_len() as usize;
                expected = h.end_offset();
            }
            Err(reason) => {
                let next = (pos + 1..bytes.len().saturating_sub(FRAME_HEADER_LEN - 1))
                    .find_map(|q| valid_frame_at(bytes, q, expected).ok().map(|h| (q, h)));
                match next {
                    Some((q, h)) => {
                        let gap = expected..h.first_offset;
                        out.corrupt
                            .push((pos as u64, (q - pos) as u64, gap, reason));
                        pos = q;
                    }
                    None => {
                        out.torn = Some((pos as u64, (bytes.len() - pos) as u64, reason));
                        break;
                    }
                }
            }
        }
    }
    out
}

const STATE_MAGIC: &[u8; 8] = b"MSPLSTA\0";
const STATE_LEN: usize = 8 + 4 + 8 + 4;
const STATE_FILE: &str = "log.state";

/// The log's small durable state: the writer epoch and a floor under the next offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogState {
    pub(crate) epoch: u32,
    pub(crate) offset_floor: u64,
}

fn encode_state(s: LogState) -> [u8; STATE_LEN] {
    let mut b = [0u8; STATE_LEN];
    b[..8].copy_from_slice(STATE_MAGIC);
    b[8..12].copy_from_slice(&s.epoch.to_le_bytes());
    b[12..20].copy_from_slice(&s.offset_floor.to_le_bytes());
    let crc = crc32c::crc32c(&b[..20]);
    b[20..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_state(b: &[u8]) -> Result<LogState, Corruption> {
    if b.len() != STATE_LEN {
        return Err(Corruption::Truncated {
            needed: STATE_LEN as u64,
            available: b.len() as u64,
        });
    }
    if &b[..8] != STATE_MAGIC {
        return Err(Corruption::BadMagic { what: "log state" });
    }
    let expected = u32::from_le_bytes(b[20..24].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&b[..20]);
    if expected != actual {
        return Err(Corruption::ChecksumMismatch { expected, actual });
    }
    Ok(LogState {
        epoch: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
        offset_floor: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
    })
}

pub(crate) fn read_log_state(shared: &Shared) -> Result<Option<LogState>> {
    let path = shared.path(STATE_FILE);
    let f = match shared.fs.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let bytes = read_all(&*f).map_err(|e| Error::io(&path, e))?;
    decode_state(&bytes)
        .map(Some)
        .map_err(|kind| Error::Corrupt {
            path,
            position: 0,
            kind,
        })
}

pub(crate) fn write_log_state(shared: &Shared, s: LogState) -> Result<()> {
    let path = shared.path(STATE_FILE);
    let tmp = shared.path("log.state.tmp");
    let fs = &shared.fs;
    let io = |e| Error::io(&path, e);
    let _ = fs.remove_file(&tmp);
    let f = fs.create_new(&tmp).map_err(io)?;
    f.write_all_at(&encode_state(s), 0).map_err(io)?;
    f.sync_data().map_err(io)?;
    fs.rename(&tmp, &path).map_err(io)?;
    fs.sync_dir(&shared.dir).map_err(io)
}

pub(crate) fn read_all(f: &dyn FsFile) -> std::io::Result<Vec<u8>> {
    let len = f.len()?;
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

struct Opened {
    header: SegmentHeader,
    file: Arc<dyn FsFile>,
    len: u64,
}

/// Recovers the log in `shared.dir` into `shared.state`; returns the report and the new
/// writer epoch, already durable.
pub(crate) fn recover(shared: &Shared) -> Result<(RecoveryReport, u32)> {
    let fs = &shared.fs;
    let dir = &shared.dir;
    let names = fs.list(dir).map_err(|e| Error::io(dir, e))?;
    for n in names.iter().filter(|n| n.ends_with(".tmp")) {
        let p = dir.join(n);
        fs.remove_file(&p).map_err(|e| Error::io(&p, e))?;
    }
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_segment_file_name(n))
        .collect();
    bases.sort_unstable();
    let stored = read_log_state(shared)?.unwrap_or_default();
    let mut report = RecoveryReport {
        tenant: shared.tenant.clone(),
        segments: 0,
        scanned_segments: 0,
        end_offset: 0,
        events: Vec::new(),
    };
    let mut end = 0u64;
    let mut floor = stored.offset_floor;
    let mut max_epoch = stored.epoch;
    for (i, &base) in bases.iter().enumerate() {
        let path = shared.path(&segment::segment_file_name(base));
        let Some(opened) = open_segment(shared, base, end, &mut floor, &mut report)? else {
            continue;
        };
        max_epoch = max_epoch.max(opened.header.epoch);
        let next_base = bases.get(i + 1).copied();
        if let Some(seg) = load_segment(shared, base, opened, next_base, &mut report)? {
            end = seg.info.end_offset;
            let mut s = shared.write_state();
            s.disk_bytes += seg.info.bytes;
            s.segments.insert(base, seg);
        } else {
            let _ = path;
        }
    }
    end = end.max(floor);
    let epoch = max_epoch.checked_add(1).ok_or_else(|| Error::Corrupt {
        path: shared.path(STATE_FILE),
        position: 8,
        kind: Corruption::InvalidField {
            field: "epoch",
            reason: "the writer epoch is exhausted".into(),
        },
    })?;
    let log_state = LogState {
        epoch,
        offset_floor: floor,
    };
    // Without a durable epoch no record may be sealed (its nonce could repeat), but on a full
    // disk the log must still open for reading, or it could never be drained to free space:
    // open it poisoned instead of failing.
    let poisoned = match write_log_state(shared, log_state) {
        Ok(()) => None,
        Err(e) if is_storage_full(&e) => {
            tracing::error!(tenant = %shared.tenant, error = %e, "disk full: the log opens read-only");
            Some(format!(
                "the disk is full, the log was opened read-only: {e}"
            ))
        }
        Err(e) => return Err(e),
    };
    let mut s = shared.write_state();
    s.log_state = log_state;
    s.poisoned = poisoned;
    s.visible_end = end;
    report.segments = s.segments.len();
    report.end_offset = end;
    Ok((report, epoch))
}

fn is_storage_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
}

/// Opens a segment and checks its header; quarantines or removes what cannot be used.
fn open_segment(
    shared: &Shared,
    base: u64,
    prev_end: u64,
    floor: &mut u64,
    report: &mut RecoveryReport,
) -> Result<Option<Opened>> {
    let fs = &shared.fs;
    let path = shared.path(&segment::segment_file_name(base));
    let file = fs.open(&path).map_err(|e| Error::io(&path, e))?;
    let len = file.len().map_err(|e| Error::io(&path, e))?;
    let mut head = vec![0u8; SEGMENT_HEADER_LEN.min(len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io(&path, e))?;
    let checked = segment::decode_header(&head).and_then(|h| {
        if h.tenant != shared.tenant {
            Err(Corruption::WrongTenant {
                found: h.tenant.to_string(),
                expected: shared.tenant.to_string(),
            })
        } else if h.base_offset != base || base < prev_end {
            Err(Corruption::InvalidField {
                field: "base_offset",
                reason: format!(
                    "{} does not fit the file name or the previous segment",
                    h.base_offset
                ),
            })
        } else {
            Ok(h)
        }
    });
    match checked {
        Ok(header) => Ok(Some(Opened { header, file, len })),
        // A crash while the header was being created: it never held a record.
        Err(Corruption::Truncated { .. }) => {
            remove_segment(shared, base)?;
            report
                .events
                .push(RecoveryEvent::EmptySegmentRemoved { segment: path });
            Ok(None)
        }
        Err(reason) => {
            if !matches!(reason, Corruption::WrongTenant { .. }) {
                // Our own segment, unreadable: its offsets may have been read and forwarded,
                // so they must never be given to new data.
                *floor = (*floor).max(quarantined_end(shared, base, &*file, len));
            }
            let to = path.with_extension("seg.corrupt");
            fs.rename(&path, &to).map_err(|e| Error::io(&path, e))?;
            fs.sync_dir(&shared.dir)
                .map_err(|e| Error::io(&shared.dir, e))?;
            tracing::warn!(tenant = %shared.tenant, segment = %path.display(), %reason, "segment quarantined");
            report.events.push(RecoveryEvent::SegmentQuarantined {
                segment: path,
                reason,
            });
            Ok(None)
        }
    }
}

/// One past the last offset a segment that is being quarantined may hold: from its index if
/// that is valid, else from the frames that still check out, else its base.
fn quarantined_end(shared: &Shared, base: u64, file: &dyn FsFile, len: u64) -> u64 {
    let from_index = read_index(shared, base, len).map_or(base, |i| i.end_offset);
    let from_frames = read_all(file)
        .ok()
        .and_then(|b| scan(&b, base).records.last().map(RecordLoc::end_offset))
        .unwrap_or(base);
    base.max(from_index).max(from_frames)
}

fn remove_segment(shared: &Shared, base: u64) -> Result<()> {
    let fs = &shared.fs;
    for name in [
        segment::index_file_name(base),
        segment::segment_file_name(base),
    ] {
        let p = shared.path(&name);
        match fs.remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    fs.sync_dir(&shared.dir)
        .map_err(|e| Error::io(&shared.dir, e))
}

fn read_index(shared: &Shared, base: u64, seg_len: u64) -> Option<SegmentIndex> {
    let path = shared.path(&segment::index_file_name(base));
    let f = shared.fs.open(&path).ok()?;
    let bytes = read_all(&*f).ok()?;
    SegmentIndex::decode(&bytes)
        .ok()
        .filter(|i| i.base_offset == base && i.segment_len == seg_len)
}

/// Builds the in-memory segment from its index, or scans and repairs it.
fn load_segment(
    shared: &Shared,
    base: u64,
    o: Opened,
    next_base: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<Option<Segment>> {
    let path = shared.path(&segment::segment_file_name(base));
    let idx_path = shared.path(&segment::index_file_name(base));
    let (idx, indexed) = match read_index(shared, base, o.len) {
        Some(idx) => (idx, true),
        None => match scan_and_repair(shared, base, &o, next_base, report)? {
            Some(x) => x,
            None => return Ok(None),
        },
    };
    let idx_len = if indexed {
        shared
            .fs
            .open(&idx_path)
            .and_then(|f| f.len())
            .map_err(|e| Error::io(&idx_path, e))?
    } else {
        0
    };
    let has = !idx.records.is_empty();
    Ok(Some(Segment {
        info: SegmentInfo {
            path,
            base_offset: base,
            end_offset: idx.end_offset,
            min_ts: has.then_some(idx.min_ts),
            max_ts: has.then_some(idx.max_ts),
            key_id: o.header.key_id,
            bytes: idx.segment_len + idx_len,
            created_ms: o.header.created_ms,
            sealed_ms: Some(idx.sealed_ms),
        },
        file: o.file,
        // Without an index file readers take the record table from memory.
        records: (!indexed).then_some(idx.records),
    }))
}

fn scan_and_repair(
    shared: &Shared,
    base: u64,
    o: &Opened,
    next_base: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<Option<(SegmentIndex, bool)>> {
    let path = shared.path(&segment::segment_file_name(base));
    let bytes = read_all(&*o.file).map_err(|e| Error::io(&path, e))?;
    report.scanned_segments += 1;
    let scan = scan(&bytes, base);
    drop(bytes);
    for (position, skipped_bytes, offsets, reason) in scan.corrupt {
        tracing::warn!(tenant = %shared.tenant, segment = %path.display(), position, %reason, "corrupt record skipped");
        report.events.push(RecoveryEvent::CorruptRecordSkipped {
            segment: path.clone(),
            position,
            skipped_bytes,
            offsets,
            reason,
        });
    }
    let mut len = o.len;
    // Offsets the segment covers past its last readable record (see below).
    let mut lost_tail = None;
    match (scan.torn, next_base) {
        (Some((at, bytes, reason)), Some(next)) => {
            // Only the last segment can end in an interrupted write: a segment is synced and
            // sealed before the next one is created. A bad tail anywhere else is damage in
            // the middle of the log: keep the bytes, and report what it held up to the next
            // segment as unreadable.
            let from = scan.records.last().map_or(base, |r| r.end_offset());
            let to = next.max(from);
            tracing::warn!(tenant = %shared.tenant, segment = %path.display(), position = at, %reason, "corrupt tail of a sealed segment skipped");
            report.events.push(RecoveryEvent::CorruptRecordSkipped {
                segment: path.clone(),
                position: at,
                skipped_bytes: bytes,
                offsets: from..to,
                reason,
            });
            lost_tail = Some(to);
        }
        (Some((at, bytes, _)), None) => {
            o.file
                .set_len(at)
                .and_then(|_| o.file.sync_data())
                .map_err(|e| Error::io(&path, e))?;
            len = at;
            report.events.push(RecoveryEvent::TornTailTruncated {
                segment: path.clone(),
                at,
                bytes,
            });
        }
        (None, _) => {}
    }
    if scan.records.is_empty() && next_base.is_some() {
        // Damage in the middle of the log took every record of this segment: keep the file
        // for the operator instead of deleting it (its offsets were reported above).
        let fs = &shared.fs;
        let to = path.with_extension("seg.corrupt");
        let _ = fs.remove_file(&shared.path(&segment::index_file_name(base)));
        fs.rename(&path, &to).map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(&shared.dir)
            .map_err(|e| Error::io(&shared.dir, e))?;
        report.events.push(RecoveryEvent::SegmentQuarantined {
            segment: path,
            reason: Corruption::InvalidField {
                field: "records",
                reason: "no readable record in a segment that is not the last".into(),
            },
        });
        return Ok(None);
    }
    if scan.records.is_empty() {
        remove_segment(shared, base)?;
        report
            .events
            .push(RecoveryEvent::EmptySegmentRemoved { segment: path });
        return Ok(None);
    }
    let min_ts = scan
        .records
        .iter()
        .map(|r| r.min_ts)
        .min()
        .unwrap_or(i64::MAX);
    let max_ts = scan
        .records
        .iter()
        .map(|r| r.max_ts)
        .max()
        .unwrap_or(i64::MIN);
    let end_offset = scan.records.last().map_or(base, |r| r.end_offset());
    let end_offset = lost_tail.unwrap_or(end_offset).max(end_offset);
    let idx = SegmentIndex {
        base_offset: base,
        end_offset,
        min_ts,
        max_ts,
        segment_len: len,
        sealed_ms: crate::now_ms(),
        records: scan.records,
    };
    // The index only saves the next open a scan: on a full disk, keep the record table in
    // memory and write the index at a later open.
    let indexed = match write_index(shared, &idx) {
        Ok(_) => true,
        Err(e) if is_storage_full(&e) => {
            tracing::warn!(tenant = %shared.tenant, segment = %path.display(), error = %e, "disk full: index not written");
            false
        }
        Err(e) => return Err(e),
    };
    if indexed {
        report
            .events
            .push(RecoveryEvent::IndexRebuilt { segment: path });
    }
    Ok(Some((idx, indexed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_state_round_trips_and_rejects_damage() {
        let s = LogState {
            epoch: 7,
            offset_floor: 99,
        };
        let b = encode_state(s);
        assert_eq!(decode_state(&b), Ok(s));
        let mut c = b;
        c[9] ^= 1;
        assert!(decode_state(&c).is_err());
    }
}
