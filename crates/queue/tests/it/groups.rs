use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_queue::{
    GroupConfig, GroupOverrides, Message, MessageId, QueueError, SeekTo, Settled, StartAt,
};

use crate::{member, open, rules};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_share_a_topic_and_never_hold_one_message_together() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let n = 3_000u64;
    let msgs: Vec<Message> = (0..n).map(|i| Message::new(i.to_string())).collect();
    for chunk in msgs.chunks(100) {
        q.publish_batch("shared", chunk.to_vec()).await.unwrap();
    }
    let held: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<MessageId, usize>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..3 {
        let consumer = q
            .subscribe(
                "shared",
                "g",
                member(&format!("c{c}"), rules(Duration::from_secs(60), 5)),
            )
            .unwrap();
        let (held, seen) = (Arc::clone(&held), Arc::clone(&seen));
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                let batch = consumer
                    .receive(50, Duration::from_millis(200))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                let ids: Vec<MessageId> = batch.iter().map(|d| d.id).collect();
                {
                    let mut held = held.lock().unwrap();
                    for id in &ids {
                        assert!(held.insert(*id), "{id} leased to two consumers at once");
                    }
                }
                tokio::task::yield_now().await;
                {
                    let mut held = held.lock().unwrap();
                    let mut seen = seen.lock().unwrap();
                    for id in &ids {
                        held.remove(id);
                        *seen.entry(*id).or_default() += 1;
                    }
                }
                let outcomes = consumer.ack(&ids).await.unwrap();
                assert!(outcomes.iter().all(|o| *o == Settled::Done));
                mine += ids.len();
            }
        }));
    }
    let mut per_consumer = Vec::new();
    for t in tasks {
        per_consumer.push(t.await.unwrap());
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, n, "every message delivered");
    assert!(seen.values().all(|&c| c == 1), "no message delivered twice");
    assert_eq!(per_consumer.iter().sum::<usize>() as u64, n);
    assert!(
        per_consumer.iter().filter(|&&m| m > 0).count() >= 2,
        "the load was shared: {per_consumer:?}"
    );
    let stats = q.stats().unwrap();
    let g = stats.groups.iter().find(|g| g.topic == "shared").unwrap();
    assert_eq!((g.depth, g.in_flight, g.acked_total), (0, 0, n));
    assert_eq!(g.oldest_unacked_age_ms, None);
}

#[tokio::test(start_paused = true)]
async fn an_unacked_message_returns_after_the_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    q.publish("jobs", Message::new("work")).await.unwrap();
    let a = q
        .subscribe("jobs", "g", member("a", rules(Duration::from_secs(30), 5)))
        .unwrap();
    let b = q
        .subscribe("jobs", "g", member("b", rules(Duration::from_secs(30), 5)))
        .unwrap();
    let first = a.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery_count, 1);
    assert!(
        b.receive(10, Duration::from_secs(29))
            .await
            .unwrap()
            .is_empty()
    );
    let again = b.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1, "redelivered once the lease expired");
    assert_eq!((again[0].id, again[0].delivery_count), (first[0].id, 2));
    let stats = q.stats().unwrap();
    assert_eq!(stats.groups[0].redelivered_total, 1);
    assert_eq!(stats.groups[0].in_flight, 1);
    assert_eq!(b.ack(&[again[0].id]).await.unwrap(), [Settled::Done]);
    assert_eq!(a.ack(&[first[0].id]).await.unwrap(), [Settled::AlreadyDone]);
}

