//! The monitor against what is known: a child that burns one core and
//! holds 256 MiB must read 100 % ± 15 of a core, and its resident memory
//! within 10 % of 256 MiB. A test binary of its own, so that no other test
//! competes with the child for the CPU.
//!
//! The test binary is its own child: run with `WEIR_MONITOR_BURN_CHILD`
//! set and `--exact burn_child`, it touches every page of 256 MiB, then
//! spins until killed (or for two minutes at most).

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_monitor::{Sampler, SamplerConfig, Target};
use weir_telemetry::{Labels, Sample};

const HELD: usize = 256 << 20;
const CHILD: &str = "WEIR_MONITOR_BURN_CHILD";
/// A tick is judged only when the CPU was free enough for the child to
/// have a core: others waited for a CPU less than this share of it.
const MAX_STALL: f64 = 0.10;
const CLEAN_TICKS: usize = 3;

/// The child's body when `WEIR_MONITOR_BURN_CHILD` is set; nothing
/// otherwise.
#[test]
fn burn_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut held = vec![0u8; HELD];
    for page in held.chunks_mut(4096) {
        page[0] = 1;
    }
    let stop = Instant::now() + Duration::from_secs(120);
    let mut x = 0usize;
    while Instant::now() < stop {
        for _ in 0..100_000 {
            x = black_box(x.wrapping_mul(31).wrapping_add(usize::from(held[x % HELD])));
        }
    }
    black_box(&mut held);
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn value(samples: &[Sample], metric: &str) -> Option<f64> {
    samples.iter().find(|s| s.metric == metric).map(|s| s.value)
}

/// Microseconds some task waited for a CPU (pressure stall information),
/// when the kernel keeps it.
fn cpu_stall_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

#[test]
fn a_child_burning_one_core_reads_one_core_and_its_memory() {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["burn_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the burning child");
    let child = Reaped(child);
    let pid = child.0.id();
    let mut sampler = Sampler::new(SamplerConfig {
        host_metrics: false,
        gpu: false,
        ..SamplerConfig::default()
    })
    .unwrap();
    let _watch = sampler
        .handle()
        .watch(Target::Pid(pid), Labels::new())
        .unwrap();

    // Wait until it holds its memory.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rss = value(&sampler.sample(), "process_resident_memory_bytes").unwrap_or(0.0);
        if rss >= HELD as f64 * 0.9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child holds only {rss} bytes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Then one-second ticks, judged when the machine gave it a core.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut clean = Vec::new();
    let mut busy = Vec::new();
    while clean.len() < CLEAN_TICKS {
        assert!(
            Instant::now() < deadline,
            "the machine was too busy to measure: CPU stall shares {busy:?}, readings {clean:?}"
        );
        let stall_before = cpu_stall_us();
        let window = Instant::now();
        // The measurement window (not a wait for a condition).
        std::thread::sleep(Duration::from_secs(1));
        let samples = sampler.sample();
        let stall = stall_before
            .zip(cpu_stall_us())
            .map(|(a, b)| (b - a) as f64 / window.elapsed().as_micros() as f64)
            .unwrap_or(0.0);
        let cpu = value(&samples, "process_cpu_percent").expect("a CPU reading");
        let rss = value(&samples, "process_resident_memory_bytes").expect("an RSS reading");
        assert!(
            (rss - HELD as f64).abs() <= HELD as f64 * 0.10,
            "RSS {rss} is not within 10 % of {HELD}"
        );
        assert_eq!(value(&samples, "process_count"), Some(1.0));
        if stall > MAX_STALL {
            busy.push(stall);
            continue;
        }
        assert!(
            (85.0..=115.0).contains(&cpu),
            "CPU {cpu} % is not 100 ± 15 (CPU stall share {stall:.3})"
        );
        clean.push(cpu);
    }
    eprintln!("CPU readings {clean:?}; ticks skipped as busy: {busy:?}");
}
