//! `weir bench bus`: one workload through the bus contract, transport after
//! transport, so that they can be read side by side.
//!
//! Each `--bus` URL is measured in turn (a fresh embedded queue when none
//! is named), with the same two runs on topics of its own:
//!
//! 1. **publish + consume + ack**: `--consumers` members of one group
//!    subscribe; warm-up messages (a header marks them) go out until every
//!    member has had one, so that a transport whose members join in the
//!    background (a Kafka rebalance) is measured settled. Then, with the
//!    clock running, `--producers` publish `--messages` in batches of
//!    `--batch` while the members receive up to `--batch` at a time and ack
//!    each batch with one call. Two figures: until every publish returned,
//!    and until the last message was acked.
//! 2. **latency**: one member on a new topic, one publisher at `--rate` for
//!    `--seconds` ([`super::latency`]).
//!
//! The bench is a client like any other: the bus does its own work in this
//! process (embedded) or in another (a broker, Kafka) on the same machine,
//! and both share its cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use weir_bus::{Bus, ConnectOptions, Message};

use super::group::{Consumed, Group, GroupConfig, WARM_UP};
use super::latency::{self, Latency};
use super::{STALL, Workload, machine, report};
use crate::options::parse_key_value;

#[derive(Debug, clap::Args)]
pub(crate) struct BusBench {
    /// A transport to measure; repeat to compare several in one run:
    /// `embedded://` (a fresh queue in a temporary directory),
    /// `embedded:///path`, `kafka://host:port[,host:port…]` or
    /// `http://host:port` (a running `weir broker`).
    #[arg(long = "bus", value_name = "URL", default_value = "embedded://")]
    buses: Vec<String>,
    #[command(flatten)]
    load: Workload,
    /// `kafka://` only: a librdkafka property for every client (repeat for
    /// more), like `linger.ms=1`.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    kafka_options: Vec<(String, String)>,
    /// `http://` only: the broker's bearer token.
    #[arg(long, env = "WEIR_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

const GROUP: &str = "bench";

/// What one transport measured.
#[derive(Debug)]
struct Figures {
    url: String,
    throughput: Throughput,
    latency: Latency,
}

pub(super) async fn run(b: BusBench) -> anyhow::Result<()> {
    if b.load.consumers.max(1) > b.load.partitions.max(1) as usize {
        bail!(
            "--consumers {} is more than --partitions {}: a member without a partition gets nothing",
            b.load.consumers,
            b.load.partitions
        );
    }
    print_header(&b);
    // Every transport opened first: a URL that names none fails the run
    // before anything is measured.
    let mut transports = Vec::new();
    for url in &b.buses {
        transports.push(Transport::open(&b, url).await?);
    }
    let mut all = Vec::new();
    for t in &transports {
        println!("\n== {}", t.url);
        let figures = measure(&b, t).await;
        all.push(figures.with_context(|| format!("measuring {}", t.url))?);
    }
    for t in transports {
        t.bus
            .close()
            .await
            .with_context(|| format!("closing {}", t.url))?;
    }
    if all.len() > 1 {
        print_summary(&b, &all);
    }
    Ok(())
}

/// A bus under test.
#[derive(Debug)]
struct Transport {
    /// As the user named it.
    url: String,
    bus: Arc<dyn Bus>,
    /// `embedded://` alone: the queue's own directory, removed afterwards.
    _dir: Option<tempfile::TempDir>,
}

impl Transport {
    async fn open(b: &BusBench, url: &str) -> anyhow::Result<Transport> {
        let (target, dir) = if url == "embedded://" {
            let dir = tempfile::tempdir().context("creating a temporary directory")?;
            (format!("embedded://{}", dir.path().display()), Some(dir))
        } else {
            (url.to_string(), None)
        };
        let options = ConnectOptions {
            auth_token: b.auth_token.clone(),
            partitions: Some(b.load.partitions.max(1)),
            fsync: Some(b.load.fsync),
            kafka_options: b.kafka_options.clone(),
        };
        let bus = weir_bus::connect(&target, &options)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        Ok(Transport {
            url: url.to_string(),
            bus,
            _dir: dir,
        })
    }
}

/// Both runs on one transport.
async fn measure(b: &BusBench, t: &Transport) -> anyhow::Result<Figures> {
    // Topics of this run alone: a Kafka cluster or a broker keeps those of
    // earlier runs.
    let run = format!("bench-{}", weir_queue::now_ms());
    let throughput = throughput(b, &t.bus, &run).await?;
    report("publish", b.load.messages, b.load.size, throughput.publish);
    report(
        "publish+consume+ack",
        b.load.messages,
        b.load.size,
        throughput.end_to_end,
    );
    throughput.consumed.print_note();
    let latency = steady_latency(b, &t.bus, &format!("{run}-latency")).await?;
    latency.print();
    Ok(Figures {
        url: t.url.clone(),
        throughput,
        latency,
    })
}

/// What run 1 measured and saw.
#[derive(Debug)]
struct Throughput {
    /// Until every publish returned.
    publish: Duration,
    /// Until the last message was acked.
    end_to_end: Duration,
    consumed: Consumed,
}

/// Run 1: publish, consume and ack at once, after a warm-up.
async fn throughput(b: &BusBench, bus: &Arc<dyn Bus>, topic: &str) -> anyhow::Result<Throughput> {
    let total = b.load.messages;
    let batch = b.load.batch.max(1);
    let config = GroupConfig {
        members: b.load.consumers.max(1),
        batch,
        max_in_flight: b.load.max_in_flight,
        total,
    };
    let group = Group::join(bus.as_ref(), topic, GROUP, config).await?;
    warm_up(bus.as_ref(), topic, b.load.partitions.max(1), &group).await?;

    let payload = Bytes::from(vec![b'x'; b.load.size]);
    let producers = b.load.producers.max(1) as u64;
    let start = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..producers {
        let share = total / producers + u64::from(p < total % producers);
        let (bus, topic, payload) = (Arc::clone(bus), topic.to_string(), payload.clone());
        publishers.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < share {
                let n = (share - sent).min(batch as u64);
                let messages = (0..n).map(|_| Message::new(payload.clone())).collect();
                bus.publish_batch(&topic, messages)
                    .await
                    .with_context(|| format!("publishing a batch to {topic}"))?;
                sent += n;
            }
            anyhow::Ok(())
        }));
    }
    for p in publishers {
        p.await??;
    }
    let publish = start.elapsed();
    let consumed = group.finish().await?;
    Ok(Throughput {
        publish,
        end_to_end: start.elapsed(),
        consumed,
    })
}

