//! `weir stream dcgm | synth` and `weir generate` end to end on an
//! embedded bus: what they publish, their summary lines, and their
//! one-line errors.

mod support;

use support::{consume, text, weir};

use std::path::{Path, PathBuf};

fn sample_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sources/tests/data/dcgm_sample.csv")
}

#[test]
fn replays_the_sample_export() {
    let dir = tempfile::tempdir().unwrap();
    let csv = sample_csv();
    let out = weir(
        dir.path(),
        &[
            "stream",
            "dcgm",
            "--csv",
            csv.to_str().unwrap(),
            "--interval",
            "0",
            "--keep-timestamps",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with(&format!("replayed {} to telemetry: ", csv.display()))
            && summary.contains(
                ": 80 rows, 80 samples in 4 scrapes, 0 blank, 0 bad rows skipped, 1 pass, "
            ),
        "{summary}"
    );
    let messages = consume(dir.path(), "telemetry");
    assert_eq!(messages.len(), 80);
    let first = messages
        .iter()
        .find(|m| m["payload"]["labels"]["UUID"] == "GPU-5fd4f087-86f3-7a43-b711-4771313afc50")
        .expect("GPU 0's samples");
    assert_eq!(first["key"], "GPU-5fd4f087-86f3-7a43-b711-4771313afc50");
    assert_eq!(first["payload"]["ts"], "2025-07-18T20:42:34.000Z");
}

#[test]
fn loops_and_rates_are_flags() {
    let dir = tempfile::tempdir().unwrap();
    let csv = sample_csv();
    let out = weir(
        dir.path(),
        &[
            "stream",
            "dcgm",
            "--csv",
            csv.to_str().unwrap(),
            "--rate",
            "100000/s",
            "--passes",
            "2",
            "--batch",
            "7",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("160 rows, 160 samples in 8 scrapes, 0 blank, 0 bad rows skipped, 2 passes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(consume(dir.path(), "telemetry").len(), 160);
}

#[test]
fn bad_files_and_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.csv");
    std::fs::write(&wrong, "timestamp,metric_name,value\n1,2,3\n").unwrap();
    let wrong = wrong.to_str().unwrap();
    let missing = dir.path().join("missing.csv");
    let missing = missing.to_str().unwrap();
    let csv = sample_csv();
    let csv = csv.to_str().unwrap();
    let data = dir.path().join("data");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["stream", "dcgm", "--csv", wrong],
            1,
            "line 1: not a DCGM export: no `gpu_id` column",
        ),
        (&["stream", "dcgm", "--csv", missing], 1, "cannot open"),
        (
            &["stream", "dcgm", "--csv", csv, "--interval", "soon"],
            2,
            "expected a duration",
        ),
        (
            &["stream", "dcgm", "--csv", csv, "--rate=-3"],
            2,
            "expected a positive number of samples per second",
        ),
        (
            &[
                "stream",
                "dcgm",
                "--csv",
                csv,
                "--rate",
                "5",
                "--interval",
                "1s",
            ],
            2,
            "cannot be used with",
        ),
        (
            &["stream", "dcgm", "--csv", csv, "--loop", "--passes", "2"],
            2,
            "cannot be used with",
        ),
        (&["stream", "synth", "--hosts", "0"], 2, "--hosts"),
        (
            &[
                "stream",
                "synth",
                "--hosts",
                "100000",
                "--gpus-per-host",
                "64",
            ],
            2,
            "--hosts 100000 x --gpus-per-host 64 is 6400000 GPUs; at most 100000",
        ),
        (
            &[
                "stream",
                "synth",
                "--hosts",
                "12501",
                "--gpus-per-host",
                "8",
            ],
            2,
            "is 100008 GPUs",
        ),
        (
            &["stream", "dcgm", "--csv", csv, "--rate", "1e-300"],
            2,
            "at least 1/86400",
        ),
        (
            &["generate", "sensor", "--hz", "1e-30"],
            2,
            "expected messages per second from 1/86400",
        ),
        (
            &["generate", "sensor", "--hz", "0"],
            2,
            "expected messages per second",
        ),
        (&["generate", "weather"], 2, "invalid value 'weather'"),
    ];
    for (args, code, needle) in cases {
        let out = weir(&data, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if *code == 1 {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains(args[3]), "names the file: {err}");
        }
    }
    assert!(
        !data.exists(),
        "a bad file is refused before the bus is opened"
    );
}

#[test]
fn synth_publishes_every_gpu_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir(
        dir.path(),
        &[
            "stream",
            "synth",
            "--hosts",
            "3",
            "--gpus-per-host",
            "4",
            "--count",
            "2",
            "--interval",
            "0",
            "--seed",
            "9",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("synthesized 3 hosts x 4 GPUs to telemetry: 2 scrapes, 240 samples, "),
        "{}",
        text(&out.stdout)
    );
    let messages = consume(dir.path(), "telemetry");
    assert_eq!(messages.len(), 3 * 4 * 10 * 2);
    for m in &messages {
        assert_eq!(m["key"], m["payload"]["labels"]["UUID"]);
        assert!(
            m["payload"]["metric"]
                .as_str()
                .unwrap()
                .starts_with("DCGM_FI_")
        );
    }
}

#[test]
fn generate_sensor_and_complex() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, topic) in [("sensor", "sensors"), ("complex", "events")] {
        let out = weir(
            dir.path(),
            &["generate", kind, "--count", "3", "--hz", "100"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed: Vec<serde_json::Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(printed.len(), 3, "each message is printed");
        assert!(
            text(&out.stderr).contains(&format!("published 3 {kind} messages to {topic}")),
            "{}",
            text(&out.stderr)
        );
        let messages = consume(dir.path(), topic);
        assert_eq!(messages.len(), 3);
        let payloads: Vec<&serde_json::Value> = messages.iter().map(|m| &m["payload"]).collect();
        for p in &printed {
            assert!(payloads.contains(&p), "{p} was published");
        }
        if kind == "sensor" {
            assert_eq!(payloads[0]["metric"], "sensor_temperature_celsius");
            assert_eq!(messages[0]["key"], payloads[0]["labels"]["sensor"]);
        } else {
            assert_eq!(payloads[0]["type"], "order.created");
            assert!(payloads[0]["order"]["items"].as_array().is_some());
            assert_eq!(messages[0]["key"], payloads[0]["order"]["customer"]["id"]);
        }
    }
}
