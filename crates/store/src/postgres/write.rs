//! One batch, one transaction, on one pooled connection.
//!
//! The steps, in this order in every transaction: intern the series,
//! insert the samples, intern task and resource names and insert the
//! usage rows, insert job results and failures, upsert the GPUs. Rows
//! within a step are sorted by their key, so two transactions that touch
//! the same keys lock them in the same order and wait for each other
//! instead of deadlocking.
//!
//! Interned ids are cached in memory ([`Interned`]): a known series costs
//! a hash lookup, not a round trip. Ids a transaction creates are cached
//! only once it commits — a rolled-back transaction's ids do not exist.

use std::collections::{BTreeSet, HashMap};
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};

use deadpool_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use weir_telemetry::metric::dcgm;
use weir_telemetry::{Labels, Sample};

use super::error::Context;
use super::time::Millis;
use crate::{Batch, GpuSeen, JobFailure, JobResult, PgInsert, Result, StoreError, Usage, Written};

/// Ids already in the database, by name: series by metric, then labels
/// (two levels, so a lookup borrows the sample's strings).
#[derive(Default)]
pub(crate) struct Interned {
    series: HashMap<String, HashMap<Labels, i64>>,
    tasks: HashMap<String, i64>,
    resources: HashMap<String, i64>,
}

impl std::fmt::Debug for Interned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interned")
            .field("metrics", &self.series.len())
            .field("tasks", &self.tasks.len())
            .field("resources", &self.resources.len())
            .finish()
    }
}

/// Ids one transaction created, cached once it commits.
#[derive(Debug, Default)]
struct NewIds {
    series: Vec<(String, Labels, i64)>,
    tasks: Vec<(String, i64)>,
    resources: Vec<(String, i64)>,
}

fn lock(interned: &Mutex<Interned>) -> MutexGuard<'_, Interned> {
    // Entries are inserted whole, so a panic elsewhere leaves none half
    // written: the cache stays usable.
    interned.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `batch` in one transaction of `client`; commits before it
/// returns.
pub(crate) async fn write(
    client: &mut deadpool_postgres::Client,
    interned: &Mutex<Interned>,
    insert: PgInsert,
    batch: &Batch,
) -> Result<Written> {
    let tx = client.transaction().await.context(|| "beginning")?;
    let mut new = NewIds::default();
    let ids = intern_series(&tx, interned, &batch.samples, &mut new.series).await?;
    let samples = insert_samples(&tx, insert, &ids, &batch.samples).await?;
    insert_usage(&tx, interned, &batch.usage(), &mut new).await?;
    let results = insert_results(&tx, &batch.results).await?;
    let failures = insert_failures(&tx, &batch.failures).await?;
    upsert_gpus(&tx, &batch.gpus()).await?;
    tx.commit().await.context(|| "committing")?;

    let mut cache = lock(interned);
    for (metric, labels, id) in new.series {
        cache.series.entry(metric).or_default().insert(labels, id);
    }
    cache.tasks.extend(new.tasks);
    cache.resources.extend(new.resources);
    Ok(Written {
        samples,
        duplicates: batch.samples.len() as u64 - samples,
        results,
        failures,
    })
}

const INSERT_SERIES: &str = "INSERT INTO series (metric, labels, gpu_uuid)
    SELECT metric, labels::jsonb, gpu_uuid
    FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k (metric, labels, gpu_uuid)
    ON CONFLICT DO NOTHING";

const SELECT_SERIES: &str = "SELECT s.id, k.n
    FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS k (metric, labels, n)
    JOIN series s ON s.metric = k.metric AND s.labels = k.labels::jsonb";

