//! The JSON bodies of the queue HTTP API, shared by the server and the client.
//!
//! Path-compatible with the GPU telemetry pipeline's queue service: publish
//! takes `{topic, payload, metadata}` and answers `{message_id, topic,
//! timestamp}`; deliveries carry `{id, topic, payload, headers, metadata,
//! timestamp, delivery_count}`. Weir adds keys, headers, payload encodings,
//! batch forms, reject, seek and dead letters.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::{RawValue, to_raw_value};
use utoipa::ToSchema;

/// The header under which a message's `metadata` is stored.
pub const METADATA_HEADER: &str = "weir-metadata";

/// How a payload's bytes are written in a JSON body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `payload` is the message itself, any JSON value (the default).
    #[default]
    Json,
    /// `payload` is a JSON string holding the message's text.
    Text,
    /// `payload` is a JSON string holding the message's bytes in base64.
    Base64,
}

impl Encoding {
    pub fn is_json(&self) -> bool {
        *self == Encoding::Json
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Text => "text",
            Encoding::Base64 => "base64",
        }
    }
}

/// Writes message bytes as a JSON payload: verbatim when they are one JSON
/// value, else as text, else as base64. Decoding gives the bytes back exactly.
pub fn encode_payload(bytes: &[u8]) -> (Box<RawValue>, Encoding) {
    // A raw carriage return would not survive an SSE `data:` line (it ends
    // one), so JSON holding one travels as text, escaped.
    if let Ok(raw) = serde_json::from_slice::<&RawValue>(bytes)
        && raw.get().len() == bytes.len()
        && !bytes.contains(&b'\r')
    {
        return (raw.to_owned(), Encoding::Json);
    }
    // `to_raw_value` writes the JSON string once and keeps it, unparsed.
    let (raw, encoding) = match std::str::from_utf8(bytes) {
        Ok(text) => (to_raw_value(text), Encoding::Text),
        Err(_) => (
            to_raw_value(&base64::engine::general_purpose::STANDARD.encode(bytes)),
            Encoding::Base64,
        ),
    };
    (raw.expect("a string serializes"), encoding)
}

/// The message bytes a JSON payload stands for. Takes the payload by value:
/// a JSON payload's text becomes the bytes without a copy.
pub fn decode_payload(payload: Box<RawValue>, encoding: Encoding) -> Result<Bytes, String> {
    match encoding {
        Encoding::Json => Ok(Bytes::from(String::from(Box::<str>::from(payload)))),
        Encoding::Text | Encoding::Base64 => {
            let text: String = serde_json::from_str(payload.get()).map_err(|_| {
                format!(
                    "payload must be a JSON string with payload_encoding {}",
                    encoding.name()
                )
            })?;
            if encoding == Encoding::Text {
                Ok(Bytes::from(text))
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| format!("payload is not valid base64: {e}"))
            }
        }
    }
}

/// A message's headers as the wire carries them: a map, and the metadata
/// apart. Of repeated names the first value wins; the first
/// [`METADATA_HEADER`] becomes the metadata when it holds one JSON value,
/// and otherwise stays a plain header. [`join_metadata`] undoes it.
pub fn split_metadata(
    headers: impl IntoIterator<Item = (String, String)>,
) -> (BTreeMap<String, String>, Option<Box<RawValue>>) {
    let mut map = BTreeMap::new();
    let mut metadata = None;
    for (name, value) in headers {
        if name != METADATA_HEADER {
            map.entry(name).or_insert(value);
        } else if metadata.is_none() && !map.contains_key(METADATA_HEADER) {
            // As for payloads: a raw CR would end an SSE `data:` line, so
            // metadata holding one travels as a plain (escaped) header.
            match serde_json::from_str::<&RawValue>(&value) {
                Ok(json) if !value.contains('\r') => metadata = Some(json.to_owned()),
                _ => {
                    map.insert(name, value);
                }
            }
        }
    }
    (map, metadata)
}

/// A wire message's headers and metadata as one list, the metadata under
/// [`METADATA_HEADER`] (replacing a header of that name), in name order.
pub fn join_metadata(
    mut headers: BTreeMap<String, String>,
    metadata: Option<Box<RawValue>>,
) -> Vec<(String, String)> {
    if let Some(metadata) = metadata {
        headers.insert(
            METADATA_HEADER.to_string(),
            String::from(Box::<str>::from(metadata)),
        );
    }
    headers.into_iter().collect()
}

/// Times travel as RFC 3339; one definition serves the API and telemetry.
pub use weir_telemetry::time::{format_timestamp, parse_timestamp};

