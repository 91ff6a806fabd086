//! Recovery on open: torn tails, corruption, indexes, empty segments.

use std::path::{Path, PathBuf};

use weir_log::{LogError, batch};

use crate::fixture::{
    T0, append_bytes, append_records, assert_records, config, file_len, flip_byte, index_path,
    open, positions, read_all, record, segment_bases, segment_path, tempdir,
};

/// Asserts that `result` is [`LogError::Corrupt`] naming `path` at `position`.
#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(result: weir_log::Result<T>, path: &Path, position: u64) {
    match result {
        Err(LogError::Corrupt {
            path: got_path,
            position: got_position,
            reason,
        }) => {
            assert_eq!(got_path, path, "corrupt file ({reason})");
            assert_eq!(got_position, position, "corrupt position ({reason})");
        }
        other => panic!(
            "expected Corrupt in {} at {position}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn a_torn_tail_is_cut_and_appends_continue() {
    let next = batch::encode(15, &[record(15), record(16)]);
    let mut bad_crc = next.clone();
    *bad_crc.last_mut().expect("non-empty") ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one byte", vec![1]),
        ("garbage", vec![0xa5; 97]),
        ("zeros, as after a power cut", vec![0; 4096]),
        ("half a header", next[..20].to_vec()),
        (
            "header without records",
            next[..batch::BATCH_HEADER_LEN].to_vec(),
        ),
        (
            "batch missing its last byte",
            next[..next.len() - 1].to_vec(),
        ),
        ("whole batch, bad checksum", bad_crc),
        ("stale copy of batch 0", batch::encode(0, &[record(0)])),
    ];

    // `segment_bytes` 1 MiB keeps one segment; 300 seals several first.
    let check = |name: &str, segment_bytes: u64, tail: &[u8]| {
        let dir = tempdir();
        let log = open(dir.path(), config(segment_bytes));
        append_records(&log, 0, 15, 3);
        log.close().expect("close");
        let active = crate::fixture::active_segment(dir.path());
        let clean_len = file_len(&active);
        append_bytes(&active, tail);

        let log = open(dir.path(), config(segment_bytes));
        assert_eq!(log.recovery().truncated_bytes, tail.len() as u64, "{name}");
        assert_eq!(file_len(&active), clean_len, "{name}: file cut back");
        assert_eq!(log.next_offset(), 15, "{name}");
        assert_records(&read_all(&log, 1 << 20), 0..15);
        append_records(&log, 15, 5, 2);
        drop(log);

        let log = open(dir.path(), config(segment_bytes));
        assert_eq!(log.recovery().truncated_bytes, 0, "{name}: second open");
        assert_records(&read_all(&log, 1 << 20), 0..20);
    };
    for (name, tail) in &cases {
        for segment_bytes in [1 << 20, 300] {
            check(name, segment_bytes, tail);
        }
    }
}

/// Damage to the last batch cannot be told from a write the crash cut
/// short: nothing valid follows it, so it is cut as a torn tail.
#[test]
fn damage_in_the_last_batch_is_cut_as_a_torn_tail() {
    let dir = tempdir();
    let log = open(dir.path(), config(1 << 20));
    let sizes = append_records(&log, 0, 15, 3);
    log.close().expect("close");
    let seg = segment_path(dir.path(), 0);
    flip_byte(&seg, positions(&sizes)[4] + 45);

    let log = open(dir.path(), config(1 << 20));
    assert_eq!(log.recovery().truncated_bytes, sizes[4]);
    assert_records(&read_all(&log, 1 << 20), 0..12);
    assert_eq!(log.append(&[record(12)]).expect("append").base_offset, 12);
}

#[test]
fn damage_followed_by_valid_batches_is_corruption() {
    // Byte of batch 2 to flip: one per header field, then a record byte.
    let cases = [
        ("length", 1),
        ("checksum", 5),
        ("magic", 8),
        ("base offset", 12),
        ("record count", 20),
        ("first timestamp", 24),
        ("max timestamp", 32),
        ("record", 50),
    ];
    for (name, at) in cases {
        let dir = tempdir();
        let log = open(dir.path(), config(1 << 20));
        let sizes = append_records(&log, 0, 30, 3);
        log.close().expect("close");
        let seg = segment_path(dir.path(), 0);
        let len = file_len(&seg);
        let pos = positions(&sizes)[2];
        flip_byte(&seg, pos + at);

        println!("case {name}");
        assert_corrupt(weir_log::Log::open(dir.path(), config(1 << 20)), &seg, pos);
        assert_eq!(
            file_len(&seg),
            len,
            "{name}: a failed open must not cut anything"
        );
    }
}

