//! The bus contract, written once and run against every backend (feature
//! `contract`).
//!
//! Each case is a `pub async fn` taking a fresh [`Bus`] and panicking with a
//! sentence that names the broken promise. A backend's test binary runs them
//! all with [`contract_suite!`](crate::contract_suite), given an async
//! function that connects to a fresh, isolated bus and returns it with a
//! [`Guard`]: see `crates/bus/tests/contract.rs`, which runs the suite
//! against `embedded://` on a new temp dir per case.
//!
//! The guard lives as long as the case (a temp dir, a running broker). The
//! calling crate needs `tokio` with `macros` and `rt-multi-thread`.
//!
//! What the cases assume of a backend: topics it creates on first use have
//! several partitions (the sharing case spreads keys over them), and time is
//! real (leases and delays are waited out, a few hundred milliseconds each).
//! Names are unique per run, so a shared broker can serve every case.
//! Waiting for something to happen polls with a deadline
//! ([`receive_exactly`], [`eventually`]); proving that something does *not*
//! happen waits a short while in `receive`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_queue::now_ms;

use crate::{
    Bus, BusError, Delivery, GroupStats, Message, SeekTarget, SettleStatus, Start, Stats,
    SubscribeOptions, Subscription, TopicStats,
};

/// What a connect function returns besides the bus, kept alive for the
/// whole case.
pub type Guard = Box<dyn std::any::Any + Send>;

/// The header a dead letter carries its reason in: `delivery_limit` or
/// `rejected`; and the one a rejected letter carries the rejecting reason in.
pub use weir_queue::dead_letter::{DETAIL as DLQ_DETAIL_HEADER, REASON as DLQ_REASON_HEADER};

/// How long anything expected may take to happen.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long to wait to be fairly sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);
/// How far a timestamp may be from this machine's clock.
const CLOCK_SLACK_MS: i64 = 30_000;

/// Expands to one `#[tokio::test]` per contract case. `$connect` is called
/// as `($connect)().await` and must give `(Arc<dyn Bus>, Guard)` for a
/// fresh bus; the bus is closed after the case, then the guard dropped.
#[macro_export]
macro_rules! contract_suite {
    (@cases $connect:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (bus, guard) = ($connect)().await;
                $crate::contract::$case(::std::sync::Arc::clone(&bus)).await;
                $crate::Bus::close(&*bus)
                    .await
                    .expect("closing the bus after the case");
                drop(bus);
                drop(guard);
            }
        )*
    };
    ($connect:expr) => {
        $crate::contract_suite!(@cases $connect;
            publish_then_receive_gives_back_what_was_sent,
            publish_batch_returns_one_receipt_each_and_keeps_key_order,
            an_acked_message_is_not_delivered_again,
            a_nacked_message_comes_again_after_its_delay,
            an_unsettled_message_comes_again_after_the_visibility_timeout,
            the_delivery_limit_and_reject_send_messages_to_the_dead_letter_topic,
            members_of_a_group_share_messages_without_duplicates_or_loss,
            every_group_gets_every_message,
            a_group_started_at_latest_skips_older_messages,
            seek_to_earliest_replays_acked_messages,
            stats_show_topics_and_groups,
            max_in_flight_caps_unsettled_deliveries,
            settling_unknown_ids_is_an_outcome_and_malformed_ids_an_error,
            settings_of_zero_are_refused,
            a_closed_bus_refuses_calls,
        );
    };
}

// ---- the cases ----

