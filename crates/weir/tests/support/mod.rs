//! What the binary's tests share: running `weir` on an embedded bus, and a
//! `weir broker` child process.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// Runs `weir ARGS` to completion with `embedded://DATA` as its bus.
pub(crate) fn weir(data: &Path, args: &[&str]) -> Output {
    Command::new(WEIR)
        .args(args)
        .env("WEIR_BUS", format!("embedded://{}", data.display()))
        .env("WEIR_FSYNC", "never")
        .output()
        .expect("run weir")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every message on `topic` of the embedded bus in `data`, as the JSON
/// objects `weir queue consume` prints.
pub(crate) fn consume(data: &Path, topic: &str) -> Vec<serde_json::Value> {
    let out = weir(
        data,
        &[
            "queue", "consume", topic, "--group", "check", "--idle", "300ms",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A `weir broker` child process and the URL it serves.
pub(crate) struct Broker {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Broker {
    pub(crate) fn start(data: &Path, listen: &str) -> Broker {
        let mut child = Command::new(WEIR)
            .args(["broker", "--listen", listen, "--data"])
            .arg(data)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir broker");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the broker says where it listens")
                .unwrap();
            if let Some(at) = line.find("http://") {
                let url: String = line[at..].split_whitespace().next().unwrap().to_string();
                break url;
            }
        };
        // Keep draining stderr so the broker never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Broker { child, url }
    }

    pub(crate) fn listen_addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped, so a failing test leaves none
/// behind.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM and waits (at most 20 s) for the process to exit.
pub(crate) fn terminate(child: &mut Child) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {}", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = child.try_wait().expect("wait for the child") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
