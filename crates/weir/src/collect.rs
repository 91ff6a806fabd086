//! `weir collect`: telemetry and job results from the bus into a store,
//! until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use weir_collect::{CollectConfig, Counters};

use crate::options::{BusOptions, StoreTuning, parse_duration};
use crate::signal::stop_on_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct CollectArgs {
    #[command(flatten)]
    bus: BusOptions,
    /// Topics to consume (repeat for several); samples, Game of Life
    /// results and refused jobs are told apart by their shape.
    #[arg(
        long = "topic",
        env = "WEIR_TOPIC",
        value_delimiter = ',',
        default_value = "telemetry"
    )]
    topics: Vec<String>,
    /// The consumer group collectors share.
    #[arg(long, env = "WEIR_GROUP", default_value = "collectors")]
    group: String,
    /// Names this collector in stats; host and process id when absent.
    #[arg(long, env = "WEIR_CONSUMER_ID")]
    consumer_id: Option<String>,
    /// Where to write: `sqlite://PATH`, `postgres://USER@HOST:PORT/DB` or
    /// `csv://DIR`.
    #[arg(long, env = "WEIR_SINK", default_value = "sqlite://weir-data/weir.db")]
    sink: String,
    #[command(flatten)]
    store: StoreTuning,
    /// Messages per batch (one transaction each).
    #[arg(long, env = "WEIR_BATCH_SIZE", default_value_t = 1000)]
    batch_size: usize,
    /// Batches written at once at most.
    #[arg(long, env = "WEIR_MAX_CONCURRENT", default_value_t = 4)]
    max_concurrent: usize,
    /// A partial batch is written at most this long after its first message.
    #[arg(long, env = "WEIR_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// A batch not acked within this is delivered again (to any collector).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    visibility_timeout: Duration,
    /// How often to print progress (0s: never).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    progress: Duration,
}

pub(crate) async fn run(args: CollectArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.max_concurrent == 0 {
        return Err(crate::UsageError(
            "--batch-size and --max-concurrent must be at least 1".into(),
        )
        .into());
    }
    let store = args.store.open(&args.sink).await?;
    let bus = args.bus.connect().await?;
    let consumer_id = args
        .consumer_id
        .unwrap_or_else(|| crate::options::member_id("collector"));
    let config = CollectConfig {
        topics: args.topics.clone(),
        group: args.group.clone(),
        batch_size: args.batch_size,
        max_concurrent: args.max_concurrent,
        flush_interval: args.flush_interval,
        visibility_timeout: args.visibility_timeout,
        ..CollectConfig::new(consumer_id)
    };
    eprintln!(
        "weir collect: {} (group {}) on {} into {}, batches of {} ({} at once)",
        args.topics.join(", "),
        args.group,
        args.bus.url(),
        store.url,
        args.batch_size,
        args.max_concurrent
    );
    if !store.sink.exactly_once() {
        eprintln!(
            "weir collect: note: {} appends, so a batch delivered again after a crash is written again (at-least-once)",
            store.url
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir collect", shutdown.clone()));
    let counters = Arc::new(Counters::default());
    let reporter = tokio::spawn(report(counters.clone(), args.progress, shutdown.clone()));
    let outcome = weir_collect::run(
        bus.clone(),
        store.sink.clone(),
        config,
        counters.clone(),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = reporter.await;
    let closed = store.sink.close().await.context("closing the store");
    bus.close().await.context("closing the bus")?;
    let totals = outcome?;
    closed?;
    eprintln!(
        "weir collect: stopped; {} messages: {} samples stored ({} already there), {} results, {} refused jobs, {} dead-lettered; {} batches, {} given back",
        totals.received,
        totals.samples,
        totals.duplicates,
        totals.results,
        totals.failures,
        totals.dead_lettered,
        totals.batches,
        totals.failed_batches
    );
    Ok(())
}

/// A progress line every `every` while something changes.
async fn report(counters: Arc<Counters>, every: Duration, shutdown: CancellationToken) {
    if every.is_zero() {
        return;
    }
    let mut last = counters.snapshot();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = counters.snapshot();
        if now == last {
            continue;
        }
        let rate = (now.samples - last.samples) as f64 / every.as_secs_f64();
        eprintln!(
            "weir collect: {} samples stored ({rate:.0}/s), {} results, {} dead-lettered, {} batches given back",
            now.samples, now.results, now.dead_lettered, now.failed_batches
        );
        last = now;
    }
}
