//! `weir gol` (the classic program's output), `weir gol submit`, and
//! `weir worker` as a process on a broker, configured by the environment
//! names users already have.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{Broker, Reaped, WEIR, terminate};

fn weir(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(WEIR);
    cmd.args(args).env_remove("OMP_NUM_THREADS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run weir")
}

#[test]
fn gol_prints_the_classic_lines() {
    let out = weir(
        &["gol", "3", "5", "--engine", "dense", "--threads", "2"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for (i, tam) in [8, 16, 32].iter().enumerate() {
        assert_eq!(lines[2 * i], "**RESULTADO CORRETO**");
        let timing = lines[2 * i + 1];
        let prefix = format!("tam={tam}; tempos: init=");
        assert!(timing.starts_with(&prefix), "{timing}");
        for field in ["init=", ", comp=", ", fim=", ", tot="] {
            assert!(timing.contains(field), "{timing}");
        }
        // Seven decimals, like the C program's %7.7f.
        let tot = timing.rsplit("tot=").next().unwrap();
        assert_eq!(tot.split('.').nth(1).unwrap().len(), 7, "{timing}");
    }
}

#[test]
fn gol_json_says_which_engine_ran_and_honours_omp_num_threads() {
    let out = weir(
        &["gol", "3", "4", "--engine", "dense", "--json"],
        &[("OMP_NUM_THREADS", "3")],
    );
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["tam"], 8);
    assert_eq!(rows[0]["engine"], "dense");
    assert_eq!(rows[0]["threads"], 3);
    assert_eq!(rows[1]["correct"], true);
    let out = weir(&["gol", "14", "14", "--json"], &[]);
    assert!(out.status.success(), "{out:?}");
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["engine"], "sparse", "auto picks sparse for big boards");
    assert_eq!(row["correct"], true);
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    for (args, needle) in [
        (&["gol", "5", "3"][..], "greater than powmax"),
        (&["gol", "1", "3"][..], "out of range"),
        (
            &[
                "gol",
                "3",
                "20",
                "--engine",
                "dense",
                "--max-memory",
                "1000000",
            ][..],
            "the sparse engine has no such limit",
        ),
        (&["gol", "3"][..], "POWMAX"),
        (
            &["gol", "3", "4", "--engine", "fast"][..],
            "expected dense, sparse or auto",
        ),
        (&["gol", "three", "4"][..], "invalid value"),
    ] {
        let out = weir(args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = weir(&["gol", "3", "3"], &[]);
    assert!(out.status.success());
}

#[test]
fn a_worker_process_takes_submitted_jobs_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "127.0.0.1:0");
    let mut worker = Reaped(
        Command::new(WEIR)
            .arg("worker")
            .env("KAFKA_BROKER", "ignored-when-WEIR_BUS-is-set:9092")
            .env("WEIR_BUS", &broker.url)
            .env("TOPIC_IN", "jobs-in")
            .env("TOPIC_OUT", "jobs-out")
            .env("GROUP_ID", "replicas")
            .env("OMP_NUM_THREADS", "2")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bus = [("WEIR_BUS", broker.url.as_str())];
    let out = weir(&["gol", "submit", "3", "5", "--topic", "jobs-in"], &bus);
    assert!(out.status.success(), "{out:?}");
    let out = weir(&["queue", "publish", "jobs-in", "not a job"], &bus);
    assert!(out.status.success(), "{out:?}");

    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < 4 {
        assert!(Instant::now() < deadline, "only {records:?}");
        let out = weir(
            &[
                "queue", "consume", "jobs-out", "--group", "check", "--idle", "500ms",
            ],
            &bus,
        );
        assert!(out.status.success(), "{out:?}");
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            records.push(v["payload"].clone());
        }
    }
    let (sizes, errors): (Vec<_>, Vec<_>) = records.iter().partition(|r| r.get("tam").is_some());
    let mut tams: Vec<u64> = sizes.iter().map(|r| r["tam"].as_u64().unwrap()).collect();
    tams.sort_unstable();
    assert_eq!(tams, [8, 16, 32], "{records:?}");
    assert!(
        sizes
            .iter()
            .all(|r| r["threads"] == 2 && r["correct"] == true)
    );
    assert_eq!(errors.len(), 1, "{records:?}");
    assert_eq!(errors[0]["reason"], "not_json", "{records:?}");
    let out = weir(&["queue", "dlq", "jobs-in"], &bus);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not JSON"),
        "{out:?}"
    );

    let exit = terminate(&mut worker.0);
    assert!(exit.success(), "{exit:?}");
}
