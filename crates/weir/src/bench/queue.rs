//! `weir bench queue`: the embedded queue in process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use weir_queue::{Fsync, GroupConfig, Message, MessageId, Queue, QueueConfig, SubscribeOptions};

use super::{machine, report};
use crate::options::parse_fsync;

#[derive(Debug, clap::Args)]
pub(crate) struct QueueBench {
    /// Messages to publish.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per publish batch (and per receive and ack).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent publishers (they share fsyncs under `always`).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Concurrent consumers in one group.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[arg(long, default_value = "every 5ms", value_parser = parse_fsync)]
    fsync: Fsync,
    /// Data directory; a fresh temporary one when absent.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
}

pub(super) async fn run(b: QueueBench) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = b.data.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let config = QueueConfig {
        fsync: b.fsync,
        default_partitions: b.partitions.max(1),
        retention_age: None,
        ..QueueConfig::new(&dir)
    };
    print_header(&b, &dir);
    let q = Queue::open(config.clone()).await?;
    let topic = "bench";
    q.create_topic(topic, b.partitions.max(1))?;

    let payload = bytes::Bytes::from(vec![b'x'; b.size]);
    let per_producer = b.messages / b.producers.max(1) as u64;
    let total = per_producer * b.producers.max(1) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.producers.max(1) {
        let (q, payload) = (q.clone(), payload.clone());
        let batch = b.batch.max(1) as u64;
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                let n = batch.min(per_producer - sent);
                let msgs = (0..n).map(|_| Message::new(payload.clone())).collect();
                q.publish_batch(topic, msgs).await?;
                sent += n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let publish = start.elapsed();
    report("publish", total, b.size, publish);

    let start = Instant::now();
    let mut tasks = Vec::new();
    let group = GroupConfig {
        visibility_timeout: Duration::from_secs(300),
        ..GroupConfig::default()
    };
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(total));
    for c in 0..b.consumers.max(1) {
        let consumer = q.subscribe(
            topic,
            "bench",
            SubscribeOptions {
                consumer_id: format!("c{c}"),
                group,
            },
        )?;
        let batch = b.batch.max(1);
        let remaining = Arc::clone(&remaining);
        tasks.push(tokio::spawn(async move {
            while remaining.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                let got = consumer.receive(batch, Duration::from_millis(100)).await?;
                if got.is_empty() {
                    continue;
                }
                let ids: Vec<MessageId> = got.iter().map(|d| d.id).collect();
                consumer.ack(&ids).await?;
                remaining.fetch_sub(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    report("subscribe + ack", total, b.size, start.elapsed());

    let stats = q.stats()?;
    let bytes: u64 = stats.topics.iter().map(|t| t.bytes).sum();
    q.close().await?;
    let start = Instant::now();
    let q = Queue::open(config).await?;
    let open = start.elapsed();
    println!(
        "{:<20} {:>10.3} s      for {:.2} GiB of logs",
        "open (recovery)",
        open.as_secs_f64(),
        bytes as f64 / (1u64 << 30) as f64
    );
    q.close().await?;
    Ok(())
}

fn print_header(b: &QueueBench, dir: &std::path::Path) {
    println!("weir bench queue");
    print!("{}", machine());
    println!(
        "config:  {} messages of {} B, batch {}, {} producer(s), {} consumer(s), {} partition(s), fsync {}, data {}",
        b.messages,
        b.size,
        b.batch,
        b.producers,
        b.consumers,
        b.partitions,
        b.fsync,
        dir.display()
    );
}
