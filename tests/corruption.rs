//! Damaged files on a real disk: every case reopens the spool and must give a clear error or a
//! reported skip, never a panic, and everything that was not damaged must still read back
//! exactly.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use metricspool::wal::record::{FRAME_HEADER_LEN, FrameHeader, decode_frame};
use metricspool::wal::segment::{self, SEGMENT_HEADER_LEN};
use metricspool::{
    Batch, Corruption, DropReason, Error, Keyring, LogConfig, MasterKey, MetricKind, ReadLimits,
    RecoveryEvent, RecoveryReport, Sample, Series, SkipReason, Skipped, Spool, SpoolConfig, Tenant,
    TenantId,
};

const MASTER: [u8; 32] = [5; 32];

fn alpha() -> TenantId {
    TenantId::new("alpha").expect("a valid tenant id")
}

fn beta() -> TenantId {
    TenantId::new("beta").expect("a valid tenant id")
}

fn open_spool(dir: &Path) -> metricspool::Result<Spool> {
    let mut c = SpoolConfig::new(dir, MasterKey::from_bytes(MASTER));
    c.log = LogConfig {
        segment_max_bytes: 64 << 10,
        ..LogConfig::default()
    };
    Spool::open(c)
}

fn wal_dir(data: &Path, t: &TenantId) -> PathBuf {
    data.join("tenants").join(t.as_str()).join("wal")
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Batch `i` of tenant `salt`: about 1,000 incompressible samples (~8 KiB sealed), so a
/// 64 KiB segment holds about seven records.
fn batch(salt: u64, i: u64) -> Batch {
    let mut rng = (salt << 32 | i) ^ 0x2545_f491_4f6c_dd1d;
    let mut b = Batch::new();
    for s in 0..2 {
        let series = Series::new(
            "disk_io_seconds",
            [("dev", format!("sd{s}")), ("b", i.to_string())],
        )
        .expect("a valid series");
        let samples = (0..500 + i % 7)
            .map(|k| {
                Sample::new(
                    1_700_000_000_000 + (i * 1000 + k) as i64,
                    f64::from_bits(xorshift(&mut rng)),
                )
            })
            .collect();
        b.push(series, MetricKind::Gauge, samples);
    }
    b
}

/// What was acknowledged: `(offsets, batch)` in order.
type Acked = Vec<(Range<u64>, Batch)>;

fn fill(t: &Tenant, salt: u64, batches: u64) -> Acked {
    (0..batches)
        .map(|i| {
            let b = batch(salt, i);
            let r = t.append_blocking(&b).expect("append");
            (r, b)
        })
        .collect()
}

/// A closed spool with 40 records of `alpha` over several sealed segments (and 10 of `beta`).
fn written() -> (tempfile::TempDir, Acked, Acked) {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = open_spool(dir.path()).expect("opens");
    let a = fill(&spool.tenant(&alpha()).expect("tenant"), 1, 40);
    let b = fill(&spool.tenant(&beta()).expect("tenant"), 2, 10);
    spool.close().expect("closes");
    drop(spool);
    assert!(
        segments(&wal_dir(dir.path(), &alpha())).len() >= 4,
        "several segments were written"
    );
    (dir, a, b)
}

/// Segment files of a wal directory, oldest first.
fn segments(wal: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(wal)
        .expect("the wal directory lists")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|n| segment::parse_segment_file_name(&n).map(|b| (b, wal.join(n))))
        .collect();
    v.sort();
    v
}

/// Every record frame of a segment file: byte position and header.
fn frames(seg: &Path) -> Vec<(usize, FrameHeader)> {
    let bytes = std::fs::read(seg).expect("the segment reads");
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let (h, _) = decode_frame(&bytes[pos..]).expect("the undamaged segment decodes");
        out.push((pos, h));
        pos += h.frame_len() as usize;
    }
    out
}

fn flip(path: &Path, pos: usize, mask: u8) {
    let mut bytes = std::fs::read(path).expect("reads");
    bytes[pos] ^= mask;
    std::fs::write(path, bytes).expect("writes");
}

