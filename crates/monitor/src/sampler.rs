//! The synchronous core: one call of [`Sampler::sample`] reads the host,
//! the watched process trees, the cgroups and the GPUs and returns their
//! samples. It reads from a configurable proc, sys and cgroup root, so it
//! runs as well on fixture files as on the live system.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir_telemetry::metric::resource as m;
use weir_telemetry::{Labels, Sample};

use crate::cgroup::{self, Cgroup};
use crate::error::MonitorError;
use crate::gpu::{Gpus, ProcessMemory};
use crate::host::Host;
use crate::system::{self, Units};
use crate::table::ProcessTable;
use crate::tree::{Totals, Tree, Walker};
use crate::watch::{MonitorHandle, Resolved};

/// What to sample and where the system's files are.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// The proc file system (`/proc`).
    pub proc_root: PathBuf,
    /// The sys file system (`/sys`), for telling disks from partitions.
    pub sys_root: PathBuf,
    /// Where cgroup v2 is mounted; looked up in `<proc>/self/mountinfo`
    /// when absent (falling back to `/sys/fs/cgroup`).
    pub cgroup_root: Option<PathBuf>,
    /// The `host` label; the host name when absent.
    pub host: Option<String>,
    /// Sample the host's CPU, memory, disks and network.
    pub host_metrics: bool,
    /// Sample NVIDIA GPUs when a driver is present.
    pub gpu: bool,
    /// cgroup v2 groups to sample: absolute, or relative to the mount.
    pub cgroups: Vec<PathBuf>,
}

impl Default for SamplerConfig {
    fn default() -> SamplerConfig {
        SamplerConfig {
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            cgroup_root: None,
            host: None,
            host_metrics: true,
            gpu: true,
            cgroups: Vec::new(),
        }
    }
}

/// When a tick happens: the samples' time, and a monotonic time that rates
/// are computed over (any origin, as long as it only moves forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub mono: Duration,
}

/// Pushes samples of one series family: one time, one set of labels.
#[derive(Debug)]
pub(crate) struct Emit<'a> {
    out: &'a mut Vec<Sample>,
    ts: i64,
    labels: &'a Labels,
}

impl<'a> Emit<'a> {
    pub(crate) fn new(out: &'a mut Vec<Sample>, ts: i64, labels: &'a Labels) -> Emit<'a> {
        Emit { out, ts, labels }
    }

    /// Adds a sample; a value that is not finite is left out.
    pub(crate) fn push(&mut self, metric: &str, value: f64) {
        if value.is_finite() {
            self.out.push(Sample {
                metric: metric.to_string(),
                value,
                ts: self.ts,
                labels: self.labels.clone(),
            });
        }
    }
}

/// The sampler: the state kept between ticks (the previous readings every
/// rate needs) and the watches' trees.
#[derive(Debug)]
pub struct Sampler {
    host_name: String,
    host_labels: Labels,
    units: Units,
    table: ProcessTable,
    walker: Walker,
    host: Option<Host>,
    cgroups: Vec<(Cgroup, Labels)>,
    gpus: Gpus,
    gpu_memory: ProcessMemory,
    handle: MonitorHandle,
    watches: BTreeMap<u64, WatchState>,
    /// Scratch: the indices in the current scan claimed by a name watch.
    claimed: Vec<usize>,
    started: Instant,
}

/// The sampler's copy of one registered watch.
#[derive(Debug)]
struct WatchState {
    target: Resolved,
    labels: Labels,
    version: u64,
    trees: Vec<TreeState>,
}

#[derive(Debug)]
struct TreeState {
    tree: Tree,
    /// The root's name, for the `process` label.
    name: String,
    labels: Labels,
    /// Whether a sample of it was emitted (a tree never seen ends quietly).
    emitted: bool,
}

impl Sampler {
    /// A sampler; `cgroups` must name cgroup v2 groups. GPUs are looked
    /// for here, once: with GPUs this blocks while NVML starts (seconds per
    /// GPU without persistence mode), so an async caller runs it on the
    /// blocking pool, as [`Monitor::spawn`](crate::Monitor::spawn) does.
    pub fn new(config: SamplerConfig) -> Result<Sampler, MonitorError> {
        let host_name = config
            .host
            .clone()
            .unwrap_or_else(|| system::hostname(&config.proc_root));
        let host_labels = Labels::from([(m::LABEL_HOST.to_string(), host_name.clone())]);
        let mut cgroups = Vec::new();
        if !config.cgroups.is_empty() {
            let mount = config
                .cgroup_root
                .clone()
                .or_else(|| system::cgroup2_mount(&config.proc_root))
                .unwrap_or_else(|| "/sys/fs/cgroup".into());
            for given in &config.cgroups {
                let (dir, label) = cgroup::resolve(given, &mount)?;
                let mut labels = host_labels.clone();
                labels.insert(m::LABEL_CGROUP.into(), label);
                cgroups.push((Cgroup::new(dir), labels));
            }
        }
        Ok(Sampler {
            units: Units::read(&config.proc_root),
            table: ProcessTable::new(&config.proc_root),
            walker: Walker::default(),
            host: config
                .host_metrics
                .then(|| Host::new(&config.proc_root, &config.sys_root)),
            cgroups,
            gpus: if config.gpu {
                Gpus::open(&host_name)
            } else {
                Gpus::absent()
            },
            gpu_memory: ProcessMemory::default(),
            handle: MonitorHandle::new(&config.proc_root),
            watches: BTreeMap::new(),
            claimed: Vec::new(),
            started: Instant::now(),
            host_name,
            host_labels,
        })
    }

