//! PostgreSQL: the sink contract with each insert mode, and the cases only
//! a server has — collectors migrating together, a connection killed
//! mid-write, unreachable servers, a schema from the future.
//!
//! Needs a server: `WEIR_TEST_POSTGRES` holds an admin URL (CI sets it from
//! `scripts/postgres`, which starts one). Each test gets a database of its
//! own, dropped when the test ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use weir_store::postgres::PgStore;
use weir_store::{
    Batch, JobFailure, JobResult, PgInsert, Query, Record, Sink, StoreError, StoreOptions,
    TelemetryQuery,
};
use weir_telemetry::Sample;
use weir_telemetry::metric::dcgm;

use crate::contract::{Fixture, Probe, Row, UsageRow};
use crate::sink_contract;

sink_contract!(fresh);

mod copy {
    crate::sink_contract!(super::fresh_copy);
}

mod rows {
    crate::sink_contract!(super::fresh_rows);
}

fn admin_url() -> String {
    std::env::var("WEIR_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "WEIR_TEST_POSTGRES is not set: the PostgreSQL tests need a server. \
             Run `export WEIR_TEST_POSTGRES=$(scripts/postgres)` (it starts PostgreSQL 15 \
             on 127.0.0.1:54329 and prints its admin URL), or use scripts/test."
        )
    })
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `url` with its database name replaced.
fn with_dbname(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let host_at = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_at..]
        .find('/')
        .map_or(base.len(), |i| host_at + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A database of one test's own, dropped with it.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Database {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let admin = admin_url();
        let name = format!(
            "weir_t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&admin).await;
        // A leftover of an earlier run whose process had the same id.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        Database {
            url: with_dbname(&admin, &name),
            admin,
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside async: a thread of its own with a runtime of
        // its own. FORCE ends the connections a failed test left open.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = connect(&admin).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("dropping test database {}: {e}", self.name);
        }
    }
}

/// Reads the tables with a plain connection, times converted by SQL.
struct PgProbe {
    client: Client,
}

fn labels_of(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("labels {json}: {e}"))
}

const MS: &str = "(extract(epoch FROM ts) * 1000)::int8";

#[async_trait::async_trait]
impl Probe for PgProbe {
    async fn samples(&self) -> Vec<Row> {
        let sql = format!(
            "SELECT s.metric, s.labels::text, {MS}, p.value
             FROM samples p JOIN series s ON s.id = p.series_id"
        );
        let mut rows: Vec<Row> = self
            .client
            .query(&sql, &[])
            .await
            .expect("samples")
            .iter()
            .map(|r| (r.get(0), labels_of(r.get(1)), r.get(2), r.get(3)))
            .collect();
        rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        rows
    }

    async fn results(&self) -> Vec<JobResult> {
        let sql = "SELECT job_id, pow, tam, init, comp, fim, tot, engine, threads, correct,
                generations, worker, (extract(epoch FROM finished_at) * 1000)::int8
            FROM job_results";
        let mut results: Vec<JobResult> = self
            .client
            .query(sql, &[])
            .await
            .expect("results")
            .iter()
            .map(|r| JobResult {
                job_id: r.get(0),
                pow: u32::try_from(r.get::<_, i64>(1)).expect("pow"),
                tam: u64::try_from(r.get::<_, i64>(2)).expect("tam"),
                init: r.get(3),
                comp: r.get(4),
                fim: r.get(5),
                tot: r.get(6),
                engine: r.get(7),
                threads: u32::try_from(r.get::<_, i64>(8)).expect("threads"),
                correct: r.get(9),
                generations: u64::try_from(r.get::<_, i64>(10)).expect("generations"),
                worker: r.get(11),
                finished_at: r.get(12),
            })
            .collect();
        results.sort_by(|a, b| (&a.job_id, a.pow).cmp(&(&b.job_id, b.pow)));
        results
    }