/// `POST /api/v1/queue/publish`, and one item of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishRequest {
    /// Required on `/publish`; in a batch it may come from the `topic` query
    /// parameter instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The message: any JSON value, stored as its JSON text.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Encoding::is_json")]
    pub payload_encoding: Encoding,
    /// Messages with the same key keep their order (same partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Any JSON value, delivered back with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
}

/// Where a published message landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// `PARTITION-OFFSET`, the id to ack or nack the message with.
    pub message_id: String,
    pub topic: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// `POST /api/v1/queue/publish/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishBatchResponse {
    pub count: usize,
    /// One per message, in the order sent.
    pub results: Vec<PublishResponse>,
}

/// A delivered message: the `data` of an SSE `message` event, and one item
/// of a `/receive` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WireMessage {
    /// `PARTITION-OFFSET`.
    pub id: String,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Encoding::is_json")]
    pub payload_encoding: Encoding,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
    /// RFC 3339.
    pub timestamp: String,
    /// 1 on the first delivery.
    pub delivery_count: u32,
}

/// The `data` of the SSE `connected` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Connected {
    pub consumer_id: String,
}

/// `GET /api/v1/queue/receive`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiveResponse {
    pub messages: Vec<WireMessage>,
}

/// `POST /api/v1/queue/ack`, `/nack` and `/reject`: one id or a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SettleRequest {
    pub topic: String,
    pub consumer_group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ids: Vec<String>,
    /// `/nack` only: deliver again after this long (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `/reject` only: why, stored with the dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What settling one id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettleStatus {
    /// Acked, given back, or dead-lettered, as asked.
    Done,
    /// It was already acked or dead-lettered: nothing changed.
    AlreadyDone,
    /// The group has not received this message (yet).
    NotDelivered,
    /// Its lease expired or it was given back: it will be delivered again.
    NotLeased,
}

/// One id's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SettleResult {
    pub message_id: String,
    pub status: SettleStatus,
}

/// The answer to a settle request with a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SettleResponse {
    pub results: Vec<SettleResult>,
}

/// `POST /api/v1/queue/seek`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeekRequest {
    pub topic: String,
    pub consumer_group: String,
    pub to: SeekTarget,
}

/// Where a group moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeekTarget {
    Earliest,
    Latest,
    /// Every partition to its first message at or after this time.
    TimestampMs(i64),
    /// One partition to an offset.
    Offset {
        partition: u32,
        offset: u64,
    },
}

/// `GET /api/v1/queue/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsResponse {
    pub topics: Vec<TopicStats>,
    pub consumer_groups: Vec<GroupStats>,
}

/// One topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopicStats {
    pub topic: String,
    pub partitions: u32,
    /// Messages its slowest group has not yet acked (all retained messages
    /// when it has no group).
    pub queue_depth: u64,
    /// Messages retained.
    pub messages: u64,
    pub bytes: u64,
    /// Messages in `<topic>.dlq`.
    pub dead_letter_count: u64,
    /// Published since the broker started.
    pub published_total: u64,
    /// Messages per second over the last few seconds.
    pub publish_rate: f64,
}

/// One consumer group on one topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupStats {
    pub consumer_group: String,
    pub topic: String,
    pub consumer_count: u64,
    /// Not yet acked or dead-lettered, in flight included.
    pub pending_messages: u64,
    pub in_flight: u64,
    pub delivered_total: u64,
    pub acked_total: u64,
    pub redelivered_total: u64,
    pub dead_lettered_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unacked_age_ms: Option<u64>,
    /// Deliveries per second over the last few seconds.
    pub delivery_rate: f64,
    /// Acks per second over the last few seconds.
    pub ack_rate: f64,
}

/// `GET /api/v1/queue/dlq`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLettersResponse {
    pub topic: String,
    pub dead_letter_topic: String,
    pub messages: Vec<DeadLetter>,
}

/// A message in a dead-letter topic and why it is there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// Its id in the dead-letter topic.
    pub id: String,
    /// `delivery_limit` or `rejected`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub origin_topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    pub delivery_count: u32,
    /// When it was dead-lettered, RFC 3339.
    pub timestamp: String,
    pub message: WireMessage,
}

/// `POST /api/v1/queue/dlq/redrive`: publish dead letters back to their
/// topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RedriveRequest {
    pub topic: String,
    /// At most this many (default: all there are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RedriveResponse {
    pub redriven: usize,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    pub status: String,
}

