//! `weir monitor` end to end on an embedded bus: a launched command's exit
//! code and samples, `--for` ending a command, a `--pid` watch ending with
//! its process, and the one-line errors.

mod support;

use support::{consume, text, weir};

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The samples on `resources`, as JSON.
fn samples(data: &std::path::Path) -> Vec<Value> {
    consume(data, "resources")
        .into_iter()
        .map(|m| m["payload"].clone())
        .collect()
}

fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

#[test]
fn a_launched_command_is_watched_and_its_exit_code_returned() {
    let check = |command: &[&str], code: i32| {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "monitor",
            "--for",
            "20s",
            "--interval",
            "200ms",
            "--no-gpu",
            "--label",
            "task=t-1",
            "--",
        ];
        args.extend_from_slice(command);
        let out = weir(dir.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{command:?}: {}",
            stderr(&out)
        );
        let samples = samples(dir.path());
        let processes: Vec<&Value> = samples
            .iter()
            .filter(|s| s["labels"]["task"] == "t-1")
            .collect();
        assert!(
            processes.iter().any(|s| s["metric"] == "process_count"),
            "{command:?}: {samples:?}"
        );
        for s in &processes {
            assert_eq!(s["labels"]["process"], command[0], "{s}");
            assert!(s["labels"]["pid"].is_string() && s["labels"]["host"].is_string());
        }
        assert!(
            samples
                .iter()
                .any(|s| s["metric"] == "host_memory_used_bytes"),
            "host metrics are on by default"
        );
    };
    check(&["sleep", "1"], 0);
    check(&["sh", "-c", "sleep 0.5; exit 3"], 3);
}

#[test]
fn for_ends_a_command_that_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir(
        dir.path(),
        &[
            "monitor",
            "--for",
            "1s",
            "--interval",
            "200ms",
            "--no-gpu",
            "--",
            "sleep",
            "60",
        ],
    );
    // Killed: 128 + SIGKILL, as a shell would say.
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(stderr(&out).contains("time is up"), "{}", stderr(&out));
}

#[test]
fn a_pid_watch_stops_when_its_process_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut sleeper = Command::new("sleep")
        .arg("1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let out = weir(
        dir.path(),
        &[
            "monitor",
            "--pid",
            &pid,
            "--interval",
            "100ms",
            "--no-host",
            "--no-gpu",
            "--for",
            "30s",
        ],
    );
    let _ = sleeper.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("every watched process has ended"),
        "{}",
        stderr(&out)
    );
    let samples = samples(dir.path());
    assert!(!samples.is_empty());
    assert!(
        samples.iter().all(|s| s["labels"]["pid"] == pid.as_str()),
        "{samples:?}"
    );
}

#[test]
fn bad_targets_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], want: &str| {
        let out = weir(dir.path(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    check(
        &["monitor", "--pid", "999999999"],
        "no process with pid 999999999 to watch",
    );
    check(
        &["monitor", "--cgroup", "no/such/group"],
        "is not a cgroup v2 group",
    );
    check(
        &["monitor", "--interval", "0s"],
        "--interval must be more than zero",
    );
    // clap's own usage errors add a hint line.
    let out = weir(dir.path(), &["monitor", "--interval", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .lines()
            .next()
            .unwrap()
            .contains("expected a duration")
    );
}
