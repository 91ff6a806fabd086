//! `weir monitor` end to end on an embedded bus: a launched command's exit
//! code and samples (a short one's too), SIGTERM passed on to it, `--for`
//! ending a command, a `--pid` watch ending with its process, and the
//! one-line errors.

mod support;

use support::{Reaped, WEIR, consume, terminate, text, weir};

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
fn a_command_shorter_than_the_interval_still_has_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    // The first tick comes as the command starts (it may or may not see
    // it, and has no rates: they need a previous tick); the last, taken
    // once it has ended, is the one with its CPU.
    let out = weir(
        dir.path(),
        &[
            "monitor",
            "--interval",
            "1s",
            "--no-host",
            "--no-gpu",
            "--label",
            "task=short",
            "--",
            "sh",
            "-c",
            "sleep 0.3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let samples = samples(dir.path());
    let command: Vec<&Value> = samples
        .iter()
        .filter(|s| s["labels"]["task"] == "short")
        .collect();
    assert!(
        command.iter().any(|s| s["metric"] == "process_cpu_percent"),
        "no last sample: {samples:?}"
    );
    for s in command {
        assert_eq!(s["labels"]["process"], "sh", "{s}");
    }
}

/// The processes whose parent is `pid`, with their names.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for dirent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(dirent.path().join("stat")) else {
            continue;
        };
        let (Some((head, rest)), Some((_, comm))) = (stat.rsplit_once(')'), stat.split_once('('))
        else {
            continue;
        };
        let comm = comm.rsplit_once(')').map_or(comm, |(c, _)| c);
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(pid)
            && let Some(child) = head.split(' ').next().and_then(|p| p.parse().ok())
        {
            out.push((child, comm.to_string()));
        }
    }
    out
}

#[test]
fn sigterm_is_passed_on_to_the_command_whose_code_weir_exits_with() {
    let dir = tempfile::tempdir().unwrap();
    let mut monitor = Reaped(
        Command::new(WEIR)
            .args([
                "monitor",
                "--interval",
                "200ms",
                "--no-gpu",
                "--label",
                "task=term",
                "--",
                "sh",
                "-c",
                "trap 'exit 7' TERM; while :; do sleep 0.1; done",
            ])
            .env("WEIR_BUS", format!("embedded://{}", dir.path().display()))
            .env("WEIR_FSYNC", "never")
            .stderr(Stdio::piped())
            .spawn()
            .expect("run weir"),
    );
    // The shell's loop runs (a `sleep` below it): its trap is set.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let looping = children_of(monitor.0.id())
            .iter()
            .any(|&(sh, _)| children_of(sh).iter().any(|(_, name)| name == "sleep"));
        if looping {
            break;
        }
        assert!(Instant::now() < deadline, "the command did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Without SIGTERM passed on, weir would wait 10 s and SIGKILL it: 137.
    let status = terminate(&mut monitor.0);
    let mut err = String::new();
    monitor
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(err.contains("shutting down"), "{err}");
    assert!(!err.contains("killing"), "{err}");
    let samples = samples(dir.path());
    assert!(
        samples
            .iter()
            .any(|s| s["labels"]["task"] == "term" && s["metric"] == "process_count"),
        "{samples:?}"
    );
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