    /// The handle that adds and removes watches.
    pub fn handle(&self) -> MonitorHandle {
        self.handle.clone()
    }

    /// The `host` label's value.
    pub fn host(&self) -> &str {
        &self.host_name
    }

    /// How many GPUs are sampled (0 without an NVIDIA driver).
    pub fn gpu_count(&self) -> usize {
        self.gpus.count()
    }

    /// Samples everything now.
    pub fn sample(&mut self) -> Vec<Sample> {
        let tick = Tick {
            ts_ms: weir_telemetry::time::now_ms(),
            mono: self.started.elapsed(),
        };
        let mut out = Vec::new();
        self.sample_at(tick, &mut out);
        out
    }

    /// Samples everything as of `tick`, appending to `out`. Rates (CPU
    /// percentages, bytes per second) need a previous tick: the first
    /// leaves them out.
    pub fn sample_at(&mut self, tick: Tick, out: &mut Vec<Sample>) {
        let mono = tick.mono.as_secs_f64();
        let interval = self.table.cur.taken.then_some(mono - self.table.cur.mono);
        // Watches first, then the scan: a watch's process was found before
        // it was registered, so the scan comes after, and a root it lacks
        // has really ended. (A watch registered once this tick has begun
        // waits for the next one.)
        self.sync_watches();
        self.table.scan(mono);
        self.walker.index(&self.table.cur);
        self.gpus.sample(tick.ts_ms, out, &mut self.gpu_memory);
        let mut ended = Vec::new();
        let ids: Vec<u64> = self.watches.keys().copied().collect();
        for id in ids {
            if self.sample_watch(id, tick.ts_ms, interval, out) {
                ended.push(id);
            }
        }
        if !ended.is_empty() {
            let mut registry = self.handle.registry();
            for id in ended {
                if let Some(e) = registry.watches.get_mut(&id) {
                    e.ended = true;
                }
            }
        }
        if let Some(host) = &mut self.host {
            host.sample(mono, &mut Emit::new(out, tick.ts_ms, &self.host_labels));
        }
        for (group, labels) in &mut self.cgroups {
            group.sample(mono, &mut Emit::new(out, tick.ts_ms, labels));
        }
    }

    /// Brings the sampler's watches in line with the registry.
    fn sync_watches(&mut self) {
        let registry = self.handle.registry();
        self.watches
            .retain(|id, _| registry.watches.contains_key(id));
        for (&id, entry) in &registry.watches {
            if let Some(w) = self.watches.get_mut(&id) {
                if w.version != entry.version {
                    w.labels = entry.labels.clone();
                    w.version = entry.version;
                    for t in &mut w.trees {
                        t.labels = tree_labels(&self.host_name, &w.labels, &t.tree, &t.name);
                    }
                }
                continue;
            }
            if entry.ended {
                continue;
            }
            let mut w = WatchState {
                target: entry.target.clone(),
                labels: entry.labels.clone(),
                version: entry.version,
                trees: Vec::new(),
            };
            if let Resolved::Pid { pid, start, name } = &w.target {
                let tree = Tree::new(*pid, *start);
                w.trees.push(self.tree_state(tree, name.clone(), &w.labels));
            }
            self.watches.insert(id, w);
        }
    }

    fn tree_state(&self, tree: Tree, name: String, labels: &Labels) -> TreeState {
        TreeState {
            labels: tree_labels(&self.host_name, labels, &tree, &name),
            tree,
            name,
            emitted: false,
        }
    }

