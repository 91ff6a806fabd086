//! [`ApiError`]: every failure at the HTTP edge becomes a status code and a
//! JSON body `{"error": "...", "detail": "..."}`. Internals are logged, not
//! leaked.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_api::wire::ErrorBody;
use weir_queue::QueueError;
use weir_store::StoreError;

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
        StatusCode::NOT_IMPLEMENTED => "not_implemented",
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid(detail) => ApiError::bad_request(detail),
            // Says which kind of store cannot answer, and nothing secret.
            StoreError::Unsupported(detail) => ApiError::new(StatusCode::NOT_IMPLEMENTED, detail),
            StoreError::Unavailable(_) | StoreError::Closed(_) => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::unavailable("the store is unavailable; retry later")
            }
            StoreError::Url(_) | StoreError::Fatal(_) => {
                tracing::error!(error = %e, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the server log has the cause",
                )
            }
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

    #[test]
    fn store_errors_map_to_statuses_and_hide_internals() {
        let check = |e: StoreError, status: StatusCode, code: &str| {
            let api = ApiError::from(e);
            assert_eq!((api.status, api.code), (status, code), "{api:?}");
            api
        };
        let api = check(
            StoreError::Invalid("limit must be between 1 and 100000, not 0".into()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
        assert!(api.detail.contains("limit"), "{}", api.detail);
        check(
            StoreError::Unsupported("a CSV store answers no queries".into()),
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
        );
        for e in [
            StoreError::Unavailable("reading in /secret/db: database is locked".into()),
            StoreError::Fatal("reading in /secret/db: malformed".into()),
            StoreError::Url("postgres://user:secret@host/db".into()),
        ] {
            let status = if e.is_retryable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let api = ApiError::from(e);
            assert_eq!(api.status, status, "{api:?}");
            assert!(!api.detail.contains("secret"), "{}", api.detail);
        }
    }
}
