//! The `weir` command: parse arguments, run the subcommand, map errors to an
//! exit code and a one-line message.

mod bench;
mod broker;
mod options;
mod queue;

use clap::{Parser, Subcommand};

/// Weir runs compute jobs and carries their telemetry through a durable
/// queue into storage.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the embedded durable queue over HTTP and Server-Sent Events.
    Broker(broker::BrokerArgs),
    /// Publish, consume and inspect a bus (a broker, or an embedded queue)
    /// with JSON lines.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Measure Weir end to end and print the figures with the machine,
    /// commit and configuration they were measured on.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
            Command::Broker(args) => broker::run(args).await,
            Command::Queue(cmd) => queue::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
