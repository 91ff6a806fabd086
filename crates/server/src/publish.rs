//! `POST /api/v1/queue/publish` and `/publish/batch`. A request becomes a
//! queue message by `weir_bus::queue_wire::to_queue_message`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use weir_api::wire::{self, ErrorBody, PublishBatchResponse, PublishRequest, PublishResponse};
use weir_bus::queue_wire::to_queue_message;
use weir_queue::{Message, Published, QueueError, Record};

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
    ApiJson(mut req): ApiJson<PublishRequest>,
) -> Result<Json<PublishResponse>, ApiError> {
    let topic = req
        .topic
        .take()
        .ok_or_else(|| ApiError::bad_request("missing field `topic`"))?;
    let message = to_queue_message(req).map_err(ApiError::bad_request)?;
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
        let message =
            to_queue_message(item).map_err(|e| ApiError::bad_request(format!("item {i}: {e}")))?;
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
                let size = Record::encoded_len_of(m.key.as_ref(), &m.headers, &m.payload);
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
}
