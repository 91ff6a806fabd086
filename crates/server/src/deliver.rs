//! Deliveries out: `GET /api/v1/queue/subscribe` (Server-Sent Events) and
//! `GET /api/v1/queue/receive` (long-poll batches).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use utoipa::IntoParams;
use weir_api::wire::{Connected, ErrorBody, ReceiveResponse, WireMessage};
use weir_bus::queue_wire::to_wire;
use weir_queue::{Consumer, Delivery, GroupConfig, GroupOverrides, StartAt, SubscribeOptions};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::lease::Holder;
use crate::state::AppState;

/// Messages asked of the queue at once for one SSE stream.
const SSE_BATCH: usize = 256;

/// How long one wait of an SSE stream on the queue lasts before it looks
/// around again (shutdown is watched throughout).
const SSE_POLL: Duration = Duration::from_secs(5);

/// Who consumes, and how the group treats its messages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConsumeQuery {
    topic: String,
    consumer_group: String,
    /// Names this member in stats; generated when absent.
    consumer_id: Option<String>,
    /// Where a new group starts: `earliest` (default) or `latest`.
    start: Option<String>,
    /// A delivery not settled within this comes again (default 30000).
    visibility_timeout_ms: Option<u64>,
    /// Deliveries before a message goes to `<topic>.dlq` (default 5).
    max_deliveries: Option<u32>,
    /// SSE only: unsettled messages this stream holds at most (default 100).
    max_in_flight: Option<usize>,
    /// Receive only: messages in one answer (default 100, at most 10000).
    max: Option<usize>,
    /// Receive only: how long to wait for the first message (default 0).
    wait_ms: Option<u64>,
}

impl ConsumeQuery {
    fn join(&self, st: &AppState) -> Result<(Consumer, GroupConfig), ApiError> {
        let start = match self.start.as_deref() {
            None | Some("earliest") => StartAt::Earliest,
            Some("latest") => StartAt::Latest,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "start must be earliest or latest, not {other:?}"
                )));
            }
        };
        // Settings left out keep the group's current ones: one client
        // cannot reset another's visibility timeout by omission.
        let group = st.queue.group_settings(
            &self.topic,
            &self.consumer_group,
            GroupOverrides {
                visibility_timeout: self.visibility_timeout_ms.map(Duration::from_millis),
                max_deliveries: self.max_deliveries,
                start,
            },
        )?;
        let consumer_id = self.consumer_id.clone().unwrap_or_else(|| {
            static NEXT: AtomicU64 = AtomicU64::new(1);
            format!("consumer-{}", NEXT.fetch_add(1, Ordering::Relaxed))
        });
        let consumer = st.queue.subscribe(
            &self.topic,
            &self.consumer_group,
            SubscribeOptions { consumer_id, group },
        )?;
        Ok((consumer, group))
    }
}

/// Streams messages as Server-Sent Events: `connected` first, then one
/// `message` event per delivery with the message id on the `id:` line, and
/// keep-alive comments. Settle each with `/ack`, `/nack` or `/reject`.
#[utoipa::path(get, path = "/api/v1/queue/subscribe", tag = "queue",
    params(ConsumeQuery),
    responses(
        (status = 200, description = "An event stream: `event: connected` with {consumer_id}, then `event: message` with a WireMessage", content_type = "text/event-stream", body = WireMessage),
        (status = 400, description = "Bad parameter or name", body = ErrorBody),
        (status = 503, description = "Too many subscribers, or shutting down", body = ErrorBody),
    ))]
pub(crate) async fn subscribe(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ConsumeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if st.shutdown.is_cancelled() {
        return Err(ApiError::unavailable("the broker is shutting down"));
    }
    let permit = Arc::clone(&st.subscribers)
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded("too many subscribers; retry later"))?;
    let (consumer, group) = q.join(&st)?;
    let limit = q.max_in_flight.unwrap_or(st.config.max_in_flight);
    let holder = st.leases.register(&q.topic, &q.consumer_group, limit);
    let connected = Event::default().event("connected").data(
        serde_json::to_string(&Connected {
            consumer_id: consumer.id().to_string(),
        })
        .expect("serializable"),
    );
    tracing::info!(topic = %q.topic, group = %q.consumer_group, consumer = consumer.id(),
        limit, "SSE subscriber connected");
    let stream = SseStream {
        consumer,
        holder,
        visibility: group.visibility_timeout,
        pending: VecDeque::from([connected]),
        st: st.clone(),
        _permit: permit,
    };
    let keep_alive = KeepAlive::new()
        .interval(st.config.keep_alive)
        .text("keep-alive");
    Ok(Sse::new(futures_util::stream::unfold(stream, SseStream::next)).keep_alive(keep_alive))
}

/// One SSE connection's state, driven by [`SseStream::next`].
#[derive(Debug)]
struct SseStream {
    consumer: Consumer,
    holder: Arc<Holder>,
    visibility: Duration,
    pending: VecDeque<Event>,
    st: AppState,
    _permit: OwnedSemaphorePermit,
}

impl SseStream {
    /// The next event, or `None` at shutdown (which ends the response).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, SseStream)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            let shutdown = self.st.shutdown.clone();
            let freed = self.holder.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let (room, next_expiry) = self.holder.room(Instant::now());
            if room == 0 {
                let until = next_expiry.unwrap_or_else(|| Instant::now() + SSE_POLL);
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = &mut freed => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
                continue;
            }
            let received = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = self.consumer.receive(room.min(SSE_BATCH), SSE_POLL) => r,
            };
            match received {
                Ok(deliveries) => {
                    let expires = Instant::now() + self.visibility;
                    for d in deliveries {
                        self.holder.hold(d.id, expires);
                        self.pending.push_back(message_event(&d));
                    }
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    let body = serde_json::json!({"error": e.code, "detail": e.detail});
                    self.pending
                        .push_back(Event::default().event("error").data(body.to_string()));
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

fn message_event(d: &Delivery) -> Event {
    let wire = to_wire(&d.topic, d.id, &d.record, d.delivery_count);
    Event::default()
        .event("message")
        .id(wire.id.clone())
        .data(serde_json::to_string(&wire).expect("serializable"))
}

/// Leases up to `max` messages, waiting up to `wait_ms` for the first.
#[utoipa::path(get, path = "/api/v1/queue/receive", tag = "queue",
    params(ConsumeQuery),
    responses(
        (status = 200, description = "The messages leased, perhaps none", body = ReceiveResponse),
        (status = 400, description = "Bad parameter or name", body = ErrorBody),
    ))]
pub(crate) async fn receive(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ConsumeQuery>,
) -> Result<Json<ReceiveResponse>, ApiError> {
    let (consumer, _) = q.join(&st)?;
    let max = q.max.unwrap_or(100).clamp(1, 10_000);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(st.config.max_wait);
    let deliveries = tokio::select! {
        _ = st.shutdown.cancelled() => Vec::new(),
        r = consumer.receive(max, wait) => r?,
    };
    let messages = deliveries
        .iter()
        .map(|d| to_wire(&d.topic, d.id, &d.record, d.delivery_count))
        .collect();
    Ok(Json(ReceiveResponse { messages }))
}
