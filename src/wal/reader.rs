//! Reading: deterministic batches from an offset, and time-range reads that use the
//! segments' time index to skip data without reading it.

use std::ops::Range;
use std::sync::Arc;

use super::fs::FsFile;
use super::record::{self, FRAME_HEADER_LEN};
use super::recovery::read_all;
use super::segment::{self, RecordLoc, SegmentIndex};
use super::{Shared, cache_index};
use crate::error::{Corruption, Error, Result};
use crate::sample::Batch;
use crate::seal::{self, RecordPosition};

/// Bounds on one read. A read returns at least one sample when any is readable, even if the
/// first record alone exceeds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most samples returned. Default 10,000; at least 1.
    pub max_samples: usize,
    /// Stop before a record that would bring the stored bytes read past this. Default 4 MiB.
    pub max_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_samples: 10_000,
            max_bytes: 4 << 20,
        }
    }
}

/// Why offsets in a read were skipped.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The segment holding them was deleted (retention or a quota policy).
    Deleted,
    /// Recovery found them unreadable (a corrupt record) and left a gap.
    Missing,
    /// The record holding them failed validation when read.
    Corrupt(Corruption),
}

/// A range of offsets a read passed over without returning samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The offsets.
    pub range: Range<u64>,
    /// Why.
    pub reason: SkipReason,
}

/// The result of a read: the samples of `[start, end)` that are readable (and, for a time-range
/// read, inside the range), in offset order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadBatch {
    /// First offset covered.
    pub start: u64,
    /// One past the last offset covered; continue reading here.
    pub end: u64,
    /// The samples.
    pub batch: Batch,
    /// The offsets of the samples, as ascending runs; their lengths add up to the sample count.
    pub runs: Vec<Range<u64>>,
    /// Offsets passed over, and why.
    pub skipped: Vec<Skipped>,
}

impl ReadBatch {
    /// True when no sample was returned.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The offset of every sample, in order.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|r| r.clone())
    }

    fn add_run(&mut self, r: Range<u64>) {
        match self.runs.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => self.runs.push(r),
        }
    }

    fn skip(&mut self, range: Range<u64>, reason: SkipReason) {
        if !range.is_empty() {
            self.skipped.push(Skipped { range, reason });
        }
    }
}

struct SegView {
    base: u64,
    end: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
    key_id: u32,
    file: Arc<dyn FsFile>,
    /// For the segment being written: its records from the one holding the requested
    /// offset on, at most `ACTIVE_SLICE` of them, and whether that reaches its last record.
    active: Option<(Vec<RecordLoc>, bool)>,
}

/// Most record locations copied out of the segment being written per step of a read.
const ACTIVE_SLICE: usize = 4096;

/// The segment holding `offset`, or the first one after it.
fn segment_at(shared: &Shared, offset: u64) -> Option<SegView> {
    let s = shared.read_state();
    let containing = s
        .segments
        .range(..=offset)
        .next_back()
        .filter(|(_, g)| g.info.end_offset > offset || g.info.sealed_ms.is_none());
    let (_, g) = containing.or_else(|| s.segments.range(offset + 1..).next())?;
    let active = g.records.as_ref().map(|r| {
        let i = r.partition_point(|l| l.end_offset() <= offset);
        let j = (i + ACTIVE_SLICE).min(r.len());
        (r[i..j].to_vec(), j == r.len())
    });
    Some(SegView {
        base: g.info.base_offset,
        end: g.info.end_offset,
        min_ts: g.info.min_ts,
        max_ts: g.info.max_ts,
        key_id: g.info.key_id,
        file: Arc::clone(&g.file),
        active,
    })
}

/// The record table of a segment and whether it is complete.
fn records_of(shared: &Shared, seg: &mut SegView) -> Result<(Arc<Vec<RecordLoc>>, bool)> {
    if let Some((r, complete)) = seg.active.take() {
        return Ok((Arc::new(r), complete));
    }
    if let Some(r) = shared
        .index_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&seg.base)
    {
        return Ok((Arc::clone(r), true));
    }
    let path = shared.path(&segment::index_file_name(seg.base));
    let f = shared.fs.open(&path).map_err(|e| Error::io(&path, e))?;
    let bytes = read_all(&*f).map_err(|e| Error::io(&path, e))?;
    let idx = SegmentIndex::decode(&bytes).map_err(|kind| Error::Corrupt {
        path: path.clone(),
        position: 0,
        kind,
    })?;
    let records = Arc::new(idx.records);
    cache_index(shared, seg.base, Arc::clone(&records));
    Ok((records, true))
}

