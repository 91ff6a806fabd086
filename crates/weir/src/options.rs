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

/// Which transport a command talks to.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BusOptions {
    /// The bus: `http://host:port` (a `weir broker`) or `embedded:///path`
    /// (the queue in that directory, in this process).
    #[arg(long, env = "WEIR_BUS", default_value = "http://127.0.0.1:8080")]
    pub(crate) bus: String,
    /// Bearer token of a broker started with `--auth-token`.
    #[arg(long, env = "WEIR_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,
    /// `embedded://` only: when writes reach the disk.
    #[arg(long, env = "WEIR_FSYNC", default_value = "every 5ms", value_parser = parse_fsync)]
    pub(crate) fsync: Fsync,
    /// `embedded://` only: partitions of topics created on first use.
    #[arg(long, env = "WEIR_PARTITIONS", default_value_t = 4)]
    pub(crate) partitions: u32,
}

impl BusOptions {
    pub(crate) fn connect_options(&self) -> weir_bus::ConnectOptions {
        weir_bus::ConnectOptions {
            auth_token: self.auth_token.clone(),
            partitions: Some(self.partitions.max(1)),
            fsync: Some(self.fsync),
        }
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<std::sync::Arc<dyn weir_bus::Bus>> {
        weir_bus::connect(&self.bus, &self.connect_options())
            .await
            .with_context(|| format!("connecting to the bus {}", self.bus))
    }
}
