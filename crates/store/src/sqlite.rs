//! The SQLite store, Weir's default: one file, WAL mode, one writer.
//!
//! Design constraints: SQLite allows one writer at a time, so every write
//! of this process goes through one thread that owns the write connection
//! and its prepared statements; readers use their own connections (WAL lets
//! them read while the writer writes). Batches that arrive while a commit
//! is in progress are committed together (group commit): each batch is
//! still all-or-nothing — it runs inside its own savepoint, and one that
//! fails is rolled back alone — but they share one `COMMIT` and so one
//! fsync.
//!
//! On-disk format: the schema in `sqlite/0001_initial.sql` (see the crate
//! docs), migrations recorded in `schema_migrations` and applied on open.
//!
//! Durability: `write` returns after `COMMIT`. With [`Synchronous::Full`]
//! (the default) the WAL is fsynced at every commit, so an acked batch
//! survives power loss; with `Normal` it survives the process being killed
//! but not necessarily the machine losing power.
//!
//! Recovery: SQLite's own — a commit is atomic; a torn WAL frame is
//! discarded when the database is next opened.

mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::{Batch, Result, StoreError, StoreOptions, Synchronous, Written};

/// The schema, one migration per entry, applied in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "initial", include_str!("sqlite/0001_initial.sql"))];

/// How long a connection waits for another process's lock before it fails
/// with a retryable error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Batches committed together at most.
const GROUP_MAX: usize = 32;

/// An open SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<write::Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) and migrates
    /// the database at `path`.
    pub async fn open(path: &Path, options: &StoreOptions) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let synchronous = options.synchronous;
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_writer(&path, synchronous))
                .await
                .map_err(|e| StoreError::Fatal(format!("opening the SQLite store: {e}")))??
        };
        let (checkpoints, checkpointer) = spawn_checkpointer(&path)?;
        let (tx, rx) = mpsc::channel(GROUP_MAX * 2);
        let thread = std::thread::Builder::new()
            .name("weir-sqlite-writer".into())
            .spawn(move || {
                write::Writer::new(opened, checkpoints).run(rx);
                // The writer dropped its sender: the checkpointer's last pass.
                let _ = checkpointer.join();
            })
            .map_err(|e| StoreError::Fatal(format!("starting the SQLite writer: {e}")))?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            readers: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait::async_trait]
impl crate::Sink for SqliteStore {
    async fn write(&self, batch: Arc<Batch>) -> Result<Written> {
        let sender = self
            .writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or_else(|| StoreError::Closed("the SQLite store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(write::Job { batch, reply })
            .await
            .map_err(|_| StoreError::Closed("the SQLite writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Closed("the SQLite writer stopped mid-write".into()))?
    }

    fn exactly_once(&self) -> bool {
        true
    }

    async fn close(&self) -> Result<()> {
        drop(self.writer.lock().expect("writer lock").take());
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Fatal(format!("closing the SQLite store: {e}")))?
                .map_err(|_| StoreError::Fatal("the SQLite writer panicked".into()))?;
        }
        self.readers.lock().expect("readers lock").clear();
        Ok(())
    }
}

/// Opens the write connection: WAL, the chosen fsync rule, migrations.
fn open_writer(path: &Path, synchronous: Synchronous) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Fatal(format!("creating the directory {}: {e}", dir.display()))
        })?;
    }
    let mut conn =
        Connection::open(path).map_err(|e| classify(&format!("opening {}", path.display()), e))?;
    let context = format!("setting up {}", path.display());
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(&context, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| classify(&context, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Fatal(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = {WAL_LIMIT};"
    ))
    .map_err(|e| classify(&context, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Applies the migrations this database lacks, under the write lock.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let context = format!("migrating {}", path.display());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(&context, e))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(|e| classify(&context, e))?;
    let current: i64 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(|e| classify(&context, e))?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError::Fatal(format!(
            "{}: the schema is at version {current}, newer than this build of weir knows ({newest}); upgrade weir",
            path.display()
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql).map_err(|e| classify(&context, e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, weir_telemetry::time::now_ms()],
        )
        .map_err(|e| classify(&context, e))?;
        tracing::info!(path = %path.display(), version, name, "applied a schema migration");
    }
    tx.commit().map_err(|e| classify(&context, e))
}

/// Copies the WAL into the database on a thread of its own, so that the
/// writer's commits do not pay for it: woken after commits (at most one
/// wake-up waits), it runs a passive checkpoint, which never blocks the
/// writer. The writer still checkpoints itself past `WAL_LIMIT` pages, should
/// this thread fall behind. It ends, after a last checkpoint, when the
/// writer drops its sender.
#[allow(clippy::type_complexity)]
fn spawn_checkpointer(
    path: &Path,
) -> Result<(std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>)> {
    let conn = Connection::open(path)
        .map_err(|e| classify(&format!("opening {} to checkpoint", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(&format!("opening {} to checkpoint", path.display()), e))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let shown = path.display().to_string();
    let thread = std::thread::Builder::new()
        .name("weir-sqlite-checkpoint".into())
        .spawn(move || {
            let checkpoint = || {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(path = %shown, error = %e, "a WAL checkpoint failed; the next one retries");
                }
            };
            while rx.recv().is_ok() {
                checkpoint();
            }
            checkpoint();
        })
        .map_err(|e| StoreError::Fatal(format!("starting the SQLite checkpointer: {e}")))?;
    Ok((tx, thread))
}

/// WAL pages past which the writer checkpoints by itself (64 MiB of 4 KiB
/// pages).
const WAL_LIMIT: u32 = 16_384;

/// Opens a read connection (the database exists and is migrated).
fn open_reader(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| classify(&format!("opening {} to read", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(&format!("opening {} to read", path.display()), e))?;
    Ok(conn)
}

/// Sorts SQLite's errors into retryable and not.
pub(crate) fn classify(context: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    let message = format!("{context}: {e}");
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | OutOfMemory) => {
            StoreError::Unavailable(message)
        }
        _ => StoreError::Fatal(message),
    }
}