/// The series id of every sample, interning the series not seen before.
async fn intern_series(
    tx: &Transaction<'_>,
    interned: &Mutex<Interned>,
    samples: &[Sample],
    new: &mut Vec<(String, Labels, i64)>,
) -> Result<Vec<i64>> {
    enum Slot {
        Known(i64),
        Missing(usize),
    }
    let mut slots = Vec::with_capacity(samples.len());
    let mut missing: Vec<(&str, &Labels)> = Vec::new();
    {
        let cache = lock(interned);
        let mut index: HashMap<(&str, &Labels), usize> = HashMap::new();
        for s in samples {
            let known = cache
                .series
                .get(s.metric.as_str())
                .and_then(|by_labels| by_labels.get(&s.labels));
            slots.push(match known {
                Some(&id) => Slot::Known(id),
                None => Slot::Missing(*index.entry((&s.metric, &s.labels)).or_insert_with(|| {
                    missing.push((&s.metric, &s.labels));
                    missing.len() - 1
                })),
            });
        }
    }
    let missing_ids = if missing.is_empty() {
        Vec::new()
    } else {
        insert_series(tx, &missing)
            .await
            .context(|| format!("interning {} series", missing.len()))?
    };
    new.extend(
        missing
            .iter()
            .zip(&missing_ids)
            .map(|(&(metric, labels), &id)| (metric.to_string(), labels.clone(), id)),
    );
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Known(id) => id,
            Slot::Missing(i) => missing_ids[i],
        })
        .collect())
}

/// Inserts series (those another transaction inserted meanwhile are left
/// as they are) and returns the id of each, in `missing`'s order.
async fn insert_series(tx: &Transaction<'_>, missing: &[(&str, &Labels)]) -> Result<Vec<i64>> {
    let mut keyed = missing
        .iter()
        .enumerate()
        .map(|(i, (_, labels))| Ok((i, serde_json::to_string(labels)?)))
        .collect::<Result<Vec<(usize, String)>, serde_json::Error>>()
        .map_err(|e| StoreError::Fatal(format!("labels as JSON: {e}")))?;
    keyed.sort_unstable_by(|(a, a_json), (b, b_json)| {
        (missing[*a].0, a_json).cmp(&(missing[*b].0, b_json))
    });
    let metrics: Vec<&str> = keyed.iter().map(|(i, _)| missing[*i].0).collect();
    let labels: Vec<&str> = keyed.iter().map(|(_, json)| json.as_str()).collect();
    let gpus: Vec<Option<&str>> = keyed
        .iter()
        .map(|(i, _)| missing[*i].1.get(dcgm::LABEL_UUID).map(String::as_str))
        .collect();
    let insert = tx
        .prepare_cached(INSERT_SERIES)
        .await
        .context(|| "preparing")?;
    tx.execute(&insert, &[&metrics, &labels, &gpus])
        .await
        .context(|| "inserting")?;
    let select = tx
        .prepare_cached(SELECT_SERIES)
        .await
        .context(|| "preparing")?;
    let rows = tx
        .query(&select, &[&metrics, &labels])
        .await
        .context(|| "reading their ids")?;
    let mut ids = vec![None; missing.len()];
    for row in rows {
        let id: i64 = row.get(0);
        let n: i64 = row.get(1);
        let at = usize::try_from(n - 1).ok().and_then(|k| keyed.get(k));
        if let Some(&(i, _)) = at {
            ids[i] = Some(id);
        }
    }
    ids.into_iter()
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| {
            StoreError::Fatal("a series was not found right after it was inserted".into())
        })
}

const INSERT_SAMPLES: &str = "INSERT INTO samples (series_id, ts, value)
    SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::float8[])
    ON CONFLICT DO NOTHING";

const INSERT_SAMPLE: &str = "INSERT INTO samples (series_id, ts, value) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING";

/// Inserts the samples (series id, ts, value), sorted by key; returns how
/// many were new.
async fn insert_samples(
    tx: &Transaction<'_>,
    insert: PgInsert,
    ids: &[i64],
    samples: &[Sample],
) -> Result<u64> {
    if samples.is_empty() {
        return Ok(0);
    }
    let mut rows: Vec<(i64, Millis, f64)> = ids
        .iter()
        .zip(samples)
        .map(|(&id, s)| (id, Millis(s.ts), s.value))
        .collect();
    rows.sort_unstable_by_key(|&(id, ts, _)| (id, ts));
    let what = || format!("inserting {} samples ({insert:?})", rows.len());
    match insert {
        PgInsert::Unnest => {
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let times: Vec<Millis> = rows.iter().map(|r| r.1).collect();
            let values: Vec<f64> = rows.iter().map(|r| r.2).collect();
            let statement = tx.prepare_cached(INSERT_SAMPLES).await.context(what)?;
            tx.execute(&statement, &[&ids, &times, &values])
                .await
                .context(what)
        }
        PgInsert::Copy => copy_samples(tx, &rows).await.context(what),
        PgInsert::Rows => {
            let statement = tx.prepare_cached(INSERT_SAMPLE).await.context(what)?;
            let mut stored = 0;
            for (id, ts, value) in &rows {
                stored += tx
                    .execute(&statement, &[id, ts, value])
                    .await
                    .context(what)?;
            }
            Ok(stored)
        }
    }
}

