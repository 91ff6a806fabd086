//! The CSV sink: `csv://DIR`, rows appended to plain files that any tool
//! reads, one file per topic, kind of record and UTC day. Write-only: it
//! answers no queries.
//!
//! # Design constraints
//!
//! - Files a spreadsheet, `pandas` or `duckdb` opens as they are: RFC 4180
//!   with a header row, no checksums or framing of Weir's own.
//! - Append-only, so a redelivered batch is written again: the sink is
//!   at-least-once ([`Sink::exactly_once`] is `false`). Readers dedupe
//!   samples by (metric, labels, ts), results by (job_id, pow) and failures
//!   by job_id.
//! - One writer per directory, enforced by an OS lock on `DIR/.lock` held
//!   for the sink's life; a second [`CsvSink::open`] of the directory fails
//!   with [`StoreError::Unavailable`] until the first is closed or dropped.
//! - `write` calls are serialized: rows of two batches never interleave.
//!   The file I/O runs on tokio's blocking pool.
//!
//! # On-disk format
//!
//! ```text
//! DIR/.lock                                 the writer's lock (holds its pid)
//! DIR/<topic>/<YYYY-MM-DD>.csv              ts,metric,value,labels
//! DIR/<topic>/<YYYY-MM-DD>.results.csv      job_id,pow,tam,init,comp,fim,tot,engine,threads,correct,generations,worker,finished_at
//! DIR/<topic>/<YYYY-MM-DD>.failures.csv     job_id,reason,error,worker,job,failed_at
//! ```
//!
//! - The day is the UTC date of each record's own time (`ts`,
//!   `finished_at`, `failed_at`), so a batch may touch several files and a
//!   late sample lands in its own day's file.
//! - Times are RFC 3339 in UTC with milliseconds
//!   (`2025-07-18T20:42:34.123Z`); a time that RFC 3339 cannot hold (before
//!   1970 or after 9999) is refused with [`StoreError::Invalid`] rather
//!   than clamped.
//! - Floats are Rust's `Display`: the shortest decimal that parses back to
//!   the same `f64`, never in exponent form (`1e21` is written out in
//!   full). Booleans are `true`/`false`. Labels are one JSON object with
//!   its keys sorted.
//! - RFC 4180 quoting: a field holding `,`, `"`, CR or LF is put in double
//!   quotes with inner quotes doubled; other fields are bare.
//! - Lines end with LF (`\n`), not RFC 4180's CRLF: every CSV reader we
//!   know accepts it, and one byte less a row. A line break inside a field
//!   is written as it is, inside the quotes.
//! - A file's first line is its header, written when the file is created.
//! - The topic names a directory, so it must be one safe path component:
//!   not empty, `.`, `..` or `.lock`, without `/`, `\` or NUL; any other is
//!   refused with [`StoreError::Invalid`].
//!
//! # Operations
//!
//! - [`CsvSink::open`] creates `DIR` if missing and takes its lock.
//! - `write` encodes the batch to one buffer per file it touches, then, in
//!   turn for each file, appends its buffer with one `write_all` (prefixed
//!   by the header if the file is new), then `fdatasync`s every file it
//!   wrote. If any step fails, every file the batch touched is cut back to
//!   its length before the batch (a file it created is removed), so a
//!   failed `write` leaves nothing behind (the files are reopened and
//!   checked on their next write).
//! - Handles stay open between writes for the two most recent days seen;
//!   older days' files are closed (a late record reopens its file).
//! - [`Sink::close`] syncs and closes the files and releases the lock;
//!   `write` after `close` fails.
//!
//! # Recovery
//!
//! The first time this process appends to an existing file, it checks and
//! repairs it:
//!
//! - its first line must be the expected header, or the write fails with
//!   [`StoreError::Fatal`] naming the file and both headers (the file is
//!   left as it is); a file holding only part of the header, torn by a
//!   crash while it was created, is emptied and gets the header again;
//! - a torn tail (the start of a row a crash cut short) is cut: the file is
//!   scanned counting `"` — a newline ends a record exactly when an even
//!   number of quotes come before it — and truncated just after the last
//!   such newline, with a warning naming the file and the bytes dropped.
//!
//! A batch cut short by a crash was never acknowledged, so it is delivered
//! again: the rows of it that did reach the disk whole are then stored
//! twice, which the at-least-once contract allows.
//!
//! # Durability
//!
//! `write` returns only after `fdatasync` (`File::sync_data`) of every file
//! it appended to; a file or topic directory it created was made durable by
//! an `fsync` of its parent directory before any row was written to it. So
//! an acknowledged batch survives the process being killed and the machine
//! losing power (on storage that honours cache flushes).

