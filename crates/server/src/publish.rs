//! `POST /api/v1/queue/publish` and `/publish/batch`, and the conversions
//! between wire messages and queue records.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::IntoParams;
use weir_api::wire::{
    self, ErrorBody, METADATA_HEADER, PublishBatchResponse, PublishRequest, PublishResponse,
    WireMessage,
};
use weir_queue::{Message, MessageId, Published, QueueError, Record};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, RawBody};
use crate::state::AppState;

/// Publishes one message. `payload` may be any JSON value.
#[utoipa::path(post, path = "/api/v1/queue/publish", tag = "queue",
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Durable by the broker's fsync policy", body = PublishResponse),
        (status = 400, description = "Bad JSON, a missing field or a bad topic name", body = ErrorBody),
        (status = 413, description = "Message or body too large", body = ErrorBody),
    ))]
pub(crate) async fn publish(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<PublishResponse>, ApiError> {
    let topic = req
        .topic
        .clone()
        .ok_or_else(|| ApiError::bad_request("missing field `topic`"))?;
    let message = to_queue_message(req)?;
    let published = st.queue.publish(&topic, message).await?;
    Ok(Json(receipt(&topic, &published, &mut Stamps::default())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BatchQuery {
    /// Topic of the items that name none.
    topic: Option<String>,
}

/// Publishes many messages: a JSON array of publish requests, or NDJSON
/// (one request per line). Each topic's messages are appended together, in
/// order; nothing is published when any item is invalid.
#[utoipa::path(post, path = "/api/v1/queue/publish/batch", tag = "queue",
    params(BatchQuery),
    request_body(content = Vec<PublishRequest>, description = "A JSON array, or NDJSON with one request per line"),
    responses(
        (status = 200, description = "Every message is durable", body = PublishBatchResponse),
        (status = 400, description = "Bad JSON (with its line for NDJSON), a missing topic, an empty batch", body = ErrorBody),
        (status = 413, description = "Batch or body too large", body = ErrorBody),
    ))]
pub(crate) async fn publish_batch(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<BatchQuery>,
    RawBody(body): RawBody,
) -> Result<Json<PublishBatchResponse>, ApiError> {
    let items = parse_batch(&body)?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "a batch must hold at least one message",
        ));
    }
    // Group by topic, keeping each item's place for the answer.
    let mut groups: Vec<(String, Vec<usize>, Vec<Message>)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let count = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let topic = match item.topic.as_deref().or(q.topic.as_deref()) {
            Some(t) => t.to_string(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "item {i} names no topic, and the request has no ?topic="
                )));
            }
        };
        let message = to_queue_message(item).map_err(|e| ApiError {
            detail: format!("item {i}: {}", e.detail),
            ..e
        })?;
        match group_of.get(&topic) {
            Some(&g) => {
                groups[g].1.push(i);
                groups[g].2.push(message);
            }
            None => {
                weir_queue::validate_name("topic", &topic)?;
                group_of.insert(topic.clone(), groups.len());
                groups.push((topic, vec![i], vec![message]));
            }
        }
    }
    if groups.len() > 1 {
        // The queue checks sizes per topic as it appends; check them all
        // first so that no topic is written when another would be refused.
        let config = st.queue.config();
        for (_, _, messages) in &groups {
            let mut total = 0;
            for m in messages {
                let size = Record {
                    timestamp: 0,
                    key: m.key.clone(),
                    headers: m.headers.clone(),
                    payload: m.payload.clone(),
                }
                .encoded_len();
                if size > config.max_message_bytes {
                    return Err(QueueError::MessageTooLarge {
                        size,
                        limit: config.max_message_bytes,
                    }
                    .into());
                }
                total += size;
            }
            if total > config.max_batch_bytes {
                return Err(QueueError::BatchTooLarge {
                    size: total,
                    limit: config.max_batch_bytes,
                }
                .into());
            }
        }
    }
    let mut results = vec![None; count];
    let mut stamps = Stamps::default();
    for (topic, places, messages) in groups {
        let published = st.queue.publish_batch(&topic, messages).await?;
        for (place, p) in places.into_iter().zip(&published) {
            results[place] = Some(receipt(&topic, p, &mut stamps));
        }
    }
    let results: Vec<PublishResponse> = results.into_iter().flatten().collect();
    Ok(Json(PublishBatchResponse {
        count: results.len(),
        results,
    }))
}

