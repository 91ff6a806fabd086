//! Process trees: a watched process and every descendant it has had, summed.
//!
//! Membership is sticky: a process that was in a tree stays in it until it
//! ends, even when its parent dies and it is handed to init, so a
//! double-forked daemon is still counted with the job that started it.
//!
//! CPU and IO are counter deltas between two scans. A process's counters
//! include the children it has reaped (`cutime`/`cstime`; the kernel adds a
//! reaped child's IO to its parent's too), so the part of a child's life
//! between its last reading and its end is not lost: it arrives in the
//! reaper's delta. To avoid counting the part already seen twice, a member
//! that ended since the last scan has its last reading taken off its
//! nearest living ancestor in the tree. A process that started since the
//! last scan counts all it has used.

use crate::table::{Entry, Scan};

/// A watched process (the root) and the members it had at the last scan.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub(crate) root_pid: u32,
    pub(crate) root_start: u64,
    /// Members at the last scan, by identity (pid, start time).
    members: Vec<(u32, u64)>,
    /// Indices in the current scan of the members now.
    now: Vec<usize>,
}

/// A tree's figures at one scan. Rates are left to the caller: this holds
/// counter deltas since the previous scan, absent on the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) processes: u64,
    pub(crate) rss_pages: u64,
    pub(crate) vsize: u64,
    pub(crate) threads: u64,
    /// Open files of the members that could be counted.
    pub(crate) fds: Option<u64>,
    pub(crate) cpu_ticks: Option<u64>,
    pub(crate) read_bytes: Option<u64>,
    pub(crate) write_bytes: Option<u64>,
    /// The root still runs (it is present and not a zombie).
    pub(crate) root_alive: bool,
}

impl Tree {
    pub(crate) fn new(root_pid: u32, root_start: u64) -> Tree {
        Tree {
            root_pid,
            root_start,
            members: Vec::new(),
            now: Vec::new(),
        }
    }

    /// Indices in the current scan of the members found by the last
    /// [`Walker::walk`].
    pub(crate) fn current(&self) -> &[usize] {
        &self.now
    }
}

/// Reusable state for walking trees over one scan.
#[derive(Debug, Default)]
pub(crate) struct Walker {
    /// (parent pid, index) of every current process, sorted.
    by_parent: Vec<(u32, usize)>,
    /// `mark[i] == stamp`: process `i` is in the tree last walked.
    mark: Vec<u32>,
    /// Position of process `i` in that tree's member list.
    pos: Vec<usize>,
    stamp: u32,
    stack: Vec<usize>,
    deltas: Vec<Delta>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    cpu: i64,
    read: Option<i64>,
    write: Option<i64>,
}

impl Walker {
    /// Prepares for walking trees of a new scan.
    pub(crate) fn index(&mut self, cur: &Scan) {
        self.by_parent.clear();
        self.by_parent
            .extend(cur.entries().iter().enumerate().map(|(i, e)| (e.ppid, i)));
        self.by_parent.sort_unstable();
        self.mark.clear();
        self.mark.resize(cur.entries().len(), 0);
        self.pos.resize(cur.entries().len(), 0);
        self.stamp = 0;
    }

    /// Finds the tree's members in the current scan: the root, the members
    /// it had that still run, and all their descendants.
    pub(crate) fn walk(&mut self, tree: &mut Tree, cur: &Scan) {
        self.stamp += 1;
        tree.now.clear();
        self.stack.clear();
        self.stack
            .extend(cur.find_same(tree.root_pid, tree.root_start));
        self.stack.extend(
            tree.members
                .iter()
                .filter_map(|&(pid, start)| cur.find_same(pid, start)),
        );
        while let Some(i) = self.stack.pop() {
            if self.mark[i] == self.stamp {
                continue;
            }
            self.mark[i] = self.stamp;
            self.pos[i] = tree.now.len();
            tree.now.push(i);
            let pid = cur.entry(i).pid;
            let from = self.by_parent.partition_point(|&(p, _)| p < pid);
            for &(parent, child) in &self.by_parent[from..] {
                if parent != pid {
                    break;
                }
                if self.mark[child] != self.stamp {
                    self.stack.push(child);
                }
            }
        }
    }