mod file;
mod row;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::{Batch, Result, Sink, StoreError, Written};
use row::{Kind, Rows};

/// The lock file in the sink's directory.
const LOCK_FILE: &str = ".lock";

/// Days whose files stay open between writes.
const OPEN_DAYS: usize = 2;

/// Appends batches to CSV files under one directory; see the module docs.
#[derive(Debug)]
pub struct CsvSink {
    dir: PathBuf,
    /// `None` once closed.
    state: Arc<Mutex<Option<State>>>,
}

impl CsvSink {
    /// Opens `dir` (creating it if missing) and takes its lock; fails with
    /// [`StoreError::Unavailable`] while another sink holds it.
    pub async fn open(dir: &Path) -> Result<CsvSink> {
        let owned = dir.to_path_buf();
        let state = blocking(move || State::open(owned)).await?;
        Ok(CsvSink {
            dir: dir.to_path_buf(),
            state: Arc::new(Mutex::new(Some(state))),
        })
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed(format!("the CSV sink on {} is closed", self.dir.display()))
    }
}

#[async_trait::async_trait]
impl Sink for CsvSink {
    async fn write(&self, batch: Arc<Batch>) -> Result<Written> {
        check_topic(&batch.topic)?;
        if batch.is_empty() {
            return Ok(Written::default());
        }
        // Encoding needs no lock: concurrent writes encode in parallel.
        let encoding = batch.clone();
        let groups = blocking(move || row::encode(&encoding)).await?;
        let mut written = Written::default();
        for g in &groups {
            match g.kind {
                Kind::Samples => written.samples += g.count,
                Kind::Results => written.results += g.count,
                Kind::Failures => written.failures += g.count,
            }
        }
        // The guard moves into the blocking task, so a caller that stops
        // waiting leaves the append to finish before the next one starts.
        let mut state = self.state.clone().lock_owned().await;
        if state.is_none() {
            return Err(self.closed());
        }
        blocking(move || {
            let state = state.as_mut().expect("checked open");
            state.append(&batch.topic, &groups)
        })
        .await?;
        Ok(written)
    }

    fn exactly_once(&self) -> bool {
        false
    }

    async fn close(&self) -> Result<()> {
        let mut state = self.state.clone().lock_owned().await;
        let Some(open) = state.take() else {
            return Ok(());
        };
        blocking(move || open.close()).await
    }
}

/// The open files and the directory's lock; behind the sink's mutex.
#[derive(Debug)]
struct State {
    dir: PathBuf,
    /// Held locked for the sink's life; dropping it releases the lock.
    lock: File,
    /// Topic directories known to exist (and to be durable).
    topics: HashSet<String>,
    /// Files open for appending, by path.
    open: BTreeMap<PathBuf, Handle>,
    /// Files this process checked and later closed, with their length
    /// then: reopened at that length, they need no second check.
    checked: HashMap<PathBuf, u64>,
}

#[derive(Debug)]
struct Handle {
    file: File,
    /// `YYYY-MM-DD`, to close old days.
    day: String,
    len: u64,
}