/// A log spread over several sealed segments: 60 records in batches of 4.
struct Sealed {
    dir: tempfile::TempDir,
    /// Base offsets of the segments.
    bases: Vec<u64>,
    /// Byte sizes of the batches of segment 0.
    seg0_batches: Vec<u64>,
}

const PER_BATCH: u64 = 4;

fn sealed_log() -> Sealed {
    let dir = tempdir();
    let log = open(dir.path(), config(600));
    let sizes = append_records(&log, 0, 60, PER_BATCH);
    log.close().expect("close");
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 4, "want several segments, got {bases:?}");
    assert!(
        bases[1] >= 2 * PER_BATCH,
        "want two batches in segment 0, got {bases:?}"
    );
    let seg0_batches = sizes[..(bases[1] / PER_BATCH) as usize].to_vec();
    Sealed {
        dir,
        bases,
        seg0_batches,
    }
}

impl Sealed {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn segment(&self, i: usize) -> PathBuf {
        segment_path(self.path(), self.bases[i])
    }

    fn index(&self, i: usize) -> PathBuf {
        index_path(self.path(), self.bases[i])
    }

    /// Start of batch `n` in segment 0.
    fn seg0_batch(&self, n: usize) -> u64 {
        positions(&self.seg0_batches)[n]
    }
}

/// Does something to an index file.
type Damage = fn(&Path);

