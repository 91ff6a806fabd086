//! The host: CPU from `/proc/stat`, memory from `/proc/meminfo`, disk IO
//! from `/proc/diskstats`, network IO from `/proc/net/dev`.
//!
//! Which disks count: a name in `/proc/diskstats` counts when
//! `/sys/block/NAME/device` exists, that is a whole disk with a device (a
//! controller, real or virtio) behind it. Partitions, loop, ram, zram,
//! device-mapper and md devices have none; their bytes are already counted
//! on the disks beneath them (or never reach a disk), so counting them
//! would count the same IO twice.
//!
//! Which interfaces count: the same rule, `/sys/class/net/NAME/device`
//! exists, that is a physical interface (or a virtio one) whose bytes
//! really enter or leave the machine. `lo`, bridges, veth pairs, tunnels
//! and VLANs have none: a container's traffic crosses its veth, a bridge
//! and the physical interface, and counting them all would count it two or
//! three times. Rates are taken per interface: one that appears, vanishes
//! or whose counters go backwards adds nothing that tick, the others still
//! count.

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

/// Each interface of `/proc/net/dev` with its bytes received and sent.
pub(crate) fn parse_net_dev(text: &str, mut each: impl FnMut(&str, u64, u64)) {
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_ascii_whitespace();
        let rx = f.next().map(str::parse::<u64>);
        let tx = f.nth(7).map(str::parse::<u64>);
        if let (Some(Ok(rx)), Some(Ok(tx))) = (rx, tx) {
            each(name.trim(), rx, tx);
        }
    }
}

/// One interface's counters at the last tick.
#[derive(Debug, Clone, Copy)]
struct Interface {
    physical: bool,
    rx: u64,
    tx: u64,
    /// The tick it was last seen at: one not in this tick's file is
    /// forgotten.
    seen: u64,
}

/// The physical interfaces' counters from tick to tick.
#[derive(Debug, Default)]
struct Network {
    interfaces: HashMap<String, Interface>,
    ticks: u64,
}

impl Network {
    /// Reads this tick's counters; the bytes received and sent since the
    /// last tick over the physical interfaces seen at both, or `None` at
    /// the first. `physical` is asked once per interface while it lasts.
    fn update(&mut self, text: &str, mut physical: impl FnMut(&str) -> bool) -> Option<(u64, u64)> {
        let first = self.ticks == 0;
        self.ticks += 1;
        let tick = self.ticks;
        let (mut rx_sum, mut tx_sum) = (0u64, 0u64);
        parse_net_dev(text, |name, rx, tx| {
            let entry = match self.interfaces.get_mut(name) {
                Some(e) => e,
                None => {
                    // New: nothing to compare with until the next tick.
                    let new = Interface {
                        physical: physical(name),
                        rx,
                        tx,
                        seen: tick,
                    };
                    self.interfaces.insert(name.to_string(), new);
                    return;
                }
            };
            if entry.physical {
                // A counter that went back (a reset driver) adds nothing.
                rx_sum += rx.saturating_sub(entry.rx);
                tx_sum += tx.saturating_sub(entry.tx);
            }
            *entry = Interface {
                rx,
                tx,
                seen: tick,
                ..*entry
            };
        });
        // Pods come and go with their veths: forget what vanished.
        self.interfaces.retain(|_, i| i.seen == tick);
        (!first).then_some((rx_sum, tx_sum))
    }
}

/// The host's readings at one tick.
#[derive(Debug, Clone, Copy)]
struct Reading {
    mono: f64,
    cpu: Option<CpuTimes>,
    disk: Option<(u64, u64)>,
}

/// Samples the host, remembering the last reading for rates.
#[derive(Debug)]
pub(crate) struct Host {
    proc_root: PathBuf,
    sys_root: PathBuf,
    /// Whether a disk name counts, decided once per name.
    disks: HashMap<String, bool>,
    network: Network,
    prev: Option<Reading>,
    text: String,
}

