//! What to watch: [`Target`]s registered through a [`MonitorHandle`], each
//! held by a [`Watch`] guard; the sampler reads the registry at every tick.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use weir_telemetry::Labels;

use crate::error::MonitorError;
use crate::process::{parse_stat, parse_tgid};

/// Which processes a watch follows, each with all its descendants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One process (a process id, not a thread id). The watch ends when it
    /// does, after one last sample.
    Pid(u32),
    /// Every process with this name, now and later: its command name
    /// (`comm`), or for names longer than the 15 bytes `comm` keeps, its
    /// executable's file name. A match below another match belongs to the
    /// upper one's tree.
    Name(String),
}

impl Target {
    /// Whether the target can be watched now: a `Pid` names a running
    /// process, not one of its threads (a `Name` always can).
    /// [`MonitorHandle::watch`] checks the same; this lets a caller refuse
    /// a bad target before starting anything.
    pub fn check(&self) -> Result<(), MonitorError> {
        resolve(self.clone(), Path::new("/proc")).map(drop)
    }
}

fn resolve(target: Target, proc_root: &Path) -> Result<Resolved, MonitorError> {
    Ok(match target {
        Target::Pid(pid) => {
            let dir = proc_root.join(pid.to_string());
            let text =
                std::fs::read(dir.join("stat")).map_err(|_| MonitorError::NoSuchProcess(pid))?;
            let stat = parse_stat(&text)
                .filter(|s| s.pid == pid && s.state != b'Z')
                .ok_or(MonitorError::NoSuchProcess(pid))?;
            // `/proc/TID` of a thread reads like a process but is not
            // listed in `/proc`: a watch of it would end at once. A
            // `status` without `Tgid` (very old kernels) cannot tell: taken
            // for a process.
            let status = std::fs::read_to_string(dir.join("status"))
                .map_err(|_| MonitorError::NoSuchProcess(pid))?;
            if let Some(tgid) = parse_tgid(&status)
                && tgid != pid
            {
                return Err(MonitorError::Thread {
                    tid: pid,
                    pid: tgid,
                });
            }
            Resolved::Pid {
                pid,
                start: stat.start,
                name: String::from_utf8_lossy(stat.comm).into_owned(),
            }
        }
        Target::Name(name) => Resolved::Name(name),
    })
}

/// A target as the registry holds it: a pid pinned to its start time, so a
/// reused pid is not taken for the watched process, with the name it had
/// then (its `process` label, even before a scan has seen it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    Pid { pid: u32, start: u64, name: String },
    Name(String),
}

/// One registered watch.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) target: Resolved,
    pub(crate) labels: Labels,
    /// Bumped at every label change, so the sampler copies labels only then.
    pub(crate) version: u64,
    /// Set by the sampler when a `Pid` watch's process has ended.
    pub(crate) ended: bool,
}

/// Every live watch, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: u64,
    pub(crate) watches: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Shared {
    proc_root: PathBuf,
    registry: Mutex<Registry>,
}

/// Starts and stops watching process trees; cheap to clone and share (the
/// worker and the orchestrator hold one).
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    shared: Arc<Shared>,
}

impl MonitorHandle {
    pub(crate) fn new(proc_root: &Path) -> MonitorHandle {
        MonitorHandle {
            shared: Arc::new(Shared {
                proc_root: proc_root.to_path_buf(),
                registry: Mutex::new(Registry::default()),
            }),
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.shared)
    }

    /// Watches a process tree from the next tick on, its samples labelled
    /// with `labels` besides host, pid and process name. A `Pid` that does
    /// not exist (or is already a zombie) or is a thread is an error; a
    /// `Name` matching nothing yet is not.
    pub fn watch(&self, target: Target, labels: Labels) -> Result<Watch, MonitorError> {
        let target = resolve(target, &self.shared.proc_root)?;
        let mut registry = self.registry();
        registry.next_id += 1;
        let id = registry.next_id;
        registry.watches.insert(
            id,
            Entry {
                target,
                labels,
                version: 0,
                ended: false,
            },
        );
        Ok(Watch {
            shared: Arc::clone(&self.shared),
            id,
        })
    }

    /// How many watches are registered.
    pub fn watch_count(&self) -> usize {
        self.registry().watches.len()
    }
}

/// Watching one target: dropping it (or [`Watch::stop`]) stops, and no
/// sample for it follows.
#[derive(Debug)]
pub struct Watch {
    shared: Arc<Shared>,
    id: u64,
}

impl Watch {
    /// Sets a label on the samples from the next tick on (the task a
    /// worker has just started, say).
    pub fn set_label(&self, name: impl Into<String>, value: impl Into<String>) {
        if let Some(e) = lock(&self.shared).watches.get_mut(&self.id) {
            e.labels.insert(name.into(), value.into());
            e.version += 1;
        }
    }

    /// Removes a label from the samples from the next tick on.
    pub fn remove_label(&self, name: &str) {
        if let Some(e) = lock(&self.shared).watches.get_mut(&self.id)
            && e.labels.remove(name).is_some()
        {
            e.version += 1;
        }
    }

    /// Whether a `Pid` watch's process has ended (and its last sample was
    /// taken).
    pub fn is_ended(&self) -> bool {
        lock(&self.shared)
            .watches
            .get(&self.id)
            .is_none_or(|e| e.ended)
    }

    /// Stops watching: the same as dropping the guard.
    pub fn stop(self) {}
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.shared).watches.remove(&self.id);
    }
}

/// The registry, even after a panic elsewhere poisoned its lock: its data
/// is a plain map that no half-done operation can break.
fn lock(shared: &Shared) -> MutexGuard<'_, Registry> {
    shared
        .registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
