//! The writer thread: owns the write connection, its prepared statements
//! and the caches of interned ids; commits batches in groups.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};
use weir_telemetry::Labels;
use weir_telemetry::metric::dcgm;

use super::{GROUP_MAX, classify};
use crate::{Batch, Result, StoreError, Written};

/// One batch to write and where its outcome goes.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) batch: Arc<Batch>,
    pub(super) reply: oneshot::Sender<Result<Written>>,
}

/// Ids interned by this process, kept for its life: series, tasks and
/// resources are never renumbered, so an id once read stays true.
#[derive(Debug, Default)]
struct Ids {
    /// metric → labels → id: a hit borrows, nothing is serialized.
    series: HashMap<String, HashMap<Labels, i64>>,
    tasks: HashMap<String, i64>,
    resources: HashMap<&'static str, i64>,
}

/// What a transaction added to [`Ids`], taken out again if it rolls back.
#[derive(Debug, Default)]
struct Added {
    series: Vec<(String, Labels)>,
    tasks: Vec<String>,
    resources: Vec<&'static str>,
}

impl Added {
    fn undo(self, ids: &mut Ids) {
        for (metric, labels) in self.series {
            if let Some(by_labels) = ids.series.get_mut(&metric) {
                by_labels.remove(&labels);
            }
        }
        for task in self.tasks {
            ids.tasks.remove(&task);
        }
        for resource in self.resources {
            ids.resources.remove(resource);
        }
    }

    fn extend(&mut self, other: Added) {
        self.series.extend(other.series);
        self.tasks.extend(other.tasks);
        self.resources.extend(other.resources);
    }
}

#[derive(Debug)]
pub(super) struct Writer {
    conn: Connection,
    ids: Ids,
    /// Wakes the checkpointer after a commit.
    checkpoints: std::sync::mpsc::SyncSender<()>,
}

impl Writer {
    pub(super) fn new(conn: Connection, checkpoints: std::sync::mpsc::SyncSender<()>) -> Writer {
        Writer {
            conn,
            ids: Ids::default(),
            checkpoints,
        }
    }

    /// Until every sender is gone: take the batches waiting, commit them
    /// together, answer each.
    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    /// One transaction for the group, one savepoint per batch.
    fn commit(&mut self, group: Vec<Job>) {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = classify("starting a transaction", e);
            for job in group {
                let _ = job.reply.send(Err(copy(&e)));
            }
            return;
        }
        let mut outcomes = Vec::with_capacity(group.len());
        let mut added = Added::default();
        for job in &group {
            let outcome = self.savepoint(&job.batch);
            // After some errors (a full disk, an I/O error, out of memory)
            // SQLite rolls back the whole transaction by itself: what the
            // group wrote so far is gone, and a further SAVEPOINT would
            // open a new transaction of its own. The whole group fails.
            if self.conn.is_autocommit() {
                let culprit = outcomes.len();
                let own = match outcome {
                    Ok((_, its)) => {
                        its.undo(&mut self.ids);
                        None
                    }
                    Err(e) => Some(e),
                };
                let others = StoreError::Unavailable(
                    "another batch's failure rolled back the transaction this batch shared; write it again".into(),
                );
                added.undo(&mut self.ids);
                for (i, job) in group.into_iter().enumerate() {
                    let e = match (&own, i == culprit) {
                        (Some(e), true) => copy(e),
                        _ => copy(&others),
                    };
                    let _ = job.reply.send(Err(e));
                }
                return;
            }
            match outcome {
                Ok((written, a)) => {
                    added.extend(a);
                    outcomes.push(Ok(written));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let e = classify("committing", e);
            return self.fail(group, added, &e);
        }
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
        // Full means a wake-up is already waiting.
        let _ = self.checkpoints.try_send(());
    }

    /// Rolls the group's transaction back and answers every batch with `e`.
    fn fail(&mut self, group: Vec<Job>, added: Added, e: &StoreError) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        added.undo(&mut self.ids);
        for job in group {
            let _ = job.reply.send(Err(copy(e)));
        }
    }

    /// One batch inside its own savepoint: all of it or none.
    fn savepoint(&mut self, batch: &Batch) -> Result<(Written, Added)> {
        self.conn
            .execute_batch("SAVEPOINT batch")
            .map_err(|e| classify("starting a batch", e))?;
        let mut added = Added::default();
        match self.batch(batch, &mut added) {
            Ok(written) => match self.conn.execute_batch("RELEASE batch") {
                Ok(()) => Ok((written, added)),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
                    added.undo(&mut self.ids);
                    Err(classify("ending a batch", e))
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
                added.undo(&mut self.ids);
                Err(e)
            }
        }
    }

    fn batch(&mut self, batch: &Batch, added: &mut Added) -> Result<Written> {
        let mut written = Written::default();
        let context = || format!("writing {} records of {}", batch.len(), batch.topic);
        let conn = &self.conn;
        let ids = &mut self.ids;
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO samples (series_id, ts, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(|e| classify(&context(), e))?;
            for s in &batch.samples {
                let id = series_id(conn, ids, added, &s.metric, &s.labels)
                    .map_err(|e| classify(&context(), e))?;
                let n = insert
                    .execute(params![id, s.ts, s.value])
                    .map_err(|e| classify(&context(), e))?;
                if n == 1 {
                    written.samples += 1;
                } else {
                    written.duplicates += 1;
                }
            }
        }
        gpus(conn, batch).map_err(|e| classify(&context(), e))?;
        usage(conn, ids, added, batch).map_err(|e| classify(&context(), e))?;
        written.results = results(conn, batch).map_err(|e| classify(&context(), e))?;
        written.failures = failures(conn, batch).map_err(|e| classify(&context(), e))?;
        Ok(written)
    }
}