fn offsets(h: &FrameHeader) -> Range<u64> {
    h.first_offset..h.end_offset()
}

/// A sealed segment in the middle of alpha's log and one record in the middle of it.
fn middle_record(data: &Path) -> (PathBuf, usize, FrameHeader) {
    let segs = segments(&wal_dir(data, &alpha()));
    let (_, seg) = segs[segs.len() / 2].clone();
    let fr = frames(&seg);
    assert!(fr.len() >= 3, "the segment holds several records");
    let (pos, h) = fr[fr.len() / 2];
    (seg, pos, h)
}

/// Samples by offset, and every skip reported.
type Readout = (BTreeMap<u64, (Series, Sample)>, Vec<Skipped>);

/// Everything readable from the tenant's log: samples by offset, and every skip reported.
fn read_everything(t: &Tenant) -> metricspool::Result<Readout> {
    let mut got = BTreeMap::new();
    let mut skipped = Vec::new();
    let end = t.wal().end_offset();
    let mut cur = t.wal().first_offset();
    while cur < end {
        let rb = t.read_from(cur, ReadLimits::default())?;
        assert!(rb.end > cur, "reads make progress at {cur}");
        for (o, (series, _, s)) in rb.offsets().zip(rb.batch.iter()) {
            assert!(
                got.insert(o, (series.clone(), s)).is_none(),
                "offset {o} returned twice"
            );
        }
        skipped.extend(rb.skipped);
        cur = rb.end;
    }
    Ok((got, skipped))
}

/// Asserts that every acknowledged sample outside `lost` reads back exactly and that nothing
/// in `lost` is returned.
fn assert_intact(t: &Tenant, acked: &Acked, lost: &Range<u64>) -> Vec<Skipped> {
    let (got, skipped) = read_everything(t).expect("the log reads");
    let mut expected_count = 0;
    for (range, b) in acked {
        for (k, (series, _, sample)) in b.iter().enumerate() {
            let o = range.start + k as u64;
            if lost.contains(&o) {
                assert!(!got.contains_key(&o), "damaged offset {o} was returned");
                continue;
            }
            expected_count += 1;
            let (gs, gsample) = got
                .get(&o)
                .unwrap_or_else(|| panic!("offset {o} is missing"));
            assert_eq!(gs, series, "series at {o}");
            assert!(gsample.same_bits(&sample), "sample at {o}");
        }
    }
    assert_eq!(
        got.len(),
        expected_count,
        "only acknowledged samples are returned"
    );
    skipped
}

fn assert_skipped_as_corrupt(skipped: &[Skipped], lost: &Range<u64>) {
    assert_eq!(
        skipped.len(),
        1,
        "exactly the damaged record is skipped: {skipped:?}"
    );
    assert_eq!(&skipped[0].range, lost);
    assert!(
        matches!(skipped[0].reason, SkipReason::Corrupt(_)),
        "{skipped:?}"
    );
}

fn report_of(spool: &Spool, t: &TenantId) -> RecoveryReport {
    spool
        .recovery_reports()
        .into_iter()
        .find(|r| &r.tenant == t)
        .expect("a report for the tenant")
}

#[test]
fn a_flipped_bit_in_a_record_header_of_an_indexed_segment_is_skipped_when_read() {
    let (dir, acked, _) = written();
    let (seg, pos, h) = middle_record(dir.path());
    flip(&seg, pos + 30, 0x10); // inside min_ts, covered by the header checksum
    let spool = open_spool(dir.path()).expect("reopens");
    assert!(
        report_of(&spool, &alpha()).is_clean(),
        "a sealed segment with an index is not scanned"
    );
    let t = spool.tenant(&alpha()).expect("tenant");
    let skipped = assert_intact(&t, &acked, &offsets(&h));
    assert_skipped_as_corrupt(&skipped, &offsets(&h));
    assert!(
        matches!(
            skipped[0].reason,
            SkipReason::Corrupt(Corruption::ChecksumMismatch { .. })
        ),
        "{skipped:?}"
    );
}

