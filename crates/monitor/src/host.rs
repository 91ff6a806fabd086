//! The host: CPU from `/proc/stat`, memory from `/proc/meminfo`, disk IO
//! from `/proc/diskstats`, network IO from `/proc/net/dev`.
//!
//! Which disks count: a name in `/proc/diskstats` counts when
//! `/sys/block/NAME/device` exists, that is a whole disk with a device (a
//! controller, real or virtio) behind it. Partitions, loop, ram, zram,
//! device-mapper and md devices have none; their bytes are already counted
//! on the disks beneath them (or never reach a disk), so counting them
//! would count the same IO twice. Network: every interface but `lo`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weir_telemetry::metric::resource as m;

use crate::sampler::Emit;

/// `/proc/stat`'s aggregate `cpu` line: ticks busy and in all, and how many
/// CPUs it sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub(crate) busy: u64,
    pub(crate) total: u64,
    pub(crate) cpus: u64,
}

pub(crate) fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let mut lines = stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_ascii_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    Some(CpuTimes {
        busy: total - idle,
        total,
        cpus: cpus.max(1),
    })
}

/// `MemTotal` and `MemAvailable`, bytes.
pub(crate) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let (mut total, mut available) = (None, None);
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let kib = || rest.split_ascii_whitespace().next()?.parse::<u64>().ok();
        match name {
            "MemTotal" => total = kib(),
            "MemAvailable" => available = kib(),
            _ => {}
        }
    }
    Some((total? * 1024, available? * 1024))
}

/// Bytes read and written by the disks `counts` accepts (sectors are 512
/// bytes in this file whatever the device's own sector size).
pub(crate) fn parse_diskstats(text: &str, mut counts: impl FnMut(&str) -> bool) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(name), Some(r), Some(w)) = (f.get(2), f.get(5), f.get(9)) else {
            continue;
        };
        if let (Ok(r), Ok(w)) = (r.parse::<u64>(), w.parse::<u64>())
            && counts(name)
        {
            read += r * 512;
            written += w * 512;
        }
    }
    (read, written)
}

/// Bytes received and sent over every interface but loopback.
pub(crate) fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        if let (Some(Ok(r)), Some(Ok(t))) = (
            f.first().map(|v| v.parse::<u64>()),
            f.get(8).map(|v| v.parse::<u64>()),
        ) {
            rx += r;
            tx += t;
        }
    }
    (rx, tx)
}

/// The host's readings at one tick.
#[derive(Debug, Clone, Copy)]
struct Reading {
    mono: f64,
    cpu: Option<CpuTimes>,
    disk: Option<(u64, u64)>,
    net: Option<(u64, u64)>,
}

/// Samples the host, remembering the last reading for rates.
#[derive(Debug)]
pub(crate) struct Host {
    proc_root: PathBuf,
    sys_root: PathBuf,
    /// Whether a disk name counts, decided once per name.
    disks: HashMap<String, bool>,
    prev: Option<Reading>,
    text: String,
}

impl Host {
    pub(crate) fn new(proc_root: &Path, sys_root: &Path) -> Host {
        Host {
            proc_root: proc_root.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            disks: HashMap::new(),
            prev: None,
            text: String::with_capacity(4096),
        }
    }

