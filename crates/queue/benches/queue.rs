//! Criterion benches of the queue's hot paths: publish a batch, and lease +
//! ack a batch through the competing-consumer path. 100-byte messages,
//! batches of 100, one partition, fsync every 5 ms.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_queue::{Fsync, GroupConfig, Message, MessageId, Queue, QueueConfig, SubscribeOptions};

const BATCH: usize = 100;

fn config(dir: &std::path::Path) -> QueueConfig {
    QueueConfig {
        fsync: Fsync::Every(Duration::from_millis(5)),
        default_partitions: 1,
        retention_bytes: Some(256 << 20),
        segment_bytes: 32 << 20,
        ..QueueConfig::new(dir)
    }
}

fn batch() -> Vec<Message> {
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    (0..BATCH).map(|_| Message::new(payload.clone())).collect()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let q = rt.block_on(Queue::open(config(dir.path()))).expect("open");

    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish_batch_100x100B", |b| {
        b.to_async(&rt)
            .iter(|| async { q.publish_batch("pub", batch()).await.expect("publish") });
    });

    let consumer = q
        .subscribe(
            "sub",
            "bench",
            SubscribeOptions {
                consumer_id: "c".into(),
                group: GroupConfig {
                    visibility_timeout: Duration::from_secs(600),
                    ..GroupConfig::default()
                },
            },
        )
        .expect("subscribe");
    group.bench_function("receive_ack_100", |b| {
        b.to_async(&rt).iter(|| async {
            // Keep the topic ahead of the consumer; publishing is a small
            // share of the measured time (see the bench above).
            q.publish_batch("sub", batch()).await.expect("publish");
            let got = consumer
                .receive(BATCH, Duration::from_secs(1))
                .await
                .expect("receive");
            let ids: Vec<MessageId> = got.iter().map(|d| d.id).collect();
            consumer.ack(&ids).await.expect("ack");
        });
    });
    group.finish();
}

criterion_group!(queue, benches);
criterion_main!(queue);
