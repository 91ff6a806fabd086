//! DCGM CSV parsing throughput: the sample export (80 rows of real
//! dcgm-exporter output with long quoted `labels_raw`) repeated to 8,000
//! rows, parsed from memory into samples. Throughput is in rows; the bytes
//! figure is `rows × ~450`.
//!
//! `cargo bench -p weir-sources --bench dcgm` runs it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_sources::dcgm::{Reader, Reading};

const SAMPLE: &str = include_str!("../tests/data/dcgm_sample.csv");

/// The sample's header and its rows `copies` times.
fn export(copies: usize) -> (String, u64) {
    let (header, rows) = SAMPLE.split_once('\n').expect("a header line");
    let mut text = format!("{header}\n");
    for _ in 0..copies {
        text.push_str(rows);
    }
    let n = rows.lines().count() * copies;
    (text, n as u64)
}

fn parse(c: &mut Criterion) {
    let (text, rows) = export(100);
    let mut group = c.benchmark_group("dcgm_parse");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(rows));
    group.bench_function("sample_x100", |b| {
        b.iter(|| {
            let reader = Reader::new(black_box(text.as_bytes())).expect("a DCGM header");
            let samples = reader
                .filter(|r| matches!(r, Ok(row) if matches!(row.reading, Reading::Sample(_))))
                .count();
            assert_eq!(samples as u64, rows);
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
