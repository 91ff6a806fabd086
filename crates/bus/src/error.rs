//! The bus's one error type, classified so callers know whether to retry.

/// What went wrong talking to a transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// The request itself is wrong (a bad name, a message too large, a
    /// malformed id): retrying it cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The topic, group or message does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The transport refused our credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The transport cannot be reached or is overloaded: retry with backoff.
    #[error("{0}")]
    Unavailable(String),
    /// The transport failed (storage, a bug): retrying is unlikely to help.
    #[error("{0}")]
    Internal(String),
    /// This handle was closed.
    #[error("the bus is closed")]
    Closed,
}

impl BusError {
    /// Whether the same call may work if made again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;
