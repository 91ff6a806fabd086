//! Conversions between the bus's types and the wire's: a message as a
//! publish request, a publish answer as a receipt, a `message` event as a
//! delivery, and a client error as the bus error a caller can act on.

use bytes::Bytes;
use weir_api::ClientError;
use weir_api::wire::{self, PublishRequest, PublishResponse, WireMessage};

use crate::message::{Acker, Delivery, Message, Receipt};
use crate::{BusError, Result};

/// A bus message as a batch item (its topic comes from the request); its
/// headers split by [`wire::split_metadata`].
pub(super) fn publish_request(message: Message) -> PublishRequest {
    let (payload, payload_encoding) = wire::encode_payload(&message.payload);
    let (headers, metadata) = wire::split_metadata(message.headers);
    PublishRequest {
        topic: None,
        payload,
        payload_encoding,
        key: message
            .key
            .map(|k| String::from_utf8_lossy(&k).into_owned()),
        headers,
        metadata,
    }
}

pub(super) fn receipt(answer: PublishResponse) -> Result<Receipt> {
    let timestamp_ms = wire::parse_timestamp(&answer.timestamp).ok_or_else(|| {
        BusError::Internal(format!(
            "the broker answered a bad timestamp {:?}",
            answer.timestamp
        ))
    })?;
    Ok(Receipt {
        id: answer.message_id,
        timestamp_ms,
    })
}

/// The `data` of a `message` event as a delivery.
pub(super) fn decode_delivery(data: &str, acker: &Acker) -> Result<Delivery, String> {
    let message: WireMessage =
        serde_json::from_str(data).map_err(|e| format!("not a message: {e}"))?;
    delivery(message, acker)
}

/// A wire message as a delivery; its metadata becomes the
/// [`wire::METADATA_HEADER`] header again ([`wire::join_metadata`]).
fn delivery(message: WireMessage, acker: &Acker) -> Result<Delivery, String> {
    let payload = wire::decode_payload(message.payload, message.payload_encoding)?;
    let timestamp_ms = wire::parse_timestamp(&message.timestamp)
        .ok_or_else(|| format!("bad timestamp {:?}", message.timestamp))?;
    let headers = wire::join_metadata(message.headers, message.metadata);
    Ok(Delivery {
        id: message.id,
        topic: message.topic,
        key: message.key.map(Bytes::from),
        headers,
        payload,
        timestamp_ms,
        delivery_count: message.delivery_count,
        acker: acker.clone(),
    })
}