impl Host {
    pub(crate) fn new(proc_root: &Path, sys_root: &Path) -> Host {
        Host {
            proc_root: proc_root.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            disks: HashMap::new(),
            network: Network::default(),
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
        // Read every tick, even the first, so each interface has a
        // previous reading; a tick that cannot read it starts over.
        let net = match std::fs::read_to_string(self.proc_root.join("net/dev")) {
            Ok(text) => {
                let class = self.sys_root.join("class/net");
                self.network
                    .update(&text, |name| class.join(name).join("device").exists())
            }
            Err(_) => {
                self.network = Network::default();
                None
            }
        };
        let now = Reading { mono, cpu, disk };
        if let Some(before) = self.prev.filter(|b| mono > b.mono) {
            let dt = mono - before.mono;
            if let (Some(a), Some(b)) = (before.cpu, now.cpu)
                && b.total > a.total
            {
                let busy = b.busy.saturating_sub(a.busy) as f64 / (b.total - a.total) as f64;
                emit.push(m::HOST_CPU_PERCENT, busy * b.cpus as f64 * 100.0);
            }
            if let (Some(a), Some(b)) = (before.disk, now.disk) {
                emit.push(
                    m::HOST_DISK_READ_BYTES_PER_SECOND,
                    b.0.saturating_sub(a.0) as f64 / dt,
                );
                emit.push(
                    m::HOST_DISK_WRITE_BYTES_PER_SECOND,
                    b.1.saturating_sub(a.1) as f64 / dt,
                );
            }
            if let Some((rx, tx)) = net {
                emit.push(m::HOST_NETWORK_RECEIVE_BYTES_PER_SECOND, rx as f64 / dt);
                emit.push(m::HOST_NETWORK_TRANSMIT_BYTES_PER_SECOND, tx as f64 / dt);
            }
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
        let check = |text: &str, want: &[(&str, u64, u64)]| {
            let mut got = Vec::new();
            parse_net_dev(text, |name, rx, tx| got.push((name.to_string(), rx, tx)));
            let want: Vec<(String, u64, u64)> = want
                .iter()
                .map(|&(n, r, t)| (n.to_string(), r, t))
                .collect();
            assert_eq!(got, want, "{text}");
        };
        let header = "Inter-|   Receive                                                |  Transmit\n \
                      face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";
        check(
            &format!(
                "{header}    lo: 9526007659  839365    0    0    0     0          0         0 9526007659  839365    0    0    0     0       0          0\n  \
                 eth0: 1000    5746    0    0    0     0          0         0   300    3477    0    0    0     0       0          0\n  \
                 eth1:20 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n  \
                 bad: x 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n  \
                 short: 1 2 3\n"
            ),
            &[
                ("lo", 9526007659, 9526007659),
                ("eth0", 1000, 300),
                ("eth1", 20, 7),
            ],
        );
        check(header, &[]);
        check("", &[]);
    }

    #[test]
    fn network_counts_physical_interfaces_per_interface() {
        let line = |name: &str, rx: u64, tx: u64| {
            format!("{name}: {rx} 0 0 0 0 0 0 0 {tx} 0 0 0 0 0 0 0\n")
        };
        let ticks = |lines: &[&[(&str, u64, u64)]]| {
            let mut net = Network::default();
            lines
                .iter()
                .map(|tick| {
                    let text: String = tick.iter().map(|&(n, r, t)| line(n, r, t)).collect();
                    net.update(&text, |name| name.starts_with("eth"))
                })
                .collect::<Vec<_>>()
        };
        // Only physical interfaces: a pod's bytes over veth and the bridge
        // are the same bytes as eth0's.
        assert_eq!(
            ticks(&[
                &[
                    ("lo", 5, 5),
                    ("eth0", 100, 10),
                    ("veth1", 50, 50),
                    ("cni0", 50, 50)
                ],
                &[
                    ("lo", 9, 9),
                    ("eth0", 300, 30),
                    ("veth1", 250, 70),
                    ("cni0", 250, 70)
                ],
            ]),
            [None, Some((200, 20))]
        );
        // An interface that vanishes, or appears, adds nothing that tick;
        // the others still count.
        assert_eq!(
            ticks(&[
                &[("eth0", 100, 10), ("eth1", 1000, 1000)],
                &[("eth0", 150, 20)],
                &[("eth0", 160, 25), ("eth1", 5, 5)],
                &[("eth0", 170, 30), ("eth1", 15, 8)],
            ]),
            [None, Some((50, 10)), Some((10, 5)), Some((20, 8))]
        );
        // A counter that goes back (a driver reset) adds nothing; the next
        // tick counts from there.
        assert_eq!(
            ticks(&[
                &[("eth0", 100, 10), ("eth1", 100, 100)],
                &[("eth0", 20, 12), ("eth1", 110, 105)],
                &[("eth0", 30, 20), ("eth1", 120, 110)],
            ]),
            [None, Some((10, 7)), Some((20, 13))]
        );
        // Interfaces that came and went are forgotten.
        let mut net = Network::default();
        for n in 0..100 {
            net.update(&line(&format!("veth{n}"), 1, 1), |_| false);
        }
        assert_eq!(net.interfaces.len(), 1);
    }
}
