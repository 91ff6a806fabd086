//! Resource monitoring: the host, process trees, cgroup v2 groups and
//! NVIDIA GPUs, sampled at a fixed interval into telemetry
//! ([`weir_telemetry::Sample`]s) published on the bus.
//!
//! - [`Sampler`] is the synchronous core: [`Sampler::sample`] reads
//!   `/proc`, `/sys`, the cgroup files and NVML once and returns that tick's
//!   samples. Its roots are configurable ([`SamplerConfig`]), so it is
//!   tested on fixture files.
//! - [`Monitor`] is the async shell: [`Monitor::spawn`] builds the sampler
//!   (NVML included) on tokio's blocking pool, ticks on a fixed schedule (a
//!   late tick is skipped, never shifts the schedule), samples on the
//!   blocking pool and publishes each tick in one batch to the topic
//!   (`resources` by default), keyed so each series stays in order. At
//!   shutdown it takes a last sample and gives the bus at most
//!   [`MonitorConfig::final_flush`], a publish under way included.
//! - [`MonitorHandle::watch`] starts watching a [`Target`] (a pid, or every
//!   process of a name) with its descendants; the [`Watch`] it returns
//!   labels the samples ([`Watch::set_label`]) and stops watching when
//!   dropped (so a caller that wants a watch's last sample keeps it until
//!   [`Monitor::join`] has returned). A watch registered before a tick
//!   begins is in that tick; one registered during a tick, in the next.
//!   This is how the worker and the orchestrator monitor the processes
//!   they run.
//!
//! What is measured, and the metric names, are in
//! [`weir_telemetry::metric`]: host CPU, memory, disk and network IO; per
//! tree CPU percent (100 = one core), resident and virtual memory, IO
//! rates, threads, open files, process count and GPU memory; per cgroup
//! CPU, memory and IO; per GPU DCGM's fields with DCGM's labels. Host
//! disks and network count physical devices only (a whole disk, an
//! interface with a device behind it), so the same bytes are not counted
//! once per layer (partition, device mapper; veth, bridge).
//!
//! Invariants:
//! - Linux only, no unsafe code and no libc: everything comes from files
//!   (clock ticks and page size from `/proc/self/auxv`) and, for GPUs, from
//!   NVML loaded at run time, whose absence only leaves GPUs out;
//! - one scan of `/proc/*/stat` per tick; `io` and `fd` are read only for
//!   watched processes; what a process does not let us read is left out of
//!   its sums, never an error; what cannot be known is left out, never
//!   reported as zero (a tree's GPU memory needs a GPU's process list);
//! - a process is its pid *and* start time, so a reused pid is never taken
//!   for a watched process; a tree keeps every descendant it has had until
//!   that process ends, even one reparented to init; a `Pid` watch names a
//!   process, never a thread, and a `Name` watch never adopts a zombie;
//! - rates come from counter deltas between two ticks: the first tick
//!   emits none; CPU and IO of children that end between ticks reach the
//!   tree through their parent's reaped-children counters, counted once;
//! - a bus that fails never stops the monitor: samples wait in a bounded
//!   backlog (oldest dropped first, counted, warned once per burst) and
//!   are retried at the next tick;
//! - reaches the transport only through [`weir_bus::Bus`].

mod backlog;
mod cgroup;
mod error;
mod gpu;
mod host;
mod monitor;
mod process;
mod sampler;
mod system;
mod table;
mod tree;
mod watch;

pub use error::MonitorError;
pub use monitor::{Monitor, MonitorConfig, MonitorStats};
pub use sampler::{Sampler, SamplerConfig, Tick};
pub use watch::{MonitorHandle, Target, Watch};

/// The CPU a process has used (with the children it has reaped), from
/// `/proc/PID/stat`; `None` when there is no such process.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let proc_root = std::path::Path::new("/proc");
    let text = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let stat = process::parse_stat(&text)?;
    let units = system::Units::read(proc_root);
    Some(std::time::Duration::from_secs_f64(
        stat.cpu_ticks as f64 / units.clock_ticks as f64,
    ))
}
