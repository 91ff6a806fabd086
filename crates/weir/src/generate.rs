//! `weir generate sensor | complex`: example messages at a steady rate, to
//! learn producers and consumers with. Each message is printed to stdout
//! (one JSON line) once it is on the bus, and a summary goes to stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;
use weir_sources::generate::{GenerateConfig, Kind};
use weir_sources::{MIN_RATE, StopAfter};

use crate::options::{BusOptions, parse_duration};
use crate::signal::stop_on_signal;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    /// A temperature reading: a telemetry sample
    /// `{metric, value, ts, labels: {sensor, site}}`, keyed by sensor.
    Sensor,
    /// An order-created event: a nested document with a customer, an
    /// address, items, money and metadata, keyed by customer.
    Complex,
}

#[derive(Debug, clap::Args)]
pub(crate) struct GenerateArgs {
    /// What to generate.
    #[arg(value_enum)]
    kind: KindArg,
    #[command(flatten)]
    bus: BusOptions,
    /// Messages per second (fractions allowed: 0.2 is one every 5 s).
    #[arg(long, default_value_t = 1.0, value_parser = parse_hz)]
    hz: f64,
    /// Topic to publish to [default: sensors for sensor, events for
    /// complex].
    #[arg(long)]
    topic: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Fixes every value but the times.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sensors read in turn (sensor only).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sensors: u32,
    /// Print only the summary, not each message.
    #[arg(long, short)]
    quiet: bool,
}

/// Messages per second, from one a day to a million.
fn parse_hz(s: &str) -> anyhow::Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(hz) if hz.is_finite() && (MIN_RATE..=1e6).contains(&hz) => Ok(hz),
        _ => Err(anyhow!(
            "expected messages per second from 1/86400 (one a day) to 1000000, like 1 or 0.5, not {s:?}"
        )),
    }
}

pub(crate) async fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let kind = match args.kind {
        KindArg::Sensor => Kind::Sensor,
        KindArg::Complex => Kind::Complex,
    };
    let config = GenerateConfig {
        topic: args
            .topic
            .unwrap_or_else(|| kind.default_topic().to_string()),
        hz: args.hz,
        stop: StopAfter {
            ticks: args.count,
            duration: args.duration,
        },
        seed: args.seed,
        sensors: args.sensors,
        ..GenerateConfig::new(kind)
    };
    let bus = args.bus.connect().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir generate", shutdown.clone()));
    let quiet = args.quiet;
    let mut print = |m: &weir_bus::Message| {
        if !quiet {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&m.payload);
            let _ = out.write_all(b"\n");
        }
    };
    let started = Instant::now();
    let result = weir_sources::generate::run(&*bus, &config, &mut print, &shutdown).await;
    let closed = bus.close().await;
    let summary = result?;
    closed?;
    let noun = if summary.messages == 1 {
        "message"
    } else {
        "messages"
    };
    eprintln!(
        "published {} {} {noun} to {} in {:.2} s",
        summary.messages,
        kind.name(),
        config.topic,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