#[test]
fn a_flipped_bit_in_a_payload_is_skipped_when_read() {
    let (dir, acked, _) = written();
    let (seg, pos, h) = middle_record(dir.path());
    flip(
        &seg,
        pos + FRAME_HEADER_LEN + h.payload_len as usize / 2,
        0x01,
    );
    let spool = open_spool(dir.path()).expect("reopens");
    let t = spool.tenant(&alpha()).expect("tenant");
    let skipped = assert_intact(&t, &acked, &offsets(&h));
    assert_skipped_as_corrupt(&skipped, &offsets(&h));
    // The appends after the damage still work and read back.
    let extra = batch(1, 99);
    let r = t
        .append_blocking(&extra)
        .expect("appends after a corrupt read");
    let (got, _) = read_everything(&t).expect("reads");
    assert!(got.contains_key(&r.start) && got.contains_key(&(r.end - 1)));
}

#[test]
fn a_flipped_bit_in_a_length_field_is_skipped_when_read() {
    let (dir, acked, _) = written();
    let (seg, pos, h) = middle_record(dir.path());
    flip(&seg, pos + 6, 0x40); // payload_len, bits 16..24
    let spool = open_spool(dir.path()).expect("reopens");
    let t = spool.tenant(&alpha()).expect("tenant");
    let skipped = assert_intact(&t, &acked, &offsets(&h));
    assert_skipped_as_corrupt(&skipped, &offsets(&h));
}

#[test]
fn a_huge_length_with_a_valid_header_checksum_is_skipped_when_read() {
    let (dir, acked, _) = written();
    let (seg, pos, h) = middle_record(dir.path());
    // A crafted header: a length far past the end of the file, and a matching checksum.
    let forged = FrameHeader {
        payload_len: metricspool::wal::record::MAX_PAYLOAD_LEN,
        ..h
    };
    let mut bytes = std::fs::read(&seg).expect("reads");
    bytes[pos..pos + FRAME_HEADER_LEN].copy_from_slice(&forged.encode());
    std::fs::write(&seg, bytes).expect("writes");
    let spool = open_spool(dir.path()).expect("reopens");
    let t = spool.tenant(&alpha()).expect("tenant");
    let skipped = assert_intact(&t, &acked, &offsets(&h));
    assert_skipped_as_corrupt(&skipped, &offsets(&h));
}

fn remove_indexes(wal: &Path) {
    for e in std::fs::read_dir(wal).expect("lists") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(&p).expect("removes");
        }
    }
}

#[test]
fn without_indexes_recovery_reports_a_corrupt_record_with_its_offsets_and_the_rest_reads() {
    let (dir, acked, _) = written();
    let (seg, pos, h) = middle_record(dir.path());
    remove_indexes(&wal_dir(dir.path(), &alpha()));
    flip(&seg, pos + FRAME_HEADER_LEN + 100, 0x80);
    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &alpha());
    let corrupt: Vec<_> = report
        .events
        .iter()
        .filter_map(|e| match e {
            RecoveryEvent::CorruptRecordSkipped {
                segment,
                position,
                offsets,
                ..
            } => Some((segment.clone(), *position, offsets.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        corrupt,
        vec![(seg.clone(), pos as u64, offsets(&h))],
        "{report:?}"
    );
    assert!(
        report.scanned_segments >= 4,
        "every segment without an index is scanned"
    );
    assert!(
        !report
            .events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::TornTailTruncated { .. })),
        "{report:?}"
    );
    let t = spool.tenant(&alpha()).expect("tenant");
    let lost = offsets(&h);
    let skipped = assert_intact(&t, &acked, &lost);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].range, lost);
    assert!(
        matches!(skipped[0].reason, SkipReason::Missing),
        "{skipped:?}"
    );
    let dropped = t.stats().dropped;
    assert!(
        dropped.contains(&(DropReason::Corrupt, lost.end - lost.start)),
        "{dropped:?}"
    );
    drop(t);
    spool.close().expect("closes");
    drop(spool);

    // The rebuilt indexes hold: a second open scans nothing and reports nothing.
    let spool = open_spool(dir.path()).expect("reopens again");
    let report = report_of(&spool, &alpha());
    assert!(report.is_clean(), "{report:?}");
    assert_intact(&spool.tenant(&alpha()).expect("tenant"), &acked, &lost);
}

