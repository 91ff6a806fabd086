//! The dense engine's generations: a board of side 1024 (and 2048) with a
//! random soup, stepped a fixed number of generations per iteration, on 1
//! and 2 threads. Throughput is in cell updates (`tam² · generations`);
//! divide by the threads for the figure per core. The dense engine computes
//! every cell whatever lives, so the soup only keeps the work honest.
//!
//! `cargo bench -p weir-gol --bench dense` runs it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_gol::Life;
use weir_gol::dense::Dense;

mod common;
use common::soup;

fn advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("dense_advance");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (tam, generations) in [(1024u64, 256u64), (2048, 64)] {
        let cells = soup(tam);
        group.throughput(Throughput::Elements(tam * tam * generations));
        for threads in [1usize, 2] {
            let mut board = Dense::new(tam, &cells, threads);
            group.bench_function(
                BenchmarkId::new(format!("tam{tam}x{generations}gen"), threads),
                |b| b.iter(|| black_box(&mut board).advance(generations)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, advance);
criterion_main!(benches);
