//! The bus contract against a real Kafka-protocol broker, and what only a
//! Kafka group shows: partitions moving between members.
//!
//! Needs a broker: `WEIR_TEST_KAFKA` holds its bus URL (`scripts/test` sets
//! it from `scripts/kafka`, which starts tansu on 127.0.0.1:19092).
//!
//! Test setup for tansu 0.6, not for Kafka (see README, "Running on Kafka"):
//! `batch.num.messages=1`, because tansu advances a partition's high
//! watermark by one for a produced batch of several records.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_bus::contract::{Guard, PATIENCE, receive_exactly};
use weir_bus::{Bus, ConnectOptions, Delivery, Message, SettleStatus, SubscribeOptions};

fn broker_url() -> String {
    std::env::var("WEIR_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "WEIR_TEST_KAFKA is not set: the Kafka tests need a broker. \
             Run `export WEIR_TEST_KAFKA=$(scripts/kafka)` (it starts tansu on \
             127.0.0.1:19092 and prints its URL), or use scripts/test."
        )
    })
}

/// Options every test client gets: the tansu workaround above, and quick
/// group timeouts so a member that stops polling is noticed in seconds.
pub fn test_options() -> ConnectOptions {
    let kafka_options = [
        ("batch.num.messages", "1"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("max.poll.interval.ms", "10000"),
    ];
    ConnectOptions {
        partitions: Some(4),
        kafka_options: kafka_options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ConnectOptions::default()
    }
}

async fn connect() -> (Arc<dyn Bus>, Guard) {
    let url = broker_url();
    let bus = weir_bus::connect(&url, &test_options())
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    (bus, Box::new(()))
}

weir_bus::contract_suite!(connect);

fn unique(what: &str) -> String {
    format!(
        "kafka-{what}-{}-{}",
        std::process::id(),
        weir_queue::now_ms()
    )
}

/// Two members share a 4-partition topic, each holding its own partitions;
/// when one leaves with work unacked, its partitions move to the other,
/// which gets that work again. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_hands_its_partitions_and_unacked_work_to_the_other() {
    let (bus, _guard) = connect().await;
    let topic = unique("rebalance");
    let n = 40;
    let messages: Vec<Message> = (0..n)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    bus.publish_batch(&topic, messages).await.expect("publish");

    let mut a = bus
        .subscribe(&topic, "g", SubscribeOptions::new("a"))
        .await
        .expect("a joins");
    let mut b = bus
        .subscribe(&topic, "g", SubscribeOptions::new("b"))
        .await
        .expect("b joins");

    // Each member gets the messages of its own partitions; together, all.
    let mut held: HashMap<&str, Vec<Delivery>> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while held.values().map(Vec::len).sum::<usize>() < n {
        assert!(Instant::now() < deadline, "only {:?} came", counts(&held));
        let got_a = a.receive(100, Duration::from_millis(200)).await.unwrap();
        let got_b = b.receive(100, Duration::from_millis(200)).await.unwrap();
        held.entry("a").or_default().extend(got_a);
        held.entry("b").or_default().extend(got_b);
    }
    let partition = |d: &Delivery| d.id.split('-').next().unwrap().to_string();
    let parts_a: HashSet<String> = held["a"].iter().map(partition).collect();
    let parts_b: HashSet<String> = held["b"].iter().map(partition).collect();
    assert!(
        !parts_a.is_empty() && !parts_b.is_empty(),
        "both members hold partitions: {parts_a:?} / {parts_b:?}"
    );
    assert!(
        parts_a.is_disjoint(&parts_b),
        "a partition belongs to one member: {parts_a:?} / {parts_b:?}"
    );

    // a acks half of what it holds, then leaves with the rest unacked.
    let a_held = held.remove("a").unwrap();
    let (acked_by_a, unacked) = a_held.split_at(a_held.len() / 2);
    for d in acked_by_a {
        assert_eq!(d.ack().await.unwrap(), SettleStatus::Done);
    }
    // Let a commit what it acked before it goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(a);
    for d in &held["b"] {
        assert_eq!(d.ack().await.unwrap(), SettleStatus::Done);
    }

    let want: HashSet<String> = unacked.iter().map(text).collect();
    let mut got: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + PATIENCE * 3;
    while !want.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "b got {} of a's {} unacked messages",
            want.intersection(&got).count(),
            want.len()
        );
        for d in b.receive(100, Duration::from_millis(200)).await.unwrap() {
            assert!(
                parts_a.contains(&partition(&d)),
                "{} came again though its partition stayed with b",
                d.id
            );
            got.insert(text(&d));
            d.ack().await.unwrap();
        }
    }
    // What a acked and committed before the first unacked one of each
    // partition does not come back; at-least-once allows the rest.
    bus.close().await.unwrap();
}

/// A message published by one bus handle is received through another with
/// the same id; a consumer of another group is untouched by this group's
/// retries (they share `<topic>.retry`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_with_their_group() {
    let (bus, _guard) = connect().await;
    let topic = unique("retry-groups");
    let receipt = bus.publish(&topic, Message::new("once")).await.unwrap();
    let mut left = bus
        .subscribe(&topic, "left", SubscribeOptions::new("l"))
        .await
        .unwrap();
    let mut right = bus
        .subscribe(&topic, "right", SubscribeOptions::new("r"))
        .await
        .unwrap();
    let got = receive_exactly(left.as_mut(), 1, "left's copy").await;
    assert_eq!(
        got[0].nack(Duration::ZERO).await.unwrap(),
        SettleStatus::Done
    );
    let again = receive_exactly(left.as_mut(), 1, "left's retry").await;
    assert_eq!(
        (again[0].id.as_str(), again[0].delivery_count),
        (receipt.id.as_str(), 2)
    );
    again[0].ack().await.unwrap();

    let got = receive_exactly(right.as_mut(), 1, "right's copy").await;
    assert_eq!(got[0].delivery_count, 1);
    got[0].ack().await.unwrap();
    let more = right.receive(10, Duration::from_millis(800)).await.unwrap();
    assert!(more.is_empty(), "right got left's retry: {more:?}");
    bus.close().await.unwrap();
}

fn counts(held: &HashMap<&str, Vec<Delivery>>) -> Vec<(String, usize)> {
    held.iter().map(|(k, v)| (k.to_string(), v.len())).collect()
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
}
