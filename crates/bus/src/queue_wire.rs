//! The conversions between `weir-queue`'s types and `weir-api`'s wire
//! types, shared by the embedded backend ([`crate::embedded`]) and the
//! broker (`weir-server`), so that both give the same answers: a publish
//! request as a queue message and a stored record as the wire message a
//! consumer receives (the metadata riding in [`wire::METADATA_HEADER`] by
//! [`wire::split_metadata`]'s rule), settle outcomes, seek targets, start
//! positions and stats.

use std::collections::HashMap;

use bytes::Bytes;
use weir_api::Start;
use weir_api::wire::{
    self, GroupStats, PublishRequest, SeekTarget, SettleStatus, StatsResponse, TopicStats,
    WireMessage,
};
use weir_queue::{Header, Message, MessageId, Record, SeekTo, Settled, StartAt};

/// A publish request as a queue message (its topic is the caller's
/// business): the payload decoded to its bytes, the metadata stored under
/// [`wire::METADATA_HEADER`]. The error says what is wrong with the payload.
pub fn to_queue_message(request: PublishRequest) -> Result<Message, String> {
    let payload = wire::decode_payload(request.payload, request.payload_encoding)?;
    let headers = wire::join_metadata(request.headers, request.metadata)
        .into_iter()
        .map(|(name, value)| Header::new(name, value))
        .collect();
    Ok(Message {
        key: request.key.map(Bytes::from),
        headers,
        payload,
        timestamp: None,
    })
}

/// A stored record as the wire message a consumer of `topic` receives.
pub fn to_wire(topic: &str, id: MessageId, record: &Record, delivery_count: u32) -> WireMessage {
    let (payload, payload_encoding) = wire::encode_payload(&record.payload);
    let (headers, metadata) = wire::split_metadata(record.headers.iter().map(|h| {
        let value = String::from_utf8_lossy(&h.value).into_owned();
        (h.name.clone(), value)
    }));
    WireMessage {
        id: id.to_string(),
        topic: topic.to_string(),
        key: record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        payload,
        payload_encoding,
        headers,
        metadata,
        timestamp: wire::format_timestamp(record.timestamp),
        delivery_count,
    }
}

/// What settling one id did, as the wire says it.
pub fn settle_status(settled: Settled) -> SettleStatus {
    match settled {
        Settled::Done => SettleStatus::Done,
        Settled::AlreadyDone => SettleStatus::AlreadyDone,
        Settled::NotDelivered => SettleStatus::NotDelivered,
        Settled::NotLeased => SettleStatus::NotLeased,
    }
}

/// Where a seek moves a group, as the queue takes it.
pub fn seek_to(target: SeekTarget) -> SeekTo {
    match target {
        SeekTarget::Earliest => SeekTo::Earliest,
        SeekTarget::Latest => SeekTo::Latest,
        SeekTarget::TimestampMs(ms) => SeekTo::Timestamp(ms),
        SeekTarget::Offset { partition, offset } => SeekTo::Offset { partition, offset },
    }
}

/// Where a new group starts, as the queue takes it.
pub fn start_at(start: Start) -> StartAt {
    match start {
        Start::Earliest => StartAt::Earliest,
        Start::Latest => StartAt::Latest,
    }
}

/// The queue's stats as the wire writes them. A topic's `queue_depth` is
/// the depth of its slowest group (every retained message when it has no
/// group); rates are 0: the queue keeps totals, not rates.
pub fn wire_stats(stats: &weir_queue::Stats) -> StatsResponse {
    let messages: HashMap<&str, u64> = stats
        .topics
        .iter()
        .map(|t| (t.topic.as_str(), t.messages))
        .collect();
    let topics = stats
        .topics
        .iter()
        .map(|t| TopicStats {
            topic: t.topic.clone(),
            partitions: t.partitions,
            queue_depth: stats
                .groups
                .iter()
                .filter(|g| g.topic == t.topic)
                .map(|g| g.depth)
                .max()
                .unwrap_or(t.messages),
            messages: t.messages,
            bytes: t.bytes,
            dead_letter_count: messages
                .get(weir_queue::dead_letter_topic(&t.topic).as_str())
                .copied()
                .unwrap_or(0),
            published_total: t.published_total,
            publish_rate: 0.0,
        })
        .collect();
    let consumer_groups = stats
        .groups
        .iter()
        .map(|g| GroupStats {
            consumer_group: g.group.clone(),
            topic: g.topic.clone(),
            consumer_count: g.consumers as u64,
            pending_messages: g.depth,
            in_flight: g.in_flight,
            delivered_total: g.delivered_total,
            acked_total: g.acked_total,
            redelivered_total: g.redelivered_total,
            dead_lettered_total: g.dead_lettered_total,
            oldest_unacked_age_ms: g.oldest_unacked_age_ms,
            delivery_rate: 0.0,
            ack_rate: 0.0,
        })
        .collect();
    StatsResponse {
        topics,
        consumer_groups,
    }
}

#[cfg(test)]
mod tests {
    use weir_api::wire::METADATA_HEADER;

    use super::*;

    fn topic(name: &str, messages: u64) -> weir_queue::TopicStats {
        weir_queue::TopicStats {
            topic: name.to_string(),
            partitions: 4,
            messages,
            bytes: messages * 100,
            published_total: messages + 1,
            end_offsets: vec![messages, 0, 0, 0],
        }
    }

    fn group(name: &str, topic: &str, depth: u64) -> weir_queue::GroupStats {
        weir_queue::GroupStats {
            group: name.to_string(),
            topic: topic.to_string(),
            consumers: 2,
            depth,
            in_flight: 1,
            delivered_total: 7,
            acked_total: 5,
            redelivered_total: 2,
            dead_lettered_total: 1,
            oldest_unacked_age_ms: Some(1_500),
            committed: vec![0; 4],
        }
    }