/// Reads and opens one record. `Ok(Err(_))` is a corrupt record (skip it); `Err` is a failure
/// the caller must see (I/O, missing key).
fn read_record(
    shared: &Shared,
    seg: &SegView,
    loc: &RecordLoc,
) -> Result<std::result::Result<(Batch, u64), Corruption>> {
    let path = shared.path(&segment::segment_file_name(seg.base));
    let io = |e| Error::io(&path, e);
    let mut head = [0u8; FRAME_HEADER_LEN];
    seg.file.read_exact_at(&mut head, loc.pos).map_err(io)?;
    let h = match record::decode_header(&head) {
        Ok(h) if h.first_offset == loc.first_offset && h.sample_count == loc.count => h,
        Ok(_) => {
            return Ok(Err(Corruption::InvalidField {
                field: "first_offset",
                reason: "the record does not match the segment index".into(),
            }));
        }
        Err(c) => return Ok(Err(c)),
    };
    let mut payload = vec![0u8; h.payload_len as usize];
    if let Err(e) = seg
        .file
        .read_exact_at(&mut payload, loc.pos + FRAME_HEADER_LEN as u64)
    {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(Err(Corruption::Truncated {
                needed: u64::from(h.payload_len),
                available: 0,
            }));
        }
        return Err(io(e));
    }
    if let Err(c) = record::check_payload(&h, &payload) {
        return Ok(Err(c));
    }
    let key = shared
        .keys()
        .get(seg.key_id)
        .ok_or_else(|| Error::KeyUnavailable {
            tenant: shared.tenant.to_string(),
            key_id: seg.key_id,
        })?;
    let aad = h.aad_fields();
    let pos = RecordPosition {
        tenant: &shared.tenant,
        segment_base: seg.base,
        header: &aad,
    };
    let opened = seal::open(&key, &h.nonce, &pos, &payload)
        .and_then(|plain| crate::payload::decode(&plain).map_err(Corruption::Payload));
    Ok(opened.and_then(|b| {
        if b.sample_count() == h.sample_count as usize {
            Ok((b, h.frame_len()))
        } else {
            Err(Corruption::Payload(
                "sample count differs from the header".into(),
            ))
        }
    }))
}

pub(crate) fn read_from(shared: &Shared, offset: u64, limits: ReadLimits) -> Result<ReadBatch> {
    walk(shared, offset, limits, None)
}

pub(crate) fn read_time_range(
    shared: &Shared,
    from_ts: i64,
    until_ts: i64,
    offset: u64,
    limits: ReadLimits,
) -> Result<ReadBatch> {
    walk(shared, offset, limits, Some((from_ts, until_ts)))
}

fn overlaps(min: i64, max: i64, window: Option<(i64, i64)>) -> bool {
    window.is_none_or(|(from, until)| max >= from && min < until)
}

