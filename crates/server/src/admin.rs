//! Looking after the queue: stats with rates, dead letters and redrive,
//! health and readiness.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::IntoParams;
use weir_api::wire::{
    self, DeadLetter, DeadLettersResponse, ErrorBody, HealthResponse, RedriveRequest,
    RedriveResponse, StatsResponse,
};
use weir_bus::queue_wire::{to_wire, wire_stats};
use weir_queue::{
    GroupConfig, Message, MessageId, Queue, QueueError, Record, StartAt, SubscribeOptions,
    dead_letter, dead_letter_topic,
};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

/// The consumer group redrive reads dead-letter topics with.
pub(crate) const REDRIVE_GROUP: &str = "weir-redrive";

/// Topics and consumer groups: depth, pending, in flight, dead letters and
/// rates.
#[utoipa::path(get, path = "/api/v1/queue/stats", tag = "queue",
    responses((status = 200, description = "Every topic and group", body = StatsResponse)))]
pub(crate) async fn stats(State(st): State<AppState>) -> Result<Json<StatsResponse>, ApiError> {
    let stats = st.queue.stats()?;
    let mut out = wire_stats(&stats);
    st.rates.fill(Instant::now(), &mut out);
    Ok(Json(out))
}

/// Per-second rates over the interval between two stats calls at least a
/// second apart.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    state: Mutex<RateState>,
}

#[derive(Debug, Default)]
struct RateState {
    at: Option<Instant>,
    totals: HashMap<String, u64>,
    rates: HashMap<String, f64>,
}

impl Rates {
    fn fill(&self, now: Instant, stats: &mut StatsResponse) {
        let mut totals = HashMap::new();
        for t in &stats.topics {
            totals.insert(format!("p/{}", t.topic), t.published_total);
        }
        for g in &stats.consumer_groups {
            let key = format!("{}/{}", g.topic, g.consumer_group);
            totals.insert(format!("d/{key}"), g.delivered_total);
            totals.insert(format!("a/{key}"), g.acked_total);
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = st.at.map(|at| now.duration_since(at));
        if elapsed.is_none_or(|e| e >= Duration::from_secs(1)) {
            let secs = elapsed.map_or(0.0, |e| e.as_secs_f64());
            let rates = totals
                .iter()
                .map(|(k, &v)| {
                    let before = st.totals.get(k).copied().unwrap_or(v);
                    let rate = if secs > 0.0 {
                        v.saturating_sub(before) as f64 / secs
                    } else {
                        0.0
                    };
                    (k.clone(), rate)
                })
                .collect();
            *st = RateState {
                at: Some(now),
                totals,
                rates,
            };
        }
        let rate = |k: String| st.rates.get(&k).copied().unwrap_or(0.0);
        for t in &mut stats.topics {
            t.publish_rate = rate(format!("p/{}", t.topic));
        }
        for g in &mut stats.consumer_groups {
            let key = format!("{}/{}", g.topic, g.consumer_group);
            g.delivery_rate = rate(format!("d/{key}"));
            g.ack_rate = rate(format!("a/{key}"));
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterQuery {
    /// The topic whose dead letters to list (not the `.dlq` name).
    topic: String,
    /// At most this many, oldest first (default 100, at most 10000).
    limit: Option<usize>,
}

/// Lists the dead letters of a topic, oldest first, with their reason and
/// origin. Redriven messages stay listed until retention removes them.
#[utoipa::path(get, path = "/api/v1/queue/dlq", tag = "queue",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "The dead letters, perhaps none", body = DeadLettersResponse),
        (status = 400, description = "Bad topic name", body = ErrorBody),
    ))]
pub(crate) async fn dead_letters(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeadLettersResponse>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(list_dead_letters(&st.queue, &q.topic, limit)?))
}

/// The oldest `limit` dead letters of `topic`, with reason and origin.
pub fn list_dead_letters(
    queue: &Queue,
    topic: &str,
    limit: usize,
) -> Result<DeadLettersResponse, QueueError> {
    weir_queue::validate_name("topic", topic)?;
    let dlq = dead_letter_topic(topic);
    let mut messages = Vec::new();
    for partition in 0.. {
        let mut from = 0;
        loop {
            let records = match queue.read(&dlq, partition, from, 1 << 20) {
                Ok(r) => r,
                Err(QueueError::UnknownTopic(_) | QueueError::NoSuchPartition { .. }) => {
                    return Ok(DeadLettersResponse {
                        topic: topic.to_string(),
                        dead_letter_topic: dlq,
                        messages: finish(messages, limit),
                    });
                }
                Err(e) => return Err(e),
            };
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in records {
                let id = MessageId {
                    partition,
                    offset: r.offset,
                };
                messages.push(letter_of(id, &r.record));
            }
            if messages.len() >= limit * 2 {
                // Enough from this partition; later ones are newer.
                break;
            }
        }
    }
    unreachable!("the partition loop returns")
}