    async fn failures(&self) -> Vec<JobFailure> {
        let sql = "SELECT job_id, reason, error, worker, job,
                (extract(epoch FROM failed_at) * 1000)::int8
            FROM job_failures";
        let mut failures: Vec<JobFailure> = self
            .client
            .query(sql, &[])
            .await
            .expect("failures")
            .iter()
            .map(|r| JobFailure {
                job_id: r.get(0),
                reason: r.get(1),
                error: r.get(2),
                worker: r.get(3),
                job: r.get(4),
                failed_at: r.get(5),
            })
            .collect();
        failures.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        failures
    }

    async fn usage(&self) -> Option<Vec<UsageRow>> {
        let sql = format!("SELECT order_id, task, resource, {MS}, value FROM resource_usage_named");
        let mut rows: Vec<UsageRow> = self
            .client
            .query(&sql, &[])
            .await
            .expect("usage")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        Some(rows)
    }

    async fn series_count(&self) -> Option<usize> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM series", &[])
            .await
            .expect("series");
        Some(usize::try_from(row.get::<_, i64>(0)).expect("count"))
    }
}

async fn fixture(pg_insert: PgInsert) -> Fixture {
    let db = Database::create().await;
    Fixture {
        url: db.url.clone(),
        options: StoreOptions {
            pg_insert,
            ..StoreOptions::default()
        },
        probe: Box::new(PgProbe {
            client: connect(&db.url).await,
        }),
        guard: Box::new(db),
    }
}

async fn fresh() -> Fixture {
    fixture(PgInsert::Unnest).await
}

async fn fresh_copy() -> Fixture {
    fixture(PgInsert::Copy).await
}

async fn fresh_rows() -> Fixture {
    fixture(PgInsert::Rows).await
}

