//! `weir monitor`: samples the host, process trees, cgroups and NVIDIA
//! GPUs at an interval and publishes them to the bus, until Ctrl-C or
//! SIGTERM, `--for`, the end of every `--pid` it watches, or the end of the
//! command it launched (`weir monitor -- CMD ARGS`), whose exit code it
//! then exits with (128 + the signal when a signal ended it, as a shell
//! says).
//!
//! A launched command is stopped with weir: on Ctrl-C or SIGTERM it gets
//! SIGTERM (a terminal's Ctrl-C has reached it already; a `kill` of weir
//! has not), then [`GRACE`] to end before SIGKILL; at the end of `--for`,
//! SIGKILL. Every watch is kept until the monitor's last sample, so a
//! command's or a process's last interval is published.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, anyhow};
use nix::sys::signal::Signal as Kill;
use nix::unistd::Pid;
use tokio::signal::unix::{Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use weir_monitor::{Monitor, MonitorConfig, MonitorError, SamplerConfig, Target, Watch};

use crate::UsageError;
use crate::options::{BusOptions, parse_duration};
use crate::signal::stop_on_signal;

/// How long a launched command may take to end after Ctrl-C or SIGTERM
/// (passed on to it) before it is killed.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub(crate) struct MonitorArgs {
    #[command(flatten)]
    bus: BusOptions,
    /// The topic samples are published to.
    #[arg(long, env = "WEIR_MONITOR_TOPIC", default_value = "resources")]
    topic: String,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Watch this process and all its descendants (repeatable). Without a
    /// command, `--name` or `--cgroup`, monitoring stops when every watched
    /// pid has ended.
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Watch every process of this name, now and later, with its
    /// descendants (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Sample a cgroup v2 group, absolute or relative to the cgroup v2
    /// mount (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    cgroups: Vec<PathBuf>,
    /// A label for the watched processes' samples, like `service=gol` or
    /// `task=t-1` (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Leave out the host's CPU, memory, disks and network.
    #[arg(long)]
    no_host: bool,
    /// Leave out NVIDIA GPUs (absent anyway without a driver).
    #[arg(long)]
    no_gpu: bool,
    /// Stop after this long (a launched command still running is killed).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// A command to launch and watch; weir exits with its exit code. Ctrl-C
    /// or SIGTERM sends it SIGTERM, and SIGKILL 10 s later.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_label(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(anyhow!("expected NAME=VALUE, not {s:?}")),
    }
}

pub(crate) async fn run(args: MonitorArgs) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        return Err(UsageError("--interval must be more than zero".into()).into());
    }
    for &pid in &args.pids {
        Target::Pid(pid)
            .check()
            .map_err(|e| UsageError(e.to_string()))?;
    }
    let config = MonitorConfig {
        topic: args.topic.clone(),
        interval: args.interval,
        sampler: SamplerConfig {
            host_metrics: !args.no_host,
            gpu: !args.no_gpu,
            cgroups: args.cgroups.clone(),
            ..SamplerConfig::default()
        },
        ..MonitorConfig::default()
    };
    // Known before the command runs, so its end is never missed.
    let mut sigchld =
        tokio::signal::unix::signal(SignalKind::child()).context("listening for SIGCHLD")?;
    let bus = args.bus.connect().await?;
    let shutdown = CancellationToken::new();
    let monitor = match Monitor::spawn(bus.clone(), config, shutdown.clone()).await {
        Ok(m) => m,
        Err(e @ MonitorError::Cgroup { .. }) => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(e).context("starting the monitor"),
    };
    let mut watched = Watched::default();
    let result = watch(&args, &monitor, &mut watched, &mut sigchld).await;
    shutdown.cancel();
    let stats = monitor.join().await.context("stopping the monitor")?;
    // Only now, after the last sample, may the watches go.
    let Watched { child, .. } = watched;
    result?;
    // The command is a zombie now (or was killed): this returns at once.
    let status = match child {
        Some(mut child) => Some(child.wait().context("waiting for the command")?),
        None => None,
    };
    bus.close()
        .await
        .with_context(|| format!("closing the bus {}", args.bus.url()))?;
    eprintln!(
        "weir monitor: stopped after {} ticks: {} samples published, {} dropped",
        stats.ticks, stats.published, stats.dropped
    );
    match status.map(exit_code) {
        // The command's code is ours; everything is flushed and closed.
        Some(code) if code != 0 => std::process::exit(code),
        _ => Ok(()),
    }
}