/// Binary COPY into a temporary table dropped at commit, then one insert
/// that skips what is already stored.
async fn copy_samples(
    tx: &Transaction<'_>,
    rows: &[(i64, Millis, f64)],
) -> Result<u64, tokio_postgres::Error> {
    tx.batch_execute(
        "CREATE TEMPORARY TABLE weir_samples_in
            (series_id BIGINT, ts TIMESTAMPTZ, value DOUBLE PRECISION) ON COMMIT DROP",
    )
    .await?;
    let sink = tx
        .copy_in("COPY weir_samples_in (series_id, ts, value) FROM STDIN (FORMAT binary)")
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::TIMESTAMPTZ, Type::FLOAT8],
    ));
    for (id, ts, value) in rows {
        writer.as_mut().write(&[id, ts, value]).await?;
    }
    writer.finish().await?;
    tx.execute(
        "INSERT INTO samples (series_id, ts, value)
            SELECT series_id, ts, value FROM weir_samples_in ORDER BY series_id, ts
            ON CONFLICT DO NOTHING",
        &[],
    )
    .await
}

/// A lookup table of names: `tasks` or `resources`.
#[derive(Debug, Clone, Copy)]
enum Names {
    Tasks,
    Resources,
}

impl Names {
    fn cached(self, interned: &Interned) -> &HashMap<String, i64> {
        match self {
            Names::Tasks => &interned.tasks,
            Names::Resources => &interned.resources,
        }
    }

    /// (insert, select) statements.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Names::Tasks => (
                "INSERT INTO tasks (name) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
                "SELECT id, name FROM tasks WHERE name = ANY($1::text[])",
            ),
            Names::Resources => (
                "INSERT INTO resources (name) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
                "SELECT id, name FROM resources WHERE name = ANY($1::text[])",
            ),
        }
    }
}