#[test]
fn a_last_segment_cut_mid_record_loses_only_its_torn_tail() {
    let (dir, acked, _) = written();
    let wal = wal_dir(dir.path(), &alpha());
    let (base, last) = segments(&wal).last().cloned().expect("a segment");
    let fr = frames(&last);
    let (pos, h) = *fr.last().expect("a record");
    std::fs::remove_file(wal.join(segment::index_file_name(base))).expect("removes the index");
    let cut = pos + FRAME_HEADER_LEN + 7;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("opens");
    f.set_len(cut as u64).expect("truncates");
    drop(f);

    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &alpha());
    assert!(
        report.events.iter().any(|e| matches!(
            e,
            RecoveryEvent::TornTailTruncated { segment, at, bytes }
                if *segment == last && *at == pos as u64 && *bytes == (cut - pos) as u64
        )),
        "{report:?}"
    );
    let t = spool.tenant(&alpha()).expect("tenant");
    assert_eq!(
        t.wal().end_offset(),
        h.first_offset,
        "the log ends before the torn record"
    );
    let whole: Acked = acked
        .iter()
        .filter(|(r, _)| r.end <= h.first_offset)
        .cloned()
        .collect();
    let skipped = assert_intact(&t, &whole, &(0..0));
    assert!(skipped.is_empty(), "{skipped:?}");
    let r = t
        .append_blocking(&batch(1, 77))
        .expect("appends after truncation");
    assert_eq!(r.start, h.first_offset, "offsets continue from the end");
}

#[test]
fn a_segment_of_another_tenant_is_quarantined_and_the_tenant_keeps_its_data() {
    let (dir, acked_a, acked_b) = written();
    let (_, foreign) = segments(&wal_dir(dir.path(), &alpha()))[1].clone();
    let beta_wal = wal_dir(dir.path(), &beta());
    let planted = beta_wal.join(segment::segment_file_name(1_000_000));
    std::fs::copy(&foreign, &planted).expect("copies");

    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &beta());
    assert!(
        report.events.iter().any(|e| matches!(
            e,
            RecoveryEvent::SegmentQuarantined { segment, reason: Corruption::WrongTenant { found, expected } }
                if *segment == planted && found == "alpha" && expected == "beta"
        )),
        "{report:?}"
    );
    assert!(!planted.exists(), "the foreign segment was moved aside");
    assert!(
        planted.with_extension("seg.corrupt").exists(),
        "the foreign segment is kept for the operator"
    );
    let b = spool.tenant(&beta()).expect("tenant");
    assert_eq!(b.wal().end_offset(), acked_b.last().expect("acked").0.end);
    assert!(assert_intact(&b, &acked_b, &(0..0)).is_empty());
    assert!(report_of(&spool, &alpha()).is_clean());
    assert!(assert_intact(&spool.tenant(&alpha()).expect("tenant"), &acked_a, &(0..0)).is_empty());
}

#[test]
fn a_wrong_master_key_is_a_clear_error_and_damages_nothing() {
    let (dir, acked, _) = written();
    let wrong = Spool::open(SpoolConfig::new(dir.path(), MasterKey::from_bytes([6; 32])));
    match wrong {
        Err(Error::MasterKey(msg)) => assert!(msg.contains("wrong master key"), "{msg}"),
        other => panic!("expected a master key error, got {other:?}"),
    }
    let spool = open_spool(dir.path()).expect("the right key still opens");
    assert!(assert_intact(&spool.tenant(&alpha()).expect("tenant"), &acked, &(0..0)).is_empty());
}