/// Publishes warm-up messages, a few per partition every 100 ms, until
/// every member of `group` has had one.
async fn warm_up(bus: &dyn Bus, topic: &str, partitions: u32, group: &Group) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut round = 0u64;
    while !group.all_warmed() {
        if group.any_stopped() {
            bail!("a member of the group stopped during the warm-up");
        }
        if start.elapsed() > STALL {
            bail!("not every member of the group received a message within {STALL:?}");
        }
        // Keys spread the messages over the partitions.
        let messages = (0..u64::from(partitions) * 4)
            .map(|k| {
                Message::new(&b"\"warm-up\""[..])
                    .with_key(format!("{round}-{k}"))
                    .with_header(WARM_UP, "1")
            })
            .collect();
        bus.publish_batch(topic, messages)
            .await
            .with_context(|| format!("publishing warm-up messages to {topic}"))?;
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Run 2: one member on a new topic, one publisher at a steady rate.
async fn steady_latency(b: &BusBench, bus: &Arc<dyn Bus>, topic: &str) -> anyhow::Result<Latency> {
    let size = b.load.size;
    let (publisher, name) = (Arc::clone(bus), topic.to_string());
    latency::measure(bus.as_ref(), topic, GROUP, &b.load, move |stamp, n| {
        let (bus, topic) = (Arc::clone(&publisher), name.clone());
        let payload = Bytes::from(latency::stamped(stamp, size));
        async move {
            let messages = (0..n).map(|_| Message::new(payload.clone())).collect();
            bus.publish_batch(&topic, messages)
                .await
                .with_context(|| format!("publishing to {topic}"))?;
            Ok(())
        }
    })
    .await
}

fn print_header(b: &BusBench) {
    println!("weir bench bus");
    print!("{}", machine());
    let kafka: Vec<String> = b
        .kafka_options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("config:  {}, kafka options [{}]", b.load, kafka.join(", "));
    println!("setup:   the bench and the transport on this machine, sharing its cores");
}

/// The transports side by side.
fn print_summary(b: &BusBench, all: &[Figures]) {
    let width = all.iter().map(|f| f.url.len()).max().unwrap_or(0).max(9);
    println!(
        "\n{:<width$}  {:>21}  {:>12}  {:>12}  {:>12}   (latency at {} msg/s)",
        "transport", "publish+consume+ack", "p50", "p99", "max", b.load.rate
    );
    for f in all {
        let rate = b.load.messages as f64 / f.throughput.end_to_end.as_secs_f64().max(1e-9);
        println!(
            "{:<width$}  {:>15.0} msg/s  {:>9.3} ms  {:>9.3} ms  {:>9.3} ms",
            f.url,
            rate,
            f.latency.ms(0.50),
            f.latency.ms(0.99),
            f.latency.ms(1.0),
        );
    }
}
