//! What the tests share: configurations, deterministic records, and the
//! file-level tampering (flipped bytes, torn tails) that recovery must handle.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use weir_log::{Fsync, Log, LogConfig, Record, StoredRecord};

/// Timestamp of record 0; record `i` is stamped `T0 + i` seconds.
pub(crate) const T0: i64 = 1_700_000_000_000;

/// A configuration with small segments and a dense index, so that a few
/// kilobytes of records span several segments and many index entries.
pub(crate) fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        fsync: Fsync::Never,
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Record `i`: payload, key and timestamp all derived from `i`.
pub(crate) fn record(i: u64) -> Record {
    let mut r = Record::new(
        T0 + i as i64 * 1000,
        format!("record-{i}-{}", "x".repeat((i % 7) as usize)),
    );
    if i.is_multiple_of(3) {
        r.key = Some(format!("key-{i}").into());
    }
    r
}

/// Appends records `from..from + n` in batches of `per_batch` and returns the
/// byte size of every batch written, in order.
pub(crate) fn append_records(log: &Log, from: u64, n: u64, per_batch: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut i = from;
    while i < from + n {
        let end = (i + per_batch).min(from + n);
        let batch: Vec<Record> = (i..end).map(record).collect();
        let appended = log.append(&batch).expect("append");
        assert_eq!(
            appended.base_offset, i,
            "records must get consecutive offsets"
        );
        assert_eq!(appended.next_offset, end);
        sizes.push(appended.bytes);
        i = end;
    }
    sizes
}

/// Every record from the start of the log to its end, read `max_bytes` at a
/// time; fails if a read comes back empty before the end.
pub(crate) fn read_all(log: &Log, max_bytes: usize) -> Vec<StoredRecord> {
    read_from(log, log.start_offset(), max_bytes)
}

/// Every record from `from` to the end of the log, `max_bytes` at a time.
pub(crate) fn read_from(log: &Log, from: u64, max_bytes: usize) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut next = from;
    let end = log.next_offset();
    while next < end {
        let got = log.read(next, max_bytes).expect("read");
        assert!(
            !got.is_empty(),
            "read({next}, {max_bytes}) came back empty before the end at {end}"
        );
        next = got.last().expect("non-empty").offset + 1;
        out.extend(got);
    }
    out
}

/// Asserts that `got` is exactly records `range` in order, with their offsets.
pub(crate) fn assert_records(got: &[StoredRecord], range: std::ops::Range<u64>) {
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    let want: Vec<u64> = range.clone().collect();
    assert_eq!(offsets, want, "offsets");
    for r in got {
        assert_eq!(r.record, record(r.offset), "record at offset {}", r.offset);
    }
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// Base offsets of the segment files in `dir`, in order.
pub(crate) fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let name = e.expect("dir entry").file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// The file the next append goes to: the segment with the largest base.
pub(crate) fn active_segment(dir: &Path) -> PathBuf {
    let base = *segment_bases(dir).last().expect("a segment");
    segment_path(dir, base)
}

/// Start positions of batches whose sizes are `sizes`, laid end to end.
pub(crate) fn positions(sizes: &[u64]) -> Vec<u64> {
    sizes
        .iter()
        .scan(0, |pos, size| {
            let at = *pos;
            *pos += size;
            Some(at)
        })
        .collect()
}

pub(crate) fn flip_byte(path: &Path, pos: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for flip");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, pos)
        .expect("read byte to flip");
    byte[0] ^= 0x20;
    file.write_all_at(&byte, pos).expect("write flipped byte");
}

pub(crate) fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(bytes).expect("append bytes");
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::TempDir::new().expect("temp dir")
}

/// Opens the log in `dir`, panicking with the error on failure.
pub(crate) fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}