#[test]
fn a_missing_or_damaged_sealed_index_is_rebuilt() {
    let cases: [(&str, Damage); 6] = [
        ("missing", |p| std::fs::remove_file(p).expect("remove")),
        ("empty", |p| std::fs::write(p, b"").expect("write")),
        ("garbage", |p| {
            std::fs::write(p, [0x5a; 100]).expect("write")
        }),
        ("cut short", |p| {
            let bytes = std::fs::read(p).expect("read");
            std::fs::write(p, &bytes[..bytes.len() - 1]).expect("write");
        }),
        ("flipped entry", |p| flip_byte(p, 3)),
        ("flipped footer", |p| flip_byte(p, file_len(p) - 20)),
    ];
    for (name, damage) in cases {
        let s = sealed_log();
        assert!(s.index(0).exists(), "a sealed segment has an index file");
        damage(&s.index(0));

        let log = open(s.path(), config(600));
        assert_eq!(log.recovery().rebuilt_indexes, 1, "{name}");
        assert_eq!(log.recovery().segments, s.bases.len(), "{name}");
        assert!(s.index(0).exists(), "{name}: index rewritten");
        for max_bytes in [1, 1 << 20] {
            assert_records(&read_all(&log, max_bytes), 0..60);
        }
        for from in 0..s.bases[1] {
            let got = log.read(from, 1).expect("read");
            assert_eq!(
                got.first().map(|r| r.offset),
                Some(from),
                "{name}: read({from}, 1)"
            );
        }
        drop(log);

        let log = open(s.path(), config(600));
        assert_eq!(
            log.recovery().rebuilt_indexes,
            0,
            "{name}: rebuilt index trusted"
        );
        assert_records(&read_all(&log, 1 << 20), 0..60);
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_when_it_must_be_scanned() {
    // Flipped byte, index gone: the scan finds the damaged batch.
    let s = sealed_log();
    flip_byte(&s.segment(0), s.seg0_batch(1) + 45);
    std::fs::remove_file(s.index(0)).expect("remove index");
    assert_corrupt(
        weir_log::Log::open(s.path(), config(600)),
        &s.segment(0),
        s.seg0_batch(1),
    );

    // Last byte cut, index intact: lengths disagree, so the segment is
    // scanned, and a sealed segment has no torn tail to forgive.
    let s = sealed_log();
    let seg = s.segment(0);
    let len = file_len(&seg);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(len - 1))
        .expect("cut");
    let last = s.seg0_batch(s.seg0_batches.len() - 1);
    assert_corrupt(weir_log::Log::open(s.path(), config(600)), &seg, last);
    assert_eq!(file_len(&seg), len - 1, "a sealed segment is never cut");
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let s = sealed_log();
    std::fs::remove_file(s.segment(1)).expect("remove");
    assert_corrupt(weir_log::Log::open(s.path(), config(600)), &s.segment(2), 0);
}

#[test]
fn an_empty_trailing_segment_is_removed() {
    // A single segment and an empty one after it.
    let dir = tempdir();
    let log = open(dir.path(), config(1 << 20));
    append_records(&log, 0, 10, 3);
    log.close().expect("close");
    std::fs::File::create(segment_path(dir.path(), 10)).expect("create");
    let log = open(dir.path(), config(1 << 20));
    assert_eq!(log.recovery().removed_empty_segments, 1);
    assert_eq!(log.segment_count(), 1);
    assert!(!segment_path(dir.path(), 10).exists());
    append_records(&log, 10, 5, 2);
    assert_records(&read_all(&log, 1 << 20), 0..15);

    // A crash during a roll: the old segment was sealed (index written), the
    // new one created but never written. The old one becomes active again.
    let s = sealed_log();
    let last = s.bases.len() - 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.segment(last))
        .and_then(|f| f.set_len(0))
        .expect("empty the last segment");
    let log = open(s.path(), config(600));
    assert_eq!(log.recovery().removed_empty_segments, 1);
    assert_eq!(log.recovery().truncated_bytes, 0);
    assert_eq!(log.segment_count(), last);
    assert_eq!(log.next_offset(), s.bases[last]);
    assert!(
        !s.index(last - 1).exists(),
        "the active segment's stale index is removed"
    );
    append_records(&log, s.bases[last], 60 - s.bases[last], PER_BATCH);
    drop(log);
    let log = open(s.path(), config(600));
    assert_eq!(log.recovery().removed_empty_segments, 0);
    assert_records(&read_all(&log, 1 << 20), 0..60);
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_caught_by_read_and_verify() {
    let s = sealed_log();
    let pos = s.seg0_batch(1);
    flip_byte(&s.segment(0), pos + 45);
    let log = open(s.path(), config(600));
    assert_eq!(
        log.recovery().rebuilt_indexes,
        0,
        "the index is intact and trusted"
    );

    assert_corrupt(log.read(0, 1 << 20), &s.segment(0), pos);
    assert_corrupt(log.read(PER_BATCH, 1), &s.segment(0), pos);
    assert_corrupt(log.verify(), &s.segment(0), pos);
    // What lies elsewhere still reads.
    assert_records(&log.read(0, 1).expect("batch 0"), 0..PER_BATCH);
    let rest = crate::fixture::read_from(&log, s.bases[1], 1 << 20);
    assert_records(&rest, s.bases[1]..60);
}

#[test]
fn verify_counts_batches_and_catches_every_flipped_byte() {
    let s = sealed_log();
    let log = open(s.path(), config(600));
    let report = log.verify().expect("verify");
    assert_eq!(report.segments, s.bases.len());
    assert_eq!(report.batches, 60 / PER_BATCH);
    assert_eq!(report.bytes, log.size_bytes());

    // Every byte of a sealed and of the active segment, one at a time.
    for seg in [s.segment(0), s.segment(s.bases.len() - 1)] {
        for pos in 0..file_len(&seg) {
            flip_byte(&seg, pos);
            assert!(
                matches!(log.verify(), Err(LogError::Corrupt { .. })),
                "flip at byte {pos} of {} went unnoticed",
                seg.display()
            );
            flip_byte(&seg, pos);
        }
    }
    assert_eq!(log.verify().expect("verify after restoring"), report);
}

/// Records of fixed size: one record per batch, `BATCH` bytes each.
const BATCH: usize = 1092;

fn fixed_record(i: u64) -> weir_log::Record {
    let payload = format!("{i:0>width$}", width = BATCH - batch::BATCH_HEADER_LEN - 22);
    weir_log::Record::new(T0, payload)
}

/// A read budget may end anywhere, also a few bytes into a batch header; the
/// read must then stop at a batch boundary, not report corruption.
#[test]
fn a_read_budget_may_end_anywhere_in_a_batch() {
    let dir = tempdir();
    let log = open(dir.path(), config(1 << 30));
    for i in 0..300 {
        let appended = log.append(&[fixed_record(i)]).expect("append");
        assert_eq!(appended.bytes, BATCH as u64);
    }
    // 60 batches are 65,520 bytes, 16 short of the 64 KiB minimum read; 100
    // batches are past it.
    let mut budgets = Vec::new();
    for batches in [1, 59, 60, 61, 100] {
        for extra in [0, 1, 16, 20, 39, 40, 41, BATCH - 1] {
            budgets.push(batches * BATCH + extra);
        }
    }
    for max_bytes in budgets {
        let got = log
            .read(0, max_bytes)
            .unwrap_or_else(|e| panic!("read(0, {max_bytes}): {e}"));
        let n = got.len() as u64;
        assert!(
            n >= (max_bytes / BATCH) as u64,
            "read(0, {max_bytes}) got only {n}"
        );
        let want: Vec<u64> = (0..n).collect();
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, want, "read(0, {max_bytes})");
        assert!(got.iter().all(|r| r.record == fixed_record(r.offset)));
    }
}