/// Every error answer: a short code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`, `conflict`,
    /// `payload_too_large`, `overloaded`, `unavailable` or `internal`.
    pub error: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_byte_for_byte() {
        let cases: &[(&[u8], Encoding)] = &[
            (br#"{"a": 1}"#, Encoding::Json),
            (b"42", Encoding::Json),
            (br#""quoted""#, Encoding::Json),
            (b"hello world", Encoding::Text),
            (b" 42", Encoding::Text),
            (b"{\"a\":1} ", Encoding::Text),
            (b"", Encoding::Text),
            (b"{\"a\":\r\n1}", Encoding::Text),
            (&[0xff, 0x00, 0x10], Encoding::Base64),
        ];
        for &(bytes, want) in cases {
            let (raw, encoding) = encode_payload(bytes);
            assert_eq!(encoding, want, "{bytes:?}");
            assert_eq!(decode_payload(raw, encoding).unwrap(), bytes, "{bytes:?}");
        }
    }

    #[test]
    fn bad_encoded_payloads_say_why() {
        let raw = RawValue::from_string("5".into()).unwrap();
        assert!(decode_payload(raw, Encoding::Text).is_err());
        let raw = RawValue::from_string("\"!!\"".into()).unwrap();
        assert!(
            decode_payload(raw, Encoding::Base64)
                .unwrap_err()
                .contains("base64")
        );
    }

    #[test]
    fn metadata_is_the_first_weir_metadata_header_that_holds_json() {
        #[track_caller]
        fn check(headers: &[(&str, &str)], want: &[(&str, &str)], metadata: Option<&str>) {
            let owned = headers.iter().map(|&(n, v)| (n.to_string(), v.to_string()));
            let (map, got) = split_metadata(owned);
            let got_map: Vec<(&str, &str)> =
                map.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_eq!(got_map, want, "{headers:?}");
            assert_eq!(got.as_deref().map(RawValue::get), metadata, "{headers:?}");
            // Joining gives back the first value of every name, sorted.
            let mut first: Vec<(&str, &str)> = Vec::new();
            for &(n, v) in headers {
                if !first.iter().any(|&(seen, _)| seen == n) {
                    first.push((n, v));
                }
            }
            first.sort();
            let joined = join_metadata(map, got);
            let joined: Vec<(&str, &str)> = joined
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            assert_eq!(joined, first, "{headers:?}");
        }
        check(&[], &[], None);
        check(&[("a", "1"), ("b", "2")], &[("a", "1"), ("b", "2")], None);
        check(
            &[("dup", "first"), ("dup", "second")],
            &[("dup", "first")],
            None,
        );
        check(
            &[("h", "v"), (METADATA_HEADER, r#"{"src": "x"}"#)],
            &[("h", "v")],
            Some(r#"{"src": "x"}"#),
        );
        check(
            &[(METADATA_HEADER, "42"), (METADATA_HEADER, "[1]")],
            &[],
            Some("42"),
        );
        check(
            &[(METADATA_HEADER, "not json"), (METADATA_HEADER, "[1]")],
            &[(METADATA_HEADER, "not json")],
            None,
        );
        check(&[(METADATA_HEADER, "")], &[(METADATA_HEADER, "")], None);
        // JSON with a raw CR stays a header: SSE would split it.
        check(
            &[(METADATA_HEADER, "{\"a\":\r1}")],
            &[(METADATA_HEADER, "{\"a\":\r1}")],
            None,
        );
    }

    #[test]
    fn joined_metadata_replaces_a_header_of_its_name() {
        let headers = BTreeMap::from([
            (METADATA_HEADER.to_string(), "old".to_string()),
            ("z".to_string(), "last".to_string()),
        ]);
        let metadata = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        assert_eq!(
            join_metadata(headers, Some(metadata)),
            [
                (METADATA_HEADER.to_string(), r#"{"a":1}"#.to_string()),
                ("z".to_string(), "last".to_string()),
            ]
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_763_900_000_123;
        let s = format_timestamp(ms);
        assert_eq!(s, "2025-11-23T12:13:20.123Z");
        assert_eq!(parse_timestamp(&s), Some(ms));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(format_timestamp(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp(-5), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn seek_targets_have_readable_json() {
        let t: SeekTarget = serde_json::from_str(r#""earliest""#).unwrap();
        assert_eq!(t, SeekTarget::Earliest);
        let t: SeekTarget = serde_json::from_str(r#"{"timestamp_ms": 5}"#).unwrap();
        assert_eq!(t, SeekTarget::TimestampMs(5));
        let t: SeekTarget =
            serde_json::from_str(r#"{"offset":{"partition":1,"offset":9}}"#).unwrap();
        assert_eq!(
            t,
            SeekTarget::Offset {
                partition: 1,
                offset: 9
            }
        );
    }
}
