//! The crash test: a child process appends with `fsync = always` from four
//! threads and reports every acknowledged record on stdout; the parent kills
//! it with SIGKILL at a random moment, reopens the log, and checks that every
//! acknowledged record is there with exactly its payload.
//!
//! The child is this test binary itself, run with `--exact
//! crash::child_appender`. Rounds (`WEIR_CRASH_ROUNDS`, default 20) share one
//! directory, so each recovery runs on top of the previous crashes.
//! `WEIR_CRASH_SEED` replays a printed seed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use weir_log::{Fsync, Log, LogConfig, Record, RecoveryReport};

use crate::fixture::{open, tempdir};

/// Names the log directory in the child; absent in an ordinary test run.
const CHILD_DIR: &str = "WEIR_CRASH_CHILD_DIR";
/// Tells the child which round it is, so payloads differ between rounds.
const CHILD_ROUND: &str = "WEIR_CRASH_CHILD_ROUND";
const THREADS: u64 = 4;
const PAYLOAD_LEN: usize = 100;
/// A child that is never killed stops by itself after this long.
const CHILD_LIMIT: Duration = Duration::from_secs(30);
/// What the parent keeps of the log between rounds: a few segments.
const KEEP_BYTES: u64 = 1 << 20;

fn crash_config() -> LogConfig {
    LogConfig {
        fsync: Fsync::Always,
        segment_bytes: 256 << 10,
        ..LogConfig::default()
    }
}

/// The payload of record `seq` of `thread` in `round`, about 100 bytes.
fn payload(round: u64, thread: u64, seq: u64) -> String {
    let mut p = format!("r{round}-t{thread}-s{seq}-");
    let fill = (b'a' + ((thread * 7 + seq) % 26) as u8) as char;
    while p.len() < PAYLOAD_LEN {
        p.push(fill);
    }
    p
}

/// Parses a payload back into (round, thread, seq), checking its filler.
fn parse_payload(p: &[u8]) -> Option<(u64, u64, u64)> {
    let text = std::str::from_utf8(p).ok()?;
    let mut parts = text.splitn(4, '-');
    let round = parts.next()?.strip_prefix('r')?.parse().ok()?;
    let thread = parts.next()?.strip_prefix('t')?.parse().ok()?;
    let seq = parts.next()?.strip_prefix('s')?.parse().ok()?;
    (payload(round, thread, seq) == text).then_some((round, thread, seq))
}

/// A tiny xorshift generator: enough randomness for delays and batch sizes.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The child: appends until killed. Each line `ack OFFSET THREAD SEQ` is
/// written only after the append holding that record has returned.
#[test]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND)
        .expect("round")
        .parse()
        .expect("round number");
    let log = Log::open(Path::new(&dir), crash_config()).expect("child: open");
    let started = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let log = &log;
            s.spawn(move || {
                let mut rng = Rng::new(round * 1_000 + thread + 1);
                let mut seq = 0;
                while started.elapsed() < CHILD_LIMIT {
                    let n = rng.between(1, 20);
                    let records: Vec<Record> = (seq..seq + n)
                        .map(|s| Record::new(round as i64, payload(round, thread, s)))
                        .collect();
                    let appended = log.append(&records).expect("child: append");
                    let mut lines = String::new();
                    for (i, s) in (seq..seq + n).enumerate() {
                        lines += &format!("ack {} {thread} {s}\n", appended.base_offset + i as u64);
                    }
                    let mut out = std::io::stdout().lock();
                    out.write_all(lines.as_bytes()).expect("child: stdout");
                    out.flush().expect("child: flush");
                    seq += n;
                }
            });
        }
    });
}

/// One acknowledged record: (thread, seq) at an offset.
type Acks = HashMap<u64, (u64, u64)>;