#[test]
fn reads_cross_segments_in_order_at_any_offset_and_budget() {
    let dir = tempdir();
    let log = open(dir.path(), config(500));
    let mut next = 0;
    for per_batch in (1..=7).cycle() {
        if next >= 200 {
            break;
        }
        let n = per_batch.min(200 - next);
        append_records(&log, next, n, n);
        next += n;
    }
    assert!(
        log.segment_count() >= 10,
        "{} segments",
        log.segment_count()
    );

    let check = |log: &weir_log::Log| {
        for max_bytes in [1, 50, 300, 4096, 1 << 20] {
            assert_records(&read_all(log, max_bytes), 0..200);
        }
        for from in 0..200 {
            for max_bytes in [1, 300, 1 << 20] {
                let got = log.read(from, max_bytes).expect("read");
                assert!(!got.is_empty(), "read({from}, {max_bytes}) is empty");
                assert_records(&got, from..from + got.len() as u64);
            }
        }
        for from in [200, 201, u64::MAX] {
            assert!(
                log.read(from, 1 << 20)
                    .expect("read past the end")
                    .is_empty()
            );
        }
    };
    check(&log);
    drop(log);
    check(&open(dir.path(), config(500)));
}

#[test]
fn retention_by_bytes_deletes_whole_sealed_segments_oldest_first() {
    let s = sealed_log();
    let lens: Vec<u64> = (0..s.bases.len())
        .map(|i| file_len(&s.segment(i)))
        .collect();
    let total: u64 = lens.iter().sum();
    let active = *s.bases.last().expect("segments");

    let check = |retention_bytes: Option<u64>, want_removed: usize| {
        let s = sealed_log();
        let config = weir_log::LogConfig {
            retention_bytes,
            ..config(600)
        };
        let log = open(s.path(), config.clone());
        let removed = log.enforce_retention(T0).expect("retention");
        let label = format!("retention_bytes {retention_bytes:?}");
        assert_eq!(removed.segments, want_removed, "{label}");
        assert_eq!(
            removed.bytes,
            lens[..want_removed].iter().sum::<u64>(),
            "{label}"
        );
        assert_eq!(segment_bases(s.path()), s.bases[want_removed..], "{label}");
        assert!(
            !s.index(0).exists() || want_removed == 0,
            "{label}: index removed too"
        );
        let start = s.bases[want_removed];
        assert_eq!(log.start_offset(), start, "{label}");
        assert_eq!(
            log.read(0, 1).expect("read")[0].offset,
            start,
            "{label}: read below start"
        );
        assert_records(&read_all(&log, 1 << 20), start..60);
        // Retention is idempotent and survives a reopen.
        assert_eq!(
            log.enforce_retention(T0).expect("again").segments,
            0,
            "{label}"
        );
        drop(log);
        let log = open(s.path(), config);
        assert_eq!(log.start_offset(), start, "{label}: after reopen");
        assert_records(&read_all(&log, 1 << 20), start..60);
    };
    let last = s.bases.len() - 1;
    check(None, 0);
    check(Some(u64::MAX), 0);
    check(Some(total), 0);
    check(Some(total - 1), 1);
    check(Some(total - lens[0]), 1);
    check(Some(total - lens[0] - 1), 2);
    check(Some(lens[last]), last);
    // Never the active segment, however small the limit.
    check(Some(0), last);
    assert_eq!(s.bases[last], active);
}