fn finish(mut messages: Vec<(i64, DeadLetter)>, limit: usize) -> Vec<DeadLetter> {
    messages.sort_by_key(|(ts, _)| *ts);
    messages.into_iter().take(limit).map(|(_, d)| d).collect()
}

fn letter_of(id: MessageId, record: &Record) -> (i64, DeadLetter) {
    let header = |name: &str| {
        record
            .headers
            .iter()
            .rev()
            .find(|h| h.name == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    let origin_topic = header(dead_letter::ORIGIN_TOPIC).unwrap_or_default();
    let origin_id = header(dead_letter::ORIGIN_PARTITION)
        .zip(header(dead_letter::ORIGIN_OFFSET))
        .map(|(p, o)| format!("{p}-{o}"));
    let delivery_count = header(dead_letter::DELIVERY_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut original = record.clone();
    original
        .headers
        .retain(|h| !dead_letter::is_dead_letter_header(&h.name));
    if let Some(ts) = header(dead_letter::ORIGIN_TIMESTAMP).and_then(|t| t.parse().ok()) {
        original.timestamp = ts;
    }
    // The message as it was: its id in its own topic when known.
    let mut message = to_wire(&origin_topic, id, &original, delivery_count);
    if let Some(origin) = &origin_id {
        message.id = origin.clone();
    }
    let letter = DeadLetter {
        id: id.to_string(),
        reason: header(dead_letter::REASON).unwrap_or_default(),
        detail: header(dead_letter::DETAIL),
        origin_topic,
        origin_id,
        consumer_group: header(dead_letter::ORIGIN_GROUP),
        delivery_count,
        timestamp: wire::format_timestamp(record.timestamp),
        message,
    };
    (record.timestamp, letter)
}

/// Publishes a topic's dead letters back to it, oldest first, as new
/// messages without the dead-letter headers; each is acked in the
/// dead-letter topic (group `weir-redrive`) only after it is republished.
#[utoipa::path(post, path = "/api/v1/queue/dlq/redrive", tag = "queue",
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "How many were published back", body = RedriveResponse),
        (status = 400, description = "Bad JSON or topic name", body = ErrorBody),
    ))]
pub(crate) async fn redrive(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<RedriveRequest>,
) -> Result<Json<RedriveResponse>, ApiError> {
    let redriven = redrive_dead_letters(&st.queue, &req.topic, req.max).await?;
    Ok(Json(RedriveResponse { redriven }))
}

/// Publishes up to `max` (default all) dead letters of `topic` back to it;
/// returns how many.
pub async fn redrive_dead_letters(
    queue: &Queue,
    topic: &str,
    max: Option<usize>,
) -> Result<usize, QueueError> {
    weir_queue::validate_name("topic", topic)?;
    let dlq = dead_letter_topic(topic);
    if !queue.topics().contains(&dlq) {
        return Ok(0);
    }
    let consumer = queue.subscribe(
        &dlq,
        REDRIVE_GROUP,
        SubscribeOptions {
            consumer_id: "redrive".into(),
            group: GroupConfig {
                start: StartAt::Earliest,
                ..queue.config().group
            },
        },
    )?;
    let max = max.unwrap_or(usize::MAX);
    let mut redriven = 0;
    while redriven < max {
        let deliveries = consumer
            .receive((max - redriven).min(500), Duration::ZERO)
            .await?;
        if deliveries.is_empty() {
            break;
        }
        let ids: Vec<MessageId> = deliveries.iter().map(|d| d.id).collect();
        let messages: Vec<Message> = deliveries
            .into_iter()
            .map(|d| {
                let mut record = d.record;
                record
                    .headers
                    .retain(|h| !dead_letter::is_dead_letter_header(&h.name));
                Message {
                    key: record.key,
                    headers: record.headers,
                    payload: record.payload,
                    timestamp: None,
                }
            })
            .collect();
        let count = messages.len();
        queue.publish_batch(topic, messages).await?;
        consumer.ack(&ids).await?;
        redriven += count;
    }
    tracing::info!(topic, redriven, "dead letters redriven");
    Ok(redriven)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
pub(crate) async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// Readiness: 503 once shutdown has begun.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Serving", body = HealthResponse),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
pub(crate) async fn ready(State(st): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    if st.shutdown.is_cancelled() {
        return Err(ApiError::unavailable("the broker is shutting down"));
    }
    Ok(Json(HealthResponse {
        status: "ready".into(),
    }))
}
