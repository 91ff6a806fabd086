//! What the owner of a queue chooses.

use std::path::PathBuf;
use std::time::Duration;

use weir_log::Fsync;

/// Configuration of an embedded queue: one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub data_dir: PathBuf,
    /// Durability of topics and group journals (see `weir_log::Fsync`).
    pub fsync: Fsync,
    pub segment_bytes: u64,
    pub retention_bytes: Option<u64>,
    pub retention_age: Option<Duration>,
    /// Partitions of a topic created on first use.
    pub default_partitions: u32,
    /// The largest message (payload, key and headers), default 1 MiB.
    pub max_message_bytes: usize,
    /// The largest publish batch, default 16 MiB.
    pub max_batch_bytes: usize,
    /// Defaults for consumer groups.
    pub group: GroupConfig,
}

impl QueueConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> QueueConfig {
        QueueConfig {
            data_dir: data_dir.into(),
            fsync: Fsync::Every(Duration::from_millis(5)),
            segment_bytes: 128 << 20,
            retention_bytes: None,
            retention_age: Some(Duration::from_secs(7 * 86_400)),
            default_partitions: 4,
            max_message_bytes: 1 << 20,
            max_batch_bytes: 16 << 20,
            group: GroupConfig::default(),
        }
    }
}

/// How a consumer group treats its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// A delivery not acked within this is delivered again.
    pub visibility_timeout: Duration,
    /// Deliveries before a message goes to `<topic>.dlq`.
    pub max_deliveries: u32,
    /// Messages per partition a group holds read but not done; past it, the
    /// group reads no further until the oldest are settled.
    pub max_unacked: usize,
    /// Where a group with no history starts.
    pub start: StartAt,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_unacked: 100_000,
            start: StartAt::Earliest,
        }
    }
}

/// What one subscriber asks of its group's settings; what it leaves out
/// stays as the group has it (see [`crate::Queue::group_settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOverrides {
    pub visibility_timeout: Option<Duration>,
    pub max_deliveries: Option<u32>,
    /// Where the group starts if it has no history yet.
    pub start: StartAt,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// Where [`crate::Queue::seek`] moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Earliest,
    Latest,
    /// One partition to an offset.
    Offset {
        partition: u32,
        offset: u64,
    },
    /// Every partition to its first message at or after this time (ms).
    Timestamp(i64),
}
