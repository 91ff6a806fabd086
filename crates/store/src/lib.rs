//! Where telemetry lands: the sinks `weir collect` writes to and the
//! queries the API answers from them.
//!
//! - [`record`]: a message decoded by its shape into a [`Record`] — a
//!   telemetry sample, a Game of Life result or a refused job.
//! - [`Batch`]: records bound for one transaction, and the rows every
//!   backend derives from them alike ([`Batch::gpus`], [`Batch::usage`]).
//! - [`Sink`]: `write(batch)` in one transaction, durable when it returns.
//!   [`Query`]: GPUs, a GPU's telemetry, series, job results.
//! - [`open`] picks a backend by URL: `sqlite://PATH` ([`sqlite`], the
//!   default), `postgres://…` ([`postgres`]) or `csv://DIR` ([`csv`]).
//!
//! Schema (SQLite and PostgreSQL, migrations embedded and applied on open):
//! `series` (metric + labels, interned: one id per distinct pair, never
//! renumbered) and `samples` (series, ts, value) whose key `(series, ts)`
//! makes a redelivered sample harmless; `gpus` (uuid, index, device, model,
//! host, first and last seen); `job_results` keyed by (job, pow) and
//! `job_failures` by job; `resource_usage` (order, task, resource, ts,
//! value) with the lookup tables `tasks` and `resources`.
//!
//! Invariants:
//! - writing a batch twice stores what writing it once does (natural keys)
//!   in SQLite and PostgreSQL; CSV appends, so it is at-least-once and says
//!   so ([`Sink::exactly_once`]);
//! - a batch is one transaction: all of it is stored or none;
//! - `write` returns only once the batch is durable by the backend's rule;
//! - this crate knows no bus and no HTTP.

mod batch;
mod error;
pub mod query;
pub mod record;

pub mod csv;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

pub use batch::{Batch, GpuSeen, RESOURCES, Usage, usage_of};
pub use error::{Result, StoreError};
pub use query::{Gpu, Point, Query, ResultFilter, SeriesFilter, SeriesInfo, TelemetryQuery};
pub use record::{JobFailure, JobResult, Record, RecordError};

/// Writes batches. Cheap to share as `Arc<dyn Sink>`.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Writes `batch` in one transaction; returns once it is durable.
    async fn write(&self, batch: Arc<Batch>) -> Result<Written>;

    /// Whether writing a batch again changes nothing (natural keys), so
    /// redelivery leaves each sample stored exactly once.
    fn exactly_once(&self) -> bool;

    /// Finishes what is in hand and lets go of the store.
    async fn close(&self) -> Result<()>;
}

/// What one write stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Samples stored by this write.
    pub samples: u64,
    /// Samples that were already stored (a redelivery), left as they were.
    pub duplicates: u64,
    pub results: u64,
    pub failures: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, o: Written) {
        self.samples += o.samples;
        self.duplicates += o.duplicates;
        self.results += o.results;
        self.failures += o.failures;
    }
}

/// How PostgreSQL writes samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PgInsert {
    /// One multi-row `INSERT … SELECT FROM UNNEST($1, $2, $3)` per table:
    /// one round trip per batch, duplicates skipped by the key.
    #[default]
    Unnest,
    /// `COPY … FROM STDIN (FORMAT binary)` into a temporary table, then one
    /// `INSERT … SELECT … ON CONFLICT DO NOTHING`.
    Copy,
    /// One `INSERT` per row (prepared): the baseline users compare with.
    Rows,
}

/// How SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// The WAL is fsynced at every commit: an acked batch survives power
    /// loss.
    #[default]
    Full,
    /// The WAL is fsynced at checkpoints: an acked batch survives the
    /// process being killed but may be lost with the machine's power.
    Normal,
}

/// What [`open`] needs besides the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// PostgreSQL connections at most (default 4).
    pub pool_size: usize,
    pub pg_insert: PgInsert,
    pub synchronous: Synchronous,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 4,
            pg_insert: PgInsert::default(),
            synchronous: Synchronous::default(),
        }
    }
}

/// An open store: what writes to it and, except for CSV, what queries it.
#[derive(Debug, Clone)]
pub struct Store {
    pub sink: Arc<dyn Sink>,
    pub query: Option<Arc<dyn Query>>,
    /// The URL it was opened from, for messages.
    pub url: String,
}

/// Opens (creating and migrating where needed) the store a URL names:
/// `sqlite://PATH` (relative, or `sqlite:///abs/path`), `postgres://…` or
/// `postgresql://…` (a libpq URL), `csv://DIR`.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Store> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = Arc::new(sqlite::SqliteStore::open(path.as_ref(), options).await?);
        Ok(Store {
            sink: store.clone(),
            query: Some(store),
            url: url.to_string(),
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = Arc::new(postgres::PgStore::open(url, options).await?);
        Ok(Store {
            sink: store.clone(),
            query: Some(store),
            url: url.to_string(),
        })
    } else if let Some(dir) = url.strip_prefix("csv://") {
        let sink = Arc::new(csv::CsvSink::open(dir.as_ref()).await?);
        Ok(Store {
            sink,
            query: None,
            url: url.to_string(),
        })
    } else {
        Err(StoreError::Url(format!(
            "unsupported store URL {url:?}: expected sqlite://PATH, postgres://USER@HOST:PORT/DB or csv://DIR"
        )))
    }
}
