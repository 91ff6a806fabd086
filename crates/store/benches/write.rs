//! The store's hot paths: decoding a message into a record, and writing
//! batches of 1,000 DCGM-labelled samples to SQLite (640 series, new times
//! each batch, `synchronous = NORMAL` and `FULL`). Throughput is in
//! samples.
//!
//! `cargo bench -p weir-store --bench write` runs it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_store::{Batch, Record, StoreOptions, Synchronous};
use weir_telemetry::Sample;
use weir_telemetry::metric::dcgm;

const BATCH: usize = 1_000;
const SERIES: usize = 640;

fn sample(i: usize, t0: i64) -> Sample {
    let gpu = (i % SERIES) / 10;
    Sample::new(
        format!("DCGM_FI_DEV_{}", i % 10),
        i as f64,
        t0 + (i / SERIES) as i64,
    )
    .label(dcgm::LABEL_UUID, format!("GPU-bench-{gpu:05}"))
    .label(dcgm::LABEL_GPU, (gpu % 8).to_string())
    .label(dcgm::LABEL_DEVICE, format!("nvidia{}", gpu % 8))
    .label(dcgm::LABEL_MODEL, "NVIDIA H100 80GB HBM3")
    .label(dcgm::LABEL_HOSTNAME, format!("node-{:04}", gpu / 8))
}

fn decode(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = (0..BATCH).map(|i| sample(i, 0).encode().unwrap()).collect();
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("dcgm_sample", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(weir_store::record::decode(black_box(p), 0).unwrap());
            }
        })
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("sqlite_write");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(BATCH as u64));
    for (name, synchronous) in [("normal", Synchronous::Normal), ("full", Synchronous::Full)] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let options = StoreOptions {
            synchronous,
            ..StoreOptions::default()
        };
        let store = runtime.block_on(weir_store::open(&url, &options)).unwrap();
        let mut round = 0i64;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    round += 1;
                    let mut batch = Batch::new("telemetry");
                    for i in 0..BATCH {
                        batch.push(Record::Sample(sample(i, round * 1_000_000)));
                    }
                    Arc::new(batch)
                },
                |batch| runtime.block_on(store.sink.write(batch)).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        runtime.block_on(store.sink.close()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, decode, sqlite);
criterion_main!(benches);