/// Runs one child for `round` and kills it after `delay`; returns what it
/// acknowledged.
fn run_child(dir: &Path, round: u64, delay: Duration) -> Acks {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut acks = Acks::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).expect("read child stdout") == 0 {
                break;
            }
            // A line cut short by the kill has no newline; libtest's own
            // output may share a line with the first ack.
            let Some(ack) = line.strip_suffix('\n').and_then(|l| l.split("ack ").nth(1)) else {
                continue;
            };
            let fields: Vec<u64> = ack
                .split(' ')
                .map(|f| f.parse().expect("ack field"))
                .collect();
            let [offset, thread, seq] = fields[..] else {
                panic!("bad ack line {line:?}");
            };
            assert!(
                acks.insert(offset, (thread, seq)).is_none(),
                "offset {offset} acknowledged twice"
            );
        }
        acks
    });
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().expect("try_wait") {
        panic!("the child exited by itself before the kill: {status}");
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("wait for the child");
    reader.join().expect("reader thread")
}

/// Checks the log after round `round` and returns what opening it repaired: every acknowledged record is there
/// with its payload, the log reads end to end, and each thread's records of
/// this round form an unbroken run from seq 0 (an append starts only after
/// the previous one returned, so a later batch cannot survive without it).
///
/// Then retention trims the log to its last few segments, so that rounds
/// stay fast while each recovery still starts from what the crashes left.
fn check_after_crash(dir: &Path, round: u64, acks: &Acks) -> RecoveryReport {
    let config = LogConfig {
        retention_bytes: Some(KEEP_BYTES),
        ..crash_config()
    };
    let log = open(dir, config);
    let mut found: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut runs: HashMap<u64, u64> = HashMap::new();
    let mut next = log.start_offset();
    while next < log.next_offset() {
        let got = log.read(next, 1 << 20).expect("read after crash");
        assert!(!got.is_empty(), "round {round}: empty read at {next}");
        for r in got {
            assert_eq!(r.offset, next, "round {round}: offsets follow on");
            next += 1;
            let (rnd, thread, seq) = parse_payload(&r.record.payload)
                .unwrap_or_else(|| panic!("round {round}: bad payload at offset {}", r.offset));
            assert!(
                rnd <= round,
                "round {round}: record of round {rnd} at {}",
                r.offset
            );
            if rnd == round {
                let run = runs.entry(thread).or_default();
                assert_eq!(
                    seq, *run,
                    "round {round}: thread {thread} seq {seq} at {}",
                    r.offset
                );
                *run += 1;
                found.insert(r.offset, (thread, seq));
            }
        }
    }
    for (offset, want) in acks {
        assert_eq!(
            found.get(offset),
            Some(want),
            "round {round}: acknowledged record (thread, seq) {want:?} at offset {offset}"
        );
    }
    log.enforce_retention(0).expect("retention");
    log.recovery().clone()
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let rounds: u64 =
        std::env::var("WEIR_CRASH_ROUNDS").map_or(20, |r| r.parse().expect("WEIR_CRASH_ROUNDS"));
    let seed = std::env::var("WEIR_CRASH_SEED").map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        },
        |s| s.parse().expect("WEIR_CRASH_SEED"),
    );
    println!("crash test: {rounds} rounds, WEIR_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempdir();
    let mut total = 0;
    for round in 0..rounds {
        let delay = Duration::from_millis(rng.between(20, 300));
        let acks = run_child(dir.path(), round, delay);
        let recovery = check_after_crash(dir.path(), round, &acks);
        println!(
            "round {round}: killed after {delay:?}, {} records acknowledged, recovery {recovery:?}",
            acks.len()
        );
        total += acks.len();
    }
    let log = open(dir.path(), crash_config());
    log.verify().expect("verify");
    println!(
        "crash test: {total} acknowledged, {} records in {} segments",
        log.next_offset(),
        log.segment_count()
    );
    assert!(
        total > 0 || rounds == 0,
        "no child acknowledged anything: the test tested nothing"
    );
}

#[test]
fn payloads_round_trip() {
    for (round, thread, seq) in [(0, 0, 0), (19, 3, 12_345), (7, 1, 99_999_999)] {
        let p = payload(round, thread, seq);
        assert!(p.len() >= PAYLOAD_LEN);
        assert_eq!(parse_payload(p.as_bytes()), Some((round, thread, seq)));
    }
    assert_eq!(parse_payload(b"r1-t2-s3-zzz"), None);
}