/// The id of every name, interning those not seen before.
async fn intern_names<'a>(
    tx: &Transaction<'_>,
    table: Names,
    interned: &Mutex<Interned>,
    names: impl Iterator<Item = &'a str>,
    new: &mut Vec<(String, i64)>,
) -> Result<HashMap<&'a str, i64>> {
    let mut ids = HashMap::new();
    let mut missing = BTreeSet::new();
    {
        let cache = lock(interned);
        let known = table.cached(&cache);
        for name in names {
            match known.get(name) {
                Some(&id) => {
                    ids.insert(name, id);
                }
                None => {
                    missing.insert(name);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    let what = || format!("interning {} {table:?}", missing.len());
    // Sorted (a BTreeSet): the same order in every transaction.
    let names: Vec<&str> = missing.iter().copied().collect();
    let (insert, select) = table.sql();
    let insert = tx.prepare_cached(insert).await.context(what)?;
    tx.execute(&insert, &[&names]).await.context(what)?;
    let select = tx.prepare_cached(select).await.context(what)?;
    for row in tx.query(&select, &[&names]).await.context(what)? {
        let id: i64 = row.get(0);
        let name: &str = row.get(1);
        if let Ok(at) = names.binary_search(&name) {
            ids.insert(names[at], id);
            new.push((name.to_string(), id));
        }
    }
    if names.iter().any(|name| !ids.contains_key(name)) {
        return Err(StoreError::Fatal(format!(
            "{}: a name was not found right after it was inserted",
            what()
        )));
    }
    Ok(ids)
}

const INSERT_USAGE: &str =
    "INSERT INTO resource_usage (order_id, task_id, resource_id, host, ts, value)
    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::timestamptz[],
        $6::float8[])
    ON CONFLICT DO NOTHING";

async fn insert_usage(
    tx: &Transaction<'_>,
    interned: &Mutex<Interned>,
    usage: &[Usage<'_>],
    new: &mut NewIds,
) -> Result<()> {
    if usage.is_empty() {
        return Ok(());
    }
    let tasks = intern_names(
        tx,
        Names::Tasks,
        interned,
        usage.iter().map(|u| u.task),
        &mut new.tasks,
    )
    .await?;
    let resources = intern_names(
        tx,
        Names::Resources,
        interned,
        usage.iter().map(|u| u.resource),
        &mut new.resources,
    )
    .await?;
    let mut rows: Vec<(&str, i64, i64, &str, Millis, f64)> = usage
        .iter()
        .map(|u| {
            (
                u.order,
                tasks[u.task],
                resources[u.resource],
                u.host,
                Millis(u.ts),
                u.value,
            )
        })
        .collect();
    rows.sort_unstable_by_key(|r| (r.0, r.1, r.2, r.3, r.4));
    let orders: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let task_ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let resource_ids: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let hosts: Vec<&str> = rows.iter().map(|r| r.3).collect();
    let times: Vec<Millis> = rows.iter().map(|r| r.4).collect();
    let values: Vec<f64> = rows.iter().map(|r| r.5).collect();
    let what = || format!("inserting {} resource-usage rows", rows.len());
    let statement = tx.prepare_cached(INSERT_USAGE).await.context(what)?;
    tx.execute(
        &statement,
        &[&orders, &task_ids, &resource_ids, &hosts, &times, &values],
    )
    .await
    .context(what)?;
    Ok(())
}

const INSERT_RESULTS: &str = "INSERT INTO job_results
    (job_id, pow, tam, init, comp, fim, tot, engine, threads, correct, generations, worker,
     finished_at)
    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::float8[], $5::float8[],
        $6::float8[], $7::float8[], $8::text[], $9::int8[], $10::bool[], $11::int8[],
        $12::text[], $13::timestamptz[])
    ON CONFLICT DO NOTHING";

/// Inserts job results; returns how many were new.
async fn insert_results(tx: &Transaction<'_>, results: &[JobResult]) -> Result<u64> {
    if results.is_empty() {
        return Ok(0);
    }
    let mut sorted: Vec<&JobResult> = results.iter().collect();
    sorted.sort_unstable_by(|a, b| (&a.job_id, a.pow).cmp(&(&b.job_id, b.pow)));
    let bigint = |r: &JobResult, field: &str, n: u64| {
        i64::try_from(n).map_err(|_| {
            StoreError::Fatal(format!(
                "job {} pow {}: {field} {n} does not fit a BIGINT",
                r.job_id, r.pow
            ))
        })
    };
    let column = |f: fn(&JobResult) -> f64| sorted.iter().map(|r| f(r)).collect::<Vec<f64>>();
    let job_ids: Vec<&str> = sorted.iter().map(|r| r.job_id.as_str()).collect();
    let pows: Vec<i64> = sorted.iter().map(|r| i64::from(r.pow)).collect();
    let tams = sorted
        .iter()
        .map(|r| bigint(r, "tam", r.tam))
        .collect::<Result<Vec<i64>>>()?;
    let (init, comp, fim, tot) = (
        column(|r| r.init),
        column(|r| r.comp),
        column(|r| r.fim),
        column(|r| r.tot),
    );
    let engines: Vec<&str> = sorted.iter().map(|r| r.engine.as_str()).collect();
    let threads: Vec<i64> = sorted.iter().map(|r| i64::from(r.threads)).collect();
    let correct: Vec<bool> = sorted.iter().map(|r| r.correct).collect();
    let generations = sorted
        .iter()
        .map(|r| bigint(r, "generations", r.generations))
        .collect::<Result<Vec<i64>>>()?;
    let workers: Vec<&str> = sorted.iter().map(|r| r.worker.as_str()).collect();
    let finished: Vec<Millis> = sorted.iter().map(|r| Millis(r.finished_at)).collect();
    let what = || format!("inserting {} job results", results.len());
    let statement = tx.prepare_cached(INSERT_RESULTS).await.context(what)?;
    tx.execute(
        &statement,
        &[
            &job_ids,
            &pows,
            &tams,
            &init,
            &comp,
            &fim,
            &tot,
            &engines,
            &threads,
            &correct,
            &generations,
            &workers,
            &finished,
        ],
    )
    .await
    .context(what)
}

const INSERT_FAILURES: &str = "INSERT INTO job_failures
    (job_id, reason, error, worker, job, failed_at)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::timestamptz[])
    ON CONFLICT DO NOTHING";

/// Inserts refused jobs; returns how many were new.
async fn insert_failures(tx: &Transaction<'_>, failures: &[JobFailure]) -> Result<u64> {
    if failures.is_empty() {
        return Ok(0);
    }
    let mut sorted: Vec<&JobFailure> = failures.iter().collect();
    sorted.sort_unstable_by(|a, b| a.job_id.cmp(&b.job_id));
    let text = |f: fn(&JobFailure) -> &str| sorted.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let failed: Vec<Millis> = sorted.iter().map(|f| Millis(f.failed_at)).collect();
    let what = || format!("inserting {} refused jobs", failures.len());
    let statement = tx.prepare_cached(INSERT_FAILURES).await.context(what)?;
    tx.execute(
        &statement,
        &[
            &text(|f| &f.job_id),
            &text(|f| &f.reason),
            &text(|f| &f.error),
            &text(|f| &f.worker),
            &text(|f| &f.job),
            &failed,
        ],
    )
    .await
    .context(what)
}

/// The span a GPU was seen in widens; its labels follow the latest
/// sighting, where it has them.
const UPSERT_GPUS: &str = "INSERT INTO gpus AS g
    (uuid, gpu_index, device, model, host, first_seen, last_seen)
    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
        $6::timestamptz[], $7::timestamptz[])
    ON CONFLICT (uuid) DO UPDATE SET
        gpu_index = CASE WHEN excluded.last_seen >= g.last_seen
            THEN coalesce(excluded.gpu_index, g.gpu_index) ELSE g.gpu_index END,
        device = CASE WHEN excluded.last_seen >= g.last_seen
            THEN coalesce(excluded.device, g.device) ELSE g.device END,
        model = CASE WHEN excluded.last_seen >= g.last_seen
            THEN coalesce(excluded.model, g.model) ELSE g.model END,
        host = CASE WHEN excluded.last_seen >= g.last_seen
            THEN coalesce(excluded.host, g.host) ELSE g.host END,
        first_seen = least(g.first_seen, excluded.first_seen),
        last_seen = greatest(g.last_seen, excluded.last_seen)";

