//! The queue's one error type.

use std::path::PathBuf;

use weir_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid {kind} name {name:?}: it {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: usize, limit: usize },
    #[error("a batch must hold at least one message")]
    EmptyBatch,
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("unknown consumer group {group:?} on topic {topic:?}")]
    UnknownGroup { topic: String, group: String },
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        topic: String,
        partitions: u32,
        partition: u32,
    },
    #[error("topic {topic:?} already exists with {existing} partitions, not {requested}")]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    /// A setting that cannot work, like a topic of zero partitions.
    #[error("{setting} must be {rule}")]
    InvalidSetting {
        setting: &'static str,
        rule: &'static str,
    },
    #[error("malformed message id {0:?}: expected PARTITION-OFFSET, like 0-42")]
    BadMessageId(String),
    #[error("data directory {} is in use by another Weir process", dir.display())]
    Locked { dir: PathBuf },
    #[error("{context}: {source}")]
    Log {
        context: String,
        #[source]
        source: LogError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("damaged consumer group journal {}: {reason}", path.display())]
    Journal { path: PathBuf, reason: String },
    #[error("the queue is closed")]
    Closed,
}

impl QueueError {
    /// Whether the caller may retry the same call and expect it to work.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Log { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

pub(crate) trait LogContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, QueueError>;
}

impl<T> LogContext<T> for Result<T, LogError> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, QueueError> {
        self.map_err(|source| QueueError::Log {
            context: context(),
            source,
        })
    }
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;