#[tokio::test(start_paused = true)]
async fn max_deliveries_sends_a_message_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let published = q
        .publish(
            "jobs",
            Message::new("poison")
                .with_key("k")
                .with_header("trace", "t1"),
        )
        .await
        .unwrap();
    let c = q
        .subscribe("jobs", "g", member("c", rules(Duration::from_secs(10), 3)))
        .unwrap();
    for round in 1..=3 {
        let got = c.receive(1, Duration::from_secs(20)).await.unwrap();
        assert_eq!(got[0].delivery_count, round);
        if round == 2 {
            // A nack counts as a delivery too.
            assert_eq!(
                c.nack(&[got[0].id], Duration::ZERO).await.unwrap(),
                [Settled::Done]
            );
        }
    }
    assert!(
        c.receive(1, Duration::from_secs(20))
            .await
            .unwrap()
            .is_empty()
    );
    let dlq = q.read("jobs.dlq", 0, 0, 1 << 20).unwrap();
    assert_eq!(dlq.len(), 1);
    let r = &dlq[0].record;
    assert_eq!(&r.payload[..], b"poison");
    assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    let header = |n: &str| String::from_utf8(r.header(n).unwrap().to_vec()).unwrap();
    assert_eq!(header("x-weir-dlq-reason"), "delivery_limit");
    assert_eq!(header("x-weir-origin-topic"), "jobs");
    assert_eq!(
        header("x-weir-origin-partition"),
        published.id.partition.to_string()
    );
    assert_eq!(
        header("x-weir-origin-offset"),
        published.id.offset.to_string()
    );
    assert_eq!(header("x-weir-delivery-count"), "3");
    assert_eq!(header("trace"), "t1");
    let stats = q.stats().unwrap();
    let g = &stats.groups[0];
    assert_eq!((g.dead_lettered_total, g.depth, g.in_flight), (1, 0, 0));
}

#[tokio::test]
async fn reject_dead_letters_at_once_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    q.publish("jobs", Message::new("not json")).await.unwrap();
    let c = q
        .subscribe("jobs", "g", member("c", rules(Duration::from_secs(10), 5)))
        .unwrap();
    let got = c.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        c.reject(&[got[0].id], "payload is not JSON").await.unwrap(),
        [Settled::Done]
    );
    let dlq = q.read("jobs.dlq", 0, 0, 1 << 20).unwrap();
    assert_eq!(
        &dlq[0].record.header("x-weir-dlq-reason").unwrap()[..],
        b"rejected"
    );
    assert_eq!(
        &dlq[0].record.header("x-weir-dlq-detail").unwrap()[..],
        b"payload is not JSON"
    );
    assert_eq!(c.ack(&[got[0].id]).await.unwrap(), [Settled::AlreadyDone]);
}

#[tokio::test]
async fn nack_with_delay_holds_the_message_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    q.publish("jobs", Message::new("later")).await.unwrap();
    let c = q
        .subscribe("jobs", "g", member("c", rules(Duration::from_secs(10), 5)))
        .unwrap();
    let got = c.receive(1, Duration::from_secs(1)).await.unwrap();
    c.nack(&[got[0].id], Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        c.receive(1, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    let again = c.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again[0].delivery_count, 2);
}

