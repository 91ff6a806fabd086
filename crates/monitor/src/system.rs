//! Facts about the machine the sampler needs once: clock ticks per second
//! and the page size (from the auxiliary vector, so no libc), the host name
//! and where cgroup v2 is mounted.

use std::path::{Path, PathBuf};

/// `AT_PAGESZ`: the page size in bytes.
const AT_PAGESZ: u64 = 6;
/// `AT_CLKTCK`: the frequency of `times()`, the unit of `/proc/PID/stat`'s
/// CPU times.
const AT_CLKTCK: u64 = 17;

/// Units of the numbers in `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Units {
    /// Clock ticks per second (`USER_HZ`, 100 on every mainstream Linux).
    pub(crate) clock_ticks: u64,
    /// Bytes per page (the unit of `rss` in `/proc/PID/stat`).
    pub(crate) page_size: u64,
}

impl Default for Units {
    fn default() -> Units {
        Units {
            clock_ticks: 100,
            page_size: 4096,
        }
    }
}

impl Units {
    /// The units from `<proc>/self/auxv`, defaults for what it lacks.
    pub(crate) fn read(proc_root: &Path) -> Units {
        std::fs::read(proc_root.join("self/auxv"))
            .map(|bytes| parse_auxv(&bytes))
            .unwrap_or_default()
    }
}

/// The auxiliary vector: native-endian (type, value) pairs of machine words,
/// ended by type 0.
pub(crate) fn parse_auxv(bytes: &[u8]) -> Units {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> u64 {
        let mut buf = [0u8; 8];
        if cfg!(target_endian = "little") {
            buf[..WORD].copy_from_slice(b);
            u64::from_le_bytes(buf)
        } else {
            buf[8 - WORD..].copy_from_slice(b);
            u64::from_be_bytes(buf)
        }
    };
    let mut units = Units::default();
    for pair in bytes.chunks_exact(2 * WORD) {
        let (kind, value) = (word(&pair[..WORD]), word(&pair[WORD..]));
        match kind {
            0 => break,
            AT_CLKTCK if value > 0 => units.clock_ticks = value,
            AT_PAGESZ if value > 0 => units.page_size = value,
            _ => {}
        }
    }
    units
}

/// The host name: the kernel's, else `/etc/hostname`, else `localhost`.
pub(crate) fn hostname(proc_root: &Path) -> String {
    [
        proc_root.join("sys/kernel/hostname"),
        PathBuf::from("/etc/hostname"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_string())
    .find(|s| !s.is_empty())
    .unwrap_or_else(|| "localhost".into())
}

/// Where cgroup v2 is mounted, from `<proc>/self/mountinfo`: on a unified
/// host `/sys/fs/cgroup`, on a hybrid one (v1 controllers beside v2)
/// usually `/sys/fs/cgroup/unified`.
pub(crate) fn cgroup2_mount(proc_root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc_root.join("self/mountinfo")).ok()?;
    parse_cgroup2_mount(&text)
}

/// The mount point of the first `cgroup2` line of a mountinfo text.
pub(crate) fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
            return None;
        }
        mount.split(' ').nth(4).map(|p| PathBuf::from(unescape(p)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space); one that is not
/// a byte (`\777`) is left as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let value = d.iter().fold(0u32, |n, &c| n * 8 + u32::from(c - b'0'));
                u8::try_from(value).ok()
            });
        match byte {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auxv(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|&(k, v)| [k as usize, v as usize])
            .flat_map(usize::to_ne_bytes)
            .collect()
    }

    #[test]
    fn auxv_gives_clock_ticks_and_page_size() {
        let check = |pairs: &[(u64, u64)], clock_ticks: u64, page_size: u64| {
            assert_eq!(
                parse_auxv(&auxv(pairs)),
                Units {
                    clock_ticks,
                    page_size
                },
                "{pairs:?}"
            );
        };
        check(&[(33, 7), (6, 16384), (17, 250), (0, 0)], 250, 16384);
        check(&[(17, 1000), (0, 0), (6, 65536)], 1000, 4096);
        check(&[], 100, 4096);
        check(&[(17, 0), (6, 0)], 100, 4096);
        // A torn trailing word is ignored.
        let mut torn = auxv(&[(6, 8192)]);
        torn.extend_from_slice(&[1, 2, 3]);
        assert_eq!(parse_auxv(&torn).page_size, 8192);
    }

    #[test]
    fn the_running_process_has_sane_units() {
        let units = Units::read(Path::new("/proc"));
        assert!(
            units.clock_ticks >= 100 && units.page_size >= 4096,
            "{units:?}"
        );
    }

    #[test]
    fn cgroup2_mount_is_found_in_mountinfo() {
        let check = |text: &str, want: Option<&str>| {
            assert_eq!(parse_cgroup2_mount(text), want.map(PathBuf::from), "{text}");
        };
        check(
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
            Some("/sys/fs/cgroup"),
        );
        check(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
            Some("/sys/fs/cgroup/unified"),
        );
        check(
            "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 none rw\n",
            Some("/mnt/my cgroups"),
        );
        // An escape beyond a byte is not one: kept as written.
        check(
            "41 31 0:38 / /mnt/a\\777b\\377\\134 rw - cgroup2 none rw\n",
            Some("/mnt/a\\777b\u{fffd}\\"),
        );
        check(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
            None,
        );
        check("", None);
    }
}