#[test]
fn retention_by_age_deletes_sealed_segments_whose_newest_record_is_old() {
    let s = sealed_log();
    // Record i is stamped T0 + i s, so segment k's newest record is the one
    // just before segment k + 1 starts.
    let newest = |k: usize| T0 + (s.bases[k + 1] as i64 - 1) * 1000;
    let age = std::time::Duration::from_secs(10);
    let last = s.bases.len() - 1;

    let check = |cutoff: i64, want_removed: usize| {
        let s = sealed_log();
        let config = weir_log::LogConfig {
            retention_age: Some(age),
            ..config(600)
        };
        let log = open(s.path(), config);
        let removed = log.enforce_retention(cutoff + 10_000).expect("retention");
        assert_eq!(removed.segments, want_removed, "cutoff {cutoff}");
        assert_eq!(log.start_offset(), s.bases[want_removed], "cutoff {cutoff}");
        assert_eq!(log.segment_count(), s.bases.len() - want_removed);
        assert_records(&read_all(&log, 1 << 20), s.bases[want_removed]..60);
    };
    check(i64::MIN, 0);
    check(T0, 0);
    check(newest(0), 0);
    check(newest(0) + 1, 1);
    check(newest(1) + 1, 2);
    // Everything is old: every sealed segment goes, the active one stays.
    check(T0 + 1_000_000, last);
}

#[test]
fn truncate_before_deletes_sealed_segments_wholly_below_the_offset() {
    let s = sealed_log();
    let last = s.bases.len() - 1;
    let cases = [
        (0, 0),
        (s.bases[1] - 1, 0),
        (s.bases[1], 1),
        (s.bases[2] + 1, 2),
        (s.bases[last], last),
        (60, last),
        (u64::MAX, last),
    ];
    for (offset, want_removed) in cases {
        let s = sealed_log();
        let log = open(s.path(), config(600));
        let removed = log.truncate_before(offset).expect("truncate");
        assert_eq!(removed.segments, want_removed, "truncate_before({offset})");
        assert_eq!(
            log.start_offset(),
            s.bases[want_removed],
            "truncate_before({offset})"
        );
        assert_eq!(segment_bases(s.path()), s.bases[want_removed..]);
        assert_records(&read_all(&log, 1 << 20), s.bases[want_removed]..60);
        assert_eq!(log.next_offset(), 60);
        assert_eq!(log.append(&[record(60)]).expect("append").base_offset, 60);
    }
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let s = sealed_log();
    let log = open(s.path(), config(600));
    let at = |i: i64| T0 + i * 1000;
    let cases = [
        (i64::MIN, 0),
        (T0 - 1, 0),
        (at(0), 0),
        (at(0) + 1, 1),
        (at(s.bases[1] as i64) - 1, s.bases[1]),
        (at(s.bases[1] as i64), s.bases[1]),
        (at(37), 37),
        (at(37) - 500, 37),
        (at(59), 59),
        (at(59) + 1, 60),
        (i64::MAX, 60),
    ];
    for (ts, want) in cases {
        assert_eq!(
            log.offset_for_timestamp(ts).expect("lookup"),
            want,
            "ts {ts}"
        );
    }

    // Below the start after truncation: the first record still there.
    log.truncate_before(s.bases[2]).expect("truncate");
    assert_eq!(log.offset_for_timestamp(T0).expect("lookup"), s.bases[2]);

    // Timestamps need not grow: the first record at or after wins.
    let dir = tempdir();
    let log = open(dir.path(), config(1 << 20));
    let stamps = [5, 3, 9, 1, 7];
    let records: Vec<weir_log::Record> = stamps
        .iter()
        .map(|&t| weir_log::Record::new(t, "x"))
        .collect();
    log.append(&records).expect("append");
    for (ts, want) in [(0, 0), (4, 0), (5, 0), (6, 2), (8, 2), (9, 2), (10, 5)] {
        assert_eq!(
            log.offset_for_timestamp(ts).expect("lookup"),
            want,
            "ts {ts}"
        );
    }
}
