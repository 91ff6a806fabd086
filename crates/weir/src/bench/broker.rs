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
//!    `--rate` for `--seconds`, a small batch every millisecond (several
//!    requests in flight when one is slow, so the schedule holds), each
//!    payload carrying its send time. The subscriber records the time it
//!    got each message minus that, and acks through a separate task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use weir_api::Client;
use weir_api::wire::{Encoding, PublishRequest};
use weir_bus::{Acker, ConnectOptions, SettleStatus, SubscribeOptions, Subscription};
use weir_queue::{Fsync, Queue, QueueConfig};
use weir_server::ServerConfig;

use super::{machine, report};
use crate::options::parse_fsync;

#[derive(Debug, clap::Args)]
pub(crate) struct BrokerBench {
    /// Messages to publish, then deliver, in the throughput runs.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload bytes per message (a JSON string; at least 2).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per publish request, and most per `receive` of a consumer.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent publishers, each with its own client.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// SSE subscribers in one group.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Unsettled messages each SSE subscriber holds at most.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Messages per second of the latency run.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value = "every 5ms", value_parser = parse_fsync)]
    fsync: Fsync,
    /// Data directory; a fresh temporary one when absent.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The topic of the throughput runs.
const TOPIC: &str = "bench";
/// The topic of the latency run.
const LATENCY_TOPIC: &str = "bench-latency";
const GROUP: &str = "bench";
/// A run that makes no progress for this long is stuck, and fails.
const STALL: Duration = Duration::from_secs(30);
/// How often the latency run's publisher sends a batch.
const TICK: Duration = Duration::from_millis(1);
/// Publish requests of the latency run in flight at once at most.
const LATENCY_IN_FLIGHT: usize = 64;
/// How long the deliveries of the runs stay leased: longer than any run, so
/// nothing is delivered twice for being slow.
const VISIBILITY: Duration = Duration::from_secs(600);

pub(super) async fn run(b: BrokerBench) -> anyhow::Result<()> {
    if b.size < 2 {
        bail!("--size must be at least 2: a payload is a JSON string");
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = b.data.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let partitions = b.partitions.max(1);
    let config = QueueConfig {
        fsync: b.fsync,
        default_partitions: partitions,
        retention_age: None,
        ..QueueConfig::new(&dir)
    };
    print_header(&b, &dir);
    let broker = Broker::start(config).await?;
    for topic in [TOPIC, LATENCY_TOPIC] {
        broker
            .queue
            .create_topic(topic, partitions)
            .with_context(|| format!("creating topic {topic}"))?;
    }

    let outcome = measure(&b, &broker.url).await;
    let stopped = broker.stop().await;
    outcome.and(stopped)
}

/// The three runs against the broker at `url`.
async fn measure(b: &BrokerBench, url: &str) -> anyhow::Result<()> {
    let took = publish(b, url).await?;
    report("batch publish", b.messages, b.size, took);

    let delivered = deliver(b, url, b.messages).await?;
    report("sse + batch ack", b.messages, b.size, delivered.took);
    if delivered.not_done > 0 || delivered.redelivered > 0 {
        println!(
            "{:<18} {} ack(s) answered other than done, {} redelivery(ies)",
            "  note:", delivered.not_done, delivered.redelivered
        );
    }

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
async fn publish(b: &BrokerBench, url: &str) -> anyhow::Result<Duration> {
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

/// What run 2 measured and saw.
#[derive(Debug, Default)]
struct Delivered {
    took: Duration,
    /// Acks answered other than `done` (none when each message is acked
    /// exactly once).
    not_done: u64,
    /// Deliveries after the first of a message.
    redelivered: u64,
}

/// Run 2: `total` messages delivered over SSE to `b.consumers` members of
/// one group and acked, each received batch with one call.
async fn deliver(b: &BrokerBench, url: &str, total: u64) -> anyhow::Result<Delivered> {
    let bus = weir_bus::connect(url, &ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..b.consumers.max(1) {
        let options = SubscribeOptions {
            visibility_timeout: Some(VISIBILITY),
            max_in_flight: b.max_in_flight.max(1),
            ..SubscribeOptions::new(format!("c{c}"))
        };
        let sub = bus
            .subscribe(TOPIC, GROUP, options)
            .await
            .with_context(|| format!("subscribing to {TOPIC} at {url}"))?;
        tasks.push(tokio::spawn(consume(
            sub,
            b.batch.max(1),
            total,
            Arc::clone(&acked),
        )));
    }
    let mut delivered = Delivered::default();
    for t in tasks {
        let (not_done, redelivered) = t.await??;
        delivered.not_done += not_done;
        delivered.redelivered += redelivered;
    }
    delivered.took = start.elapsed();
    bus.close().await?;
    Ok(delivered)
}

/// One member of run 2: receives up to `max` at a time and acks them, until
/// the group has acked `total`. Its acks answered other than `done`, and its
/// redeliveries.
async fn consume(
    mut sub: Box<dyn Subscription>,
    max: usize,
    total: u64,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64)> {
    let acker = sub.acker();
    let (mut not_done, mut redelivered) = (0, 0);
    let mut progress = (acked.load(Ordering::Relaxed), Instant::now());
    loop {
        let now_acked = acked.load(Ordering::Relaxed);
        if now_acked >= total {
            return Ok((not_done, redelivered));
        }
        if now_acked != progress.0 {
            progress = (now_acked, Instant::now());
        } else if progress.1.elapsed() > STALL {
            bail!("no ack for {STALL:?}: {now_acked} of {total} messages acked");
        }
        let got = sub.receive(max, Duration::from_millis(50)).await?;
        if got.is_empty() {
            continue;
        }
        redelivered += got.iter().filter(|d| d.delivery_count > 1).count() as u64;
        let ids: Vec<String> = got.into_iter().map(|d| d.id).collect();
        let statuses = acker.ack(&ids).await?;
        let done = statuses
            .iter()
            .filter(|s| **s == SettleStatus::Done)
            .count() as u64;
        not_done += statuses.len() as u64 - done;
        acked.fetch_add(done, Ordering::Relaxed);
    }
}

/// What run 3 measured: publish-to-receive latencies, in nanoseconds.
#[derive(Debug)]
struct Latency {
    /// Sorted.
    nanos: Vec<u64>,
    published: u64,
    publishing: Duration,
}

impl Latency {
    fn print(&self) {
        let ms = |q: f64| percentile(&self.nanos, q) as f64 / 1e6;
        println!(
            "{:<18} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} messages at {:.0} msg/s)",
            "latency",
            ms(0.50),
            ms(0.90),
            ms(0.99),
            ms(0.999),
            ms(1.0),
            self.nanos.len(),
            self.published as f64 / self.publishing.as_secs_f64().max(1e-9),
        );
    }
}

/// The value at quantile `q` of `sorted` (nearest rank); 0 when empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Run 3: one subscriber on a new topic, one publisher at a steady rate.
async fn latency(b: &BrokerBench, url: &str) -> anyhow::Result<Latency> {
    let bus = weir_bus::connect(url, &ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let options = SubscribeOptions {
        visibility_timeout: Some(VISIBILITY),
        max_in_flight: b.max_in_flight.max(1),
        ..SubscribeOptions::new("latency")
    };
    let mut sub = bus
        .subscribe(LATENCY_TOPIC, GROUP, options)
        .await
        .with_context(|| format!("subscribing to {LATENCY_TOPIC} at {url}"))?;
    let (acks, queued) = mpsc::channel(1024);
    let acking = tokio::spawn(ack_all(sub.acker(), queued));

    let base = Instant::now();
    // The publisher's count once it is done.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let publisher = tokio::spawn(publish_steady(
        Client::new(url, None)?,
        Steady {
            rate: b.rate.max(1),
            messages: b.rate.max(1) * b.seconds,
            size: b.size,
        },
        base,
        Arc::clone(&expected),
    ));

    let mut nanos = Vec::with_capacity((b.rate * b.seconds) as usize);
    let mut last = Instant::now();
    while (nanos.len() as u64) < expected.load(Ordering::Acquire) {
        if publisher.is_finished() && expected.load(Ordering::Acquire) == u64::MAX {
            break; // it failed: its error comes below
        }
        let got = sub.receive(10_000, Duration::from_millis(50)).await?;
        let now = base.elapsed().as_nanos() as u64;
        if got.is_empty() {
            if last.elapsed() > STALL {
                bail!("no message for {STALL:?}: {} received", nanos.len());
            }
            continue;
        }
        last = Instant::now();
        let mut ids = Vec::with_capacity(got.len());
        for d in got {
            let (sent, _pad): (u64, &str) = serde_json::from_slice(&d.payload)
                .with_context(|| format!("message {} carries no send time", d.id))?;
            nanos.push(now.saturating_sub(sent));
            ids.push(d.id);
        }
        acks.send(ids)
            .await
            .context("the acking task stopped early")?;
    }
    let (published, publishing) = publisher.await??;
    drop(acks);
    acking.await??;
    bus.close().await?;
    nanos.sort_unstable();
    Ok(Latency {
        nanos,
        published,
        publishing,
    })
}

/// Acks what comes on `queued`, gathering what queued meanwhile into one
/// call.
async fn ack_all(acker: Acker, mut queued: mpsc::Receiver<Vec<String>>) -> anyhow::Result<()> {
    while let Some(mut ids) = queued.recv().await {
        while let Ok(more) = queued.try_recv() {
            ids.extend(more);
        }
        acker.ack(&ids).await?;
    }
    Ok(())
}

/// The latency run's publishing schedule.
#[derive(Debug, Clone, Copy)]
struct Steady {
    rate: u64,
    messages: u64,
    size: usize,
}

/// Publishes `steady.messages` at `steady.rate`, a batch every [`TICK`],
/// each payload `[sent_ns, "padding"]` with `sent_ns` measured from `base`.
/// Stores the count in `expected` when done; the count, and how long until
/// the last was answered.
async fn publish_steady(
    client: Client,
    steady: Steady,
    base: Instant,
    expected: Arc<AtomicU64>,
) -> anyhow::Result<(u64, Duration)> {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let in_flight = Arc::new(Semaphore::new(LATENCY_IN_FLIGHT));
    let mut requests = JoinSet::new();
    let start = Instant::now();
    let (mut sent, mut ticks) = (0u64, 0u128);
    while sent < steady.messages {
        ticker.tick().await;
        ticks += 1;
        let due = (u128::from(steady.rate) * ticks * TICK.as_nanos() / 1_000_000_000) as u64;
        let n = due.min(steady.messages) - sent;
        if n == 0 {
            continue;
        }
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let stamp = base.elapsed().as_nanos() as u64;
        let items: Vec<PublishRequest> = (0..n).map(|_| stamped(stamp, steady.size)).collect();
        let client = client.clone();
        requests.spawn(async move {
            let _permit = permit;
            client.publish_batch(LATENCY_TOPIC, &items).await
        });
        sent += n;
        while let Some(answer) = requests.try_join_next() {
            answer?.with_context(|| format!("publishing to {LATENCY_TOPIC}"))?;
        }
    }
    while let Some(answer) = requests.join_next().await {
        answer?.with_context(|| format!("publishing to {LATENCY_TOPIC}"))?;
    }
    let took = start.elapsed();
    expected.store(sent, Ordering::Release);
    Ok((sent, took))
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

/// A latency item: `[sent_ns,"xx…"]`, padded to `size` bytes where the
/// stamp leaves room.
fn stamped(sent_ns: u64, size: usize) -> PublishRequest {
    let head = format!("[{sent_ns},\"");
    let pad = size.saturating_sub(head.len() + 2);
    let json = format!("{head}{}\"]", "x".repeat(pad));
    item(RawValue::from_string(json).expect("a stamp and a string are JSON"))
}

fn print_header(b: &BrokerBench, dir: &Path) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("weir bench broker");
    print!("{}", machine());
    println!(
        "config:  {} messages of {} B, batch {}, {} producer(s), {} consumer(s), max in flight {}, latency {} msg/s for {} s, {} partition(s), fsync {}, data {}",
        b.messages,
        b.size,
        b.batch,
        b.producers,
        b.consumers,
        b.max_in_flight,
        b.rate,
        b.seconds,
        b.partitions,
        b.fsync,
        dir.display()
    );
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
        for (stamp, size) in [(0, 100), (123_456_789_012, 100), (7, 2)] {
            let raw = stamped(stamp, size).payload;
            let (sent, _): (u64, &str) = serde_json::from_str(raw.get()).unwrap();
            assert_eq!(sent, stamp);
            if size >= 20 {
                assert_eq!(raw.get().len(), size);
            }
        }
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let check = |v: &[u64], q: f64, want: u64| assert_eq!(percentile(v, q), want, "{v:?} {q}");
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 0.5, 50);
        check(&hundred, 0.99, 99);
        check(&hundred, 0.999, 100);
        check(&hundred, 1.0, 100);
        check(&hundred, 0.0, 1);
        check(&[7], 0.5, 7);
        check(&[], 0.5, 0);
    }
}
