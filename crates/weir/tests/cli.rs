//! The `weir` binary end to end on an embedded bus: publish, consume,
//! stats and dead letters on one data directory, and the one-line errors.

mod support;

use support::{WEIR, text, weir};

use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn publish_then_consume_then_stats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = weir(
        d,
        &[
            "queue",
            "publish",
            "jobs",
            r#"{"powmin":3,"powmax":10}"#,
            "plain",
            "--header",
            "src=cli",
        ],
    );
    assert!(out.status.success(), "{out:?}");

    let out = weir(
        d,
        &[
            "queue", "consume", "jobs", "--group", "g", "--idle", "100ms",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["payload"]["powmax"], 10, "JSON payloads stay JSON");
    assert_eq!(lines[1]["payload"], "plain");
    assert_eq!(lines[0]["headers"]["src"], "cli");
    assert_eq!(lines[0]["delivery_count"], 1);

    let out = weir(
        d,
        &[
            "queue", "consume", "jobs", "--group", "g", "--idle", "100ms",
        ],
    );
    assert_eq!(stdout(&out), "", "acked messages do not come back");

    let out = weir(d, &["queue", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let group = &stats["consumer_groups"][0];
    assert_eq!(
        (
            group["consumer_group"].as_str(),
            group["pending_messages"].as_u64()
        ),
        (Some("g"), Some(0))
    );
    let jobs = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "jobs")
        .unwrap();
    assert_eq!(jobs["messages"], 2);
}

#[test]
fn bench_bus_measures_a_fresh_embedded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "bus",
        "--messages",
        "3000",
        "--consumers",
        "2",
        "--rate",
        "500",
        "--seconds",
        "1",
    ];
    let out = weir(dir.path(), &args);
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    let line = |start: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in {printed}"))
            .to_string()
    };
    assert!(line("== ").contains("embedded://"), "{printed}");
    assert!(
        line("publish+consume+ack").contains("(3000 messages in"),
        "{printed}"
    );
    let latency = line("latency");
    assert!(latency.contains("(500 messages at"), "{printed}");
    assert!(latency.contains(" p99 "), "{printed}");
    assert!(
        !printed.contains("note:"),
        "nothing delivered twice: {printed}"
    );
}

#[test]
fn bad_input_is_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["queue", "publish", "bad/topic", "x"],
            1,
            "invalid topic name",
        ),
        (
            &["queue", "seek", "jobs", "--group", "g", "yesterday"],
            1,
            "malformed message id",
        ),
        (
            &["queue", "stats", "--fsync", "sometimes"],
            2,
            "expected always, never or every",
        ),
        (
            &["queue", "consume", "jobs", "--idle", "soon"],
            2,
            "expected a duration",
        ),
        (
            &["queue", "stats", "--bus", "amqp://elsewhere"],
            1,
            "unsupported bus URL",
        ),
        (
            &["queue", "stats", "--bus", "http://127.0.0.1:9"],
            1,
            "127.0.0.1:9",
        ),
        (
            &["bench", "bus", "--consumers", "5", "--partitions", "4"],
            1,
            "a member without a partition gets nothing",
        ),
        (
            &["bench", "bus", "--bus", "embedded://", "--bus", "amqp://x"],
            1,
            "unsupported bus URL",
        ),
    ];
    for (args, code, needle) in cases {
        let out = weir(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if *code == 1 {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

#[test]
fn rejected_messages_are_listed_and_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = weir(d, &["queue", "publish", "jobs", "{\"powmin\":9}"]);
    assert!(out.status.success(), "{out:?}");
    // Never acked, one delivery allowed: the next receive dead-letters it.
    for _ in 0..2 {
        let out = weir(
            d,
            &[
                "queue",
                "consume",
                "jobs",
                "--group",
                "g",
                "--idle",
                "300ms",
                "--no-ack",
                "--visibility-timeout",
                "1ms",
                "--max-deliveries",
                "1",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let out = weir(d, &["queue", "dlq", "jobs"]);
    assert!(out.status.success(), "{out:?}");
    let letters: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{}", stdout(&out));
    assert_eq!(letters[0]["reason"], "delivery_limit");
    assert_eq!(letters[0]["origin_topic"], "jobs");
    assert_eq!(letters[0]["message"]["payload"]["powmin"], 9);

    let out = weir(d, &["queue", "dlq", "jobs", "--redrive"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("redrove 1"));
    let out = weir(
        d,
        &[
            "queue", "consume", "jobs", "--group", "g2", "--idle", "100ms",
        ],
    );
    assert_eq!(
        stdout(&out).lines().count(),
        2,
        "the original and the redriven copy"
    );
}

#[test]
fn settings_come_from_the_file_then_the_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("weir.toml"),
        "[collect]\nsink = \"mysql://from-the-file\"\n",
    )
    .unwrap();
    let run = |env: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(WEIR);
        cmd.current_dir(dir.path())
            .env_remove("WEIR_SINK")
            .env_remove("WEIR_CONFIG");
        if let Some(sink) = env {
            cmd.env("WEIR_SINK", sink);
        }
        let out = cmd.args(["collect"]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        text(&out.stderr)
    };
    assert!(run(None, &[]).contains("mysql://from-the-file"));
    assert!(run(Some("mysql://from-env"), &[]).contains("mysql://from-env"));
    assert!(
        run(Some("mysql://from-env"), &["--sink", "mysql://from-flag"])
            .contains("mysql://from-flag")
    );

    std::fs::write(dir.path().join("other.toml"), "[collect]\nbatchsize = 5\n").unwrap();
    let out = std::process::Command::new(WEIR)
        .current_dir(dir.path())
        .args(["--config", "other.toml", "collect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("other.toml: unknown setting `batchsize`"),
        "{err}"
    );
}
