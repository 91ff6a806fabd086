//! cgroup v2 groups: CPU from `cpu.stat`, memory from `memory.current`, IO
//! from `io.stat`. A file a group lacks (its controller is not enabled
//! there, or it is the root group) leaves its metrics out.

use std::path::{Path, PathBuf};

use weir_telemetry::metric::resource as m;

use crate::error::MonitorError;
use crate::sampler::Emit;

/// `usage_usec` of `cpu.stat`: CPU the group used, microseconds.
pub(crate) fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// `rbytes` and `wbytes` of `io.stat`, summed over devices.
pub(crate) fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_ascii_whitespace() {
        let Some((name, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match name {
            "rbytes" => read += value,
            "wbytes" => written += value,
            _ => {}
        }
    }
    (read, written)
}

/// Where a `--cgroup` path points: an absolute path to a group directory
/// as it is, anything else below the cgroup v2 mount. The label is the
/// group's path below the mount (`/` for the root group).
pub(crate) fn resolve(given: &Path, mount: &Path) -> Result<(PathBuf, String), MonitorError> {
    let dir = if given.is_absolute() && given.starts_with(mount) {
        given.to_path_buf()
    } else {
        mount.join(given.strip_prefix("/").unwrap_or(given))
    };
    if !dir.join("cgroup.procs").is_file() {
        return Err(MonitorError::Cgroup {
            path: given.to_path_buf(),
            reason: format!(
                "{} is not a cgroup v2 group (the cgroup v2 mount is {})",
                dir.display(),
                mount.display()
            ),
        });
    }
    let below = dir.strip_prefix(mount).unwrap_or(&dir);
    let label = format!("/{}", below.display());
    Ok((dir, label))
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    mono: f64,
    usage_usec: Option<u64>,
    io: Option<(u64, u64)>,
}

/// One watched group and its last reading.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    prev: Option<Reading>,
}

impl Cgroup {
    pub(crate) fn new(dir: PathBuf) -> Cgroup {
        Cgroup { dir, prev: None }
    }

    pub(crate) fn sample(&mut self, mono: f64, emit: &mut Emit<'_>) {
        let read = |file: &str| std::fs::read_to_string(self.dir.join(file)).ok();
        if let Some(bytes) = read("memory.current").and_then(|t| t.trim().parse::<u64>().ok()) {
            emit.push(m::CGROUP_MEMORY_BYTES, bytes as f64);
        }
        let now = Reading {
            mono,
            usage_usec: read("cpu.stat").as_deref().and_then(parse_cpu_stat),
            io: read("io.stat").as_deref().map(parse_io_stat),
        };
        if let Some(before) = self.prev.filter(|b| mono > b.mono) {
            let dt = mono - before.mono;
            if let (Some(a), Some(b)) = (before.usage_usec, now.usage_usec) {
                let used = b.saturating_sub(a) as f64 / 1e6;
                emit.push(m::CGROUP_CPU_PERCENT, used / dt * 100.0);
            }
            if let (Some(a), Some(b)) = (before.io, now.io) {
                emit.push(
                    m::CGROUP_READ_BYTES_PER_SECOND,
                    b.0.saturating_sub(a.0) as f64 / dt,
                );
                emit.push(
                    m::CGROUP_WRITE_BYTES_PER_SECOND,
                    b.1.saturating_sub(a.1) as f64 / dt,
                );
            }
        }
        self.prev = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat() {
        let check =
            |text: &str, want: Option<u64>| assert_eq!(parse_cpu_stat(text), want, "{text}");
        check(
            "usage_usec 7914721902\nuser_usec 6947876345\nsystem_usec 966845556\nnice_usec 0\n",
            Some(7914721902),
        );
        check("user_usec 1\n", None);
        check("usage_usec x\n", None);
        check("", None);
    }

    #[test]
    fn io_stat() {
        let check = |text: &str, want: (u64, u64)| assert_eq!(parse_io_stat(text), want, "{text}");
        check(
            "8:0 rbytes=1000 wbytes=2000 rios=3 wios=4 dbytes=0 dios=0\n\
             259:0 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=9 dios=1\n",
            (1005, 2007),
        );
        check("8:0 rbytes=x wbytes=2\n", (0, 2));
        check("", (0, 0));
    }

    #[test]
    fn paths_resolve_below_the_mount() {
        let mount = tempfile::tempdir().unwrap();
        let m = mount.path();
        for dir in ["", "jobs/a"] {
            std::fs::create_dir_all(m.join(dir)).unwrap();
            std::fs::write(m.join(dir).join("cgroup.procs"), "").unwrap();
        }
        std::fs::create_dir_all(m.join("plain")).unwrap();
        let check = |given: &Path, want: Result<(PathBuf, &str), &str>| {
            let got = resolve(given, m);
            match (got, want) {
                (Ok((dir, label)), Ok((want_dir, want_label))) => {
                    assert_eq!((dir, label.as_str()), (want_dir, want_label), "{given:?}")
                }
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
                (got, want) => panic!("{given:?}: {got:?}, want {want:?}"),
            }
        };
        check(Path::new("jobs/a"), Ok((m.join("jobs/a"), "/jobs/a")));
        check(Path::new("/jobs/a"), Ok((m.join("jobs/a"), "/jobs/a")));
        check(&m.join("jobs/a"), Ok((m.join("jobs/a"), "/jobs/a")));
        check(Path::new("/"), Ok((m.to_path_buf(), "/")));
        check(Path::new("plain"), Err("is not a cgroup v2 group"));
        check(Path::new("missing"), Err("is not a cgroup v2 group"));
    }
}
