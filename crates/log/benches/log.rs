//! Micro-benchmarks of the log's hot paths: appends under each fsync policy
//! (and group commit from several threads), sequential reads, and opening
//! (recovering) a large log. Throughput is in records.
//!
//! Every benchmark works on its own temporary directory. Append benchmarks
//! trim their log outside the timed region, so disk use stays bounded.
//!
//! `cargo bench -p weir-log` runs them; `cargo test --benches` runs each once
//! and then builds a small log for `open` instead of the 1 GiB one.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use weir_log::{Fsync, Log, LogConfig, Record};

const PAYLOAD_BYTES: usize = 100;
const RECORDS_PER_BATCH: usize = 100;
/// A log being appended to is cut back once it is larger than this.
const TRIM_BYTES: u64 = 1 << 30;

fn batch() -> Vec<Record> {
    (0..RECORDS_PER_BATCH)
        .map(|i| Record::new(1_700_000_000_000 + i as i64, vec![b'x'; PAYLOAD_BYTES]))
        .collect()
}

fn open(dir: &TempDir, fsync: Fsync) -> Log {
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    Log::open(dir.path(), config).expect("open")
}

/// Appends `iters` batches from `threads` threads, the work split evenly,
/// and returns the time taken; then trims the log, untimed.
fn append_batches(log: &Log, records: &[Record], threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let n = iters / threads + u64::from(t < iters % threads);
            s.spawn(move || {
                for _ in 0..n {
                    black_box(log.append(records).expect("append"));
                }
            });
        }
    });
    let elapsed = start.elapsed();
    if log.size_bytes() > TRIM_BYTES {
        log.truncate_before(log.next_offset()).expect("trim");
    }
    elapsed
}

fn append(c: &mut Criterion) {
    let records = batch();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));

    group.bench_function("fsync_never", |b| {
        let dir = TempDir::new().expect("temp dir");
        let log = open(&dir, Fsync::Never);
        b.iter_custom(|iters| append_batches(&log, &records, 1, iters));
    });

    group.bench_function("fsync_every_5ms", |b| {
        let period = Duration::from_millis(5);
        let dir = TempDir::new().expect("temp dir");
        let log = open(&dir, Fsync::Every(period));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                    log.sync().expect("sync");
                }
            });
            b.iter_custom(|iters| append_batches(&log, &records, 1, iters));
            stop.store(true, Ordering::Relaxed);
        });
    });

    for threads in [1, 4] {
        group.bench_with_input(
            BenchmarkId::new("fsync_always", format!("{threads}_threads")),
            &threads,
            |b, &threads| {
                let dir = TempDir::new().expect("temp dir");
                let log = open(&dir, Fsync::Always);
                b.iter_custom(|iters| append_batches(&log, &records, threads, iters));
            },
        );
    }
    group.finish();
}

/// Records in the log that the read benchmark reads end to end (~12 MiB).
const READ_RECORDS: u64 = 100_000;

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(READ_RECORDS));
    let setup = || {
        let dir = TempDir::new().expect("temp dir");
        let log = open(&dir, Fsync::Never);
        let records = batch();
        for _ in 0..READ_RECORDS / RECORDS_PER_BATCH as u64 {
            log.append(&records).expect("append");
        }
        (dir, log)
    };
    for max_bytes in [64 << 10, 1 << 20] {
        group.bench_with_input(
            BenchmarkId::new("sequential", format!("{}KiB_reads", max_bytes >> 10)),
            &max_bytes,
            |b, &max_bytes| {
                let (_dir, log) = setup();
                b.iter(|| {
                    let mut next = 0;
                    while next < READ_RECORDS {
                        let records = log.read(next, max_bytes).expect("read");
                        next = records.last().expect("records").offset + 1;
                        black_box(records);
                    }
                });
            },
        );
    }
    group.finish();
}

/// Builds a log of `batches` batches with the default segment size.
fn build_log(batches: u64) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    let log = open(&dir, Fsync::Never);
    let records = batch();
    for _ in 0..batches {
        log.append(&records).expect("append");
    }
    log.close().expect("close");
    dir
}

fn open_log(c: &mut Criterion) {
    // A full-size log only when run by `cargo bench`, not by `cargo test`.
    let bench = std::env::args().any(|a| a == "--bench");
    let (bytes, label) = if bench {
        (1u64 << 30, "1GiB")
    } else {
        (8 << 20, "8MiB")
    };
    // Up to `bytes`, but one batch short of filling the last segment: the
    // active segment is then almost full, the worst case for open, which
    // scans the active segment whole and trusts the sealed ones' indexes.
    let batch_bytes = weir_log::batch::encode(0, &batch()).len() as u64;
    let per_segment = LogConfig::default().segment_bytes / batch_bytes;
    let fit = bytes / batch_bytes;
    let batches = if fit > per_segment {
        fit / per_segment * per_segment - 1
    } else {
        fit
    };
    let records = batches * RECORDS_PER_BATCH as u64;

    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records));
    group.bench_function(label, |b| {
        let dir = build_log(batches);
        let config = LogConfig {
            fsync: Fsync::Never,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config.clone()).expect("open");
        assert_eq!(log.next_offset(), records);
        drop(log);
        b.iter_with_large_drop(|| Log::open(dir.path(), config.clone()).expect("open"));
    });
    group.finish();
}

criterion_group!(benches, append, read, open_log);
criterion_main!(benches);