/// What `weir monitor` holds while it runs: the watches, which must live
/// until the monitor's last tick (a dropped [`Watch`] is not sampled
/// again), and the launched command, reaped only after that tick.
#[derive(Debug, Default)]
struct Watched {
    /// The `--pid` watches, whose ends end monitoring.
    pids: Vec<Watch>,
    /// The `--name` watches and the command's.
    others: Vec<Watch>,
    child: Option<Child>,
}

/// Registers the watches (into `watched`) and waits for the end: a signal,
/// `--for`, every `--pid` ended, or the launched command ended (a zombie,
/// not reaped yet, so that the last sample still sees it).
async fn watch(
    args: &MonitorArgs,
    monitor: &Monitor,
    watched: &mut Watched,
    sigchld: &mut Signal,
) -> anyhow::Result<()> {
    let handle = monitor.handle();
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    for &pid in &args.pids {
        let w = handle
            .watch(Target::Pid(pid), labels.clone())
            .map_err(|e| UsageError(e.to_string()))?;
        watched.pids.push(w);
    }
    for name in &args.names {
        let w = handle.watch(Target::Name(name.clone()), labels.clone())?;
        watched.others.push(w);
    }
    if let Some((program, rest)) = args.command.split_first() {
        let child = Command::new(program)
            .args(rest)
            .spawn()
            .with_context(|| format!("launching {program}"))?;
        // A command that ended before it could be watched has nothing to
        // show.
        watched
            .others
            .extend(handle.watch(Target::Pid(child.id()), labels.clone()).ok());
        watched.child = Some(child);
    }
    let Watched { pids, child, .. } = watched;
    eprintln!(
        "weir monitor: every {} to {} on {}: host {}{}, {} GPU(s){}{}{}{}",
        humanize(args.interval),
        args.topic,
        args.bus.url(),
        monitor.host(),
        if args.no_host {
            " (no host metrics)"
        } else {
            ""
        },
        monitor.gpu_count(),
        list(" pids", &args.pids),
        list(" names", &args.names),
        list(
            " cgroups",
            &args.cgroups.iter().map(|c| c.display()).collect::<Vec<_>>()
        ),
        child
            .as_ref()
            .map(|c| format!(", command {} (pid {})", args.command.join(" "), c.id()))
            .unwrap_or_default(),
    );

    let signalled = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir monitor", signalled.clone()));
    let time_up = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(time_up);
    let only_pids = !args.pids.is_empty() && args.names.is_empty() && args.cgroups.is_empty();
    let mut poll = tokio::time::interval(args.interval);
    loop {
        let pid = child.as_ref().map(Child::id);
        if let Some(pid) = pid
            && has_ended(pid)
        {
            return Ok(());
        }
        if child.is_none() && only_pids && pids.iter().all(Watch::is_ended) {
            eprintln!("weir monitor: every watched process has ended");
            return Ok(());
        }
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = poll.tick() => {}
            _ = &mut time_up => {
                if let Some(c) = child.as_mut() {
                    eprintln!("weir monitor: time is up; killing {}", args.command.join(" "));
                    c.kill().context("killing the command")?;
                    wait_for_end(c.id(), sigchld, GRACE).await;
                }
                return Ok(());
            }
            _ = signalled.cancelled() => {
                if let Some(c) = child.as_mut() {
                    // A terminal's Ctrl-C reached the command already; a
                    // SIGTERM sent to weir alone did not.
                    terminate(c.id());
                    if !wait_for_end(c.id(), sigchld, GRACE).await {
                        eprintln!(
                            "weir monitor: {} did not stop; killing it",
                            args.command.join(" ")
                        );
                        c.kill().context("killing the command")?;
                        wait_for_end(c.id(), sigchld, GRACE).await;
                    }
                }
                return Ok(());
            }
        }
    }
}

/// Sends SIGTERM to a child of ours. It is not reaped before monitoring
/// ends, so its pid cannot be another process's yet.
fn terminate(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if let Err(e) = nix::sys::signal::kill(Pid::from_raw(raw), Kill::SIGTERM) {
        tracing::debug!("SIGTERM to {pid}: {e}");
    }
}

/// Whether a child of ours has ended: it is a zombie (or already gone).
fn has_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Waits at most `limit` for a child to end; whether it did.
async fn wait_for_end(pid: u32, sigchld: &mut Signal, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !has_ended(pid) {
        let wait = tokio::time::sleep_until(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
        );
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = wait => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return has_ended(pid);
        }
    }
    true
}

/// A shell's exit code: the process's, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn list<T: std::fmt::Display>(what: &str, items: &[T]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!(",{what} {}", items.join(" "))
}
