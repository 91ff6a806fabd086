//! `weir bench …`: end-to-end figures, printed with the machine, the commit
//! and the configuration they were measured on.

mod broker;
mod bus;
mod collect;
mod gol;
mod group;
mod latency;
mod monitor;
mod queue;

use std::time::Duration;

use weir_bus::SubscribeOptions;
use weir_queue::Fsync;

use crate::options::parse_fsync;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// The embedded queue: publish, then subscribe + ack through the
    /// competing-consumer path, then close and time the reopen (recovery).
    Queue(queue::QueueBench),
    /// A broker over loopback HTTP: batch publish, SSE delivery with
    /// batched acks, and publish-to-deliver latency at a steady rate.
    Broker(broker::BrokerBench),
    /// Any transports side by side through the bus contract (a fresh
    /// embedded queue by default; `--bus kafka://…` and `http://…` too):
    /// publish + consume + ack throughput, then publish-to-receive latency
    /// at a steady rate.
    Bus(bus::BusBench),
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
        BenchCommand::Bus(b) => bus::run(b).await,
        BenchCommand::Gol(b) => gol::run(b).await,
        BenchCommand::Collect(b) => collect::run(b).await,
        BenchCommand::Monitor(b) => monitor::run(b).await,
    }
}

/// A run that makes no progress for this long is stuck, and fails.
const STALL: Duration = Duration::from_secs(30);
/// How long the benches' deliveries stay leased: longer than any run, so
/// nothing is delivered twice for being slow.
const VISIBILITY: Duration = Duration::from_secs(600);

/// How a bench's consumer `id` joins its group.
fn member_options(id: impl Into<String>, max_in_flight: usize) -> SubscribeOptions {
    SubscribeOptions {
        visibility_timeout: Some(VISIBILITY),
        max_in_flight: max_in_flight.max(1),
        ..SubscribeOptions::new(id)
    }
}

/// What `weir bench broker` and `weir bench bus` send through a transport.
#[derive(Debug, clap::Args)]
pub(super) struct Workload {
    /// Messages of the throughput runs.
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub(super) size: usize,
    /// Messages per publish, and most per `receive` (and so per ack) of a
    /// consumer.
    #[arg(long, default_value_t = 500)]
    pub(super) batch: usize,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 4)]
    pub(super) producers: usize,
    /// Members of the consuming group (`weir bench bus`: at most
    /// `--partitions`, since a Kafka member without a partition gets
    /// nothing).
    #[arg(long, default_value_t = 2)]
    pub(super) consumers: usize,
    /// Unsettled messages each member holds at most.
    #[arg(long, default_value_t = 10_000)]
    pub(super) max_in_flight: usize,
    /// Messages per second of the latency run.
    #[arg(long, default_value_t = 10_000)]
    pub(super) rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 5)]
    pub(super) seconds: u64,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 4)]
    pub(super) partitions: u32,
    /// When an embedded queue's writes reach the disk.
    #[arg(long, default_value = "every 5ms", value_parser = parse_fsync)]
    pub(super) fsync: Fsync,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages of {} B, batch {}, {} producer(s), {} consumer(s), max in flight {}, latency {} msg/s for {} s, {} partition(s), fsync {}",
            self.messages,
            self.size,
            self.batch,
            self.producers,
            self.consumers,
            self.max_in_flight,
            self.rate,
            self.seconds,
            self.partitions,
            self.fsync,
        )
    }
}

pub(super) fn report(what: &str, messages: u64, size: usize, took: Duration) {
    let secs = took.as_secs_f64().max(1e-9);
    println!(
        "{what:<20} {:>10.0} msg/s  {:>8.1} MB/s  ({messages} messages in {secs:.3} s)",
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
