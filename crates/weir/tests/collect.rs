//! `weir collect` as a process: SIGKILLed in the middle of a 100,000-sample
//! stream and restarted, the store holds each sample exactly once; bad
//! messages are dead-lettered; SIGTERM stops it after its last batch.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_bus::{ConnectOptions, Message};
use weir_telemetry::Sample;

mod support;

use support::{Broker, Reaped, WEIR, terminate};

const SERIES: usize = 100;
const TOTAL: usize = 100_000;
const T0: i64 = 1_752_871_354_000;

/// Sample `i`: series `i % SERIES`, its `i / SERIES`-th second.
fn sample(i: usize) -> Message {
    let gpu = i % SERIES;
    let s = Sample::new(
        "DCGM_FI_DEV_GPU_UTIL",
        (i % 101) as f64,
        T0 + (i / SERIES) as i64 * 1_000,
    )
    .label("UUID", format!("GPU-{gpu:04}"))
    .label("Hostname", format!("node-{}", gpu / 8));
    Message::new(s.encode().unwrap()).with_key(format!("GPU-{gpu:04}"))
}

fn collector(bus: &str, db: &Path) -> Reaped {
    let child = Command::new(WEIR)
        .args(["collect", "--bus", bus, "--sink"])
        .arg(format!("sqlite://{}", db.display()))
        .args([
            "--batch-size",
            "500",
            "--flush-interval",
            "100ms",
            "--visibility-timeout",
            "2s",
            "--progress",
            "0s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weir collect");
    Reaped(child)
}

fn count(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn stored(db: &Path) -> i64 {
    count(db, "SELECT count(*) FROM samples")
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_stream_and_restarted_stores_each_sample_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("queue"), "127.0.0.1:0");
    let db = dir.path().join("weir.db");
    let bus = weir_bus::connect(&broker.url, &ConnectOptions::default())
        .await
        .unwrap();
    // The stream: 100,000 samples in batches of 1,000, while the collector runs.
    let publisher = tokio::spawn(async move {
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(1_000) {
            let messages = chunk.iter().map(|&i| sample(i)).collect();
            bus.publish_batch("telemetry", messages).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut kills = 0;
    for at in [15_000, 45_000] {
        let mut c = collector(&broker.url, &db);
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("samples to be stored", Duration::from_secs(60), || {
                stored(&db) >= at
            })
        })
        .await
        .unwrap();
        c.0.kill().unwrap();
        c.0.wait().unwrap();
        kills += 1;
    }
    publisher.await.unwrap();
    let mut last = collector(&broker.url, &db);
    let db2 = db.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("every sample", Duration::from_secs(120), || {
            stored(&db2) >= TOTAL as i64
        })
    })
    .await
    .unwrap();
    // Let any redelivery still in flight land before counting for good.
    std::thread::sleep(Duration::from_secs(3));
    let status = terminate(&mut last.0);
    assert!(status.success(), "{status:?}");
    assert_eq!(kills, 2);
    assert_eq!(stored(&db), TOTAL as i64, "each sample exactly once");
    assert_eq!(count(&db, "SELECT count(*) FROM series"), SERIES as i64);
    // Every (series, second) is there: 100 series × 1,000 seconds.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT DISTINCT series_id, ts FROM samples)"
        ),
        TOTAL as i64
    );
    let c = rusqlite::Connection::open(&db).unwrap();
    let mut per_series = c
        .prepare("SELECT count(*), min(ts), max(ts) FROM samples GROUP BY series_id")
        .unwrap();
    let spans: HashSet<(i64, i64, i64)> = per_series
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let last_ts = T0 + (TOTAL / SERIES - 1) as i64 * 1_000;
    assert_eq!(
        spans,
        HashSet::from([((TOTAL / SERIES) as i64, T0, last_ts)])
    );
    drop(broker);
}

