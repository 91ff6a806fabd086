//! [`ApiError`]: every failure at the HTTP edge becomes a status code and a
//! JSON body `{"error": "...", "detail": "..."}`. Internals are logged, not
//! leaked.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_api::wire::ErrorBody;
use weir_queue::QueueError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// The short code in the body's `error` field.
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code_of(status),
            detail: detail.into(),
        }
    }

    /// Too much work in hand: 503 with code `overloaded`.
    pub(crate) fn overloaded(detail: impl Into<String>) -> ApiError {
        ApiError {
            code: "overloaded",
            ..ApiError::unavailable(detail)
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    pub(crate) fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            detail: self.detail,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        let status = match &e {
            QueueError::InvalidName { .. }
            | QueueError::EmptyBatch
            | QueueError::InvalidSetting { .. }
            | QueueError::BadMessageId(_)
            | QueueError::NoSuchPartition { .. } => StatusCode::BAD_REQUEST,
            QueueError::MessageTooLarge { .. } | QueueError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            QueueError::UnknownTopic(_) | QueueError::UnknownGroup { .. } => StatusCode::NOT_FOUND,
            QueueError::PartitionMismatch { .. } => StatusCode::CONFLICT,
            QueueError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "queue error");
            let detail = if status == StatusCode::SERVICE_UNAVAILABLE {
                "the queue is unavailable; retry later"
            } else {
                "internal error; the broker log has the cause"
            };
            ApiError::new(status, detail)
        } else {
            ApiError::new(status, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_errors_map_to_statuses_and_hide_internals() {
        let check = |e: QueueError, status: StatusCode| {
            let api = ApiError::from(e);
            assert_eq!(api.status, status, "{api:?}");
            api
        };
        check(QueueError::EmptyBatch, StatusCode::BAD_REQUEST);
        check(
            QueueError::InvalidSetting {
                setting: "max_deliveries",
                rule: "at least 1",
            },
            StatusCode::BAD_REQUEST,
        );
        check(
            QueueError::MessageTooLarge { size: 9, limit: 1 },
            StatusCode::PAYLOAD_TOO_LARGE,
        );
        check(QueueError::UnknownTopic("t".into()), StatusCode::NOT_FOUND);
        check(QueueError::Closed, StatusCode::SERVICE_UNAVAILABLE);
        let api = check(
            QueueError::Journal {
                path: "/secret/path".into(),
                reason: "bad".into(),
            },
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        assert!(!api.detail.contains("/secret"), "{}", api.detail);
        assert_eq!(api.code, "internal");
    }
}