/// A batch body: a JSON array, or NDJSON.
fn parse_batch(body: &[u8]) -> Result<Vec<PublishRequest>, ApiError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    if start.is_some_and(|i| body[i] == b'[') {
        return serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON array: {e}")));
    }
    let mut items = Vec::new();
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let item = serde_json::from_slice(line)
            .map_err(|e| ApiError::bad_request(format!("NDJSON line {}: {e}", n + 1)))?;
        items.push(item);
    }
    Ok(items)
}

/// A wire publish request as a queue message; metadata rides in a header.
pub(crate) fn to_queue_message(req: PublishRequest) -> Result<Message, ApiError> {
    let payload =
        wire::decode_payload(req.payload, req.payload_encoding).map_err(ApiError::bad_request)?;
    let mut message = Message::new(payload);
    message.key = req.key.map(Bytes::from);
    for (name, value) in req.headers {
        if name != METADATA_HEADER {
            message = message.with_header(name, value);
        }
    }
    if let Some(metadata) = req.metadata {
        message = message.with_header(METADATA_HEADER, metadata.get().to_string());
    }
    Ok(message)
}

/// A queue record as the wire message a consumer receives.
pub(crate) fn to_wire(
    topic: &str,
    id: MessageId,
    record: &Record,
    delivery_count: u32,
) -> WireMessage {
    let (payload, payload_encoding) = wire::encode_payload(&record.payload);
    let mut headers = BTreeMap::new();
    let mut metadata = None;
    for h in &record.headers {
        if h.name == METADATA_HEADER {
            metadata = std::str::from_utf8(&h.value)
                .ok()
                .and_then(|s| RawValue::from_string(s.to_string()).ok());
        } else {
            headers.insert(
                h.name.clone(),
                String::from_utf8_lossy(&h.value).into_owned(),
            );
        }
    }
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

/// Formats timestamps, remembering the last one: a batch shares its time.
#[derive(Debug, Default)]
struct Stamps {
    last: Option<(i64, String)>,
}

impl Stamps {
    fn format(&mut self, ms: i64) -> String {
        match &self.last {
            Some((at, s)) if *at == ms => s.clone(),
            _ => {
                let s = wire::format_timestamp(ms);
                self.last = Some((ms, s.clone()));
                s
            }
        }
    }
}

fn receipt(topic: &str, p: &Published, stamps: &mut Stamps) -> PublishResponse {
    PublishResponse {
        message_id: p.id.to_string(),
        topic: topic.to_string(),
        timestamp: stamps.format(p.timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_parse_as_arrays_or_ndjson_and_name_the_bad_line() {
        let items = parse_batch(br#" [{"topic":"a","payload":1},{"payload":{"x":2}}]"#).unwrap();
        assert_eq!(items.len(), 2);
        let items = parse_batch(b"{\"payload\":1}\r\n\n{\"payload\":\"two\"}\n").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].payload.get(), "\"two\"");
        let err = parse_batch(b"{\"payload\":1}\n{nope}\n").unwrap_err();
        assert!(err.detail.starts_with("NDJSON line 2:"), "{}", err.detail);
        assert!(parse_batch(b"").unwrap().is_empty());
    }

    #[test]
    fn metadata_rides_in_a_header_and_comes_back() {
        let req: PublishRequest = serde_json::from_str(
            r#"{"topic":"t","payload":{"gpu":0},"key":"k","headers":{"h":"v"},"metadata":{"source":"dcgm"}}"#,
        )
        .unwrap();
        let m = to_queue_message(req).unwrap();
        let record = Record {
            timestamp: 1_700_000_000_000,
            key: m.key,
            headers: m.headers,
            payload: m.payload,
        };
        let w = to_wire(
            "t",
            MessageId {
                partition: 1,
                offset: 7,
            },
            &record,
            2,
        );
        assert_eq!(w.id, "1-7");
        assert_eq!(w.payload.get(), r#"{"gpu":0}"#);
        assert_eq!(w.metadata.unwrap().get(), r#"{"source":"dcgm"}"#);
        assert_eq!(w.headers.len(), 1);
        assert_eq!(w.key.as_deref(), Some("k"));
        assert_eq!(w.delivery_count, 2);
    }
}
