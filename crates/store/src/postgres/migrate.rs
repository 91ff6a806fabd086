//! The schema's migrations, embedded, applied on open.
//!
//! `schema_migrations` lists the versions applied. Each missing migration
//! runs in its own transaction holding a transaction-level advisory lock,
//! so collectors that start together take turns: the first applies it,
//! the others find it applied. A database whose newest version is beyond
//! this build's is refused (an older build must not write to a schema it
//! does not know).

use deadpool_postgres::Client;

use super::error::Context;
use crate::{Result, StoreError};

/// One migration: its version (the file's number), name and SQL.
#[derive(Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("0001_initial.sql"),
}];

/// The advisory lock key migrations hold ("weir" "migr" in ASCII).
const LOCK: i64 = 0x7765_6972_6d69_6772;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// The newest version this build knows.
pub(crate) fn newest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database's schema up to [`newest`].
pub(crate) async fn apply(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.context(|| "beginning")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .context(|| "taking the migration lock")?;
    tx.batch_execute(CREATE_TABLE)
        .await
        .context(|| "creating schema_migrations")?;
    check_not_newer(&tx).await?;
    tx.commit().await.context(|| "creating schema_migrations")?;

    for m in MIGRATIONS {
        let tx = client.transaction().await.context(|| "beginning")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await
            .context(|| "taking the migration lock")?;
        let applied = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .context(|| "reading schema_migrations")?;
        if applied.is_some() {
            tx.commit()
                .await
                .context(|| "releasing the migration lock")?;
            continue;
        }
        let what = || format!("applying migration {} ({})", m.version, m.name);
        tx.batch_execute(m.sql).await.context(what)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .context(what)?;
        tx.commit().await.context(what)?;
        tracing::info!(version = m.version, name = m.name, "applied a migration");
    }
    Ok(())
}

async fn check_not_newer(tx: &deadpool_postgres::Transaction<'_>) -> Result<()> {
    let row = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .context(|| "reading schema_migrations")?;
    match row.get::<_, Option<i32>>(0) {
        Some(version) if version > newest() => Err(StoreError::Fatal(format!(
            "the database's schema is version {version}, newer than this build knows \
             (at most {}): run a newer Weir",
            newest()
        ))),
        _ => Ok(()),
    }
}
