//! The `weir` command: parse arguments, run the subcommand, map errors to an
//! exit code and a one-line message.

mod api;
mod bench;
mod broker;
mod collect;
mod config;
mod generate;
mod gol;
mod monitor;
mod options;
mod query;
mod queue;
mod signal;
mod stream;
mod up;
mod worker;

use clap::{Parser, Subcommand};

/// Weir runs compute jobs and carries their telemetry through a durable
/// queue into storage.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    /// Settings file (TOML): its keys are flag names, top level for every
    /// command, `[up]`, `[collect]`, … for one [default: ./weir.toml when
    /// present].
    #[arg(long, env = "WEIR_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline in one process on embedded defaults: the
    /// broker and its API, a synthetic GPU fleet, the resource monitor, the
    /// collector into SQLite, Game of Life workers and a job submitter, with
    /// a live view.
    Up(up::UpArgs),
    /// Serve the embedded durable queue over HTTP and Server-Sent Events.
    Broker(broker::BrokerArgs),
    /// Publish, consume and inspect a bus (a broker, or an embedded queue)
    /// with JSON lines.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Publish GPU telemetry: replay an NVIDIA DCGM export
    /// (`weir stream dcgm`) or a synthetic fleet (`weir stream synth`).
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Publish example messages at a steady rate, to learn producers and
    /// consumers with: a sensor reading or a nested order event.
    Generate(generate::GenerateArgs),
    /// Consume telemetry and job results in batches and write them to
    /// SQLite, PostgreSQL or CSV, acking only what is committed.
    Collect(collect::CollectArgs),
    /// Ask a store what it holds: GPUs, a GPU's telemetry, series, Game of
    /// Life results — as a table, CSV or JSON lines.
    Query(query::QueryArgs),
    /// Serve the telemetry query API over a store, without a queue.
    Api(api::ApiArgs),
    /// Sample the host, processes (with their children), cgroups and
    /// NVIDIA GPUs every second and publish them to `resources`; with
    /// `-- CMD ARGS`, launch a command, watch it and exit with its code.
    Monitor(monitor::MonitorArgs),
    /// Run the Game of Life benchmark (the classic program's output), or
    /// submit a job for workers with `weir gol submit`.
    Gol(gol::GolArgs),
    /// Take Game of Life jobs from the bus as a member of a consumer group
    /// and publish per-size timings.
    Worker(worker::WorkerArgs),
    /// Measure Weir end to end and print the figures with the machine,
    /// commit and configuration they were measured on.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = match config::parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("weir: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Broker(args) => broker::run(args).await,
            Command::Queue(cmd) => queue::run(cmd).await,
            Command::Gol(args) => gol::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Monitor(args) => monitor::run(args).await,
            Command::Collect(args) => collect::run(args).await,
            Command::Query(args) => query::run(args).await,
            Command::Api(args) => api::run(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Stream(cmd) => stream::run(cmd).await,
            Command::Generate(args) => generate::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            if e.is::<UsageError>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// A bad argument found after parsing: one line and exit code 2, like
/// clap's own usage errors.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
