//! The monitor on the live system: the library API over the embedded bus
//! (labels, stopping a watch), a shell's tree, this process's cgroup, a
//! thread refused as a target, a bus that is down for a while or stalled
//! at shutdown, and the GPU part on whatever this machine has
//! (no NVIDIA driver on the development machines and CI: no GPU samples and
//! no error).

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_bus::scripted::{Fault, Scripted};
use weir_bus::{BusError, SubscribeOptions};
use weir_monitor::{Monitor, MonitorConfig, Sampler, SamplerConfig, Target};
use weir_telemetry::{Labels, Sample};

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str]) -> Reaped {
    Reaped(Command::new(program).args(args).spawn().expect(program))
}

fn quiet() -> SamplerConfig {
    SamplerConfig {
        host_metrics: false,
        gpu: false,
        ..SamplerConfig::default()
    }
}

fn config(sampler: SamplerConfig) -> MonitorConfig {
    MonitorConfig {
        interval: Duration::from_millis(100),
        sampler,
        ..MonitorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_publish_labelled_samples_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded://{}", dir.path().display());
    let bus = weir_bus::connect(&url, &Default::default()).await.unwrap();
    let shutdown = CancellationToken::new();
    // Host metrics on: they keep coming after the watch stops, which is
    // how the test knows later ticks happened.
    let sampler = SamplerConfig {
        gpu: false,
        ..SamplerConfig::default()
    };
    let monitor = Monitor::spawn(Arc::clone(&bus), config(sampler), shutdown.clone())
        .await
        .unwrap();
    let child = spawn("sleep", &["30"]);
    let pid = child.0.id().to_string();
    let labels = Labels::from([
        ("service".to_string(), "x".to_string()),
        ("task".to_string(), "y".to_string()),
    ]);
    let watch = monitor
        .handle()
        .watch(Target::Pid(child.0.id()), labels)
        .unwrap();

    let mut sub = bus
        .subscribe("resources", "checker", SubscribeOptions::new("checker"))
        .await
        .unwrap();
    let mut next = async || {
        let got = sub.receive(500, Duration::from_millis(500)).await.unwrap();
        let mut samples = Vec::new();
        for d in got {
            let s = Sample::decode(&d.payload).unwrap();
            let key = std::str::from_utf8(d.key.as_deref().unwrap())
                .unwrap()
                .to_string();
            samples.push((key, s));
            d.ack().await.unwrap();
        }
        samples
    };

    // Labelled samples of the child come, keyed host/pid.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = BTreeSet::new();
    while !metrics.contains("process_cpu_percent") {
        assert!(Instant::now() < deadline, "only {metrics:?} came");
        for (key, s) in next().await {
            if s.labels.get("pid") == Some(&pid) {
                assert_eq!(s.labels["service"], "x");
                assert_eq!(s.labels["task"], "y");
                assert_eq!(s.labels["process"], "sleep");
                assert_eq!(key, format!("{}/{pid}", monitor.host()));
                metrics.insert(s.metric);
            }
        }
    }
    for m in [
        "process_count",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_threads",
        "process_open_fds",
    ] {
        assert!(metrics.contains(m), "{m} missing from {metrics:?}");
    }

    // Dropped: ticks that begin later carry nothing for it.
    drop(watch);
    let dropped_at = weir_telemetry::time::now_ms();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut later_host_ticks = BTreeSet::new();
    while later_host_ticks.len() < 3 {
        assert!(Instant::now() < deadline, "the host samples stopped");
        for (_, s) in next().await {
            if s.ts > dropped_at {
                assert!(
                    !s.labels.contains_key("pid"),
                    "{s:?} after the watch was dropped"
                );
                later_host_ticks.insert(s.ts);
            }
        }
    }
    shutdown.cancel();
    let stats = monitor.join().await.unwrap();
    assert!(
        stats.ticks >= 4 && stats.published == stats.samples,
        "{stats:?}"
    );
    bus.close().await.unwrap();
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for dirent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(dirent.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            out.extend(head.split(' ').next().and_then(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// A shell killed with its children when dropped.
struct Shell(Reaped);

impl Drop for Shell {
    fn drop(&mut self) {
        for child in children_of(self.0.0.id()) {
            let _ = Command::new("kill").arg(child.to_string()).status();
        }
    }
}

#[test]
fn a_shell_and_its_two_children_are_one_tree() {
    let sh = Shell(spawn("sh", &["-c", "sleep 30 & sleep 30 & wait"]));
    let sh = &sh.0;
    let mut sampler = Sampler::new(quiet()).unwrap();
    let _watch = sampler
        .handle()
        .watch(Target::Pid(sh.0.id()), Labels::new())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = sampler.sample();
        let count = samples
            .iter()
            .find(|s| s.metric == "process_count")
            .map(|s| s.value);
        if count == Some(3.0) {
            // Open files: what listing each process's fd directory finds.
            let fds = samples
                .iter()
                .find(|s| s.metric == "process_open_fds")
                .map(|s| s.value);
            let mut pids = children_of(sh.0.id());
            pids.push(sh.0.id());
            let listed: usize = pids
                .iter()
                .map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).unwrap().count())
                .sum();
            assert_eq!(fds, Some(listed as f64));
            break;
        }
        assert!(Instant::now() < deadline, "process_count {count:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn this_process_cgroup_reads_what_its_files_hold() {
    let Some(mount) = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4).map(String::from))
    else {
        eprintln!("no cgroup v2 mount here: nothing to check");
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_string();
    let dir = std::path::Path::new(&mount).join(path.trim_start_matches('/'));
    let mut sampler = Sampler::new(SamplerConfig {
        cgroups: vec![path.clone().into()],
        ..quiet()
    })
    .unwrap();
    sampler.sample();
    // CPU is a rate: the second tick has it.
    std::thread::sleep(Duration::from_millis(100));
    let samples = sampler.sample();
    let metrics: BTreeSet<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    for s in &samples {
        assert_eq!(s.labels["cgroup"], path, "{s:?}");
    }
    for (file, metric) in [
        ("cpu.stat", "cgroup_cpu_percent"),
        ("memory.current", "cgroup_memory_bytes"),
        ("io.stat", "cgroup_read_bytes_per_second"),
    ] {
        assert_eq!(
            metrics.contains(metric),
            dir.join(file).exists(),
            "{metric} and {} (cgroup {path} at {mount})",
            dir.join(file).display()
        );
    }
}

#[test]
fn gpus_come_from_nvml_when_a_driver_is_there() {
    let child = spawn("sleep", &["30"]);
    let mut sampler = Sampler::new(SamplerConfig {
        host_metrics: false,
        ..SamplerConfig::default()
    })
    .unwrap();
    let _watch = sampler
        .handle()
        .watch(Target::Pid(child.0.id()), Labels::new())
        .unwrap();
    let samples = sampler.sample();
    let uuids: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.metric.starts_with("DCGM_FI_"))
        .map(|s| s.labels["UUID"].as_str())
        .collect();
    assert_eq!(uuids.len(), sampler.gpu_count());
    assert_eq!(
        samples
            .iter()
            .any(|s| s.metric == "process_gpu_memory_bytes"),
        sampler.gpu_count() > 0
    );
    eprintln!("{} GPU(s) here", sampler.gpu_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_wait_for_a_bus_that_is_down() {
    let bus = Arc::new(Scripted::sink());
    bus.set(Some(Fault::Refuse(BusError::Unavailable("down".into()))));
    let shutdown = CancellationToken::new();
    let sampler = SamplerConfig {
        gpu: false,
        ..SamplerConfig::default()
    };
    let monitor = Monitor::spawn(bus.clone(), config(sampler), shutdown.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.faults() < 3 {
        assert!(Instant::now() < deadline, "no publish was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.set(None);
    let ticks_in = |bus: &Scripted| {
        bus.messages()
            .iter()
            .map(|m| Sample::decode(&m.payload).unwrap().ts)
            .collect::<BTreeSet<_>>()
            .len()
    };
    // The ticks sampled while it was down arrive once it is back.
    while ticks_in(&bus) < 4 {
        assert!(Instant::now() < deadline, "the backlog was not published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let stats = monitor.join().await.unwrap();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.published, stats.samples, "{stats:?}");
    assert_eq!(bus.messages().len() as u64, stats.published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_stalled_bus() {
    let bus = Arc::new(Scripted::sink());
    bus.set(Some(Fault::Stall));
    let shutdown = CancellationToken::new();
    let quick_flush = MonitorConfig {
        final_flush: Duration::from_millis(300),
        ..config(quiet())
    };
    let child = spawn("sleep", &["30"]);
    let monitor = Monitor::spawn(bus.clone(), quick_flush, shutdown.clone())
        .await
        .unwrap();
    let _watch = monitor
        .handle()
        .watch(Target::Pid(child.0.id()), Labels::new())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.faults() == 0 {
        assert!(Instant::now() < deadline, "no publish was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A publish hangs: shutdown still ends once the final flush's time is
    // up, with every sample counted as dropped.
    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(20), monitor.join())
        .await
        .expect("the monitor waited for the stalled publish")
        .unwrap();
    assert!(stats.samples > 0, "{stats:?}");
    assert_eq!(stats.published, 0, "{stats:?}");
    assert_eq!(stats.dropped, stats.samples, "{stats:?}");
}

#[test]
fn a_thread_is_not_a_process_to_watch() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // `/proc/thread-self` is `PID/task/TID`.
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        tx.send(tid).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let pid = std::process::id();
    assert_ne!(tid, pid);
    let err = Target::Pid(tid).check().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{tid} is a thread of process {pid}, not a process: watch {pid}")
    );
    let sampler = Sampler::new(quiet()).unwrap();
    assert!(
        sampler
            .handle()
            .watch(Target::Pid(tid), Labels::new())
            .is_err()
    );
    assert!(
        sampler
            .handle()
            .watch(Target::Pid(pid), Labels::new())
            .is_ok()
    );
    drop(done_tx);
    thread.join().unwrap();
}