fn walk(
    shared: &Shared,
    offset: u64,
    limits: ReadLimits,
    window: Option<(i64, i64)>,
) -> Result<ReadBatch> {
    let visible = shared.read_state().visible_end;
    let max_samples = limits.max_samples.max(1);
    let mut out = ReadBatch {
        start: offset,
        end: offset,
        ..ReadBatch::default()
    };
    let mut cur = offset;
    let mut bytes = 0u64;
    'segments: while cur < visible && out.batch.sample_count() < max_samples {
        let Some(mut seg) = segment_at(shared, cur) else {
            out.skip(cur..visible, SkipReason::Deleted);
            cur = visible;
            break;
        };
        if seg.base > cur {
            out.skip(cur..seg.base.min(visible), SkipReason::Deleted);
            cur = seg.base.min(visible);
            continue;
        }
        let seg_overlaps = match (seg.min_ts, seg.max_ts) {
            (Some(lo), Some(hi)) => overlaps(lo, hi, window),
            _ => true,
        };
        if !seg_overlaps && seg.end > cur {
            cur = seg.end.min(visible);
            continue;
        }
        let (records, complete) = records_of(shared, &mut seg)?;
        let before = cur;
        let first = records.partition_point(|r| r.end_offset() <= cur);
        for loc in &records[first..] {
            if loc.first_offset >= visible {
                break 'segments;
            }
            if loc.first_offset > cur {
                out.skip(cur..loc.first_offset, SkipReason::Missing);
                cur = loc.first_offset;
            }
            if !overlaps(loc.min_ts, loc.max_ts, window) {
                cur = loc.end_offset();
                continue;
            }
            if bytes > 0 && bytes >= limits.max_bytes {
                break 'segments;
            }
            let (batch, frame_len) = match read_record(shared, &seg, loc)? {
                Ok(x) => x,
                Err(c) => {
                    tracing::warn!(tenant = %shared.tenant, segment = seg.base, offset = loc.first_offset, reason = %c, "corrupt record skipped on read");
                    out.skip(cur..loc.end_offset(), SkipReason::Corrupt(c));
                    cur = loc.end_offset();
                    continue;
                }
            };
            bytes += frame_len;
            cur = take_samples(&mut out, batch, loc, cur, max_samples, window);
            if out.batch.sample_count() >= max_samples {
                break 'segments;
            }
        }
        if complete {
            // Past the last record of this segment. Offsets up to its end are normally none;
            // any there were lost to damage recovery found (a corrupt tail of the segment).
            let end = seg.end.min(visible);
            if end > cur {
                out.skip(cur..end, SkipReason::Missing);
            }
            cur = cur.max(end);
        }
        if cur == before {
            break;
        }
    }
    out.end = cur.min(visible).max(offset);
    Ok(out)
}

/// Moves samples of `batch` (the record at `loc`) from offset `cur` into `out`, up to the
/// limit; returns the next offset to read.
fn take_samples(
    out: &mut ReadBatch,
    batch: Batch,
    loc: &RecordLoc,
    cur: u64,
    max_samples: usize,
    window: Option<(i64, i64)>,
) -> u64 {
    let from = (cur - loc.first_offset) as usize;
    let room = max_samples - out.batch.sample_count();
    match window {
        None => {
            let to = (from + room).min(loc.count as usize);
            // Taking a whole record (the common case) moves it instead of copying it.
            let part = if from == 0 && to == loc.count as usize {
                batch
            } else {
                batch.slice(from, to)
            };
            if out.batch.is_empty() {
                out.batch = part;
            } else {
                out.batch.extend(part);
            }
            out.add_run(loc.first_offset + from as u64..loc.first_offset + to as u64);
            loc.first_offset + to as u64
        }
        Some((lo, hi)) => {
            let mut i = from;
            let mut taken = 0usize;
            let mut picked = Batch::new();
            for (series, kind, s) in batch.iter().skip(from) {
                if taken == room {
                    break;
                }
                if s.timestamp_ms >= lo && s.timestamp_ms < hi {
                    picked.push_one(series.clone(), kind, s);
                    out.add_run(loc.first_offset + i as u64..loc.first_offset + i as u64 + 1);
                    taken += 1;
                }
                i += 1;
            }
            out.batch.extend(merge_adjacent(picked));
            loc.first_offset + i as u64
        }
    }
}

/// Joins consecutive entries of the same series (a time-range read picks samples one by one).
fn merge_adjacent(b: Batch) -> Batch {
    let mut out = Batch::new();
    let mut pending: Option<crate::sample::SeriesSamples> = None;
    for e in b.into_entries() {
        match &mut pending {
            Some(p) if p.series == e.series && p.kind == e.kind => p.samples.extend(e.samples),
            _ => {
                if let Some(p) = pending.take() {
                    out.push(p.series, p.kind, p.samples);
                }
                pending = Some(e);
            }
        }
    }
    if let Some(p) = pending {
        out.push(p.series, p.kind, p.samples);
    }
    out
}
