//! [`Query`] for [`PgStore`]: each answer is one statement on a pooled
//! connection (two for one GPU), reading committed rows only.
//!
//! Orders: GPUs by UUID; telemetry by time (ties by metric, then series);
//! series by metric, then labels in JSONB's order (fewer keys first, then
//! shorter names — not the order of their JSON text); job results latest
//! first (ties by job, then size). Text compares bytewise (the schema's
//! `COLLATE "C"`).

use deadpool_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::error::{Context, classify};
use super::time::Millis;
use super::{PgStore, release};
use crate::query::{check_limit, check_range};
use crate::{
    Gpu, JobResult, Point, Query, Result, ResultFilter, SeriesFilter, SeriesInfo, StoreError,
    TelemetryQuery,
};

/// The parameters of a statement built as it goes.
#[derive(Default)]
struct Params<'a> {
    values: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Params<'a> {
    /// Adds a value; returns its placeholder (`$n`).
    fn add(&mut self, value: &'a (dyn ToSql + Sync)) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }
}

/// A column's value; a type the schema does not have is a fatal error,
/// not a panic.
fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T> {
    row.try_get(index)
        .map_err(|e| StoreError::Fatal(format!("column {index}: {e}")))
}

fn gpu_of(row: &Row) -> Result<Gpu> {
    Ok(Gpu {
        uuid: column(row, 0)?,
        index: column(row, 1)?,
        device: column(row, 2)?,
        model: column(row, 3)?,
        host: column(row, 4)?,
        first_seen: column::<Millis>(row, 5)?.0,
        last_seen: column::<Millis>(row, 6)?.0,
        metrics: Vec::new(),
    })
}

const GPU_COLUMNS: &str = "uuid, gpu_index, device, model, host, first_seen, last_seen";

fn limit_of(limit: usize) -> Result<i64> {
    // check_limit caps it far below i64::MAX.
    Ok(i64::try_from(check_limit(limit)?).unwrap_or(i64::MAX))
}

#[async_trait::async_trait]
impl Query for PgStore {
    async fn gpus(&self) -> Result<Vec<Gpu>> {
        let what = || format!("listing GPUs from {}", self.url);
        let client = self.pool.get().await.context(what)?;
        let answer = gpus(&client).await;
        release(client, answer).context(what)
    }

    async fn gpu(&self, uuid: &str) -> Result<Option<Gpu>> {
        let what = || format!("reading GPU {uuid:?} from {}", self.url);
        let client = self.pool.get().await.context(what)?;
        let answer = gpu(&client, uuid).await;
        release(client, answer).context(what)
    }

    async fn telemetry(&self, uuid: &str, query: &TelemetryQuery) -> Result<Vec<Point>> {
        check_range(query)?;
        let what = || format!("reading GPU {uuid:?}'s telemetry from {}", self.url);
        let client = self.pool.get().await.context(what)?;
        let answer = telemetry(&client, uuid, query).await;
        release(client, answer).context(what)
    }

    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<SeriesInfo>> {
        check_limit(filter.limit)?;
        let what = || format!("listing series from {}", self.url);
        let client = self.pool.get().await.context(what)?;
        let answer = series(&client, filter).await;
        release(client, answer).context(what)
    }

    async fn job_results(&self, filter: &ResultFilter) -> Result<Vec<JobResult>> {
        check_limit(filter.limit)?;
        let what = || format!("listing job results from {}", self.url);
        let client = self.pool.get().await.context(what)?;
        let answer = job_results(&client, filter).await;
        release(client, answer).context(what)
    }
}

async fn gpus(client: &Client) -> Result<Vec<Gpu>> {
    let sql = format!("SELECT {GPU_COLUMNS} FROM gpus ORDER BY uuid");
    let rows = client.query(&sql, &[]).await.map_err(classify)?;
    rows.iter().map(gpu_of).collect()
}

async fn gpu(client: &Client, uuid: &str) -> Result<Option<Gpu>> {
    let sql = format!("SELECT {GPU_COLUMNS} FROM gpus WHERE uuid = $1");
    let Some(row) = client.query_opt(&sql, &[&uuid]).await.map_err(classify)? else {
        return Ok(None);
    };
    let mut gpu = gpu_of(&row)?;
    let metrics = client
        .query(
            "SELECT DISTINCT metric FROM series WHERE gpu_uuid = $1 ORDER BY metric",
            &[&uuid],
        )
        .await
        .map_err(classify)?;
    gpu.metrics = metrics
        .iter()
        .map(|row| column(row, 0))
        .collect::<Result<_>>()?;
    Ok(Some(gpu))
}