#[test]
fn a_removed_key_id_makes_its_segments_unreadable_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = open_spool(dir.path()).expect("opens");
    let t = spool.tenant(&alpha()).expect("tenant");
    let old = fill(&t, 1, 3);
    assert_eq!(spool.rotate_key(&alpha()).expect("rotates"), 2);
    let new: Acked = (10..13)
        .map(|i| {
            let b = batch(1, i);
            (t.append_blocking(&b).expect("append"), b)
        })
        .collect();
    drop(t);
    spool.close().expect("closes");
    drop(spool);

    Keyring::open(dir.path().join("keys"), MasterKey::from_bytes(MASTER))
        .expect("keyring")
        .remove(&alpha(), 1)
        .expect("removes key 1");
    let spool = open_spool(dir.path()).expect("reopens without key 1");
    let t = spool.tenant(&alpha()).expect("tenant");
    let err = t
        .read_from(0, ReadLimits::default())
        .expect_err("key 1 is gone");
    assert!(
        matches!(err, Error::KeyUnavailable { key_id: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not in the keyring"), "{err}");
    // The data sealed with key 2 still reads.
    let start = new[0].0.start;
    assert!(start >= old.last().expect("acked").0.end);
    let rb = t
        .read_from(
            start,
            ReadLimits {
                max_samples: 100_000,
                max_bytes: 1 << 30,
            },
        )
        .expect("key 2 opens");
    let mut expected = Batch::new();
    for (_, b) in &new {
        expected.extend(b.clone());
    }
    assert_eq!(rb.start, start);
    assert_eq!(rb.end, new.last().expect("acked").0.end);
    assert_eq!(rb.batch.sample_count(), expected.sample_count());
    for ((gs, _, g), (es, _, e)) in rb.batch.iter().zip(expected.iter()) {
        assert_eq!(gs, es);
        assert!(g.same_bits(&e));
    }
}

#[test]
fn a_flipped_bit_in_a_segment_header_quarantines_the_segment_and_the_rest_reads() {
    let (dir, acked, _) = written();
    let wal = wal_dir(dir.path(), &alpha());
    let segs = segments(&wal);
    let (base, seg) = segs[1].clone();
    let lost = base..segs[2].0;
    flip(&seg, 20, 0x02); // inside base_offset
    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &alpha());
    assert!(
        report.events.iter().any(|e| matches!(
            e,
            RecoveryEvent::SegmentQuarantined { segment, reason: Corruption::ChecksumMismatch { .. } } if *segment == seg
        )),
        "{report:?}"
    );
    assert!(seg.with_extension("seg.corrupt").exists());
    let t = spool.tenant(&alpha()).expect("tenant");
    assert_eq!(t.wal().end_offset(), acked.last().expect("acked").0.end);
    let skipped = assert_intact(&t, &acked, &lost);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].range, lost);
}

/// Regression: recovery used to treat a bad last record of a sealed segment in the middle of
/// the log (no index) as a torn tail: it cut acknowledged bytes off the file, reported a
/// `TornTailTruncated` (documented as never holding acknowledged data), counted nothing as
/// dropped, and readers saw the gap as `Deleted`. Only the last segment can be torn.
#[test]
fn a_corrupt_last_record_of_a_middle_segment_is_reported_as_corrupt_not_cut_off_as_torn() {
    let (dir, acked, _) = written();
    let wal = wal_dir(dir.path(), &alpha());
    let segs = segments(&wal);
    let (_, seg) = segs[1].clone();
    let len = std::fs::metadata(&seg).expect("metadata").len();
    let (pos, h) = *frames(&seg).last().expect("a record");
    let lost = h.first_offset..segs[2].0;
    assert_eq!(
        lost,
        offsets(&h),
        "the record ends where the next segment starts"
    );
    remove_indexes(&wal);
    flip(&seg, pos + FRAME_HEADER_LEN + 100, 0x80);

    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &alpha());
    assert!(
        !report
            .events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::TornTailTruncated { .. })),
        "{report:?}"
    );
    assert!(
        report.events.iter().any(|e| matches!(
            e,
            RecoveryEvent::CorruptRecordSkipped { segment, position, offsets, .. }
                if *segment == seg && *position == pos as u64 && *offsets == lost
        )),
        "{report:?}"
    );
    assert_eq!(
        std::fs::metadata(&seg).expect("metadata").len(),
        len,
        "no byte was cut"
    );
    let t = spool.tenant(&alpha()).expect("tenant");
    let skipped = assert_intact(&t, &acked, &lost);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].range, lost);
    assert!(
        matches!(skipped[0].reason, SkipReason::Missing),
        "{skipped:?}"
    );
    let dropped = t.stats().dropped;
    assert!(
        dropped.contains(&(DropReason::Corrupt, lost.end - lost.start)),
        "{dropped:?}"
    );
    drop(t);
    spool.close().expect("closes");
    drop(spool);

    // The rebuilt index keeps the gap: the next open is clean and reads report it the same way.
    let spool = open_spool(dir.path()).expect("reopens again");
    assert!(report_of(&spool, &alpha()).is_clean());
    let skipped = assert_intact(&spool.tenant(&alpha()).expect("tenant"), &acked, &lost);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        matches!(skipped[0].reason, SkipReason::Missing),
        "{skipped:?}"
    );
}

