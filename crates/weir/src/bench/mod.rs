//! `weir bench …`: end-to-end figures, printed with the machine, the commit
//! and the configuration they were measured on.

mod broker;
mod collect;
mod gol;
mod monitor;
mod queue;

use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// The embedded queue: publish, then subscribe + ack through the
    /// competing-consumer path, then close and time the reopen (recovery).
    Queue(queue::QueueBench),
    /// A broker over loopback HTTP: batch publish, SSE delivery with
    /// batched acks, and publish-to-deliver latency at a steady rate.
    Broker(broker::BrokerBench),
    /// The collector end to end: samples on an embedded bus consumed,
    /// written and acked into a store (SQLite by default), then
    /// publish-to-queryable latency at a steady rate.
    Collect(collect::CollectBench),
    /// Game of Life: the dense engine against a plain C + OpenMP program
    /// on the same sizes and threads, and the sparse engine on pow 10..=20.
    Gol(gol::GolBench),
    /// `weir monitor`'s own CPU while it watches N idle processes (100 by
    /// default) at 1 Hz, as a percentage of one core.
    Monitor(monitor::MonitorBench),
}

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Queue(b) => queue::run(b).await,
        BenchCommand::Broker(b) => broker::run(b).await,
        BenchCommand::Gol(b) => gol::run(b).await,
        BenchCommand::Collect(b) => collect::run(b).await,
        BenchCommand::Monitor(b) => monitor::run(b).await,
    }
}

pub(super) fn report(what: &str, messages: u64, size: usize, took: Duration) {
    let secs = took.as_secs_f64().max(1e-9);
    println!(
        "{what:<18} {:>10.0} msg/s  {:>8.1} MB/s  ({messages} messages in {secs:.3} s)",
        messages as f64 / secs,
        (messages as f64 * size as f64) / secs / 1e6,
    );
}

/// The machine and build lines every bench prints first.
pub(super) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "machine: {cores} cores, {cpu}, {}\ncommit:  {} ({build} build)\n",
        std::env::consts::OS,
        env!("WEIR_COMMIT"),
    )
}
