//! SQLite: the contract on a temp file, and what only SQLite does.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;
use weir_store::{Batch, JobFailure, JobResult, Record, StoreOptions, Synchronous};
use weir_telemetry::Sample;

use crate::contract::{Fixture, Probe, Row, UsageRow};
use crate::sink_contract;

struct SqliteProbe {
    path: PathBuf,
}

impl SqliteProbe {
    fn conn(&self) -> Connection {
        Connection::open(&self.path).expect("open the database to probe it")
    }
}

#[async_trait::async_trait]
impl Probe for SqliteProbe {
    async fn samples(&self) -> Vec<Row> {
        let c = self.conn();
        let mut stmt = c
            .prepare(
                "SELECT s.metric, s.labels, x.ts, x.value
                 FROM samples x JOIN series s ON s.id = x.series_id",
            )
            .unwrap();
        let mut rows: Vec<Row> = stmt
            .query_map([], |r| {
                let labels: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    serde_json::from_str(&labels).unwrap(),
                    r.get(2)?,
                    r.get(3)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rows
    }

    async fn results(&self) -> Vec<JobResult> {
        let c = self.conn();
        let mut stmt = c
            .prepare(
                "SELECT job_id, pow, tam, init, comp, fim, tot, engine, threads, correct,
                        generations, worker, finished_at FROM job_results ORDER BY job_id, pow",
            )
            .unwrap();
        stmt.query_map([], |r| {
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
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    async fn failures(&self) -> Vec<JobFailure> {
        let c = self.conn();
        let mut stmt = c
            .prepare(
                "SELECT job_id, reason, error, worker, job, failed_at FROM job_failures
                 ORDER BY job_id",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok(JobFailure {
                job_id: r.get(0)?,
                reason: r.get(1)?,
                error: r.get(2)?,
                worker: r.get(3)?,
                job: r.get(4)?,
                failed_at: r.get(5)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    async fn usage(&self) -> Option<Vec<UsageRow>> {
        let c = self.conn();
        let mut stmt = c
            .prepare(
                "SELECT order_id, task, resource, ts, value FROM resource_usage_named
                 ORDER BY order_id, task, resource, ts, value",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        Some(rows)
    }

    async fn series_count(&self) -> Option<usize> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM series", [], |r| r.get(0))
            .unwrap();
        Some(n as usize)
    }
}

fn fixture(options: StoreOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("weir.db");
    Fixture {
        url: format!("sqlite://{}", path.display()),
        options,
        probe: Box::new(SqliteProbe { path }),
        guard: Box::new(dir),
    }
}

async fn fresh() -> Fixture {
    fixture(StoreOptions::default())
}

sink_contract!(fresh);

mod normal {
    use super::*;

    async fn fresh() -> Fixture {
        fixture(StoreOptions {
            synchronous: Synchronous::Normal,
            ..StoreOptions::default()
        })
    }

    sink_contract!(fresh);
}

#[tokio::test]
async fn the_database_is_in_wal_mode_and_migrated_once() {
    let f = fresh().await;
    let store = f.open().await;
    store.sink.close().await.unwrap();
    let again = f.open().await;
    again.sink.close().await.unwrap();
    let path = f.url.strip_prefix("sqlite://").unwrap();
    let c = Connection::open(path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = c
        .prepare("SELECT version FROM schema_migrations")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(versions, [1]);
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let f = fresh().await;
    f.open().await.sink.close().await.unwrap();
    let path = f.url.strip_prefix("sqlite://").unwrap();
    Connection::open(path)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
            [],
        )
        .unwrap();
    let e = weir_store::open(&f.url, &f.options).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains("version 99, newer than this build"),
        "{e}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "x".repeat(4096)).unwrap();
    let url = format!("sqlite://{}", path.display());
    let e = weir_store::open(&url, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("notes.txt"), "{e}");
    assert!(!e.is_retryable(), "{e}");
}

#[tokio::test]
async fn a_batch_that_fails_is_rolled_back_alone() {
    let f = fresh().await;
    let store = f.open().await;
    let path = f.url.strip_prefix("sqlite://").unwrap().to_string();
    // A trigger that refuses one metric stands in for any failure mid-batch.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON series WHEN NEW.metric = 'poison'
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
        )
        .unwrap();
    let batch = |metric: &str, ts: i64| {
        let mut b = Batch::new("telemetry");
        b.push(Record::Sample(Sample::new("fine", 1.0, ts)));
        b.push(Record::Sample(Sample::new(metric, 2.0, ts)));
        Arc::new(b)
    };
    // Concurrent, so they may share one commit.
    let (good, bad, good2) = tokio::join!(
        store.sink.write(batch("ok", 1)),
        store.sink.write(batch("poison", 2)),
        store.sink.write(batch("ok", 3)),
    );
    assert_eq!(good.unwrap().samples, 2);
    assert_eq!(good2.unwrap().samples, 2);
    let e = bad.unwrap_err();
    assert!(e.to_string().contains("refused by test"), "{e}");
    let stored: Vec<(String, i64)> = f
        .probe
        .samples()
        .await
        .into_iter()
        .map(|r| (r.0, r.2))
        .collect();
    assert_eq!(
        stored,
        [
            ("fine".into(), 1),
            ("fine".into(), 3),
            ("ok".into(), 1),
            ("ok".into(), 3)
        ],
        "nothing of the failed batch, all of the others"
    );
    // The failed batch's series did not stay in the cache: after the
    // trigger goes, the same batch writes its series for real.
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TRIGGER refuse")
        .unwrap();
    let w = store.sink.write(batch("poison", 2)).await.unwrap();
    assert_eq!(w.samples, 2);
    assert_eq!(f.probe.series_count().await, Some(3));
    store.sink.close().await.unwrap();
}

#[tokio::test]
async fn a_whole_transaction_rolled_back_by_sqlite_fails_its_group_and_leaves_no_orphans() {
    let f = fresh().await;
    let store = f.open().await;
    let path = f.url.strip_prefix("sqlite://").unwrap().to_string();
    // RAISE(ROLLBACK) ends the whole transaction, as SQLite itself does
    // after a full disk or an I/O error.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER ends_all BEFORE INSERT ON series WHEN NEW.metric = 'doom'
             BEGIN SELECT RAISE(ROLLBACK, 'rolled back by test'); END;",
        )
        .unwrap();
    let batch = |metric: &str, ts: i64| {
        let mut b = Batch::new("telemetry");
        b.push(Record::Sample(Sample::new(format!("fresh-{ts}"), 1.0, ts)));
        b.push(Record::Sample(Sample::new(metric, 2.0, ts)));
        Arc::new(b)
    };
    let (a, doomed, c) = tokio::join!(
        store.sink.write(batch("ok", 1)),
        store.sink.write(batch("doom", 2)),
        store.sink.write(batch("ok", 3)),
    );
    assert!(doomed.is_err());
    // Whatever shared the doomed batch's commit failed with it, retryably;
    // written again, it is stored.
    for (outcome, ts) in [(a, 1), (c, 3)] {
        if let Err(e) = outcome {
            assert!(e.is_retryable(), "{e}");
            store.sink.write(batch("ok", ts)).await.unwrap();
        }
    }
    let c = Connection::open(&path).unwrap();
    let orphans: i64 = c
        .query_row(
            "SELECT count(*) FROM samples WHERE series_id NOT IN (SELECT id FROM series)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let stored: Vec<(String, i64)> = f
        .probe
        .samples()
        .await
        .into_iter()
        .map(|r| (r.0, r.2))
        .collect();
    assert_eq!(
        stored,
        [
            ("fresh-1".into(), 1),
            ("fresh-3".into(), 3),
            ("ok".into(), 1),
            ("ok".into(), 3)
        ]
    );
    store.sink.close().await.unwrap();
}
