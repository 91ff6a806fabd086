//! [`StoreError`]: what went wrong writing to or reading from a store,
//! classified so the collector knows whether to retry.

/// A store's failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL or its options cannot be used.
    #[error("{0}")]
    Url(String),
    /// The store cannot be reached, is busy or had a transient failure
    /// (connection lost, lock timeout, serialization conflict, disk full
    /// that may clear): the same write may work later.
    #[error("{0}")]
    Unavailable(String),
    /// The request is wrong (a bad query parameter): retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The store refused the write for good (a constraint, corruption, a
    /// schema newer than this build): retrying is unlikely to help.
    #[error("{0}")]
    Fatal(String),
    /// This kind of store cannot answer queries (CSV is write-only).
    #[error("{0}")]
    Unsupported(String),
    /// The store was closed, or its writer stopped: no write can succeed
    /// on this handle any more.
    #[error("{0}")]
    Closed(String),
}

impl StoreError {
    /// Whether the same call may work if made again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
