//! `weir up` end to end: the real binary for ten seconds on a temp dir, then
//! its SQLite store and queue are checked; a second `weir up` on the same
//! data directory is refused.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::{Reaped, WEIR, terminate, text};

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn weir_up_for_ten_seconds_stores_gpu_samples_and_correct_job_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(WEIR)
        .args([
            "up",
            "--for",
            "10s",
            "--listen",
            "127.0.0.1:0",
            "--gpus",
            "16",
        ])
        .arg("--data")
        .arg(&data)
        .args(["--submit-every", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("weir up: API at http://127.0.0.1:"),
        "{out:?}"
    );
    assert!(
        text(&out.stderr).contains("everything acknowledged is on disk"),
        "{out:?}"
    );

    let db = data.join("weir.db");
    assert_eq!(
        count(&db, "SELECT count(*) FROM gpus"),
        16,
        "every synthetic GPU"
    );
    let util = count(
        &db,
        "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id
         WHERE series.metric = 'DCGM_FI_DEV_GPU_UTIL'",
    );
    assert!(util >= 16 * 5, "GPU utilisation samples: {util}");
    assert!(
        count(
            &db,
            "SELECT count(*) FROM series WHERE metric = 'process_cpu_percent'"
        ) >= 1,
        "the monitor watched the workers"
    );
    let results = count(&db, "SELECT count(*) FROM job_results");
    assert!(
        results >= 8,
        "at least one whole job (pow 3..=10): {results}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM job_results WHERE correct = 1 AND tam = 1 << pow"
        ),
        results,
        "every result correct, with tam = 2^pow"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM job_failures"), 0);

    // Nothing dead-lettered on any topic.
    let stats = Command::new(WEIR)
        .args(["queue", "stats", "--json"])
        .env("WEIR_BUS", format!("embedded://{}", data.display()))
        .output()
        .unwrap();
    assert!(stats.status.success(), "{stats:?}");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let topics = stats["topics"].as_array().unwrap();
    assert!(topics.iter().any(|t| t["topic"] == "telemetry"), "{stats}");
    for t in topics {
        assert_eq!(t["dead_letter_count"], 0, "{t}");
    }
}

#[test]
fn a_second_weir_up_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = Reaped(
        Command::new(WEIR)
            .args(["up", "--listen", "127.0.0.1:0", "--gpus", "8"])
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(first.0.stdout.take().unwrap()).lines();
    let started = lines.next().unwrap().unwrap();
    assert!(started.contains("API at"), "{started}");
    std::thread::spawn(move || for _ in lines {});

    let second = Command::new(WEIR)
        .args(["up", "--listen", "127.0.0.1:0", "--for", "5s"])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert!(err.contains("is in use by another weir"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    std::thread::sleep(Duration::from_millis(200));
    assert!(terminate(&mut first.0).success());
}