/// Upserts the GPUs a batch saw ([`Batch::gpus`]: one each, by UUID).
async fn upsert_gpus(tx: &Transaction<'_>, gpus: &[GpuSeen]) -> Result<()> {
    if gpus.is_empty() {
        return Ok(());
    }
    debug_assert!(
        gpus.is_sorted_by(|a, b| a.uuid < b.uuid),
        "sorted, distinct"
    );
    let text = |f: fn(&GpuSeen) -> Option<&str>| gpus.iter().map(f).collect::<Vec<_>>();
    let uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    let indexes: Vec<Option<i64>> = gpus.iter().map(|g| g.index).collect();
    let first: Vec<Millis> = gpus.iter().map(|g| Millis(g.first_seen)).collect();
    let last: Vec<Millis> = gpus.iter().map(|g| Millis(g.last_seen)).collect();
    let what = || format!("upserting {} GPUs", gpus.len());
    let statement = tx.prepare_cached(UPSERT_GPUS).await.context(what)?;
    tx.execute(
        &statement,
        &[
            &uuids,
            &indexes,
            &text(|g| g.device.as_deref()),
            &text(|g| g.model.as_deref()),
            &text(|g| g.host.as_deref()),
            &first,
            &last,
        ],
    )
    .await
    .context(what)?;
    Ok(())
}