/// The id of a series, interning it on first sight.
fn series_id(
    conn: &Connection,
    ids: &mut Ids,
    added: &mut Added,
    metric: &str,
    labels: &Labels,
) -> rusqlite::Result<i64> {
    if let Some(id) = ids.series.get(metric).and_then(|m| m.get(labels)) {
        return Ok(*id);
    }
    let text = serde_json::to_string(labels).expect("labels serialize");
    let gpu = labels.get(dcgm::LABEL_UUID);
    conn.prepare_cached(
        "INSERT INTO series (metric, labels, gpu_uuid) VALUES (?1, ?2, ?3)
         ON CONFLICT (metric, labels) DO NOTHING",
    )?
    .execute(params![metric, text, gpu])?;
    let id: i64 = conn
        .prepare_cached("SELECT id FROM series WHERE metric = ?1 AND labels = ?2")?
        .query_row(params![metric, text], |r| r.get(0))?;
    ids.series
        .entry(metric.to_string())
        .or_default()
        .insert(labels.clone(), id);
    added.series.push((metric.to_string(), labels.clone()));
    Ok(id)
}

fn gpus(conn: &Connection, batch: &Batch) -> rusqlite::Result<()> {
    let gpus = batch.gpus();
    if gpus.is_empty() {
        return Ok(());
    }
    // Later sightings update the description; first and last seen widen.
    let mut upsert = conn.prepare_cached(
        "INSERT INTO gpus (uuid, gpu_index, device, model, host, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (uuid) DO UPDATE SET
           gpu_index = CASE WHEN excluded.last_seen >= last_seen
                            THEN coalesce(excluded.gpu_index, gpu_index) ELSE gpu_index END,
           device = CASE WHEN excluded.last_seen >= last_seen
                         THEN coalesce(excluded.device, device) ELSE device END,
           model = CASE WHEN excluded.last_seen >= last_seen
                        THEN coalesce(excluded.model, model) ELSE model END,
           host = CASE WHEN excluded.last_seen >= last_seen
                       THEN coalesce(excluded.host, host) ELSE host END,
           first_seen = min(first_seen, excluded.first_seen),
           last_seen = max(last_seen, excluded.last_seen)",
    )?;
    for g in gpus {
        upsert.execute(params![
            g.uuid,
            g.index,
            g.device,
            g.model,
            g.host,
            g.first_seen,
            g.last_seen
        ])?;
    }
    Ok(())
}

fn usage(
    conn: &Connection,
    ids: &mut Ids,
    added: &mut Added,
    batch: &Batch,
) -> rusqlite::Result<()> {
    let rows = batch.usage();
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO resource_usage (order_id, task_id, resource_id, host, ts, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    for row in rows {
        let task = match ids.tasks.get(row.task) {
            Some(id) => *id,
            None => {
                let id = intern(conn, "tasks", row.task)?;
                ids.tasks.insert(row.task.to_string(), id);
                added.tasks.push(row.task.to_string());
                id
            }
        };
        let resource = match ids.resources.get(row.resource) {
            Some(id) => *id,
            None => {
                let id = intern(conn, "resources", row.resource)?;
                ids.resources.insert(row.resource, id);
                added.resources.push(row.resource);
                id
            }
        };
        insert.execute(params![
            row.order, task, resource, row.host, row.ts, row.value
        ])?;
    }
    Ok(())
}

/// The id of a name in a lookup table (`tasks` or `resources`).
fn intern(conn: &Connection, table: &str, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(&format!(
        "INSERT INTO {table} (name) VALUES (?1) ON CONFLICT (name) DO NOTHING"
    ))?
    .execute([name])?;
    conn.prepare_cached(&format!("SELECT id FROM {table} WHERE name = ?1"))?
        .query_row([name], |r| r.get(0))
}

fn results(conn: &Connection, batch: &Batch) -> rusqlite::Result<u64> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO job_results (job_id, pow, tam, init, comp, fim, tot, engine, threads,
                                  correct, generations, worker, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT DO NOTHING",
    )?;
    let mut n = 0;
    for r in &batch.results {
        n += insert.execute(params![
            r.job_id,
            r.pow,
            r.tam as i64,
            r.init,
            r.comp,
            r.fim,
            r.tot,
            r.engine,
            r.threads,
            r.correct,
            r.generations as i64,
            r.worker,
            r.finished_at
        ])? as u64;
    }
    Ok(n)
}

fn failures(conn: &Connection, batch: &Batch) -> rusqlite::Result<u64> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO job_failures (job_id, reason, error, worker, job, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    let mut n = 0;
    for f in &batch.failures {
        n += insert.execute(params![
            f.job_id,
            f.reason,
            f.error,
            f.worker,
            f.job,
            f.failed_at
        ])? as u64;
    }
    Ok(n)
}

/// A store error for every batch of a failed group.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Closed(m) => StoreError::Closed(m.clone()),
        other => StoreError::Fatal(other.to_string()),
    }
}
