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
    /// The bus: `http://host:port` (a `weir broker`), `embedded:///path`
    /// (the queue in that directory, in this process) or
    /// `kafka://host:port[,host:port…]` (a Kafka cluster) [default:
    /// http://127.0.0.1:8080].
    #[arg(long, env = "WEIR_BUS")]
    pub(crate) bus: Option<String>,
    /// Bearer token of a broker started with `--auth-token`.
    #[arg(long, env = "WEIR_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,
    /// `embedded://` only: when writes reach the disk.
    #[arg(long, env = "WEIR_FSYNC", default_value = "every 5ms", value_parser = parse_fsync)]
    pub(crate) fsync: Fsync,
    /// `embedded://` and `kafka://`: partitions of topics created on first
    /// use.
    #[arg(long, env = "WEIR_PARTITIONS", default_value_t = 4)]
    pub(crate) partitions: u32,
    /// `kafka://` only: a librdkafka property for every client, like
    /// `security.protocol=SASL_SSL` or `linger.ms=20` (repeat for more);
    /// `replication.factor=N` sets that of the topics Weir creates.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) kafka_options: Vec<(String, String)>,
}

/// `key=value`, split at the first `=`.
pub(crate) fn parse_key_value(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(anyhow!("expected KEY=VALUE, like linger.ms=20, not {s:?}")),
    }
}

/// Where a component looks for its bus when told nothing: a local broker.
const DEFAULT_BUS: &str = "http://127.0.0.1:8080";

impl BusOptions {
    pub(crate) fn url(&self) -> &str {
        self.bus.as_deref().unwrap_or(DEFAULT_BUS)
    }

    pub(crate) fn connect_options(&self) -> weir_bus::ConnectOptions {
        weir_bus::ConnectOptions {
            auth_token: self.auth_token.clone(),
            partitions: Some(self.partitions.max(1)),
            fsync: Some(self.fsync),
            kafka_options: self.kafka_options.clone(),
        }
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<std::sync::Arc<dyn weir_bus::Bus>> {
        weir_bus::connect(self.url(), &self.connect_options())
            .await
            .with_context(|| format!("connecting to the bus {}", self.url()))
    }
}

/// How Game of Life sizes run: shared by `weir gol` and `weir worker`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunOptions {
    /// `dense` (every cell, bit-packed, multi-threaded), `sparse` (cost
    /// follows the live cells) or `auto` (dense up to 2^11, sparse above).
    #[arg(long, env = "WEIR_GOL_ENGINE", default_value = "auto")]
    pub(crate) engine: weir_gol::Engine,
    /// Threads of the dense engine; `OMP_NUM_THREADS` when absent, else
    /// every core.
    #[arg(long, env = "WEIR_THREADS")]
    pub(crate) threads: Option<usize>,
    /// The most memory a dense board may take, in bytes.
    #[arg(long, env = "WEIR_MAX_MEMORY", default_value_t = weir_gol::RunConfig::default().max_dense_bytes)]
    pub(crate) max_memory: u64,
}

impl RunOptions {
    pub(crate) fn config(&self) -> weir_gol::RunConfig {
        let threads = self
            .threads
            .or_else(|| std::env::var("OMP_NUM_THREADS").ok()?.trim().parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
            .max(1);
        weir_gol::RunConfig {
            engine: self.engine,
            threads,
            max_dense_bytes: self.max_memory,
        }
    }
}

/// How a store is opened, besides its URL: shared by every command that
/// opens one.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreTuning {
    /// PostgreSQL: connections in the pool.
    #[arg(long, env = "WEIR_PG_POOL", default_value_t = weir_store::StoreOptions::default().pool_size)]
    pub(crate) pg_pool: usize,
    /// PostgreSQL: how samples are inserted: `unnest` (one multi-row
    /// statement per batch), `copy` (binary COPY) or `rows` (one INSERT per
    /// sample, the slow baseline).
    #[arg(long, env = "WEIR_PG_INSERT", default_value = "unnest", value_parser = parse_pg_insert)]
    pub(crate) pg_insert: weir_store::PgInsert,
    /// SQLite: `full` fsyncs every commit (an acked batch survives power
    /// loss); `normal` fsyncs at checkpoints (it survives a crash of weir).
    #[arg(long, env = "WEIR_SQLITE_SYNC", default_value = "full", value_parser = parse_synchronous)]
    pub(crate) sqlite_sync: weir_store::Synchronous,
}

impl StoreTuning {
    pub(crate) async fn open(&self, url: &str) -> anyhow::Result<weir_store::Store> {
        let options = weir_store::StoreOptions {
            pool_size: self.pg_pool.max(1),
            pg_insert: self.pg_insert,
            synchronous: self.sqlite_sync,
        };
        weir_store::open(url, &options)
            .await
            .with_context(|| format!("opening the store {url}"))
    }
}

fn parse_pg_insert(s: &str) -> anyhow::Result<weir_store::PgInsert> {
    use weir_store::PgInsert;
    match s {
        "unnest" => Ok(PgInsert::Unnest),
        "copy" => Ok(PgInsert::Copy),
        "rows" => Ok(PgInsert::Rows),
        _ => Err(anyhow!("expected unnest, copy or rows, not {s:?}")),
    }
}

fn parse_synchronous(s: &str) -> anyhow::Result<weir_store::Synchronous> {
    use weir_store::Synchronous;
    match s {
        "full" => Ok(Synchronous::Full),
        "normal" => Ok(Synchronous::Normal),
        _ => Err(anyhow!("expected full or normal, not {s:?}")),
    }
}

/// A member id for a consumer group when none is given: `HOST-PID`.
pub(crate) fn member_id(fallback_host: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| fallback_host.into());
    format!("{host}-{}", std::process::id())
}
