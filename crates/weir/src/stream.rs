//! `weir stream dcgm | synth`: GPU telemetry onto a topic, replayed from an
//! NVIDIA DCGM export or synthesized, until done or Ctrl-C, with a summary
//! line at the end.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use weir_sources::replay::{Replay, ReplayConfig, ReplayProgress};
use weir_sources::synth::{self, Fleet, FleetConfig, StreamConfig};
use weir_sources::{MIN_RATE, StopAfter};

use crate::UsageError;
use crate::options::{BusOptions, parse_duration};
use crate::signal::stop_on_signal;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum StreamCommand {
    /// Replay an NVIDIA DCGM export (CSV) onto a topic, one scrape (rows
    /// sharing a timestamp) per interval, once or in a loop.
    Dcgm(DcgmArgs),
    /// Publish a synthetic fleet of H100 GPUs with DCGM's metrics, driven
    /// by jobs that start and stop; the same seed gives the same fleet.
    Synth(SynthArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DcgmArgs {
    #[command(flatten)]
    bus: BusOptions,
    /// The DCGM export to replay.
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// Topic to publish to.
    #[arg(long, default_value = "telemetry")]
    topic: String,
    /// One scrape per interval; 0 publishes as fast as the bus takes them.
    #[arg(long, default_value = "100ms", value_parser = parse_interval)]
    interval: Duration,
    /// Samples per second (`500` or `500/s`) instead of one scrape per
    /// interval.
    #[arg(long, value_parser = parse_rate, conflicts_with = "interval")]
    rate: Option<f64>,
    /// Read the file again and again until Ctrl-C; time keeps moving
    /// forward from pass to pass.
    #[arg(long = "loop")]
    repeat: bool,
    /// Read the file this many times.
    #[arg(long, conflicts_with = "repeat", value_parser = clap::value_parser!(u64).range(1..))]
    passes: Option<u64>,
    /// Keep the file's timestamps (shifted forward on each further pass)
    /// instead of stamping each scrape with the time it is published.
    #[arg(long)]
    keep_timestamps: bool,
    /// Messages per publish at most.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SynthArgs {
    #[command(flatten)]
    bus: BusOptions,
    /// Hosts in the fleet (`synth-host-000`, …); hosts × GPUs per host is
    /// at most 100,000.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    hosts: u32,
    /// GPUs per host.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    gpus_per_host: u32,
    /// One scrape of every GPU per interval; 0 publishes as fast as the
    /// bus takes them.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Fixes the fleet: its GPU UUIDs, its jobs and every value.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many scrapes.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Topic to publish to.
    #[arg(long, default_value = "telemetry")]
    topic: String,
    /// Messages per publish at most.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
}

/// A duration, or `0` alone for "no wait".
fn parse_interval(s: &str) -> anyhow::Result<Duration> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// Samples per second: `500` or `500/s`, at least one a day.
fn parse_rate(s: &str) -> anyhow::Result<f64> {
    let n = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    match n.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= MIN_RATE => Ok(rate),
        _ => Err(anyhow!(
            "expected a positive number of samples per second, at least 1/86400 (one a day), \
             like 500 or 500/s, not {s:?}"
        )),
    }
}

pub(crate) async fn run(cmd: StreamCommand) -> anyhow::Result<()> {
    match cmd {
        StreamCommand::Dcgm(args) => dcgm(args).await,
        StreamCommand::Synth(args) => synthesize(args).await,
    }
}

async fn dcgm(args: DcgmArgs) -> anyhow::Result<()> {
    let config = ReplayConfig {
        topic: args.topic,
        interval: args.interval,
        rate: args.rate,
        passes: if args.repeat {
            None
        } else {
            Some(args.passes.unwrap_or(1))
        },
        keep_timestamps: args.keep_timestamps,
        batch: args.batch as usize,
    };
    let topic = config.topic.clone();
    // The file first: a wrong path or header is reported before anything
    // connects or creates a data directory.
    let replay = Replay::open(&args.csv, config)?;
    let bus = args.bus.connect().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir stream", shutdown.clone()));
    let bar = progress_bar(replay.file_bytes());
    let mut progress = |p: &ReplayProgress| {
        bar.set_position(p.bytes);
        bar.set_message(format!("pass {}, {} samples", p.pass, p.totals.samples));
    };
    let started = Instant::now();
    let result = replay.run(&*bus, &mut progress, &shutdown).await;
    bar.finish_and_clear();
    let closed = bus.close().await;
    let s = result?;
    closed?;
    println!(
        "replayed {} to {topic}: {}, {} in {}, {} blank, {} skipped, {}, {:.2} s",
        args.csv.display(),
        count(s.rows, "row"),
        count(s.samples, "sample"),
        count(s.scrapes, "scrape"),
        s.blank,
        count(s.bad, "bad row"),
        count(s.passes, "pass"),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A bar over one pass of the file, drawn on stderr only when it is a
/// terminal.
fn progress_bar(bytes: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(bytes);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {msg}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn synthesize(args: SynthArgs) -> anyhow::Result<()> {
    let shape = FleetConfig {
        seed: args.seed,
        ..FleetConfig::new(args.hosts, args.gpus_per_host)
    };
    if shape.gpus() > synth::MAX_GPUS {
        return Err(UsageError(format!(
            "--hosts {} x --gpus-per-host {} is {} GPUs; at most {} are simulated",
            args.hosts,
            args.gpus_per_host,
            shape.gpus(),
            synth::MAX_GPUS
        ))
        .into());
    }
    let mut fleet = Fleet::new(shape);
    let config = StreamConfig {
        topic: args.topic,
        interval: args.interval,
        stop: StopAfter {
            ticks: args.count,
            duration: args.duration,
        },
        batch: args.batch as usize,
    };
    let bus = args.bus.connect().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir stream", shutdown.clone()));
    let started = Instant::now();
    let result = synth::stream(&*bus, &mut fleet, &config, &shutdown).await;
    let closed = bus.close().await;
    let s = result?;
    closed?;
    println!(
        "synthesized {} x {} to {}: {}, {}, {:.2} s",
        count(u64::from(args.hosts), "host"),
        count(u64::from(args.gpus_per_host), "GPU"),
        config.topic,
        count(s.scrapes, "scrape"),
        count(s.samples, "sample"),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `1 pass`, `2 passes`, `0 rows`.
fn count(n: u64, noun: &str) -> String {
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}