/// A message comes back exactly: payload bytes, key, headers, its id and
/// timestamp, and `delivery_count` 1.
pub async fn publish_then_receive_gives_back_what_was_sent(bus: Arc<dyn Bus>) {
    let topic = unique("round-trip");
    let payloads: [&[u8]; 3] = [
        br#"{"gpu": 3, "temp_c": 71.5}"#,
        b"plain text",
        &[0, 159, 255, 1],
    ];
    let before = now_ms();
    let mut receipts = Vec::new();
    for (i, &payload) in payloads.iter().enumerate() {
        let message = Message::new(Bytes::copy_from_slice(payload))
            .with_key(format!("key-{i}"))
            .with_header("trace-id", format!("t-{i}"))
            .with_header("content-kind", "sample");
        receipts.push(bus.publish(&topic, message).await.expect("publish"));
    }
    let after = now_ms();
    for r in &receipts {
        assert!(!r.id.is_empty(), "a receipt names the message: {r:?}");
        assert_close_to_now(r.timestamp_ms, before, after, "a receipt's timestamp");
    }

    let mut sub = subscribe(&bus, &topic, "g", options("c")).await;
    let mut got = receive_exactly(sub.as_mut(), payloads.len(), "the published messages").await;
    got.sort_by_key(|d| d.key.clone());
    for (i, d) in got.iter().enumerate() {
        assert_eq!(
            &d.payload[..],
            payloads[i],
            "payload bytes come back exactly"
        );
        assert_eq!(
            d.key.as_deref(),
            Some(format!("key-{i}").as_bytes()),
            "key kept"
        );
        assert_eq!(
            d.header("trace-id"),
            Some(format!("t-{i}").as_str()),
            "{d:?}"
        );
        assert_eq!(d.header("content-kind"), Some("sample"), "{d:?}");
        assert_eq!(d.topic, topic);
        assert_eq!(d.delivery_count, 1, "a first delivery counts 1: {d:?}");
        assert_eq!(d.id, receipts[i].id, "a delivery carries its receipt's id");
        assert_eq!(
            d.timestamp_ms, receipts[i].timestamp_ms,
            "a delivery carries its receipt's timestamp"
        );
        assert_eq!(d.ack().await.expect("ack"), SettleStatus::Done);
    }
}

/// A batch gets one receipt per message, all distinct, and the messages of
/// one key are delivered in the order they were published.
pub async fn publish_batch_returns_one_receipt_each_and_keeps_key_order(bus: Arc<dyn Bus>) {
    let topic = unique("batch");
    let keys = ["a", "b", "c"];
    let per_key = 10;
    let messages: Vec<Message> = (0..per_key)
        .flat_map(|i| keys.map(|k| Message::new(format!("{k}-{i}")).with_key(k)))
        .collect();
    let n = messages.len();
    let receipts = bus
        .publish_batch(&topic, messages)
        .await
        .expect("publish_batch");
    assert_eq!(receipts.len(), n, "one receipt per message");
    let ids: HashSet<&str> = receipts.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), n, "receipt ids are distinct: {receipts:?}");

    let mut sub = subscribe(&bus, &topic, "g", options("c")).await;
    let got = receive_exactly(sub.as_mut(), n, "the batch").await;
    let mut per_key_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &got {
        let key = String::from_utf8_lossy(d.key.as_deref().unwrap_or_default()).into_owned();
        per_key_order.entry(key).or_default().push(text(d));
    }
    for k in keys {
        let want: Vec<String> = (0..per_key).map(|i| format!("{k}-{i}")).collect();
        assert_eq!(per_key_order[k], want, "messages of key {k:?} in order");
    }
    ack_all(sub.as_ref(), &got).await;
}

/// Once acked, a message is never delivered again: not to the member that
/// acked it, not to a later member of the group.
pub async fn an_acked_message_is_not_delivered_again(bus: Arc<dyn Bus>) {
    let topic = unique("ack");
    bus.publish(&topic, Message::new("one"))
        .await
        .expect("publish");
    let mut first = subscribe(&bus, &topic, "g", options("first")).await;
    let got = receive_exactly(first.as_mut(), 1, "the message").await;
    assert_eq!(got[0].ack().await.expect("ack"), SettleStatus::Done);
    assert_eq!(
        got[0].ack().await.expect("second ack"),
        SettleStatus::AlreadyDone,
        "acking twice changes nothing"
    );
    assert_nothing(first.as_mut(), "after the ack").await;
    drop(first);

    bus.publish(&topic, Message::new("two"))
        .await
        .expect("publish");
    let mut second = subscribe(&bus, &topic, "g", options("second")).await;
    let got = receive_exactly(second.as_mut(), 1, "the message published later").await;
    assert_eq!(text(&got[0]), "two", "the acked message stays acked");
    ack_all(second.as_ref(), &got).await;
    assert_nothing(second.as_mut(), "after both acks").await;
}

