//! Options shared by every subcommand that opens the embedded queue.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use weir_queue::{Fsync, QueueConfig};

/// Where the embedded queue keeps its data and how durable it is.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct QueueOptions {
    /// Data directory of the embedded queue.
    #[arg(long, env = "WEIR_DATA", default_value = "./weir-data")]
    pub(crate) data: PathBuf,
    /// When writes reach the disk: `always`, `every <duration>` (e.g.
    /// `every 5ms`) or `never`.
    #[arg(long, env = "WEIR_FSYNC", default_value = "every 5ms", value_parser = parse_fsync)]
    pub(crate) fsync: Fsync,
    /// Partitions of topics created on first use.
    #[arg(long, env = "WEIR_PARTITIONS", default_value_t = 4)]
    pub(crate) partitions: u32,
}

impl QueueOptions {
    pub(crate) fn config(&self) -> QueueConfig {
        QueueConfig {
            fsync: self.fsync,
            default_partitions: self.partitions.max(1),
            ..QueueConfig::new(&self.data)
        }
    }

    pub(crate) async fn open(&self) -> anyhow::Result<weir_queue::Queue> {
        weir_queue::Queue::open(self.config())
            .await
            .with_context(|| format!("opening the queue in {}", self.data.display()))
    }
}

pub(crate) fn parse_fsync(s: &str) -> anyhow::Result<Fsync> {
    Fsync::parse(s).ok_or_else(|| {
        anyhow!("expected always, never or every <duration> (like every 5ms), not {s:?}")
    })
}

pub(crate) fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    weir_log::parse_duration(s)
        .ok_or_else(|| anyhow!("expected a duration like 250ms, 5s or 2m, not {s:?}"))
}
