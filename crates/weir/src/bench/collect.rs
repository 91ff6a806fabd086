//! `weir bench collect`: the collector end to end — samples already on an
//! embedded bus, consumed, decoded, written and acked into a store — and
//! publish-to-queryable latency at a steady rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, ConnectOptions, Message};
use weir_collect::{CollectConfig, Counters};
use weir_sources::synth::METRICS;
use weir_store::{Store, TelemetryQuery};
use weir_telemetry::Sample;
use weir_telemetry::metric::dcgm;

use super::machine;
use crate::options::StoreTuning;

#[derive(Debug, clap::Args)]
pub(crate) struct CollectBench {
    /// The store: `sqlite://PATH`, `postgres://…` or `csv://DIR`; a SQLite
    /// file in a temporary directory when absent.
    #[arg(long)]
    sink: Option<String>,
    #[command(flatten)]
    store: StoreTuning,
    /// Samples for the throughput run.
    #[arg(long, default_value_t = 500_000)]
    samples: u64,
    /// GPUs they come from (10 DCGM metrics each, DCGM's labels).
    #[arg(long, default_value_t = 64)]
    gpus: u64,
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// Samples per second of the latency run (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// Sample `i` of a fleet of `gpus`: a series per (GPU, metric), the times
/// of one series one millisecond apart from `t0`.
fn sample(i: u64, gpus: u64, t0: i64) -> Message {
    let series = METRICS.len() as u64 * gpus;
    let (gpu, metric) = (
        (i % series) / METRICS.len() as u64,
        (i % series) as usize % METRICS.len(),
    );
    let uuid = format!("GPU-bench-{gpu:05}");
    let s = Sample::new(METRICS[metric], (i % 100) as f64, t0 + (i / series) as i64)
        .label(dcgm::LABEL_UUID, uuid.clone())
        .label(dcgm::LABEL_GPU, (gpu % 8).to_string())
        .label(dcgm::LABEL_DEVICE, format!("nvidia{}", gpu % 8))
        .label(dcgm::LABEL_MODEL, "NVIDIA H100 80GB HBM3")
        .label(dcgm::LABEL_HOSTNAME, format!("node-{:04}", gpu / 8))
        .label(dcgm::LABEL_DRIVER_VERSION, "535.129.03");
    Message::new(s.encode().expect("finite")).with_key(uuid)
}

pub(super) async fn run(b: CollectBench) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let url = b
        .sink
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("weir.db").display()));
    println!("weir bench collect");
    print!("{}", machine());
    println!(
        "config:  {} samples from {} GPUs x 10 metrics, batches of {} ({} at once), store {url}, pg insert {:?}, sqlite sync {:?}, bus embedded (fsync every 5ms)",
        b.samples, b.gpus, b.batch_size, b.max_concurrent, b.store.pg_insert, b.store.sqlite_sync
    );
    let store = b.store.open(&url).await?;
    let bus_url = format!("embedded://{}", tmp.path().join("queue").display());
    let bus = weir_bus::connect(&bus_url, &ConnectOptions::default()).await?;

    // Samples already on the bus; their times start now so a rerun on the
    // same store adds rows instead of meeting its own.
    let t0 = weir_telemetry::time::now_ms();
    let started = Instant::now();
    let mut i = 0;
    while i < b.samples {
        let n = 5_000.min(b.samples - i);
        let batch = (i..i + n).map(|k| sample(k, b.gpus.max(1), t0)).collect();
        bus.publish_batch("telemetry", batch).await?;
        i += n;
    }
    let took = started.elapsed();
    println!(
        "publish           {:>10.0} samples/s  ({} samples onto the bus in {:.3} s; not part of the figure below)",
        b.samples as f64 / took.as_secs_f64(),
        b.samples,
        took.as_secs_f64()
    );

    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let config = CollectConfig {
        batch_size: b.batch_size.max(1),
        max_concurrent: b.max_concurrent.max(1),
        flush_interval: Duration::from_millis(100),
        ..CollectConfig::new("bench")
    };
    let collector = tokio::spawn(weir_collect::run(
        bus.clone(),
        store.sink.clone(),
        config,
        counters.clone(),
        shutdown.clone(),
    ));
    let started = Instant::now();
    loop {
        let t = counters.snapshot();
        if t.samples + t.duplicates >= b.samples {
            break;
        }
        anyhow::ensure!(
            !collector.is_finished(),
            "the collector stopped early: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    let t = counters.snapshot();
    println!(
        "collect           {:>10.0} samples/s  ({} samples stored in {:.3} s, {} batches, {} retried writes)",
        b.samples as f64 / took.as_secs_f64(),
        t.samples,
        took.as_secs_f64(),
        t.batches,
        t.retries
    );

    if b.rate > 0 && b.seconds > 0 {
        match &store.query {
            Some(_) => latency(&b, &*bus, &store).await?,
            None => println!("latency           skipped: {url} cannot be queried"),
        }
    }
    shutdown.cancel();
    collector.await.context("the collector panicked")??;
    store.sink.close().await?;
    bus.close().await?;
    Ok(())
}

/// Publishes `rate` samples/s in 100 ticks a second, each with one sample of
/// a marker GPU stamped with its publish time, and polls the query side
/// until that sample is visible.
async fn latency(b: &CollectBench, bus: &dyn Bus, store: &Store) -> anyhow::Result<()> {
    let query = store.query.clone().expect("checked by the caller");
    let per_tick = (b.rate / 100).max(1);
    let ticks = b.seconds * 100;
    let marker = "GPU-bench-marker";
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0i64);
    let poller = {
        let query = query.clone();
        tokio::spawn(async move {
            let q = TelemetryQuery {
                limit: 1,
                latest_first: true,
                ..TelemetryQuery::default()
            };
            loop {
                if let Ok(points) = query.telemetry(marker, &q).await
                    && let Some(p) = points.first()
                {
                    seen_tx.send_if_modified(|v| {
                        let newer = p.ts > *v;
                        *v = (*v).max(p.ts);
                        newer
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                if seen_tx.is_closed() {
                    return;
                }
            }
        })
    };
    let mut pending: std::collections::VecDeque<(i64, Instant)> = Default::default();
    let mut latencies = Vec::with_capacity(ticks as usize);
    let mut next = tokio::time::Instant::now();
    let mut k = b.samples;
    let t0 = weir_telemetry::time::now_ms() + 10_000_000;
    for _ in 0..ticks {
        tokio::time::sleep_until(next).await;
        next += Duration::from_millis(10);
        let now = weir_telemetry::time::now_ms();
        let mut batch: Vec<Message> = (k..k + per_tick - 1)
            .map(|i| sample(i, b.gpus.max(1), t0))
            .collect();
        k += per_tick;
        let mark = Sample::new(dcgm::GPU_UTIL, 1.0, now).label(dcgm::LABEL_UUID, marker);
        batch.push(Message::new(mark.encode()?).with_key(marker));
        let sent = Instant::now();
        bus.publish_batch("telemetry", batch).await?;
        pending.push_back((now, sent));
        let seen = *seen_rx.borrow_and_update();
        while pending.front().is_some_and(|(ts, _)| *ts <= seen) {
            let (_, sent) = pending.pop_front().expect("checked");
            latencies.push(sent.elapsed());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(50), seen_rx.changed()).await;
        let seen = *seen_rx.borrow_and_update();
        while pending.front().is_some_and(|(ts, _)| *ts <= seen) {
            let (_, sent) = pending.pop_front().expect("checked");
            latencies.push(sent.elapsed());
        }
    }
    drop(seen_rx);
    poller.abort();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    anyhow::ensure!(!latencies.is_empty(), "no marker sample became visible");
    println!(
        "publish->query    p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({} samples/s for {} s, {} markers, {} never seen; the poll adds up to 5 ms)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        per_tick * 100,
        b.seconds,
        latencies.len(),
        pending.len()
    );
    Ok(())
}
