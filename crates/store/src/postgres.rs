//! The PostgreSQL store: [`PgStore`], opened from a libpq URL
//! (`postgres://USER@HOST:PORT/DB`).
//!
//! Design constraints: several collectors may write to one database at
//! once, and a batch may be delivered again after a failure; so every
//! table has a natural key and every insert skips what is stored
//! (`ON CONFLICT DO NOTHING`), and rows are written in key order so that
//! concurrent transactions do not deadlock. One pool of
//! `StoreOptions::pool_size` connections serves writes and queries.
//!
//! Format: the tables of `postgres/0001_initial.sql`, the SQLite schema's
//! names and columns with PostgreSQL types (times as `TIMESTAMPTZ`,
//! labels as `JSONB`, ids as identities). Migrations are embedded and
//! applied on open, each in its own transaction under an advisory lock
//! (`postgres/migrate.rs`); a schema newer than this build is refused.
//!
//! Operations: [`Sink::write`] is one transaction per batch on one pooled
//! connection (`postgres/write.rs`); samples go in by `UNNEST` arrays
//! (default), binary `COPY` or row by row ([`PgInsert`]). Series, task and
//! resource ids are cached in memory once committed (one entry per
//! distinct series, never evicted). [`crate::Query`] reads with one
//! statement per answer.
//!
//! Recovery and durability: `write` returns once the transaction has
//! committed, which with the server's defaults (`fsync`,
//! `synchronous_commit = on`) means its WAL is on disk. A failed write
//! rolls back entirely and is classified (`postgres/error.rs`): a lost
//! connection, a server shutting down, a deadlock or serialization
//! failure, a full disk are [`StoreError::Unavailable`] for the caller to
//! retry, anything else [`StoreError::Fatal`]. A connection that failed
//! retryably is closed, not reused; the pool opens another. Retrying is
//! safe even when a lost connection leaves a commit's outcome unknown:
//! writing a batch again stores nothing twice. Nothing is retried inside
//! `write`.

mod error;
mod migrate;
mod query;
mod time;
mod write;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{Batch, PgInsert, Result, Sink, StoreError, StoreOptions, Written};
use error::Context;

/// How long connecting may take when the URL does not say
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write or query waits for a free connection.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long checking an idle connection before reuse may take.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL database as a [`Sink`] and a [`crate::Query`].
pub struct PgStore {
    pool: Pool,
    insert: PgInsert,
    /// The URL without its password, for messages.
    url: String,
    interned: Mutex<write::Interned>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .field("insert", &self.insert)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database `url` names (a libpq URL or key=value
    /// string) and migrates its schema.
    ///
    /// Errors: [`StoreError::Url`] for a URL that cannot be parsed or a
    /// pool of no connections; [`StoreError::Unavailable`] when the server
    /// cannot be reached now; [`StoreError::Fatal`] when it refuses (a
    /// bad password, no such database, a schema newer than this build).
    pub async fn open(url: &str, options: &StoreOptions) -> Result<PgStore> {
        let shown = error::redact(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            StoreError::Url(format!(
                "invalid PostgreSQL URL {shown}: {}",
                error::describe(&e)
            ))
        })?;
        if options.pool_size == 0 {
            return Err(StoreError::Url(format!(
                "{shown}: the pool needs at least one connection"
            )));
        }
        if config.get_application_name().is_none() {
            config.application_name("weir");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A connection whose peer vanished (a half-open TCP connection after
        // a failover) fails within about a minute instead of hanging a
        // write for the kernel's two hours.
        config
            .keepalives_idle(Duration::from_secs(20))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(4);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(60));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(5)))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Fatal(format!("{shown}: building the pool: {e}")))?;
        let mut client = pool
            .get()
            .await
            .context(|| format!("connecting to {shown}"))?;
        migrate::apply(&mut client)
            .await
            .context(|| format!("migrating {shown}"))?;
        drop(client);
        Ok(PgStore {
            pool,
            insert: options.pg_insert,
            url: shown,
            interned: Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl Sink for PgStore {
    async fn write(&self, batch: Arc<Batch>) -> Result<Written> {
        if batch.is_empty() {
            return Ok(Written::default());
        }
        let what = || format!("writing {} to {}", summary(&batch), self.url);
        let mut client = self.pool.get().await.context(what)?;
        let written = write::write(&mut client, &self.interned, self.insert, &batch).await;
        release(client, written).context(what)
    }

    fn exactly_once(&self) -> bool {
        true
    }

    async fn close(&self) -> Result<()> {
        self.pool.close();
        Ok(())
    }
}

/// Gives a connection back to the pool after a call on it — unless the
/// call failed retryably: then the connection may be broken before the
/// pool can tell (a server that terminated it, a reset), so it is closed
/// instead and the pool opens another when one is needed.
fn release<T>(client: deadpool_postgres::Client, result: Result<T>) -> Result<T> {
    if matches!(&result, Err(e) if e.is_retryable()) {
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

/// "1000 samples, 2 results, 1 failure": what a batch holds, for messages.
fn summary(batch: &Batch) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = Vec::new();
    if !batch.samples.is_empty() || (batch.results.is_empty() && batch.failures.is_empty()) {
        parts.push(plural(batch.samples.len(), "sample", "samples"));
    }
    if !batch.results.is_empty() {
        parts.push(plural(batch.results.len(), "result", "results"));
    }
    if !batch.failures.is_empty() {
        parts.push(plural(batch.failures.len(), "failure", "failures"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobFailure, Record};
    use weir_telemetry::Sample;

    #[test]
    fn summary_names_what_a_batch_holds() {
        let mut batch = Batch::new("t");
        assert_eq!(summary(&batch), "0 samples");
        batch.push(Record::Sample(Sample::new("m", 1.0, 0)));
        assert_eq!(summary(&batch), "1 sample");
        batch.push(Record::Failure(JobFailure {
            job_id: "j".into(),
            reason: "r".into(),
            error: "e".into(),
            worker: String::new(),
            job: String::new(),
            failed_at: 0,
        }));
        assert_eq!(summary(&batch), "1 sample, 1 failure");
    }
}
