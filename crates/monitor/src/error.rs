//! The monitor's one error type.

use std::path::PathBuf;

/// Why monitoring could not start or a watch could not be made. Sampling
/// itself never fails: what cannot be read is left out of that tick.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// `Target::Pid` named a process that does not exist (or is a zombie).
    #[error("no process with pid {0} to watch")]
    NoSuchProcess(u32),
    /// `Target::Pid` named a thread: its process is what can be watched.
    #[error("{tid} is a thread of process {pid}, not a process: watch {pid}")]
    Thread { tid: u32, pid: u32 },
    /// A cgroup given to watch is not a cgroup v2 group.
    #[error("cgroup {}: {reason}", path.display())]
    Cgroup { path: PathBuf, reason: String },
    /// A setting that cannot work (a zero interval, an empty topic).
    #[error("{0}")]
    Config(String),
    /// The sampling task ended abnormally (a panic, which is a bug).
    #[error("the monitor's sampling task failed: {0}")]
    Task(String),
}
