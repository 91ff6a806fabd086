//! The process table: one scan of `/proc/*/stat` per tick gives every
//! process's parent, identity, CPU and memory; the previous scan is kept
//! for deltas. Buffers are reused from tick to tick, so a scan allocates
//! little beyond what reading a directory costs.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::process::{parse_io, parse_stat};

/// One process as one scan saw it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    pub(crate) start: u64,
    pub(crate) state: u8,
    pub(crate) comm: String,
    pub(crate) cpu_ticks: u64,
    pub(crate) threads: u64,
    pub(crate) vsize: u64,
    pub(crate) rss_pages: u64,
    /// `read_bytes`, `write_bytes`; read for watched processes only, absent
    /// when not permitted.
    pub(crate) io: Option<(u64, u64)>,
    /// Open file descriptors; counted for watched processes only.
    pub(crate) fds: Option<u64>,
    /// Whether `io` and `fds` were read in this scan.
    pub(crate) detailed: bool,
}

/// Every process at one moment.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Only `entries[..len]` belong to this scan; the rest are kept for
    /// their buffers.
    entries: Vec<Entry>,
    len: usize,
    index: HashMap<u32, usize>,
    /// Seconds on the sampler's monotonic clock.
    pub(crate) mono: f64,
    /// Whether this scan happened (the first tick has no previous one).
    pub(crate) taken: bool,
}

impl Scan {
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries[..self.len]
    }

    pub(crate) fn entry(&self, idx: usize) -> &Entry {
        &self.entries[idx]
    }

    /// The index of the process with this pid.
    pub(crate) fn find(&self, pid: u32) -> Option<usize> {
        self.index.get(&pid).copied()
    }

    /// The index of this very process: the pid and its start time.
    pub(crate) fn find_same(&self, pid: u32, start: u64) -> Option<usize> {
        self.find(pid).filter(|&i| self.entries[i].start == start)
    }
}

/// The current and previous scans and the buffers they are read with.
#[derive(Debug)]
pub(crate) struct ProcessTable {
    root: PathBuf,
    pub(crate) cur: Scan,
    pub(crate) prev: Scan,
    path: PathBuf,
    buf: Vec<u8>,
    /// `/proc/PID/fd`'s size is its number of entries.
    fd_size_is_count: bool,
}

impl ProcessTable {
    pub(crate) fn new(proc_root: &Path) -> ProcessTable {
        ProcessTable {
            root: proc_root.to_path_buf(),
            cur: Scan::default(),
            prev: Scan::default(),
            path: PathBuf::new(),
            buf: Vec::new(),
            fd_size_is_count: fd_size_is_count(proc_root),
        }
    }

    /// Reads every process; what was current becomes previous.
    pub(crate) fn scan(&mut self, mono: f64) {
        std::mem::swap(&mut self.cur, &mut self.prev);
        let scan = &mut self.cur;
        scan.len = 0;
        scan.index.clear();
        scan.mono = mono;
        scan.taken = true;
        let dir = match std::fs::read_dir(&self.root) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", self.root.display());
                return;
            }
        };
        for dirent in dir.flatten() {
            let name = dirent.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            set_path(&mut self.path, &self.root, pid, "stat");
            if read_bytes(&self.path, &mut self.buf).is_err() {
                continue; // ended since the listing
            }
            let Some(stat) = parse_stat(&self.buf).filter(|s| s.pid == pid) else {
                continue;
            };
            if scan.len == scan.entries.len() {
                scan.entries.push(Entry::default());
            }
            let e = &mut scan.entries[scan.len];
            e.pid = pid;
            e.ppid = stat.ppid;
            e.start = stat.start;
            e.state = stat.state;
            e.comm.clear();
            e.comm.push_str(&String::from_utf8_lossy(stat.comm));
            e.cpu_ticks = stat.cpu_ticks;
            e.threads = stat.threads;
            e.vsize = stat.vsize;
            e.rss_pages = stat.rss_pages;
            e.io = None;
            e.fds = None;
            e.detailed = false;
            scan.index.insert(pid, scan.len);
            scan.len += 1;
        }
    }

    /// Reads the IO counters and counts the open files of a current entry
    /// (once per scan); what is not permitted stays absent.
    pub(crate) fn read_details(&mut self, idx: usize) {
        let e = &mut self.cur.entries[idx];
        if e.detailed {
            return;
        }
        e.detailed = true;
        set_path(&mut self.path, &self.root, e.pid, "io");
        e.io = read_bytes(&self.path, &mut self.buf)
            .ok()
            .and_then(|()| std::str::from_utf8(&self.buf).ok())
            .and_then(parse_io);
        set_path(&mut self.path, &self.root, e.pid, "fd");
        e.fds = count_fds(&self.path, self.fd_size_is_count);
    }

    /// The file name of a process's executable, for names longer than the
    /// 15 bytes `comm` keeps.
    pub(crate) fn exe_name(&mut self, pid: u32) -> Option<String> {
        set_path(&mut self.path, &self.root, pid, "exe");
        let exe = std::fs::read_link(&self.path).ok()?;
        let name = exe.file_name()?.to_string_lossy();
        // A deleted executable reads `name (deleted)`.
        Some(name.trim_end_matches(" (deleted)").to_string())
    }
}

fn set_path(path: &mut PathBuf, root: &Path, pid: u32, file: &str) {
    // The pid's digits on the stack: no allocation per file read.
    let mut digits = [0u8; 10];
    let (mut n, mut at) = (pid, digits.len());
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    path.as_mut_os_string().clear();
    path.push(root);
    path.push(std::str::from_utf8(&digits[at..]).unwrap_or_default());
    path.push(file);
}

/// Reads a small `/proc` file whole, in one `read` when it fits the buffer
/// (a short read of a `/proc` file is its end: the kernel fills what it
/// is given), without the extra read to find the end that `read_to_end`
/// makes.
fn read_bytes(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    const START: usize = 4096;
    let mut file = std::fs::File::open(path)?;
    buf.clear();
    buf.resize(buf.capacity().max(START), 0);
    let mut len = 0;
    loop {
        let n = file.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    Ok(())
}

/// Open file descriptors in a `/proc/PID/fd` directory: its size when the
/// kernel reports the count as the size (Linux 6.2 and later: one `stat`
/// instead of a listing), else by listing.
fn count_fds(dir: &Path, size_is_count: bool) -> Option<u64> {
    if size_is_count {
        return std::fs::metadata(dir).ok().map(|m| m.len());
    }
    std::fs::read_dir(dir)
        .ok()
        .map(|d| d.flatten().count() as u64)
}

/// Whether `<proc>/sys/kernel/osrelease` names Linux 6.2 or later.
fn fd_size_is_count(proc_root: &Path) -> bool {
    let Ok(release) = std::fs::read_to_string(proc_root.join("sys/kernel/osrelease")) else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (6, 2)
}