/// A nack with no delay gives the message back at once, counted; a nack
/// with a delay keeps it away until the delay has passed.
pub async fn a_nacked_message_comes_again_after_its_delay(bus: Arc<dyn Bus>) {
    let topic = unique("nack");
    let receipt = bus
        .publish(&topic, Message::new("retry me"))
        .await
        .expect("publish");
    let opts = SubscribeOptions {
        max_deliveries: Some(10),
        ..options("c")
    };
    let mut sub = subscribe(&bus, &topic, "g", opts).await;
    let first = receive_exactly(sub.as_mut(), 1, "the message").await;
    assert_eq!(
        first[0].nack(Duration::ZERO).await.expect("nack"),
        SettleStatus::Done
    );
    let second = receive_exactly(sub.as_mut(), 1, "the message after a nack").await;
    assert_eq!(second[0].id, receipt.id, "the same message comes again");
    assert_eq!(second[0].delivery_count, 2, "a redelivery is counted");

    let delay = Duration::from_millis(700);
    let nacked_at = Instant::now();
    assert_eq!(
        second[0].nack(delay).await.expect("nack"),
        SettleStatus::Done
    );
    let third = receive_exactly(sub.as_mut(), 1, "the message after a delayed nack").await;
    let waited = nacked_at.elapsed();
    assert!(
        waited >= delay,
        "a message nacked with a delay of {delay:?} came again after {waited:?}"
    );
    assert_eq!(
        (third[0].id.as_str(), third[0].delivery_count),
        (receipt.id.as_str(), 3)
    );
    ack_all(sub.as_ref(), &third).await;
}

/// A delivery neither acked nor nacked within the visibility timeout comes
/// again, and only after it.
pub async fn an_unsettled_message_comes_again_after_the_visibility_timeout(bus: Arc<dyn Bus>) {
    let topic = unique("visibility");
    let timeout = Duration::from_millis(300);
    let receipt = bus
        .publish(&topic, Message::new("slow work"))
        .await
        .expect("publish");
    let opts = SubscribeOptions {
        visibility_timeout: Some(timeout),
        ..options("c")
    };
    let mut sub = subscribe(&bus, &topic, "g", opts).await;
    let received_at = Instant::now();
    let first = receive_exactly(sub.as_mut(), 1, "the message").await;
    assert_eq!(first[0].delivery_count, 1);
    let again = receive_exactly(sub.as_mut(), 1, "the message after its lease").await;
    let waited = received_at.elapsed();
    assert!(
        waited >= timeout,
        "a lease of {timeout:?} ended after {waited:?}"
    );
    assert_eq!(
        (again[0].id.as_str(), again[0].delivery_count),
        (receipt.id.as_str(), 2)
    );
    assert_eq!(again[0].ack().await.expect("ack"), SettleStatus::Done);
}

/// A message delivered `max_deliveries` times goes to `<topic>.dlq` with
/// reason `delivery_limit`; a rejected one goes there at once with reason
/// `rejected` and the rejecting reason as detail. Neither comes back on the
/// topic.
pub async fn the_delivery_limit_and_reject_send_messages_to_the_dead_letter_topic(
    bus: Arc<dyn Bus>,
) {
    let topic = unique("dead");
    let dlq = format!("{topic}.dlq");
    bus.publish(&topic, Message::new("poison").with_header("trace-id", "p1"))
        .await
        .expect("publish");
    let opts = SubscribeOptions {
        max_deliveries: Some(2),
        ..options("c")
    };
    let mut sub = subscribe(&bus, &topic, "g", opts).await;
    for round in 1..=2 {
        let got = receive_exactly(sub.as_mut(), 1, "the poison message").await;
        assert_eq!(got[0].delivery_count, round);
        assert_eq!(
            got[0].nack(Duration::ZERO).await.expect("nack"),
            SettleStatus::Done
        );
    }
    assert_nothing(sub.as_mut(), "past max_deliveries").await;

    let mut dead = subscribe(&bus, &dlq, "dlq-reader", options("d")).await;
    let letters = receive_exactly(dead.as_mut(), 1, "the dead letter").await;
    let letter = &letters[0];
    assert_eq!(text(letter), "poison", "the dead letter is the message");
    assert_eq!(
        letter.header("trace-id"),
        Some("p1"),
        "its headers are kept"
    );
    assert_eq!(
        letter.header(DLQ_REASON_HEADER),
        Some("delivery_limit"),
        "{letter:?}"
    );

    bus.publish(&topic, Message::new("malformed"))
        .await
        .expect("publish");
    let got = receive_exactly(sub.as_mut(), 1, "the message to reject").await;
    let status = got[0].reject("cannot parse").await.expect("reject");
    assert_eq!(status, SettleStatus::Done);
    assert_nothing(sub.as_mut(), "after a reject").await;
    let letters = receive_exactly(dead.as_mut(), 1, "the rejected message").await;
    let letter = &letters[0];
    assert_eq!(text(letter), "malformed");
    assert_eq!(
        letter.header(DLQ_REASON_HEADER),
        Some("rejected"),
        "{letter:?}"
    );
    assert_eq!(
        letter.header(DLQ_DETAIL_HEADER),
        Some("cannot parse"),
        "{letter:?}"
    );
}