/// A client error as the bus classifies it: what the client calls
/// retryable is `Unavailable`, the rest by status. The message names the
/// status and the broker's own words.
pub(super) fn bus_error(e: ClientError) -> BusError {
    let message = e.to_string();
    match e {
        _ if e.is_retryable() => BusError::Unavailable(message),
        ClientError::Url(_) => BusError::Url(message),
        _ => match e.status() {
            Some(400 | 413) => BusError::Invalid(message),
            Some(401 | 403) => BusError::Unauthorized(message),
            Some(404) => BusError::NotFound(message),
            _ => BusError::Internal(message),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_api::wire::{Encoding, METADATA_HEADER};

    use super::*;
    use crate::message::{Settle, Settler};
    use crate::{SettleStatus, queue_wire};

    /// A settler for deliveries built in tests; never called.
    #[derive(Debug)]
    struct NoSettler;

    #[async_trait::async_trait]
    impl Settler for NoSettler {
        async fn settle(&self, _: &[String], _: Settle) -> Result<Vec<SettleStatus>> {
            unreachable!("tests do not settle these")
        }
    }

    fn acker() -> Acker {
        Acker::new(Arc::new(NoSettler))
    }

    /// What the broker does with a publish request and gives back as a
    /// delivery: its own conversions (`queue_wire::to_queue_message`, then
    /// `to_wire` of the stored record), with JSON on both sides.
    fn through_broker(item: &PublishRequest) -> WireMessage {
        let item: PublishRequest =
            serde_json::from_str(&serde_json::to_string(item).unwrap()).unwrap();
        let stored = queue_wire::to_queue_message(item).unwrap();
        let record = weir_queue::Record {
            timestamp: 1_763_900_000_123,
            key: stored.key,
            headers: stored.headers,
            payload: stored.payload,
        };
        let id = weir_queue::MessageId {
            partition: 2,
            offset: 17,
        };
        let message = queue_wire::to_wire("t", id, &record, 1);
        serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap()
    }

    /// Publishes `message` through the wire and the broker's storage rules
    /// and checks the delivery gives back `want_headers` and everything
    /// else exactly.
    fn check(message: Message, want_encoding: Encoding, want_headers: &[(&str, &str)]) {
        let item = publish_request(message.clone());
        assert_eq!(item.payload_encoding, want_encoding, "{message:?}");
        let d = delivery(through_broker(&item), &acker()).unwrap();
        assert_eq!(d.payload, message.payload, "payload bytes of {message:?}");
        assert_eq!(d.key, message.key, "key of {message:?}");
        let mut got: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        got.sort();
        let mut want = want_headers.to_vec();
        want.sort();
        assert_eq!(got, want, "headers of {message:?}");
        assert_eq!((d.id.as_str(), d.topic.as_str()), ("2-17", "t"));
        assert_eq!((d.timestamp_ms, d.delivery_count), (1_763_900_000_123, 1));
    }

    #[test]
    fn messages_survive_the_wire_and_the_broker() {
        check(
            Message::new(r#"{"gpu": 3, "temp_c": 71.5}"#)
                .with_key("gpu-3")
                .with_header("trace-id", "t-1")
                .with_header(METADATA_HEADER, r#"{"source":"dcgm","n":[1,2]}"#),
            Encoding::Json,
            &[
                ("trace-id", "t-1"),
                (METADATA_HEADER, r#"{"source":"dcgm","n":[1,2]}"#),
            ],
        );
        check(
            Message::new("plain text")
                .with_header("a", "1")
                .with_header("b", "2"),
            Encoding::Text,
            &[("a", "1"), ("b", "2")],
        );
        check(
            Message::new(vec![0u8, 159, 255, 1]).with_key("k"),
            Encoding::Base64,
            &[],
        );
        check(Message::new(""), Encoding::Text, &[]);
        check(
            Message::new("42").with_header(METADATA_HEADER, "\"just a string\""),
            Encoding::Json,
            &[(METADATA_HEADER, "\"just a string\"")],
        );
        check(
            Message::new("x")
                .with_header("dup", "first")
                .with_header("dup", "second"),
            Encoding::Text,
            &[("dup", "first")],
        );
    }

    #[test]
    fn metadata_that_is_not_json_travels_as_a_header() {
        let message = Message::new("x").with_header(METADATA_HEADER, "not json");
        let item = publish_request(message.clone());
        assert!(item.metadata.is_none());
        assert_eq!(item.headers[METADATA_HEADER], "not json");
        check(message, Encoding::Text, &[(METADATA_HEADER, "not json")]);
    }

    #[test]
    fn broken_wire_messages_say_why() {
        let good = r#"{"id":"0-1","topic":"t","payload":1,"headers":{},"timestamp":"2025-11-23T12:13:20.123Z","delivery_count":1}"#;
        assert_eq!(decode_delivery(good, &acker()).unwrap().payload, "1");
        let cases = [
            ("{}", "not a message"),
            (
                &*good.replace("2025-11-23T12:13:20.123Z", "soon"),
                "bad timestamp",
            ),
            (
                &*good.replace(
                    r#""payload":1"#,
                    r#""payload":1,"payload_encoding":"base64""#,
                ),
                "payload",
            ),
        ];
        for (data, want) in cases {
            let e = decode_delivery(data, &acker()).unwrap_err();
            assert!(e.contains(want), "{data}: {e}");
        }
        let bad_time = PublishResponse {
            message_id: "0-0".into(),
            topic: "t".into(),
            timestamp: "never".into(),
        };
        assert!(matches!(receipt(bad_time), Err(BusError::Internal(_))));
    }

    #[test]
    fn client_errors_map_to_what_a_caller_can_do() {
        let status = |status| ClientError::Status {
            status,
            error: "e".into(),
            detail: "d".into(),
        };
        let cases = [
            (ClientError::Connect("refused".into()), "unavailable"),
            (ClientError::Decode("junk".into()), "internal"),
            (ClientError::Url("ftp".into()), "url"),
            (status(400), "invalid"),
            (status(413), "invalid"),
            (status(401), "unauthorized"),
            (status(404), "not found"),
            (status(409), "internal"),
            (status(429), "unavailable"),
            (status(500), "internal"),
            (status(502), "unavailable"),
            (status(503), "unavailable"),
            (status(504), "unavailable"),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            let got = match bus_error(e) {
                BusError::Unavailable(m) => ("unavailable", m),
                BusError::Internal(m) => ("internal", m),
                BusError::Url(m) => ("url", m),
                BusError::Invalid(m) => ("invalid", m),
                BusError::Unauthorized(m) => ("unauthorized", m),
                BusError::NotFound(m) => ("not found", m),
                BusError::Closed => ("closed", String::new()),
            };
            assert_eq!(got, (want, text.clone()), "{text}");
        }
    }
}
