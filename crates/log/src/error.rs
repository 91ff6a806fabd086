//! The log's one error type.

use std::path::PathBuf;

use crate::batch::BatchError;

/// What can go wrong with a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Damage that recovery must not paper over: a bad batch followed by good
    /// data, a gap between segments, or a bad batch found by a read.
    #[error("corrupt log segment {} at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: usize, limit: usize },
    #[error("an empty batch cannot be appended")]
    EmptyBatch,
    /// An earlier fsync or write failed; the log refuses writes until reopened
    /// because what reached the disk is unknown.
    #[error("log {} refuses writes after an earlier failure: {reason}", dir.display())]
    Failed { dir: PathBuf, reason: String },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: &BatchError,
    ) -> LogError {
        LogError::Corrupt {
            path: path.into(),
            position,
            reason: reason.to_string(),
        }
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            LogError::Io { source, .. } => {
                matches!(source.kind(), Interrupted | WouldBlock | TimedOut)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
