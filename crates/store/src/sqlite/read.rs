//! Queries, each on a read connection of the pool on tokio's blocking pool.

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, classify, open_reader};
use crate::query::{check_limit, check_range};
use crate::{
    Gpu, JobResult, Point, Query, Result, ResultFilter, SeriesFilter, SeriesInfo, StoreError,
    TelemetryQuery,
};

impl SqliteStore {
    /// Runs `f` on a read connection (reused, or opened when none is free).
    async fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let path: PathBuf = self.path.clone();
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let spare = readers.lock().expect("readers lock").pop();
            let conn = match spare {
                Some(conn) => conn,
                None => open_reader(&path)?,
            };
            let out = f(&conn).map_err(|e| classify(&format!("{what} in {}", path.display()), e));
            readers.lock().expect("readers lock").push(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Fatal(format!("{what}: {e}")))?
    }
}

const GPU_COLUMNS: &str = "uuid, gpu_index, device, model, host, first_seen, last_seen";

fn gpu_row(r: &Row<'_>) -> rusqlite::Result<Gpu> {
    Ok(Gpu {
        uuid: r.get(0)?,
        index: r.get(1)?,
        device: r.get(2)?,
        model: r.get(3)?,
        host: r.get(4)?,
        first_seen: r.get(5)?,
        last_seen: r.get(6)?,
        metrics: Vec::new(),
    })
}

#[async_trait::async_trait]
impl Query for SqliteStore {
    async fn gpus(&self) -> Result<Vec<Gpu>> {
        self.read("listing GPUs", |c| {
            c.prepare_cached(&format!("SELECT {GPU_COLUMNS} FROM gpus ORDER BY uuid"))?
                .query_map([], gpu_row)?
                .collect()
        })
        .await
    }

    async fn gpu(&self, uuid: &str) -> Result<Option<Gpu>> {
        let uuid = uuid.to_string();
        self.read("reading a GPU", move |c| {
            let gpu = c
                .prepare_cached(&format!("SELECT {GPU_COLUMNS} FROM gpus WHERE uuid = ?1"))?
                .query_row([&uuid], gpu_row)
                .optional()?;
            let Some(mut gpu) = gpu else {
                return Ok(None);
            };
            gpu.metrics = c
                .prepare_cached(
                    "SELECT DISTINCT metric FROM series WHERE gpu_uuid = ?1 ORDER BY metric",
                )?
                .query_map([&uuid], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(gpu))
        })
        .await
    }

    async fn telemetry(&self, uuid: &str, query: &TelemetryQuery) -> Result<Vec<Point>> {
        check_range(query)?;
        let uuid = uuid.to_string();
        let q = query.clone();
        self.read("reading GPU telemetry", move |c| {
            let order = if q.latest_first { "DESC" } else { "ASC" };
            c.prepare_cached(&format!(
                "SELECT s.metric, x.ts, x.value
                 FROM series s JOIN samples x ON x.series_id = s.id
                 WHERE s.gpu_uuid = ?1 AND (?2 IS NULL OR s.metric = ?2)
                   AND x.ts >= ?3 AND x.ts <= ?4
                 ORDER BY x.ts {order}, s.metric, s.id
                 LIMIT ?5"
            ))?
            .query_map(
                params![
                    uuid,
                    q.metric,
                    q.start.unwrap_or(i64::MIN),
                    q.end.unwrap_or(i64::MAX),
                    q.limit as i64
                ],
                |r| {
                    Ok(Point {
                        metric: r.get(0)?,
                        ts: r.get(1)?,
                        value: r.get(2)?,
                    })
                },
            )?
            .collect()
        })
        .await
    }

    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<SeriesInfo>> {
        let limit = check_limit(filter.limit)?;
        let f = filter.clone();
        self.read("listing series", move |c| {
            let mut sql = String::from("SELECT metric, labels FROM series WHERE (?1 IS NULL OR metric = ?1)");
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&f.metric];
            for (i, (k, v)) in f.labels.iter().enumerate() {
                let (a, b) = (2 * i + 2, 2 * i + 3);
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each(series.labels) WHERE key = ?{a} AND value = ?{b})"
                ));
                args.push(k);
                args.push(v);
            }
            let limit = limit as i64;
            sql.push_str(&format!(" ORDER BY metric, labels LIMIT ?{}", args.len() + 1));
            args.push(&limit);
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(args.as_slice(), |r| {
                let labels: String = r.get(1)?;
                Ok((r.get::<_, String>(0)?, labels))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (metric, labels) = row?;
                let labels = serde_json::from_str(&labels).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
                })?;
                out.push(SeriesInfo { metric, labels });
            }
            Ok(out)
        })
        .await
    }

    async fn job_results(&self, filter: &ResultFilter) -> Result<Vec<JobResult>> {
        let limit = check_limit(filter.limit)? as i64;
        let job_id = filter.job_id.clone();
        self.read("listing job results", move |c| {
            c.prepare_cached(
                "SELECT job_id, pow, tam, init, comp, fim, tot, engine, threads, correct,
                        generations, worker, finished_at
                 FROM job_results WHERE (?1 IS NULL OR job_id = ?1)
                 ORDER BY finished_at DESC, job_id, pow LIMIT ?2",
            )?
            .query_map(params![job_id, limit], |r| {
                Ok(JobResult {
                    job_id: r.get(0)?,
                    pow: r.get(1)?,
                    tam: r.get::<_, i64>(2)? as u64,
                    init: r.get(3)?,
                    comp: r.get(4)?,
                    fim: r.get(5)?,
                    tot: r.get(6)?,
                    engine: r.get(7)?,
                    threads: r.get(8)?,
                    correct: r.get(9)?,
                    generations: r.get::<_, i64>(10)? as u64,
                    worker: r.get(11)?,
                    finished_at: r.get(12)?,
                })
            })?
            .collect()
        })
        .await
    }
}