    pub(crate) fn sample(&mut self, mono: f64, emit: &mut Emit<'_>) {
        let cpu = self.read("stat").and_then(parse_cpu);
        if let Some((total, available)) = self.read("meminfo").and_then(parse_meminfo) {
            emit.push(
                m::HOST_MEMORY_USED_BYTES,
                total.saturating_sub(available) as f64,
            );
            emit.push(m::HOST_MEMORY_TOTAL_BYTES, total as f64);
        }
        let disk = match std::fs::read_to_string(self.proc_root.join("diskstats")) {
            Ok(text) => Some(parse_diskstats(&text, |name| match self.disks.get(name) {
                Some(&counts) => counts,
                None => {
                    let counts = self
                        .sys_root
                        .join("block")
                        .join(name)
                        .join("device")
                        .exists();
                    self.disks.insert(name.to_string(), counts);
                    counts
                }
            })),
            Err(_) => None,
        };
        let net = self.read("net/dev").map(parse_net_dev);
        let now = Reading {
            mono,
            cpu,
            disk,
            net,
        };
        if let Some(before) = self.prev.filter(|b| mono > b.mono) {
            let dt = mono - before.mono;
            if let (Some(a), Some(b)) = (before.cpu, now.cpu)
                && b.total > a.total
            {
                let busy = b.busy.saturating_sub(a.busy) as f64 / (b.total - a.total) as f64;
                emit.push(m::HOST_CPU_PERCENT, busy * b.cpus as f64 * 100.0);
            }
            let mut rates = |a: Option<(u64, u64)>, b: Option<(u64, u64)>, names: [&str; 2]| {
                if let (Some(a), Some(b)) = (a, b) {
                    emit.push(names[0], b.0.saturating_sub(a.0) as f64 / dt);
                    emit.push(names[1], b.1.saturating_sub(a.1) as f64 / dt);
                }
            };
            rates(
                before.disk,
                now.disk,
                [
                    m::HOST_DISK_READ_BYTES_PER_SECOND,
                    m::HOST_DISK_WRITE_BYTES_PER_SECOND,
                ],
            );
            rates(
                before.net,
                now.net,
                [
                    m::HOST_NETWORK_RECEIVE_BYTES_PER_SECOND,
                    m::HOST_NETWORK_TRANSMIT_BYTES_PER_SECOND,
                ],
            );
        }
        self.prev = Some(now);
    }

    /// A file under the proc root, into the reused buffer.
    fn read(&mut self, file: &str) -> Option<&str> {
        use std::io::Read;
        self.text.clear();
        std::fs::File::open(self.proc_root.join(file))
            .and_then(|mut f| f.read_to_string(&mut self.text))
            .ok()?;
        Some(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines() {
        let check = |text: &str, want: Option<(u64, u64, u64)>| {
            let got = parse_cpu(text).map(|c| (c.busy, c.total, c.cpus));
            assert_eq!(got, want, "{text}");
        };
        check(
            "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\ncpu1 50 3 25 400 20 2 1 0 0 0\nintr 1 2\n",
            Some((160, 1000, 2)),
        );
        // Guest time is part of user time already: not added again.
        check(
            "cpu  100 0 0 100 0 0 0 0 70 0\ncpu0 100 0 0 100 0 0 0 0 70 0\n",
            Some((100, 200, 1)),
        );
        // Old kernels: four fields.
        check("cpu 10 0 10 80\n", Some((20, 100, 1)));
        check("cpu0 1 2 3 4\n", None);
        check("cpu  1 x 3 4\n", None);
        check("", None);
    }

    #[test]
    fn meminfo() {
        let check = |text: &str, want: Option<(u64, u64)>| {
            assert_eq!(parse_meminfo(text), want, "{text}");
        };
        check(
            "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n",
            Some((24_000_000 * 1024, 20_000_000 * 1024)),
        );
        check("MemTotal:       24000000 kB\n", None);
        check("", None);
    }

    #[test]
    fn diskstats() {
        let text = "   7       0 loop0 10 0 80 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
                    254       0 vda 1466514 49811 1000 1631045 3963465 410968 3000 823795 0 271792 2546964\n \
                    254       1 vda1 100 0 900 0 0 0 2900 0 0 0 0\n \
                    259       0 nvme0n1 5 0 10 0 5 0 20 0 0 0 0\n \
                    253       0 dm-0 5 0 999 0 5 0 999 0 0 0 0\n\
                    garbage\n";
        let check = |disks: &[&str], want: (u64, u64)| {
            assert_eq!(
                parse_diskstats(text, |n| disks.contains(&n)),
                want,
                "{disks:?}"
            );
        };
        check(&["vda", "nvme0n1"], (1010 * 512, 3020 * 512));
        check(&["vda"], (1000 * 512, 3000 * 512));
        check(&[], (0, 0));
    }

    #[test]
    fn net_dev() {
        let check = |text: &str, want: (u64, u64)| assert_eq!(parse_net_dev(text), want, "{text}");
        let header = "Inter-|   Receive                                                |  Transmit\n \
                      face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";
        check(
            &format!(
                "{header}    lo: 9526007659  839365    0    0    0     0          0         0 9526007659  839365    0    0    0     0       0          0\n  \
                 eth0: 1000    5746    0    0    0     0          0         0   300    3477    0    0    0     0       0          0\n  \
                 eth1:20 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n"
            ),
            (1020, 307),
        );
        check(header, (0, 0));
        check("", (0, 0));
    }
}