/// Two members of one group: a message is leased to one member at a time,
/// both get a share, and every message is acked exactly once.
pub async fn members_of_a_group_share_messages_without_duplicates_or_loss(bus: Arc<dyn Bus>) {
    let topic = unique("share");
    let n = 200;
    let messages: Vec<Message> = (0..n)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    for chunk in messages.chunks(50) {
        bus.publish_batch(&topic, chunk.to_vec())
            .await
            .expect("publish_batch");
    }
    let mut a = subscribe(&bus, &topic, "g", options("a")).await;
    let mut b = subscribe(&bus, &topic, "g", options("b")).await;

    // While `a` holds its messages, `b` must get others.
    let held_by_a = receive_exactly(a.as_mut(), 20, "a's first share").await;
    let held_by_b = receive_exactly(b.as_mut(), 20, "b's first share").await;
    let a_ids: HashSet<&str> = held_by_a.iter().map(|d| d.id.as_str()).collect();
    for d in &held_by_b {
        assert!(
            !a_ids.contains(d.id.as_str()),
            "{} was leased to two members at once",
            d.id
        );
    }

    let acked: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let drain = |mut sub: Box<dyn Subscription>, held: Vec<Delivery>| {
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let deadline = Instant::now() + PATIENCE * 3;
            let mut batch = held;
            loop {
                for d in &batch {
                    assert_eq!(d.delivery_count, 1, "{} was delivered again", d.id);
                    let status = d.ack().await.expect("ack");
                    assert_eq!(status, SettleStatus::Done, "acking {}", d.id);
                    *acked.lock().unwrap().entry(text(d)).or_default() += 1;
                }
                if acked.lock().unwrap().len() == n {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} messages acked in time",
                    acked.lock().unwrap().len()
                );
                batch = sub
                    .receive(16, Duration::from_millis(100))
                    .await
                    .expect("receive");
            }
        })
    };
    let tasks = [drain(a, held_by_a), drain(b, held_by_b)];
    for task in tasks {
        task.await.expect("a member failed");
    }
    let acked = acked.lock().unwrap();
    for i in 0..n {
        let count = acked.get(&format!("m{i}")).copied().unwrap_or(0);
        assert_eq!(count, 1, "m{i} acked {count} times");
    }
}

/// Each group gets its own copy of every message.
pub async fn every_group_gets_every_message(bus: Arc<dyn Bus>) {
    let topic = unique("fanout");
    let n = 20;
    let messages: Vec<Message> = (0..n)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    bus.publish_batch(&topic, messages)
        .await
        .expect("publish_batch");
    let want: HashSet<String> = (0..n).map(|i| format!("m{i}")).collect();
    for group in ["left", "right"] {
        let mut sub = subscribe(&bus, &topic, group, options("c")).await;
        let got = receive_exactly(sub.as_mut(), n, &format!("group {group}'s copy")).await;
        let payloads: HashSet<String> = got.iter().map(text).collect();
        assert_eq!(payloads, want, "group {group} gets every message");
        ack_all(sub.as_ref(), &got).await;
    }
}

/// A new group started at latest sees only what is published after it
/// joined; one started at earliest sees everything.
pub async fn a_group_started_at_latest_skips_older_messages(bus: Arc<dyn Bus>) {
    let topic = unique("latest");
    for i in 0..3 {
        bus.publish(&topic, Message::new(format!("old-{i}")))
            .await
            .expect("publish");
    }
    let opts = SubscribeOptions {
        start: Start::Latest,
        ..options("c")
    };
    let mut late = subscribe(&bus, &topic, "late", opts).await;
    assert_nothing(late.as_mut(), "in a group started at latest").await;
    bus.publish(&topic, Message::new("new"))
        .await
        .expect("publish");
    let got = receive_exactly(late.as_mut(), 1, "the message published after joining").await;
    assert_eq!(text(&got[0]), "new");
    ack_all(late.as_ref(), &got).await;
    assert_nothing(late.as_mut(), "after the new message").await;

    let mut early = subscribe(&bus, &topic, "early", options("c")).await;
    let got = receive_exactly(early.as_mut(), 4, "everything, from earliest").await;
    ack_all(early.as_ref(), &got).await;
}

