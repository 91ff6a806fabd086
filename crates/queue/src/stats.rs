//! Counters and gauges a queue reports.

/// One topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicStats {
    pub topic: String,
    pub partitions: u32,
    /// Messages retained (end offset minus start offset, summed).
    pub messages: u64,
    pub bytes: u64,
    /// Messages published since the queue was opened.
    pub published_total: u64,
    /// Next offset of each partition.
    pub end_offsets: Vec<u64>,
}

/// One consumer group on one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub group: String,
    pub topic: String,
    pub consumers: usize,
    /// Messages not yet acked or dead-lettered, in flight included.
    pub depth: u64,
    pub in_flight: u64,
    pub delivered_total: u64,
    pub acked_total: u64,
    pub redelivered_total: u64,
    pub dead_lettered_total: u64,
    /// Age of the oldest message not yet acked or dead-lettered.
    pub oldest_unacked_age_ms: Option<u64>,
    /// Committed offset of each partition.
    pub committed: Vec<u64>,
}

/// Everything at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub topics: Vec<TopicStats>,
    pub groups: Vec<GroupStats>,
}