    /// Samples one watch's trees and finds a name watch's new ones; true
    /// when a pid watch's process has ended.
    fn sample_watch(
        &mut self,
        id: u64,
        ts: i64,
        interval: Option<f64>,
        out: &mut Vec<Sample>,
    ) -> bool {
        let Some(mut w) = self.watches.remove(&id) else {
            return false;
        };
        let mut any_ended = false;
        self.claimed.clear();
        w.trees.retain_mut(|t| {
            let alive = self.sample_tree(t, ts, interval, out);
            self.claimed.extend_from_slice(t.tree.current());
            any_ended |= !alive;
            alive
        });
        if let Resolved::Name(name) = &w.target {
            self.claimed.sort_unstable();
            for i in 0..self.table.cur.entries().len() {
                if self.claimed.binary_search(&i).is_ok() || !self.is_new_root(i, name) {
                    continue;
                }
                let e = self.table.cur.entry(i);
                let tree = Tree::new(e.pid, e.start);
                let mut t = self.tree_state(tree, name.clone(), &w.labels);
                if self.sample_tree(&mut t, ts, interval, out) {
                    self.claimed.extend_from_slice(t.tree.current());
                    self.claimed.sort_unstable();
                    w.trees.push(t);
                }
            }
        }
        self.watches.insert(id, w);
        any_ended && matches!(self.watches[&id].target, Resolved::Pid { .. })
    }

    /// Whether process `i` matches a name watch, still runs (a zombie
    /// would be a tree that ends as it starts, at every tick) and no
    /// ancestor matches.
    fn is_new_root(&mut self, i: usize, name: &str) -> bool {
        if self.table.cur.entry(i).state == b'Z' || !self.name_matches(i, name) {
            return false;
        }
        let mut parent = self.table.cur.entry(i).ppid;
        for _ in 0..256 {
            let Some(p) = self.table.cur.find(parent) else {
                return true;
            };
            if self.name_matches(p, name) {
                return false;
            }
            parent = self.table.cur.entry(p).ppid;
        }
        true
    }

    fn name_matches(&mut self, i: usize, name: &str) -> bool {
        /// `comm` keeps this many bytes of a name.
        const COMM_LEN: usize = 15;
        let e = self.table.cur.entry(i);
        if e.comm == name {
            return true;
        }
        if e.comm.len() == COMM_LEN && name.len() > COMM_LEN && name.starts_with(e.comm.as_str()) {
            let pid = e.pid;
            return self.table.exe_name(pid).as_deref() == Some(name);
        }
        false
    }

    /// Samples one tree; false when its root has ended (after its last
    /// sample).
    fn sample_tree(
        &mut self,
        t: &mut TreeState,
        ts: i64,
        interval: Option<f64>,
        out: &mut Vec<Sample>,
    ) -> bool {
        self.walker.walk(&mut t.tree, &self.table.cur);
        for &i in t.tree.current() {
            self.table.read_details(i);
        }
        let totals = self
            .walker
            .totals(&mut t.tree, &self.table.cur, &self.table.prev);
        if totals.processes > 0 || t.emitted {
            let cur = &self.table.cur;
            let gpu_bytes = self
                .gpu_memory
                .sum(t.tree.current().iter().map(|&i| cur.entry(i).pid));
            let mut emit = Emit::new(out, ts, &t.labels);
            emit_tree(&mut emit, &totals, interval, self.units, gpu_bytes);
            t.emitted = true;
        }
        totals.root_alive
    }
}

/// A tree's labels: the watch's, then host, pid and process name (which
/// a watch's labels cannot override).
fn tree_labels(host: &str, watch: &Labels, tree: &Tree, name: &str) -> Labels {
    let mut labels = watch.clone();
    labels.insert(m::LABEL_HOST.into(), host.into());
    labels.insert(m::LABEL_PID.into(), tree.root_pid.to_string());
    labels.insert(m::LABEL_PROCESS.into(), name.into());
    labels
}

fn emit_tree(
    emit: &mut Emit<'_>,
    t: &Totals,
    interval: Option<f64>,
    units: Units,
    gpu_bytes: Option<u64>,
) {
    emit.push(m::PROCESS_COUNT, t.processes as f64);
    emit.push(
        m::PROCESS_RESIDENT_MEMORY_BYTES,
        (t.rss_pages * units.page_size) as f64,
    );
    emit.push(m::PROCESS_VIRTUAL_MEMORY_BYTES, t.vsize as f64);
    emit.push(m::PROCESS_THREADS, t.threads as f64);
    if let Some(fds) = t.fds {
        emit.push(m::PROCESS_OPEN_FDS, fds as f64);
    }
    if let Some(dt) = interval.filter(|&dt| dt > 0.0) {
        if let Some(ticks) = t.cpu_ticks {
            let percent_seconds = ticks as f64 * 100.0 / units.clock_ticks as f64;
            emit.push(m::PROCESS_CPU_PERCENT, percent_seconds / dt);
        }
        if let Some(bytes) = t.read_bytes {
            emit.push(m::PROCESS_READ_BYTES_PER_SECOND, bytes as f64 / dt);
        }
        if let Some(bytes) = t.write_bytes {
            emit.push(m::PROCESS_WRITE_BYTES_PER_SECOND, bytes as f64 / dt);
        }
    }
    if let Some(bytes) = gpu_bytes {
        emit.push(m::PROCESS_GPU_MEMORY_BYTES, bytes as f64);
    }
}
