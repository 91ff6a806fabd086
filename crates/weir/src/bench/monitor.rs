//! `weir bench monitor`: what `weir monitor` costs. Starts N idle
//! processes (`sleep`), runs this very binary's `weir monitor` watching all
//! of them by `--pid` on an embedded bus in a temporary directory, lets it
//! warm up, then reads its CPU time (utime + stime, from `/proc`) over a
//! window: the figure is a percentage of one core.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use weir_queue::Fsync;

use super::machine;
use crate::options::{parse_duration, parse_fsync};

#[derive(Debug, clap::Args)]
pub(crate) struct MonitorBench {
    /// Idle processes to watch.
    #[arg(long, default_value_t = 100)]
    processes: usize,
    /// The monitor's sampling interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Time the monitor runs before the measurement.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// The measurement window.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    window: Duration,
    /// Leave the host metrics out (`--no-host`).
    #[arg(long)]
    no_host: bool,
    /// The embedded bus's fsync policy (the queue's default: its one sync
    /// per tick is part of the cost measured).
    #[arg(long, default_value = "every 5ms", value_parser = parse_fsync)]
    fsync: Fsync,
}

/// Child processes killed and reaped when dropped, so a failed bench
/// leaves none behind.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub(super) async fn run(b: MonitorBench) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let bus = format!("embedded://{}", tmp.path().display());
    println!("weir bench monitor");
    print!("{}", machine());
    println!(
        "config:  {} idle processes (sleep) watched by --pid, interval {} ms, warm-up {} s, window {} s, host metrics {}, bus {bus} (fsync {})",
        b.processes,
        b.interval.as_millis(),
        b.warmup.as_secs_f64(),
        b.window.as_secs_f64(),
        if b.no_host { "off" } else { "on" },
        b.fsync,
    );

    let mut idle = Children(Vec::with_capacity(b.processes));
    for _ in 0..b.processes {
        let child = Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .spawn()
            .context("starting sleep")?;
        idle.0.push(child);
    }
    let exe = std::env::current_exe().context("finding the weir binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["monitor", "--bus", &bus, "--interval"])
        .arg(format!("{}ms", b.interval.as_millis()))
        .args(["--fsync", &b.fsync.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if b.no_host {
        cmd.arg("--no-host");
    }
    for c in &idle.0 {
        cmd.args(["--pid", &c.id().to_string()]);
    }
    let mut monitor = Children(vec![cmd.spawn().context("starting weir monitor")?]);
    let pid = monitor.0[0].id();

    tokio::time::sleep(b.warmup).await;
    let cpu = || weir_monitor::cpu_time(pid).context("the monitor is gone");
    if let Some(status) = monitor.0[0].try_wait()? {
        bail!("weir monitor stopped during the warm-up: {status}");
    }
    let (cpu0, t0) = (cpu()?, Instant::now());
    tokio::time::sleep(b.window).await;
    let (cpu1, t1) = (cpu()?, Instant::now());
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    drop(monitor);
    drop(idle);

    let used = (cpu1 - cpu0).as_secs_f64();
    let wall = (t1 - t0).as_secs_f64();
    let samples = published(&bus).await.unwrap_or(0);
    let ticks = (b.warmup + b.window).as_secs_f64() / b.interval.as_secs_f64();
    println!(
        "monitor CPU       {:>8.3} % of one core  ({used:.3} s of CPU in {wall:.1} s)",
        used / wall * 100.0
    );
    println!("monitor RSS       {:>8.1} MiB", rss as f64 / 1024.0);
    println!(
        "samples published {samples:>8}  (about {:.0} per tick)",
        samples as f64 / ticks.max(1.0)
    );
    Ok(())
}

/// How many samples the monitor left on `resources`.
async fn published(bus: &str) -> anyhow::Result<u64> {
    let bus = weir_bus::connect(bus, &weir_bus::ConnectOptions::default()).await?;
    let stats = bus.stats().await?;
    bus.close().await?;
    Ok(stats
        .topics
        .iter()
        .filter(|t| t.topic == "resources")
        .map(|t| t.messages)
        .sum())
}