impl State {
    fn open(dir: PathBuf) -> Result<State> {
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error("opening", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = match pid.trim() {
                    "" => String::new(),
                    pid => format!(", pid {pid}"),
                };
                return Err(StoreError::Unavailable(format!(
                    "another collector is writing to {} (it holds the lock {}{pid}); \
                     stop it or write to another directory",
                    dir.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error("locking", &lock_path, e));
            }
        }
        // The pid is for the message above; the lock is what counts.
        let _ = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{}", std::process::id()));
        Ok(State {
            dir,
            lock,
            topics: HashSet::new(),
            open: BTreeMap::new(),
            checked: HashMap::new(),
        })
    }

    /// Appends every group to its file of `topic`, durably, or none of them.
    fn append(&mut self, topic: &str, groups: &[Rows]) -> Result<()> {
        let topic_dir = self.topic_dir(topic)?;
        let mut touched: Vec<(PathBuf, u64)> = Vec::with_capacity(groups.len());
        let outcome = self.append_to(&topic_dir, groups, &mut touched);
        if outcome.is_err() {
            self.roll_back(&touched);
        }
        self.close_old_days();
        outcome
    }

    fn append_to(
        &mut self,
        topic_dir: &Path,
        groups: &[Rows],
        touched: &mut Vec<(PathBuf, u64)>,
    ) -> Result<()> {
        for g in groups {
            let path = topic_dir.join(g.kind.file_name(&g.day));
            let handle = self.handle(&path, g)?;
            let bytes = g.bytes_for(handle.len);
            touched.push((path.clone(), handle.len));
            handle
                .file
                .write_all(bytes)
                .map_err(|e| io_error("appending to", &path, e))?;
            handle.len += bytes.len() as u64;
        }
        for (path, _) in touched.iter() {
            self.open[path]
                .file
                .sync_data()
                .map_err(|e| io_error("syncing", path, e))?;
        }
        Ok(())
    }

    /// The open handle of `path`, opening (and on first use checking) it.
    fn handle(&mut self, path: &Path, rows: &Rows) -> Result<&mut Handle> {
        if !self.open.contains_key(path) {
            let known = self.checked.get(path).copied();
            let opened = file::open(path, rows.kind.header(), known)?;
            self.checked.remove(path);
            let handle = Handle {
                file: opened.file,
                day: rows.day.clone(),
                len: opened.len,
            };
            self.open.insert(path.to_path_buf(), handle);
        }
        Ok(self.open.get_mut(path).expect("just opened"))
    }

    /// Cuts every file a failed batch touched back to its length before
    /// it (removing it if it was empty: a reader would choke on a file
    /// without a header), and closes them: their next write reopens and
    /// checks them, so whatever a cut could not remove is found then (a
    /// torn row is cut, a whole one stays: at-least-once).
    fn roll_back(&mut self, touched: &[(PathBuf, u64)]) {
        for (path, len) in touched {
            let Some(handle) = self.open.remove(path) else {
                continue;
            };
            let cut = if *len == 0 {
                drop(handle);
                std::fs::remove_file(path)
            } else {
                handle
                    .file
                    .set_len(*len)
                    .and_then(|()| handle.file.sync_data())
            };
            if let Err(e) = cut {
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "could not cut a failed batch's rows; the file is checked again on its next write"
                );
            }
        }
    }

    /// Closes the files of days older than the [`OPEN_DAYS`] most recent.
    fn close_old_days(&mut self) {
        let days: std::collections::BTreeSet<&str> =
            self.open.values().map(|h| h.day.as_str()).collect();
        let Some(oldest_kept) = days.iter().rev().nth(OPEN_DAYS - 1) else {
            return;
        };
        let oldest_kept = oldest_kept.to_string();
        let State { open, checked, .. } = self;
        open.retain(|path, handle| {
            let keep = handle.day >= oldest_kept;
            if !keep {
                checked.insert(path.clone(), handle.len);
            }
            keep
        });
    }

    /// `DIR/<topic>`, created (durably) if missing.
    fn topic_dir(&mut self, topic: &str) -> Result<PathBuf> {
        let path = self.dir.join(topic);
        if self.topics.contains(topic) {
            return Ok(path);
        }
        match std::fs::create_dir(&path) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(io_error("creating", &path, e)),
        }
        self.topics.insert(topic.to_string());
        Ok(path)
    }

    fn close(self) -> Result<()> {
        for (path, handle) in &self.open {
            handle
                .file
                .sync_data()
                .map_err(|e| io_error("syncing", path, e))?;
        }
        let _ = self.lock.unlock();
        Ok(())
    }
}

/// Refuses a topic that is not one safe path component.
fn check_topic(topic: &str) -> Result<()> {
    let unsafe_name =
        matches!(topic, "" | "." | ".." | LOCK_FILE) || topic.contains(['/', '\\', '\0']);
    if unsafe_name {
        return Err(StoreError::Invalid(format!(
            "topic {topic:?} cannot name a directory of the CSV sink: it must be one path \
             component, not empty, `.`, `..` or `{LOCK_FILE}`, without `/`, `\\` or NUL"
        )));
    }
    Ok(())
}

/// Makes the creation of an entry of `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing the directory", dir, e))
}

/// An I/O failure on `path`, classified: a full disk or quota, an
/// interruption or a timeout may clear; anything else is fatal.
fn io_error(doing: &str, path: &Path, e: io::Error) -> StoreError {
    use io::ErrorKind::*;
    let text = format!("{doing} {}: {e}", path.display());
    match e.kind() {
        StorageFull | QuotaExceeded | Interrupted | WouldBlock | TimedOut | ResourceBusy => {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Fatal(text),
    }
}

/// Runs file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Fatal(format!("the CSV sink's I/O task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_topics_must_be_one_safe_path_component() {
        for ok in ["telemetry", "gol.results", "a-b_c", "..x", ".hidden", "x.."] {
            assert!(check_topic(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "", ".", "..", ".lock", "a/b", "/abs", "a\\b", "a\0b", "../x",
        ] {
            let e = check_topic(bad).expect_err(bad);
            assert!(matches!(e, StoreError::Invalid(_)), "{bad:?}: {e}");
        }
    }
}
