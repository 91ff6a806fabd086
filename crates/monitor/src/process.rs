//! Parsers of one process's `/proc/PID/stat` and `/proc/PID/io`.
//!
//! `stat` is one line: `pid (comm) state ppid …`. The command name may hold
//! spaces and parentheses (`(a b) c)` is a legal name), so it is everything
//! between the first `(` and the *last* `)`; the numbered fields follow.

/// What the sampler takes from one `/proc/PID/stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stat<'a> {
    pub(crate) pid: u32,
    /// The command name, raw bytes (the kernel does not promise UTF-8).
    pub(crate) comm: &'a [u8],
    /// `R`, `S`, `D`, `Z`, …
    pub(crate) state: u8,
    pub(crate) ppid: u32,
    /// utime + stime + cutime + cstime, clock ticks: the process's own CPU
    /// and that of the children it has reaped, so a child that ends between
    /// two readings still shows up in its parent.
    pub(crate) cpu_ticks: u64,
    pub(crate) threads: u64,
    /// Start time, clock ticks after boot: with the pid, a process's
    /// identity (pids are reused, start times are not, for one pid).
    pub(crate) start: u64,
    pub(crate) vsize: u64,
    pub(crate) rss_pages: u64,
}

/// Parses a `stat` line; `None` when it is not one.
pub(crate) fn parse_stat(line: &[u8]) -> Option<Stat<'_>> {
    let open = line.iter().position(|&b| b == b'(')?;
    let close = line.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = number(line[..open].trim_ascii())?;
    let comm = &line[open + 1..close];
    // Fields 3 (state) to 24 (rss) of proc(5): f[i] is field i + 3.
    let mut f: [&[u8]; 22] = [&[]; 22];
    let mut count = 0;
    for (slot, field) in f.iter_mut().zip(
        line[close + 1..]
            .split(|&b| b == b' ' || b == b'\n')
            .filter(|f| !f.is_empty()),
    ) {
        *slot = field;
        count += 1;
    }
    if count < f.len() {
        return None;
    }
    let state = *f[0].first()?;
    let ppid = number(f[1])?;
    let mut times = 0u64;
    for field in &f[11..15] {
        // utime stime cutime cstime (14–17); the last two are signed.
        times = times.saturating_add(signed(field)?.max(0) as u64);
    }
    let threads = number(f[17])?;
    let start = number(f[19])?;
    let vsize = number(f[20])?;
    let rss_pages = signed(f[21])?.max(0) as u64;
    Some(Stat {
        pid: u32::try_from(pid).ok()?,
        comm,
        state,
        ppid: u32::try_from(ppid).ok()?,
        cpu_ticks: times,
        threads,
        start,
        vsize,
        rss_pages,
    })
}

/// `read_bytes` and `write_bytes` of `/proc/PID/io`: bytes this process
/// (and the children it reaped) made the storage layer fetch and send.
pub(crate) fn parse_io(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut write) = (None, None);
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().parse().ok();
        match name {
            "read_bytes" => read = value,
            "write_bytes" => write = value,
            _ => {}
        }
    }
    Some((read?, write?))
}

/// `Tgid` of `/proc/PID/status`: the process a thread belongs to (its own
/// pid for a process).
pub(crate) fn parse_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

fn number(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    field.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then_some(())
            .and_then(|()| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
    })
}

fn signed(field: &[u8]) -> Option<i64> {
    match field.strip_prefix(b"-") {
        Some(rest) => number(rest).map(|n| -(n.min(i64::MAX as u64) as i64)),
        None => number(field).map(|n| n.min(i64::MAX as u64) as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line with the given comm and every other field numbered
    /// recognisably (field N holds N, state is S).
    fn line(pid: u32, comm: &str) -> String {
        let rest: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        format!("{pid} ({comm}) S {}\n", rest.join(" "))
    }

    /// pid, comm, ppid, CPU ticks, threads, start, vsize, rss pages.
    type Want<'a> = Option<(u32, &'a str, u32, u64, u64, u64, u64, u64)>;

    #[test]
    fn stat_lines() {
        let check = |text: &str, want: Want<'_>| {
            let got = parse_stat(text.as_bytes()).map(|s| {
                (
                    s.pid,
                    std::str::from_utf8(s.comm).unwrap(),
                    s.ppid,
                    s.cpu_ticks,
                    s.threads,
                    s.start,
                    s.vsize,
                    s.rss_pages,
                )
            });
            assert_eq!(got, want, "{text}");
        };
        // Fields: ppid 4, utime..cstime 14..17, threads 20, start 22,
        // vsize 23, rss 24.
        let numbered = |pid, comm| Some((pid, comm, 4, 14 + 15 + 16 + 17, 20, 22, 23, 24));
        check(&line(42, "sleep"), numbered(42, "sleep"));
        check(&line(7, "a b) c"), numbered(7, "a b) c"));
        check(&line(7, "(x)"), numbered(7, "(x)"));
        check(&line(7, ""), numbered(7, ""));
        check(
            "1234 (weir monitor) R 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 -3 7 20 0 3 0 98765 123456789 512 18446744073709551615\n",
            Some((1234, "weir monitor", 1, 307, 3, 98765, 123456789, 512)),
        );
        // A zombie: no memory left, its times kept.
        check(
            "99 (sh) Z 1 99 99 0 -1 4227084 0 0 0 0 5 2 0 0 20 0 1 0 5000 0 0 18446744073709551615\n",
            Some((99, "sh", 1, 7, 1, 5000, 0, 0)),
        );
        check("", None);
        check("12 sleep S 1 2 3", None);
        check("12 (sleep) S 1 2 3", None);
        check(
            "x (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21",
            None,
        );
        check(&line(7, "b").replace(" 22 ", " 2x "), None);
    }

    #[test]
    fn status_tgid() {
        let check = |text: &str, want: Option<u32>| assert_eq!(parse_tgid(text), want, "{text}");
        check(
            "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\n",
            Some(4242),
        );
        check("Tgid:\t7\n", Some(7));
        check("Name:\tx\nPid:\t7\n", None);
        check("Tgid:\tx\n", None);
        check("", None);
    }

    #[test]
    fn io_files() {
        let check = |text: &str, want: Option<(u64, u64)>| {
            assert_eq!(parse_io(text), want, "{text}");
        };
        check(
            "rchar: 6976\nwchar: 10\nsyscr: 10\nsyscw: 0\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n",
            Some((4096, 8192)),
        );
        check("read_bytes: 1\n", None);
        check("read_bytes: x\nwrite_bytes: 2\n", None);
        check("", None);
    }
}