/// Seeking a group to earliest delivers what it had acked again.
pub async fn seek_to_earliest_replays_acked_messages(bus: Arc<dyn Bus>) {
    let topic = unique("seek");
    let n = 5;
    let messages: Vec<Message> = (0..n).map(|i| Message::new(format!("m{i}"))).collect();
    bus.publish_batch(&topic, messages)
        .await
        .expect("publish_batch");
    let mut sub = subscribe(&bus, &topic, "g", options("c")).await;
    let first = receive_exactly(sub.as_mut(), n, "the messages").await;
    ack_all(sub.as_ref(), &first).await;
    assert_nothing(sub.as_mut(), "once all are acked").await;

    bus.seek(&topic, "g", SeekTarget::Earliest)
        .await
        .expect("seek");
    let replayed = receive_exactly(sub.as_mut(), n, "the messages again after the seek").await;
    let want: HashSet<String> = first.iter().map(text).collect();
    let got: HashSet<String> = replayed.iter().map(text).collect();
    assert_eq!(got, want, "the seek replays every acked message");
    ack_all(sub.as_ref(), &replayed).await;
}

/// Stats name the topic with its messages and the group with what is
/// pending and in flight, and follow acks.
pub async fn stats_show_topics_and_groups(bus: Arc<dyn Bus>) {
    let topic = unique("stats");
    let messages: Vec<Message> = (0..10)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    bus.publish_batch(&topic, messages)
        .await
        .expect("publish_batch");
    // A pushing backend (SSE) hands out up to max_in_flight unasked.
    let mut sub = subscribe(
        &bus,
        &topic,
        "g",
        SubscribeOptions {
            max_in_flight: 4,
            ..options("c")
        },
    )
    .await;
    let got = receive_exactly(sub.as_mut(), 4, "four messages").await;

    let (t, g) = eventually("stats with 10 pending and 4 in flight", || async {
        let stats = bus.stats().await.expect("stats");
        let (t, g) = (
            topic_stats(&stats, &topic)?,
            group_stats(&stats, &topic, "g")?,
        );
        (t.messages == 10 && g.pending_messages == 10 && g.in_flight == 4).then_some((t, g))
    })
    .await;
    assert!(t.partitions >= 1, "{t:?}");
    assert_eq!(t.published_total, 10, "{t:?}");
    assert_eq!(t.queue_depth, 10, "{t:?}");
    assert_eq!(t.dead_letter_count, 0, "{t:?}");
    assert!(t.bytes > 0, "{t:?}");
    assert!(g.consumer_count >= 1, "{g:?}");
    assert_eq!(g.delivered_total, 4, "{g:?}");

    ack_all(sub.as_ref(), &got).await;
    let (t, g) = eventually("stats with 6 pending after 4 acks", || async {
        let stats = bus.stats().await.expect("stats");
        let (t, g) = (
            topic_stats(&stats, &topic)?,
            group_stats(&stats, &topic, "g")?,
        );
        (g.pending_messages == 6 && g.in_flight <= 4).then_some((t, g))
    })
    .await;
    assert_eq!(g.acked_total, 4, "{g:?}");
    assert_eq!(t.queue_depth, 6, "{t:?}");
}

