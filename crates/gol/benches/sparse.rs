//! The sparse engine: the benchmark job users send, `{"powmin": 10,
//! "powmax": 20}` (every size's glider run to the corner, through
//! `run_size`, as a worker runs it), and a soup's generations, whose cost
//! must follow the live cells and not the board's side.
//!
//! `cargo bench -p weir-gol --bench sparse` runs it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_gol::sparse::Sparse;
use weir_gol::{Engine, Life, RunConfig, run_size};

mod common;
use common::soup;

fn glider_job(c: &mut Criterion) {
    let config = RunConfig {
        engine: Engine::Sparse,
        ..RunConfig::default()
    };
    let mut group = c.benchmark_group("sparse_glider");
    group.bench_function("pow10..=20", |b| {
        b.iter(|| {
            for pow in 10..=20 {
                let result = run_size(black_box(pow), &config).expect("runs");
                assert!(result.correct);
            }
        })
    });
    group.bench_function("pow62", |b| {
        b.iter(|| run_size(black_box(62), &config).expect("runs").correct)
    });
    group.finish();
}

fn soup_advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("sparse_soup");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (size, generations) = (1024u64, 16u64);
    let cells = soup(size);
    // The same soup on a board of its own size and in the middle of one of
    // side 2^20: the work is the same.
    for pow in [10u32, 20] {
        let tam = 1u64 << pow;
        let start: Vec<(u64, u64)> = cells
            .iter()
            .map(|&(r, c)| (r + (tam - size) / 2, c + (tam - size) / 2))
            .collect();
        let board = Sparse::new(tam, &start);
        group.throughput(Throughput::Elements(size * size * generations));
        group.bench_function(
            BenchmarkId::new(
                format!("soup{size}x{generations}gen"),
                format!("tam2^{pow}"),
            ),
            |b| {
                b.iter_batched(
                    || board.clone(),
                    |mut board| {
                        board.advance(generations);
                        board
                    },
                    criterion::BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, glider_job, soup_advance);
criterion_main!(benches);