#[tokio::test]
async fn groups_start_at_earliest_or_latest_and_seek_replays() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    q.create_topic("t", 1).unwrap();
    let before = q.publish("t", Message::new("old")).await.unwrap();
    let mut latest = rules(Duration::from_secs(10), 5);
    latest.start = StartAt::Latest;
    let early = q
        .subscribe("t", "early", member("e", rules(Duration::from_secs(10), 5)))
        .unwrap();
    let late = q.subscribe("t", "late", member("l", latest)).unwrap();
    q.publish("t", Message::new("new")).await.unwrap();
    let payloads = |ds: &[weir_queue::Delivery]| -> Vec<String> {
        ds.iter()
            .map(|d| String::from_utf8(d.record.payload.to_vec()).unwrap())
            .collect()
    };
    let e = early.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(payloads(&e), ["old", "new"]);
    let l = late.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(payloads(&l), ["new"]);
    early
        .ack(&e.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    q.seek(
        "t",
        "early",
        SeekTo::Offset {
            partition: 0,
            offset: before.id.offset,
        },
    )
    .unwrap();
    let replay = early.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(payloads(&replay), ["old", "new"]);
    q.seek(
        "t",
        "early",
        SeekTo::Timestamp(before.timestamp + 1_000_000),
    )
    .unwrap();
    assert!(
        early
            .receive(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    q.seek("t", "early", SeekTo::Timestamp(before.timestamp))
        .unwrap();
    assert_eq!(
        early
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn keys_keep_their_partition() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    q.create_topic("k", 4).unwrap();
    let mut by_key: HashMap<String, u32> = HashMap::new();
    for i in 0..200 {
        let key = format!("gpu-{}", i % 10);
        let p = q
            .publish("k", Message::new("x").with_key(key.clone()))
            .await
            .unwrap();
        assert_eq!(*by_key.entry(key).or_insert(p.id.partition), p.id.partition);
    }
    let used: HashSet<u32> = by_key.values().copied().collect();
    assert!(used.len() > 1, "ten keys spread over partitions");
}

#[tokio::test]
async fn limits_and_names_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let big = Message::new(vec![0u8; (1 << 20) + 1]);
    let err = q.publish("t", big).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::MessageTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
    let many: Vec<Message> = (0..20)
        .map(|_| Message::new(vec![0u8; (1 << 20) - 64]))
        .collect();
    let err = q.publish_batch("t", many).await.unwrap_err();
    assert!(matches!(err, QueueError::BatchTooLarge { .. }), "{err}");
    let err = q.publish("bad/topic", Message::new("x")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid topic name \"bad/topic\": it may hold only ASCII letters, digits, '.', '_' and '-'"
    );
    assert!(matches!(
        q.publish_batch("t", vec![]).await,
        Err(QueueError::EmptyBatch)
    ));
    let err = q.ack("t", "nobody", &[]).await.unwrap_err();
    assert!(matches!(err, QueueError::UnknownGroup { .. }), "{err}");
    q.create_topic("four", 4).unwrap();
    assert!(matches!(
        q.create_topic("four", 2),
        Err(QueueError::PartitionMismatch { .. })
    ));
}

#[tokio::test]
async fn a_second_queue_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _q = open(dir.path()).await;
    let err = weir_queue::Queue::open(crate::config(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another Weir process"));
}

#[tokio::test]
async fn zero_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zero = weir_queue::QueueConfig {
        default_partitions: 0,
        ..crate::config(dir.path())
    };
    let err = weir_queue::Queue::open(zero).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::InvalidSetting {
                setting: "default_partitions",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "default_partitions must be at least 1");

    let q = open(dir.path()).await;
    let err = q.create_topic("t", 0).unwrap_err();
    assert_eq!(err.to_string(), "partitions must be at least 1");
    assert!(q.topics().is_empty(), "nothing was created");
    q.create_topic("one", 1).unwrap();
    let err = q.create_topic("one", 0).unwrap_err();
    assert!(matches!(err, QueueError::InvalidSetting { .. }), "{err}");
}

#[tokio::test]
async fn group_settings_keep_what_a_subscriber_leaves_out_and_refuse_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let ask = |visibility_timeout, max_deliveries, start| GroupOverrides {
        visibility_timeout,
        max_deliveries,
        start,
    };
    let defaults = q.config().group;
    let none = ask(None, None, StartAt::Latest);
    assert_eq!(
        q.group_settings("t", "g", none).unwrap(),
        GroupConfig {
            start: StartAt::Latest,
            ..defaults
        },
        "a group not open starts from the queue's defaults"
    );
    let mine = q
        .group_settings(
            "t",
            "g",
            ask(Some(Duration::from_secs(60)), Some(9), StartAt::Earliest),
        )
        .unwrap();
    let _c = q.subscribe("t", "g", member("c", mine)).unwrap();
    let kept = q
        .group_settings("t", "g", ask(None, Some(2), StartAt::Earliest))
        .unwrap();
    assert_eq!(
        (
            kept.visibility_timeout,
            kept.max_deliveries,
            kept.max_unacked
        ),
        (Duration::from_secs(60), 2, defaults.max_unacked)
    );

    let cases = [
        (
            ask(Some(Duration::ZERO), None, StartAt::Earliest),
            "visibility_timeout must be longer than zero",
        ),
        (
            ask(None, Some(0), StartAt::Earliest),
            "max_deliveries must be at least 1",
        ),
    ];
    for (overrides, want) in cases {
        let err = q.group_settings("t", "g", overrides).unwrap_err();
        assert!(matches!(err, QueueError::InvalidSetting { .. }), "{err}");
        assert_eq!(err.to_string(), want);
    }
}