/// A member with `max_in_flight` 10 never holds more than 10 unsettled
/// deliveries, and gets more as it settles.
pub async fn max_in_flight_caps_unsettled_deliveries(bus: Arc<dyn Bus>) {
    let topic = unique("in-flight");
    let n = 30;
    let messages: Vec<Message> = (0..n)
        .map(|i| Message::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    bus.publish_batch(&topic, messages)
        .await
        .expect("publish_batch");
    let opts = SubscribeOptions {
        max_in_flight: 10,
        ..options("c")
    };
    let mut sub = subscribe(&bus, &topic, "g", opts).await;

    let deadline = Instant::now() + PATIENCE;
    let mut held = Vec::new();
    while held.len() < 10 {
        let got = sub.receive(100, QUIET).await.expect("receive");
        assert!(
            held.len() + got.len() <= 10,
            "holding {} unsettled deliveries with max_in_flight 10",
            held.len() + got.len()
        );
        held.extend(got);
        assert!(
            Instant::now() < deadline,
            "only {} deliveries came",
            held.len()
        );
    }
    assert_nothing(sub.as_mut(), "while 10 deliveries are unsettled").await;

    let mut seen: HashSet<String> = HashSet::new();
    ack_all(sub.as_ref(), &held[..3]).await;
    seen.extend(held.drain(..3).map(|d| text(&d)));
    let more = receive_exactly(sub.as_mut(), 3, "deliveries after settling three").await;
    held.extend(more);
    assert_nothing(sub.as_mut(), "while 10 deliveries are unsettled again").await;

    loop {
        ack_all(sub.as_ref(), &held).await;
        seen.extend(held.iter().map(text));
        if seen.len() == n {
            break;
        }
        assert!(
            Instant::now() < deadline + PATIENCE,
            "only {} of {n} came",
            seen.len()
        );
        held = sub.receive(100, QUIET).await.expect("receive");
        assert!(
            held.len() <= 10,
            "received {} at once with max_in_flight 10",
            held.len()
        );
    }
}

/// Settling an id the group never delivered is an outcome, not an error,
/// and does not count as a delivery; a malformed id is `Invalid`.
pub async fn settling_unknown_ids_is_an_outcome_and_malformed_ids_an_error(bus: Arc<dyn Bus>) {
    let topic = unique("settle");
    // One in flight at most: while the first message is held, a pushing
    // backend (SSE) cannot hand out the second unasked.
    let mut sub = subscribe(
        &bus,
        &topic,
        "g",
        SubscribeOptions {
            max_in_flight: 1,
            ..options("c")
        },
    )
    .await;
    bus.publish(&topic, Message::new("m0").with_key("k"))
        .await
        .expect("publish");
    let first = receive_exactly(sub.as_mut(), 1, "the first message").await;
    let receipt = bus
        .publish(&topic, Message::new("m").with_key("k"))
        .await
        .expect("publish");
    let acker = sub.acker();
    let unknown = vec![receipt.id.clone()];
    let statuses = acker.ack(&unknown).await.expect("ack of an undelivered id");
    assert_eq!(
        statuses,
        [SettleStatus::NotDelivered],
        "ack before delivery"
    );
    let statuses = acker.nack(&unknown, Duration::ZERO).await.expect("nack");
    assert_eq!(
        statuses,
        [SettleStatus::NotDelivered],
        "nack before delivery"
    );
    let statuses = acker.reject(&unknown, "no").await.expect("reject");
    assert_eq!(
        statuses,
        [SettleStatus::NotDelivered],
        "reject before delivery"
    );

    assert_eq!(first[0].ack().await.expect("ack"), SettleStatus::Done);
    let got = receive_exactly(sub.as_mut(), 1, "the message").await;
    assert_eq!(got[0].id, receipt.id);
    assert_eq!(got[0].delivery_count, 1, "settling it early did not count");

    for bad in ["not-an-id", "", "12"] {
        match acker.ack(&[bad.to_string()]).await {
            Err(BusError::Invalid(_)) => {}
            other => panic!("acking the malformed id {bad:?} gave {other:?}"),
        }
    }
    let mixed = [got[0].id.clone(), "garbage".to_string()];
    assert!(
        matches!(acker.ack(&mixed).await, Err(BusError::Invalid(_))),
        "a list holding a malformed id is refused"
    );
    assert_eq!(got[0].ack().await.expect("ack"), SettleStatus::Done);
}

/// After `close`, the handle answers `Closed`; closing twice is fine.
/// A subscription with a zero visibility timeout, `max_deliveries` or
/// `max_in_flight` is refused as invalid.
pub async fn settings_of_zero_are_refused(bus: Arc<dyn Bus>) {
    let topic = unique("zero");
    let cases = [
        SubscribeOptions {
            visibility_timeout: Some(Duration::ZERO),
            ..options("c")
        },
        SubscribeOptions {
            max_deliveries: Some(0),
            ..options("c")
        },
        SubscribeOptions {
            max_in_flight: 0,
            ..options("c")
        },
    ];
    for zero in cases {
        let what = format!("{zero:?}");
        match bus.subscribe(&topic, "g", zero).await {
            Err(BusError::Invalid(_)) => {}
            Err(e) => panic!("subscribing with {what}: {e:?}, not Invalid"),
            Ok(_) => panic!("subscribing with {what} was accepted"),
        }
    }
}

pub async fn a_closed_bus_refuses_calls(bus: Arc<dyn Bus>) {
    let topic = unique("closed");
    bus.publish(&topic, Message::new("m"))
        .await
        .expect("publish");
    bus.close().await.expect("close");
    let err = bus.publish(&topic, Message::new("late")).await.unwrap_err();
    assert_eq!(err, BusError::Closed, "publish after close");
    let err = bus.stats().await.unwrap_err();
    assert_eq!(err, BusError::Closed, "stats after close");
    bus.close().await.expect("closing again");
}

// ---- helpers ----

/// A topic name no other case or run uses.
fn unique(case: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("contract-{case}-{}-{}-{n}", std::process::id(), now_ms())
}

fn options(consumer: &str) -> SubscribeOptions {
    SubscribeOptions::new(consumer)
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
}

fn assert_close_to_now(ms: i64, before: i64, after: i64, what: &str) {
    assert!(
        before - CLOCK_SLACK_MS <= ms && ms <= after + CLOCK_SLACK_MS,
        "{what} {ms} is far from now ({before}..{after})"
    );
}

async fn subscribe(
    bus: &Arc<dyn Bus>,
    topic: &str,
    group: &str,
    options: SubscribeOptions,
) -> Box<dyn Subscription> {
    bus.subscribe(topic, group, options)
        .await
        .unwrap_or_else(|e| panic!("subscribing to {topic:?} as group {group:?}: {e}"))
}

/// Receives until exactly `n` deliveries came, failing if fewer come within
/// [`PATIENCE`] or more come at all.
pub async fn receive_exactly(sub: &mut dyn Subscription, n: usize, what: &str) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut got: Vec<Delivery> = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "waiting for {what}: {} of {n} deliveries came within {PATIENCE:?}: {:?}",
            got.len(),
            got.iter().map(|d| &d.id).collect::<Vec<_>>()
        );
        let batch = sub
            .receive(n - got.len(), left.min(Duration::from_millis(500)))
            .await
            .unwrap_or_else(|e| panic!("receiving {what}: {e}"));
        assert!(
            got.len() + batch.len() <= n,
            "receive({}) gave {} deliveries",
            n - got.len(),
            batch.len()
        );
        got.extend(batch);
    }
    got
}