/// Polls `check` until it gives a value, for at most 10 s.
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gpu_batch(uuid: &str, times: &[i64]) -> Arc<Batch> {
    let mut batch = Batch::new("telemetry");
    for (i, &ts) in times.iter().enumerate() {
        batch.push(Record::Sample(
            Sample::new(dcgm::GPU_UTIL, i as f64, ts).label(dcgm::LABEL_UUID, uuid),
        ));
    }
    Arc::new(batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_starting_together_migrate_once() {
    let db = Database::create().await;
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::open(&url, &StoreOptions::default()).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opening {
        stores.push(
            open.await
                .expect("join")
                .expect("every collector opens the store"),
        );
    }
    let client = connect(&db.url).await;
    let applied: Vec<(i32, String)> = client
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(applied, [(1, "initial".to_string())]);
    for (i, store) in stores.iter().enumerate() {
        let written = store
            .write(gpu_batch("GPU-1", &[i as i64 * 1_000]))
            .await
            .expect("write");
        assert_eq!(written.samples, 1);
    }
    for store in stores {
        store.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_write_is_retryable_and_replaced() {
    let db = Database::create().await;
    let options = StoreOptions {
        pool_size: 1,
        ..StoreOptions::default()
    };
    let store = Arc::new(PgStore::open(&db.url, &options).await.expect("open"));
    let admin = connect(&db.url).await;
    // Hold a lock the write will wait for, so its connection dies in the
    // middle of its transaction — after it has interned new series.
    let locker = connect(&db.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let batch = gpu_batch("GPU-new", &[1_000, 2_000, 3_000]);
    let writing = tokio::spawn({
        let (store, batch) = (store.clone(), batch.clone());
        async move { store.write(batch).await }
    });
    let pid: i32 = wait_for("the write to wait on the lock", || async {
        admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'weir'
                   AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .map(|r| r.get(0))
    })
    .await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    let err = writing
        .await
        .expect("join")
        .expect_err("the write lost its connection");
    assert!(err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("writing 3 samples to postgres://"),
        "{message}"
    );
    locker.batch_execute("ROLLBACK").await.expect("unlock");

    // The pool replaces the connection, and the series the failed
    // transaction interned were not cached: the same batch goes in whole.
    let written = store.write(batch).await.expect("a later write succeeds");
    assert_eq!((written.samples, written.duplicates), (3, 0));
    let count: i64 = admin
        .query_one("SELECT count(*) FROM samples", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 3);

    // An idle connection killed: the next write fails retryably or (when
    // the pool notices first) succeeds; the one after succeeds.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'weir'",
            &[],
        )
        .await
        .expect("terminate");
    if let Err(e) = store.write(gpu_batch("GPU-new", &[4_000])).await {
        assert!(e.is_retryable(), "{e}");
    }
    let written = store
        .write(gpu_batch("GPU-new", &[4_000, 5_000]))
        .await
        .expect("write");
    assert_eq!(written.samples + written.duplicates, 2);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_bad_url_is_refused_naming_it_without_its_password() {
    let err = PgStore::open(
        "postgres://weir:s3cret@127.0.0.1:notaport/weir",
        &StoreOptions::default(),
    )
    .await
    .expect_err("a port must be a number");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Url(_)), "{err:?}");
    assert!(
        message.contains("postgres://weir@127.0.0.1:notaport/weir"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");

    let no_pool = StoreOptions {
        pool_size: 0,
        ..StoreOptions::default()
    };
    let err = PgStore::open("postgres://weir@127.0.0.1/weir", &no_pool)
        .await
        .expect_err("no connections");
    assert!(matches!(err, StoreError::Url(_)), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://weir:s3cret@127.0.0.1:{port}/weir");
    let err = PgStore::open(&url, &StoreOptions::default())
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        message.contains(&format!(
            "connecting to postgres://weir@127.0.0.1:{port}/weir"
        )),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn a_missing_database_is_fatal() {
    let url = with_dbname(&admin_url(), "weir_no_such_database");
    let err = PgStore::open(&url, &StoreOptions::default())
        .await
        .expect_err("no such database");
    assert!(matches!(err, StoreError::Fatal(_)), "{err:?}");
    assert!(err.to_string().contains("3D000"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_build_is_refused() {
    let db = Database::create().await;
    let store = PgStore::open(&db.url, &StoreOptions::default())
        .await
        .expect("open");
    store.close().await.expect("close");
    let client = connect(&db.url).await;
    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .expect("insert");
    let err = PgStore::open(&db.url, &StoreOptions::default())
        .await
        .expect_err("a newer schema");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Fatal(_)), "{err:?}");
    assert!(
        message.contains("version 999, newer than this build"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_exact_through_queries() {
    let db = Database::create().await;
    let store = PgStore::open(&db.url, &StoreOptions::default())
        .await
        .expect("open");
    let times = [
        -86_400_001,
        -1,
        0,
        1,
        1_752_871_354_123,
        253_402_300_799_999,
    ];
    store
        .write(gpu_batch("GPU-t", &times))
        .await
        .expect("write");
    let got: Vec<i64> = store
        .telemetry("GPU-t", &TelemetryQuery::default())
        .await
        .expect("telemetry")
        .iter()
        .map(|p| p.ts)
        .collect();
    assert_eq!(got, times);
    let range = TelemetryQuery {
        start: Some(0),
        end: Some(1),
        ..TelemetryQuery::default()
    };
    let got: Vec<i64> = store
        .telemetry("GPU-t", &range)
        .await
        .expect("telemetry")
        .iter()
        .map(|p| p.ts)
        .collect();
    assert_eq!(got, [0, 1]);
    let gpu = store.gpu("GPU-t").await.expect("gpu").expect("seen");
    assert_eq!(
        (gpu.first_seen, gpu.last_seen),
        (-86_400_001, 253_402_300_799_999)
    );
    let bad = TelemetryQuery {
        limit: 0,
        ..TelemetryQuery::default()
    };
    assert!(matches!(
        store.telemetry("GPU-t", &bad).await,
        Err(StoreError::Invalid(_))
    ));
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_writes_for_good() {
    let db = Database::create().await;
    let store = PgStore::open(&db.url, &StoreOptions::default())
        .await
        .expect("open");
    store.close().await.expect("close");
    let err = store
        .write(gpu_batch("GPU-c", &[1]))
        .await
        .expect_err("closed");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("closed"), "{err}");
}