async fn telemetry(client: &Client, uuid: &str, query: &TelemetryQuery) -> Result<Vec<Point>> {
    let limit = limit_of(query.limit)?;
    let start = query.start.map(Millis);
    let end = query.end.map(Millis);
    let mut params = Params::default();
    let mut sql = format!(
        "SELECT s.metric, p.ts, p.value FROM series s JOIN samples p ON p.series_id = s.id
         WHERE s.gpu_uuid = {}",
        params.add(&uuid)
    );
    if let Some(metric) = &query.metric {
        sql += &format!(" AND s.metric = {}", params.add(metric));
    }
    if let Some(start) = &start {
        sql += &format!(" AND p.ts >= {}", params.add(start));
    }
    if let Some(end) = &end {
        sql += &format!(" AND p.ts <= {}", params.add(end));
    }
    let order = if query.latest_first { "DESC" } else { "ASC" };
    sql += &format!(
        " ORDER BY p.ts {order}, s.metric, s.id LIMIT {}",
        params.add(&limit)
    );
    let rows = client.query(&sql, &params.values).await.map_err(classify)?;
    rows.iter()
        .map(|row| {
            Ok(Point {
                metric: column(row, 0)?,
                ts: column::<Millis>(row, 1)?.0,
                value: column(row, 2)?,
            })
        })
        .collect()
}

async fn series(client: &Client, filter: &SeriesFilter) -> Result<Vec<SeriesInfo>> {
    let limit = limit_of(filter.limit)?;
    let mut params = Params::default();
    let mut sql = String::from("SELECT metric, labels::text FROM series WHERE TRUE");
    if let Some(metric) = &filter.metric {
        sql += &format!(" AND metric = {}", params.add(metric));
    }
    for (name, value) in &filter.labels {
        sql += &format!(
            " AND labels @> jsonb_build_object({}::text, {}::text)",
            params.add(name),
            params.add(value)
        );
    }
    sql += &format!(" ORDER BY metric, labels LIMIT {}", params.add(&limit));
    let rows = client.query(&sql, &params.values).await.map_err(classify)?;
    rows.iter()
        .map(|row| {
            let labels: &str = column(row, 1)?;
            Ok(SeriesInfo {
                metric: column(row, 0)?,
                labels: serde_json::from_str(labels).map_err(|e| {
                    StoreError::Fatal(format!("labels {labels} are not a JSON object: {e}"))
                })?,
            })
        })
        .collect()
}

async fn job_results(client: &Client, filter: &ResultFilter) -> Result<Vec<JobResult>> {
    let limit = limit_of(filter.limit)?;
    let mut params = Params::default();
    let mut sql = String::from(
        "SELECT job_id, pow, tam, init, comp, fim, tot, engine, threads, correct,
            generations, worker, finished_at
         FROM job_results WHERE TRUE",
    );
    if let Some(job_id) = &filter.job_id {
        sql += &format!(" AND job_id = {}", params.add(job_id));
    }
    sql += &format!(
        " ORDER BY finished_at DESC, job_id, pow LIMIT {}",
        params.add(&limit)
    );
    let rows = client.query(&sql, &params.values).await.map_err(classify)?;
    rows.iter().map(result_of).collect()
}

fn result_of(row: &Row) -> Result<JobResult> {
    let job_id: String = column(row, 0)?;
    let unsigned = |index: usize, name: &str| -> Result<u64> {
        let n: i64 = column(row, index)?;
        u64::try_from(n)
            .map_err(|_| StoreError::Fatal(format!("job {job_id}: {name} {n} is negative")))
    };
    let narrow = |index: usize, name: &str| -> Result<u32> {
        let n = unsigned(index, name)?;
        u32::try_from(n)
            .map_err(|_| StoreError::Fatal(format!("job {job_id}: {name} {n} is too large")))
    };
    Ok(JobResult {
        pow: narrow(1, "pow")?,
        tam: unsigned(2, "tam")?,
        init: column(row, 3)?,
        comp: column(row, 4)?,
        fim: column(row, 5)?,
        tot: column(row, 6)?,
        engine: column(row, 7)?,
        threads: narrow(8, "threads")?,
        correct: column(row, 9)?,
        generations: unsigned(10, "generations")?,
        worker: column(row, 11)?,
        finished_at: column::<Millis>(row, 12)?.0,
        job_id,
    })
}
