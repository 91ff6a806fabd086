//! `weir worker`: a Game of Life worker in a consumer group, until Ctrl-C
//! or SIGTERM. Accepts the environment names users already have
//! (`KAFKA_BROKER`, `TOPIC_IN`, `TOPIC_OUT`, `GROUP_ID`, `OMP_NUM_THREADS`)
//! beside `WEIR_*`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_worker::{Limits, WorkerConfig};

use crate::options::{BusOptions, RunOptions, parse_duration};
use crate::signal::stop_on_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// With neither `--bus` nor `WEIR_BUS`, `kafka://$KAFKA_BROKER` when that
    /// is set.
    #[command(flatten)]
    bus: BusOptions,
    /// Jobs topic (also `TOPIC_IN`).
    #[arg(long, env = "WEIR_TOPIC_IN")]
    topic_in: Option<String>,
    /// Results topic (also `TOPIC_OUT`).
    #[arg(long, env = "WEIR_TOPIC_OUT")]
    topic_out: Option<String>,
    /// Consumer group the replicas share (also `GROUP_ID`).
    #[arg(long, env = "WEIR_GROUP")]
    group: Option<String>,
    /// Names this worker in results; host and process id when absent.
    #[arg(long, env = "WEIR_WORKER_ID")]
    worker_id: Option<String>,
    #[command(flatten)]
    run: RunOptions,
    /// Smallest pow a job may ask for.
    #[arg(long, default_value_t = Limits::default().min_pow)]
    min_pow: u32,
    /// Largest pow a job may ask for.
    #[arg(long, default_value_t = Limits::default().max_pow)]
    max_pow: u32,
    /// A job not finished within this goes to another worker [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    visibility_timeout: Option<Duration>,
}

/// The first of: the flag or `WEIR_*` value, the legacy variable, the default.
fn pick(given: Option<String>, legacy: &str, default: &str) -> String {
    given
        .or_else(|| std::env::var(legacy).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_string())
}

pub(crate) async fn run(mut args: WorkerArgs) -> anyhow::Result<()> {
    if args.bus.bus.is_none() {
        args.bus.bus = std::env::var("KAFKA_BROKER")
            .ok()
            .filter(|b| !b.is_empty())
            .map(|b| format!("kafka://{b}"));
    }
    let defaults = WorkerConfig::new("");
    let worker_id = args
        .worker_id
        .unwrap_or_else(|| crate::options::member_id("worker"));
    let config = WorkerConfig {
        topic_in: pick(args.topic_in, "TOPIC_IN", &defaults.topic_in),
        topic_out: pick(args.topic_out, "TOPIC_OUT", &defaults.topic_out),
        group: pick(args.group, "GROUP_ID", &defaults.group),
        worker_id,
        run: args.run.config(),
        limits: Limits {
            min_pow: args.min_pow,
            max_pow: args.max_pow,
        },
        visibility_timeout: args
            .visibility_timeout
            .unwrap_or(defaults.visibility_timeout),
    };
    let bus = args.bus.connect().await?;
    let url = args.bus.url();
    eprintln!(
        "weir worker {}: jobs from {} (group {}) on {url}, results to {}, engine {}, {} thread(s)",
        config.worker_id,
        config.topic_in,
        config.group,
        config.topic_out,
        config.run.engine,
        config.run.threads
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir worker", shutdown.clone()));
    let totals = weir_worker::run(bus.clone(), config, shutdown).await?;
    bus.close().await?;
    eprintln!(
        "weir worker: stopped after {} jobs ({} sizes), {} refused, {} given back",
        totals.jobs, totals.sizes, totals.rejected, totals.given_back
    );
    Ok(())
}