/// Fails if anything is delivered within [`QUIET`].
pub async fn assert_nothing(sub: &mut dyn Subscription, when: &str) {
    let got = sub.receive(100, QUIET).await.expect("receive");
    assert!(
        got.is_empty(),
        "nothing should be delivered {when}, but got {:?}",
        got.iter()
            .map(|d| (&d.id, text(d), d.delivery_count))
            .collect::<Vec<_>>()
    );
}

/// Everything a fresh group `checker` receives from `topic` until the topic
/// stays quiet for [`QUIET`], acked, in delivery order: what tests of a
/// producer read back.
pub async fn drain(bus: &dyn Bus, topic: &str) -> Vec<Delivery> {
    let mut sub = bus
        .subscribe(topic, "checker", SubscribeOptions::new("checker"))
        .await
        .expect("subscribe to drain");
    let mut out = Vec::new();
    loop {
        let batch = sub.receive(1000, QUIET).await.expect("receive to drain");
        if batch.is_empty() {
            return out;
        }
        ack_all(sub.as_ref(), &batch).await;
        out.extend(batch);
    }
}

async fn ack_all(sub: &dyn Subscription, deliveries: &[Delivery]) {
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    let statuses = sub.acker().ack(&ids).await.expect("ack");
    assert_eq!(statuses.len(), ids.len(), "one status per id");
    for (id, status) in ids.iter().zip(statuses) {
        assert_eq!(status, SettleStatus::Done, "acking {id}");
    }
}

/// Polls `check` until it gives `Some`, failing after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn topic_stats(stats: &Stats, topic: &str) -> Option<TopicStats> {
    stats.topics.iter().find(|t| t.topic == topic).cloned()
}

fn group_stats(stats: &Stats, topic: &str, group: &str) -> Option<GroupStats> {
    stats
        .consumer_groups
        .iter()
        .find(|g| g.topic == topic && g.consumer_group == group)
        .cloned()
}