    /// Whether process `i` of the current scan is in the tree last walked.
    pub(crate) fn in_last_walk(&self, i: usize) -> bool {
        self.mark.get(i) == Some(&self.stamp)
    }

    /// Sums the tree last walked (with its members' details read) and
    /// remembers its members for the next scan.
    pub(crate) fn totals(&mut self, tree: &mut Tree, cur: &Scan, prev: &Scan) -> Totals {
        let mut t = Totals {
            processes: tree.now.len() as u64,
            root_alive: cur
                .find_same(tree.root_pid, tree.root_start)
                .is_some_and(|i| cur.entry(i).state != b'Z'),
            ..Totals::default()
        };
        self.deltas.clear();
        for &i in &tree.now {
            let e = cur.entry(i);
            t.rss_pages += e.rss_pages;
            t.vsize += e.vsize;
            t.threads += e.threads;
            if let Some(fds) = e.fds {
                *t.fds.get_or_insert(0) += fds;
            }
            let before = prev.find_same(e.pid, e.start).map(|j| prev.entry(j));
            self.deltas.push(delta(e, before));
        }
        if prev.taken {
            for &(pid, start) in &tree.members {
                if cur.find_same(pid, start).is_some() {
                    continue;
                }
                let Some(gone) = prev.find_same(pid, start).map(|j| prev.entry(j)) else {
                    continue;
                };
                if let Some(heir) = self.heir(gone, cur, prev) {
                    let d = &mut self.deltas[self.pos[heir]];
                    d.cpu -= gone.cpu_ticks as i64;
                    if let Some((r, w)) = gone.io {
                        d.read = d.read.map(|x| x - r as i64);
                        d.write = d.write.map(|x| x - w as i64);
                    }
                }
            }
            let clamp = |v: i64| v.max(0) as u64;
            t.cpu_ticks = Some(self.deltas.iter().map(|d| clamp(d.cpu)).sum());
            let sum = |f: fn(&Delta) -> Option<i64>| {
                self.deltas
                    .iter()
                    .filter_map(f)
                    .map(clamp)
                    .reduce(|a, b| a + b)
            };
            t.read_bytes = sum(|d| d.read);
            t.write_bytes = sum(|d| d.write);
        }
        tree.members.clear();
        tree.members.extend(
            tree.now
                .iter()
                .map(|&i| (cur.entry(i).pid, cur.entry(i).start)),
        );
        t
    }

    /// The nearest ancestor of an ended member that is alive and in the
    /// tree: the one whose counters received the member's last part.
    fn heir(&self, gone: &Entry, cur: &Scan, prev: &Scan) -> Option<usize> {
        let mut parent = gone.ppid;
        for _ in 0..256 {
            let was = prev.find(parent).map(|j| prev.entry(j))?;
            match cur.find_same(was.pid, was.start) {
                Some(i) => return self.in_last_walk(i).then_some(i),
                None => parent = was.ppid,
            }
        }
        None
    }
}

/// How much a member used since the previous scan: all of it when it is
/// new, nothing known for IO it was not watched for then.
fn delta(e: &Entry, before: Option<&Entry>) -> Delta {
    match before {
        Some(b) => Delta {
            cpu: e.cpu_ticks as i64 - b.cpu_ticks as i64,
            read: e.io.zip(b.io).map(|((r, _), (rb, _))| r as i64 - rb as i64),
            write: e.io.zip(b.io).map(|((_, w), (_, wb))| w as i64 - wb as i64),
        },
        None => Delta {
            cpu: e.cpu_ticks as i64,
            read: e.io.map(|(r, _)| r as i64),
            write: e.io.map(|(_, w)| w as i64),
        },
    }
}