/// Regression: quarantining the last segment moved the end of the log back to its base, so
/// the next appends were given offsets that had already been acknowledged (and perhaps read
/// and forwarded) with other content.
#[test]
fn a_quarantined_last_segment_never_lets_its_offsets_be_reused() {
    let (dir, acked, _) = written();
    let wal = wal_dir(dir.path(), &alpha());
    let (base, seg) = segments(&wal).last().cloned().expect("a segment");
    let acked_end = acked.last().expect("acked").0.end;
    flip(&seg, 20, 0x02);

    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &alpha());
    assert!(
        report.events.iter().any(
            |e| matches!(e, RecoveryEvent::SegmentQuarantined { segment, .. } if *segment == seg)
        ),
        "{report:?}"
    );
    let t = spool.tenant(&alpha()).expect("tenant");
    assert_eq!(
        t.wal().end_offset(),
        acked_end,
        "the end of the log does not move back"
    );
    let skipped = assert_intact(&t, &acked, &(base..acked_end));
    assert!(
        skipped
            .iter()
            .all(|s| s.range.start >= base && s.range.end <= acked_end),
        "{skipped:?}"
    );
    assert_eq!(
        skipped
            .iter()
            .map(|s| s.range.end - s.range.start)
            .sum::<u64>(),
        acked_end - base
    );
    let r = t.append_blocking(&batch(1, 500)).expect("appends");
    assert_eq!(r.start, acked_end, "new data gets new offsets");
    drop(t);
    spool.close().expect("closes");
    drop(spool);

    // Still so once the operator has removed the quarantined file.
    std::fs::remove_file(seg.with_extension("seg.corrupt")).expect("removes the quarantined file");
    std::fs::remove_file(wal.join(segment::index_file_name(base))).expect("removes its index");
    let spool = open_spool(dir.path()).expect("reopens");
    let t = spool.tenant(&alpha()).expect("tenant");
    assert_eq!(t.wal().end_offset(), r.end);
    let again = t.append_blocking(&batch(1, 501)).expect("appends");
    assert_eq!(again.start, r.end);
}

/// A middle segment whose every record is damaged (and whose index is gone) is kept as
/// `*.seg.corrupt` for the operator, never deleted, and its offsets are reported lost.
#[test]
fn a_middle_segment_with_no_readable_record_is_quarantined_not_deleted() {
    let (dir, acked, _) = written();
    let wal = wal_dir(dir.path(), &alpha());
    remove_indexes(&wal);
    let segs = segments(&wal);
    let (base, seg) = segs[1].clone();
    let lost = base..segs[2].0;
    for (pos, _) in frames(&seg) {
        flip(&seg, pos + 1, 0x10); // every frame's length field
    }
    let spool = open_spool(dir.path()).expect("reopens");
    let report = report_of(&spool, &alpha());
    assert!(
        report.events.iter().any(|e| matches!(
            e,
            RecoveryEvent::SegmentQuarantined { segment, .. } if *segment == seg
        )),
        "{report:?}"
    );
    assert!(
        seg.with_extension("seg.corrupt").exists(),
        "kept for the operator"
    );
    let t = spool.tenant(&alpha()).expect("tenant");
    let skipped = assert_intact(&t, &acked, &lost);
    let covered: u64 = skipped.iter().map(|s| s.range.end - s.range.start).sum();
    assert_eq!(covered, lost.end - lost.start, "{skipped:?}");
}