    #[test]
    fn stats_take_the_slowest_group_and_the_dead_letter_topic() {
        let stats = weir_queue::Stats {
            topics: vec![
                topic("idle", 3),
                topic("jobs", 10),
                topic("jobs.dlq", 2),
                topic("lonely.dlq", 4),
            ],
            groups: vec![
                group("fast", "jobs", 1),
                group("slow", "jobs", 8),
                group("reader", "jobs.dlq", 0),
            ],
        };
        let wire = wire_stats(&stats);
        // (topic, partitions, queue_depth, messages, dead_letter_count)
        let got: Vec<(&str, u32, u64, u64, u64)> = wire
            .topics
            .iter()
            .map(|t| {
                let name = t.topic.as_str();
                (
                    name,
                    t.partitions,
                    t.queue_depth,
                    t.messages,
                    t.dead_letter_count,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("idle", 4, 3, 3, 0),
                ("jobs", 4, 8, 10, 2),
                ("jobs.dlq", 4, 0, 2, 0),
                ("lonely.dlq", 4, 4, 4, 0),
            ]
        );
        let jobs = &wire.topics[1];
        assert_eq!((jobs.bytes, jobs.published_total), (1_000, 11));
        assert_eq!(jobs.publish_rate, 0.0);

        let slow = &wire.consumer_groups[1];
        assert_eq!(
            *slow,
            GroupStats {
                consumer_group: "slow".into(),
                topic: "jobs".into(),
                consumer_count: 2,
                pending_messages: 8,
                in_flight: 1,
                delivered_total: 7,
                acked_total: 5,
                redelivered_total: 2,
                dead_lettered_total: 1,
                oldest_unacked_age_ms: Some(1_500),
                delivery_rate: 0.0,
                ack_rate: 0.0,
            }
        );
        assert_eq!(wire.consumer_groups.len(), 3);
    }

    #[test]
    fn empty_stats_stay_empty() {
        assert_eq!(
            wire_stats(&weir_queue::Stats::default()),
            StatsResponse::default()
        );
    }

    #[test]
    fn settle_outcomes_keep_their_meaning() {
        let cases = [
            (Settled::Done, SettleStatus::Done),
            (Settled::AlreadyDone, SettleStatus::AlreadyDone),
            (Settled::NotDelivered, SettleStatus::NotDelivered),
            (Settled::NotLeased, SettleStatus::NotLeased),
        ];
        for (settled, status) in cases {
            assert_eq!(settle_status(settled), status);
        }
    }

    #[test]
    fn seek_targets_and_starts_keep_their_meaning() {
        let cases = [
            (SeekTarget::Earliest, SeekTo::Earliest),
            (SeekTarget::Latest, SeekTo::Latest),
            (SeekTarget::TimestampMs(-5), SeekTo::Timestamp(-5)),
            (
                SeekTarget::Offset {
                    partition: 3,
                    offset: 9,
                },
                SeekTo::Offset {
                    partition: 3,
                    offset: 9,
                },
            ),
        ];
        for (target, to) in cases {
            assert_eq!(seek_to(target), to);
        }
        assert_eq!(start_at(Start::Earliest), StartAt::Earliest);
        assert_eq!(start_at(Start::Latest), StartAt::Latest);
    }

    /// A publish request stored as a record and delivered back.
    fn round_trip(request: serde_json::Value) -> WireMessage {
        let request: PublishRequest = serde_json::from_value(request).unwrap();
        let m = to_queue_message(request).unwrap();
        let record = Record {
            timestamp: 1_700_000_000_000,
            key: m.key,
            headers: m.headers,
            payload: m.payload,
        };
        let id = MessageId {
            partition: 1,
            offset: 7,
        };
        to_wire("t", id, &record, 2)
    }

    #[test]
    fn metadata_rides_in_a_header_and_comes_back() {
        let w = round_trip(serde_json::json!({
            "topic": "t", "payload": {"gpu": 0}, "key": "k",
            "headers": {"h": "v"}, "metadata": {"source": "dcgm"},
        }));
        assert_eq!(w.id, "1-7");
        assert_eq!(w.payload.get(), r#"{"gpu":0}"#);
        assert_eq!(w.metadata.unwrap().get(), r#"{"source":"dcgm"}"#);
        assert_eq!(w.headers.len(), 1);
        assert_eq!(w.key.as_deref(), Some("k"));
        assert_eq!(w.timestamp, "2023-11-14T22:13:20.000Z");
        assert_eq!(w.delivery_count, 2);
    }

    #[test]
    fn a_weir_metadata_header_that_is_not_json_stays_a_header() {
        let w = round_trip(serde_json::json!({
            "payload": "x", "headers": {METADATA_HEADER: "not json"},
        }));
        assert!(w.metadata.is_none());
        assert_eq!(w.headers[METADATA_HEADER], "not json");
        // The typed field wins over a header of its name.
        let w = round_trip(serde_json::json!({
            "payload": "x", "headers": {METADATA_HEADER: "not json"}, "metadata": [1],
        }));
        assert_eq!(w.metadata.unwrap().get(), "[1]");
        assert!(w.headers.is_empty());
    }

    #[test]
    fn bad_payloads_say_why() {
        let request: PublishRequest =
            serde_json::from_str(r#"{"payload":5,"payload_encoding":"base64"}"#).unwrap();
        let e = to_queue_message(request).unwrap_err();
        assert!(e.contains("JSON string"), "{e}");
    }
}
