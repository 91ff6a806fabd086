//! Settling deliveries (`/ack`, `/nack`, `/reject`) and moving groups
//! (`/seek`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_api::SettleKind;
use weir_api::wire::{
    ErrorBody, HealthResponse, SeekRequest, SettleRequest, SettleResponse, SettleResult,
    SettleStatus,
};
use weir_bus::queue_wire::{seek_to, settle_status};
use weir_queue::{MessageId, Settled};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// Acks messages: they are done and never delivered again. Send
/// `message_id` for one (404 if the group never received it) or
/// `message_ids` for many (a status each).
#[utoipa::path(post, path = "/api/v1/queue/ack", tag = "queue",
    request_body = SettleRequest,
    responses(
        (status = 200, description = "`message_id`: a SettleResult; `message_ids`: a SettleResponse", body = SettleResponse),
        (status = 400, description = "Bad JSON or a malformed id", body = ErrorBody),
        (status = 404, description = "Unknown group, or a message the group has not received", body = ErrorBody),
    ))]
pub(crate) async fn ack(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SettleRequest>,
) -> Result<Response, ApiError> {
    settle(&st, req, SettleKind::Ack).await
}

/// Gives messages back to be delivered again, after `delay_ms` (default 0).
#[utoipa::path(post, path = "/api/v1/queue/nack", tag = "queue",
    request_body = SettleRequest,
    responses(
        (status = 200, description = "`message_id`: a SettleResult; `message_ids`: a SettleResponse", body = SettleResponse),
        (status = 400, description = "Bad JSON or a malformed id", body = ErrorBody),
        (status = 404, description = "Unknown group, or a message the group has not received", body = ErrorBody),
        (status = 409, description = "The message is not leased: its lease expired, it will come again", body = ErrorBody),
    ))]
pub(crate) async fn nack(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SettleRequest>,
) -> Result<Response, ApiError> {
    settle(&st, req, SettleKind::Nack).await
}

/// Sends messages straight to `<topic>.dlq` with `reason`.
#[utoipa::path(post, path = "/api/v1/queue/reject", tag = "queue",
    request_body = SettleRequest,
    responses(
        (status = 200, description = "`message_id`: a SettleResult; `message_ids`: a SettleResponse", body = SettleResponse),
        (status = 400, description = "Bad JSON or a malformed id", body = ErrorBody),
        (status = 404, description = "Unknown group, or a message the group has not received", body = ErrorBody),
    ))]
pub(crate) async fn reject(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SettleRequest>,
) -> Result<Response, ApiError> {
    settle(&st, req, SettleKind::Reject).await
}

async fn settle(st: &AppState, req: SettleRequest, how: SettleKind) -> Result<Response, ApiError> {
    let single = req.message_ids.is_empty();
    let texts: Vec<&String> = req.message_id.iter().chain(&req.message_ids).collect();
    if texts.is_empty() {
        return Err(ApiError::bad_request(
            "missing field `message_id` (or `message_ids`)",
        ));
    }
    let ids = texts
        .iter()
        .map(|t| t.parse::<MessageId>())
        .collect::<Result<Vec<_>, _>>()?;
    let (topic, group) = (req.topic.as_str(), req.consumer_group.as_str());
    let outcomes = match how {
        SettleKind::Ack => st.queue.ack(topic, group, &ids).await?,
        SettleKind::Nack => {
            let delay = Duration::from_millis(req.delay_ms.unwrap_or(0));
            st.queue.nack(topic, group, &ids, delay).await?
        }
        SettleKind::Reject => {
            let reason = req.reason.as_deref().unwrap_or("rejected by a consumer");
            st.queue.reject(topic, group, &ids, reason).await?
        }
    };
    st.leases.release(topic, group, &ids);
    if how == SettleKind::Nack {
        let n = outcomes.iter().filter(|o| **o == Settled::Done).count();
        st.metrics.count_nacks(topic, group, n as u64);
    }
    let results: Vec<SettleResult> = texts
        .iter()
        .zip(&outcomes)
        .map(|(id, o)| SettleResult {
            message_id: id.to_string(),
            status: settle_status(*o),
        })
        .collect();
    if !single {
        return Ok(Json(SettleResponse { results }).into_response());
    }
    let result = results.into_iter().next().expect("one id");
    match result.status {
        SettleStatus::Done | SettleStatus::AlreadyDone => Ok(Json(result).into_response()),
        SettleStatus::NotDelivered => Err(ApiError::not_found(format!(
            "message {} has not been delivered to group {group:?} of topic {topic:?}",
            result.message_id
        ))),
        SettleStatus::NotLeased => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "message {} is not leased (its lease expired or it was given back); it will be delivered again",
                result.message_id
            ),
        )),
    }
}

/// Moves a group to replay or skip messages.
#[utoipa::path(post, path = "/api/v1/queue/seek", tag = "queue",
    request_body = SeekRequest,
    responses(
        (status = 200, description = "Moved", body = HealthResponse),
        (status = 400, description = "Bad JSON or a partition the topic lacks", body = ErrorBody),
        (status = 404, description = "Unknown topic or group", body = ErrorBody),
    ))]
pub(crate) async fn seek(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SeekRequest>,
) -> Result<Json<HealthResponse>, ApiError> {
    st.queue
        .seek(&req.topic, &req.consumer_group, seek_to(req.to))?;
    Ok(Json(HealthResponse {
        status: "ok".into(),
    }))
}
