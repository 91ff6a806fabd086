//! `weir bench broker`: a broker in process, measured over loopback HTTP.
//!
//! One `weir_server` on `127.0.0.1:0` over a fresh queue, and its clients in
//! the same process and runtime: client and broker share the machine's
//! cores, as they would on one host. Three runs, one after the other:
//!
//! 1. **batch publish**: `--producers` API clients each send
//!    `/publish/batch` requests of `--batch` messages until `--messages` are
//!    published. Each producer's items are built once and sent again and
//!    again, so the figure is the broker's and the HTTP client's, not the
//!    bench's JSON building.
//! 2. **SSE delivery**: `--consumers` `http://` bus subscriptions in one
//!    group take what the first run published; each acks every batch it
//!    receives with one call, until every message is acked exactly once.
//! 3. **latency**: on a new topic, one subscriber; one publisher at
//!    `--rate` for `--seconds`, a small batch request every millisecond,
//!    each payload carrying its send time ([`super::latency`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_api::Client;
use weir_api::wire::{Encoding, PublishRequest};
use weir_bus::ConnectOptions;
use weir_queue::{Queue, QueueConfig};
use weir_server::ServerConfig;

use super::group::{Consumed, Group, GroupConfig};
use super::latency::{self, Latency};
use super::{Workload, machine, report};

#[derive(Debug, clap::Args)]
pub(crate) struct BrokerBench {
    #[command(flatten)]
    load: Workload,
    /// Data directory; a fresh temporary one when absent.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The topic of the throughput runs.
const TOPIC: &str = "bench";
/// The topic of the latency run.
const LATENCY_TOPIC: &str = "bench-latency";
const GROUP: &str = "bench";

pub(super) async fn run(bench: BrokerBench) -> anyhow::Result<()> {
    let b = &bench.load;
    if b.size < 2 {
        bail!("--size must be at least 2: a payload is a JSON string");
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = bench
        .data
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let partitions = b.partitions.max(1);
    let config = QueueConfig {
        fsync: b.fsync,
        default_partitions: partitions,
        retention_age: None,
        ..QueueConfig::new(&dir)
    };
    print_header(b, &dir);
    let broker = Broker::start(config).await?;
    for topic in [TOPIC, LATENCY_TOPIC] {
        broker
            .queue
            .create_topic(topic, partitions)
            .with_context(|| format!("creating topic {topic}"))?;
    }

    let outcome = measure(b, &broker.url).await;
    let stopped = broker.stop().await;
    outcome.and(stopped)
}

/// The three runs against the broker at `url`.
async fn measure(b: &Workload, url: &str) -> anyhow::Result<()> {
    let took = publish(b, url).await?;
    report("batch publish", b.messages, b.size, took);

    let (took, consumed) = deliver(b, url, b.messages).await?;
    report("sse + batch ack", b.messages, b.size, took);
    consumed.print_note();

    let latency = latency(b, url).await?;
    latency.print();
    Ok(())
}

/// The broker under test: a queue served on a loopback port.
#[derive(Debug)]
struct Broker {
    url: String,
    queue: Queue,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl Broker {
    async fn start(config: QueueConfig) -> anyhow::Result<Broker> {
        let dir = config.data_dir.clone();
        let queue = Queue::open(config)
            .await
            .with_context(|| format!("opening the queue in {}", dir.display()))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(weir_server::run(
            ServerConfig::default(),
            queue.clone(),
            listener,
            shutdown.clone(),
        ));
        Ok(Broker {
            url,
            queue,
            shutdown,
            server,
        })
    }

    /// Stops serving (within 10 s), then closes the queue.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .context("the broker did not stop within 10 s")?
            .context("the broker task failed")?
            .context("serving the broker")?;
        self.queue.close().await.context("closing the queue")
    }
}

/// Run 1: `b.messages` published by `b.producers` clients in batches; how
/// long it took.
async fn publish(b: &Workload, url: &str) -> anyhow::Result<Duration> {
    let items: Arc<[PublishRequest]> = vec![item(filler(b.size)); b.batch.max(1)].into();
    let producers = b.producers.max(1) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let share = b.messages / producers + u64::from(p < b.messages % producers);
        let client = Client::new(url, None)?;
        let items = Arc::clone(&items);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < share {
                let n = (share - sent).min(items.len() as u64) as usize;
                let answer = client
                    .publish_batch(TOPIC, &items[..n])
                    .await
                    .with_context(|| format!("publishing a batch to {TOPIC}"))?;
                if answer.count != n {
                    bail!("the broker published {} of {n} messages", answer.count);
                }
                sent += n as u64;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

/// Run 2: `total` messages delivered over SSE to `b.consumers` members of
/// one group and acked, each received batch with one call; how long it
/// took, and what the group saw.
async fn deliver(b: &Workload, url: &str, total: u64) -> anyhow::Result<(Duration, Consumed)> {
    let bus = weir_bus::connect(url, &ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let start = Instant::now();
    let config = GroupConfig {
        members: b.consumers.max(1),
        batch: b.batch.max(1),
        max_in_flight: b.max_in_flight,
        total,
    };
    let group = Group::join(bus.as_ref(), TOPIC, GROUP, config)
        .await
        .with_context(|| format!("at {url}"))?;
    let consumed = group.finish().await?;
    let took = start.elapsed();
    bus.close().await?;
    Ok((took, consumed))
}

/// Run 3: one subscriber on a new topic, one publisher at a steady rate.
async fn latency(b: &Workload, url: &str) -> anyhow::Result<Latency> {
    let bus = weir_bus::connect(url, &ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let client = Client::new(url, None)?;
    let size = b.size;
    let measured = latency::measure(bus.as_ref(), LATENCY_TOPIC, GROUP, b, move |stamp, n| {
        let client = client.clone();
        let items: Vec<PublishRequest> = (0..n).map(|_| stamped_item(stamp, size)).collect();
        async move {
            client
                .publish_batch(LATENCY_TOPIC, &items)
                .await
                .with_context(|| format!("publishing to {LATENCY_TOPIC}"))?;
            Ok(())
        }
    })
    .await;
    bus.close().await?;
    measured
}

/// A batch item with `payload` and nothing else.
fn item(payload: Box<RawValue>) -> PublishRequest {
    PublishRequest {
        topic: None,
        payload,
        payload_encoding: Encoding::Json,
        key: None,
        headers: BTreeMap::new(),
        metadata: None,
    }
}

/// A JSON string of exactly `size` bytes (at least 2).
fn filler(size: usize) -> Box<RawValue> {
    let json = format!("\"{}\"", "x".repeat(size.saturating_sub(2)));
    RawValue::from_string(json).expect("a string of x is JSON")
}

/// A latency item: [`latency::stamped`].
fn stamped_item(sent_ns: u64, size: usize) -> PublishRequest {
    let json = latency::stamped(sent_ns, size);
    item(RawValue::from_string(json).expect("a stamp and a string are JSON"))
}

fn print_header(b: &Workload, dir: &Path) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("weir bench broker");
    print!("{}", machine());
    println!("config:  {b}, data {}", dir.display());
    println!(
        "setup:   broker and clients in one process over loopback HTTP, sharing {cores} cores"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_json_of_the_asked_size() {
        for size in [2, 3, 100, 1000] {
            let raw = filler(size);
            assert_eq!(raw.get().len(), size);
            let _: String = serde_json::from_str(raw.get()).unwrap();
        }
    }
}
