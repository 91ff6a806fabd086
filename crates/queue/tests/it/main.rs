//! Integration tests of the embedded queue, each on its own temp directory.

mod groups;
mod model;
mod restart;

use std::time::Duration;

use weir_queue::{Fsync, GroupConfig, Queue, QueueConfig, SubscribeOptions};

pub(crate) fn config(dir: &std::path::Path) -> QueueConfig {
    QueueConfig {
        fsync: Fsync::Never,
        default_partitions: 2,
        ..QueueConfig::new(dir)
    }
}

pub(crate) async fn open(dir: &std::path::Path) -> Queue {
    Queue::open(config(dir)).await.expect("open queue")
}

pub(crate) fn member(id: &str, group: GroupConfig) -> SubscribeOptions {
    SubscribeOptions {
        consumer_id: id.to_string(),
        group,
    }
}

pub(crate) fn rules(visibility: Duration, max_deliveries: u32) -> GroupConfig {
    GroupConfig {
        visibility_timeout: visibility,
        max_deliveries,
        ..GroupConfig::default()
    }
}