#[test]
fn a_bad_store_url_and_a_bad_flag_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::weir(dir.path(), &["collect", "--sink", "mysql://x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = support::text(&out.stderr);
    assert!(err.contains("unsupported store URL \"mysql://x\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = support::weir(dir.path(), &["collect", "--batch-size", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `GET url` with curl: the status and the body as JSON.
fn get(url: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl (scripts/test-deps installs it)");
    let text = support::text(&out.stdout);
    let (body, code) = text.trim_end().rsplit_once('\n').expect("a status line");
    (code.parse().unwrap(), serde_json::from_str(body).unwrap())
}

#[test]
fn the_query_api_answers_from_a_store_filled_by_replaying_the_sample_dcgm_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("queue");
    let db = dir.path().join("weir.db");
    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sources/tests/data/dcgm_sample.csv"
    );
    let out = support::weir(
        &data,
        &[
            "stream",
            "dcgm",
            "--csv",
            csv,
            "--interval",
            "0",
            "--keep-timestamps",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let mut collector = Reaped(
        Command::new(WEIR)
            .args(["collect", "--flush-interval", "100ms", "--sink"])
            .arg(format!("sqlite://{}", db.display()))
            .env("WEIR_BUS", format!("embedded://{}", data.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the 80 samples", Duration::from_secs(30), || {
        stored(&db) == 80
    });
    assert!(terminate(&mut collector.0).success());

    let mut api = Reaped(
        Command::new(WEIR)
            .args(["api", "--listen", "127.0.0.1:0", "--store"])
            .arg(format!("sqlite://{}", db.display()))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(api.0.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        // Keep draining, so weir api never fails writing to its stderr.
        std::thread::spawn(move || for _ in lines {});
        first
    };
    let at = line
        .find("http://")
        .expect("weir api says where it listens");
    let base = line[at..].split("/api").next().unwrap().to_string();

    let (status, body) = get(&format!("{base}/api/v1/gpus"));
    assert_eq!(status, 200, "{body}");
    let gpus = body["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    for g in gpus {
        assert_eq!(g["model"], "NVIDIA H100 80GB HBM3");
        assert_eq!(g["host"], "mtv5-dgx1-hgpu-031");
        assert_eq!(g["first_seen"], "2025-07-18T20:42:34.000Z");
        assert_eq!(g["last_seen"], "2025-07-18T20:42:37.000Z");
    }
    let uuid = "GPU-5fd4f087-86f3-7a43-b711-4771313afc50";
    let (status, gpu) = get(&format!("{base}/api/v1/gpus/{uuid}"));
    assert_eq!(status, 200);
    assert_eq!(
        (gpu["index"].as_i64(), gpu["device"].as_str()),
        (Some(0), Some("nvidia0"))
    );
    assert_eq!(gpu["metrics"].as_array().unwrap().len(), 10);

    let (_, all) = get(&format!("{base}/api/v1/gpus/{uuid}/telemetry"));
    let points = all["points"].as_array().unwrap();
    assert_eq!(points.len(), 10, "one row per metric in the file");
    assert_eq!(points[0]["ts"], "2025-07-18T20:42:34.000Z");
    let (_, window) = get(&format!(
        "{base}/api/v1/gpus/{uuid}/telemetry?start_time=2025-07-18T20:42:35Z&end_time=2025-07-18T20:42:36Z"
    ));
    assert_eq!(window["points"].as_array().unwrap().len(), 4, "{window}");
    let (_, power) = get(&format!(
        "{base}/api/v1/gpus/{uuid}/telemetry?metric=DCGM_FI_DEV_POWER_USAGE"
    ));
    assert_eq!(power["points"][0]["value"], 156.596);

    let (status, bad) = get(&format!(
        "{base}/api/v1/gpus/{uuid}/telemetry?start_time=yesterday"
    ));
    assert_eq!(status, 400);
    assert!(
        bad["detail"].as_str().unwrap().contains("start_time"),
        "{bad}"
    );
    let (status, _) = get(&format!("{base}/api/v1/gpus/GPU-none/telemetry"));
    assert_eq!(status, 404);
    let (_, series) = get(&format!(
        "{base}/api/v1/series?label=gpu:0&label=Hostname:mtv5-dgx1-hgpu-031"
    ));
    assert_eq!(series["series"].as_array().unwrap().len(), 10);
    assert!(terminate(&mut api.0).success());
}
