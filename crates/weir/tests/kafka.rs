//! Every component on Kafka, unchanged but for the bus URL: a DCGM replay,
//! the monitor, two Game of Life workers (one started the seed's way, with
//! `KAFKA_BROKER`/`TOPIC_IN`/`TOPIC_OUT`/`GROUP_ID`) and the collector
//! carry jobs and telemetry through a Kafka-protocol broker into SQLite; a
//! worker killed mid-job has that job done by the next owner of its
//! partition; `weir bench bus` measures Kafka beside the embedded queue.
//!
//! Needs a broker: `WEIR_TEST_KAFKA` (set by `scripts/test` from
//! `scripts/kafka`). `batch.num.messages=1` works around tansu 0.6, which
//! advances the high watermark by one for a multi-record batch.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{Reaped, WEIR, terminate, text};

/// Options every process gets: the tansu workaround, and a short session
/// so a killed member's partitions move within seconds.
const KAFKA_OPTIONS: [&str; 6] = [
    "--kafka-option",
    "batch.num.messages=1",
    "--kafka-option",
    "session.timeout.ms=6000",
    "--kafka-option",
    "heartbeat.interval.ms=500",
];

fn broker() -> String {
    std::env::var("WEIR_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "WEIR_TEST_KAFKA is not set: the Kafka tests need a broker. \
             Run `export WEIR_TEST_KAFKA=$(scripts/kafka)`, or use scripts/test."
        )
    })
}

/// `weir COMMAND… --bus BUS KAFKA_OPTIONS ARGS…`.
fn weir(bus: &str, command: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(WEIR);
    c.args(command)
        .args(["--bus", bus])
        .args(KAFKA_OPTIONS)
        .args(args)
        .env_remove("WEIR_BUS");
    c
}

fn run(mut c: Command) -> String {
    let out = c.output().expect("run weir");
    assert!(out.status.success(), "{c:?}: {out:?}");
    text(&out.stdout) + &text(&out.stderr)
}

fn count(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jobs_and_telemetry_go_through_kafka_into_sqlite() {
    let url = broker();
    let servers = url.trim_start_matches("kafka://");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weir.db");
    let run_id = format!("{}-{}", std::process::id(), weir_queue::now_ms());
    let [telemetry, resources, jobs, results] =
        ["telemetry", "resources", "jobs", "results"].map(|t| format!("e2e-{t}-{run_id}"));

    let collector = Reaped(
        weir(&url, &["collect"], &["--sink"])
            .arg(format!("sqlite://{}", db.display()))
            .args(["--topic", &format!("{telemetry},{resources},{results}")])
            .args(["--group", &format!("collectors-{run_id}")])
            .args(["--flush-interval", "100ms", "--progress", "0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir collect"),
    );
    // Two workers in one group: `a` started the seed's way.
    let worker = |id: &str, legacy: bool| {
        let mut c = Command::new(WEIR);
        c.arg("worker").args(KAFKA_OPTIONS).env_remove("WEIR_BUS");
        if legacy {
            c.env("KAFKA_BROKER", servers)
                .env("TOPIC_IN", &jobs)
                .env("TOPIC_OUT", &results)
                .env("GROUP_ID", format!("workers-{run_id}"));
        } else {
            c.args(["--bus", &url, "--topic-in", &jobs, "--topic-out", &results])
                .args(["--group", &format!("workers-{run_id}")]);
        }
        Reaped(
            c.args(["--worker-id", id, "--threads", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start weir worker"),
        )
    };
    let a = worker("a", true);
    let mut b = worker("b", false);

    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sources/tests/data/dcgm_sample.csv"
    );
    run(weir(
        &url,
        &["stream", "dcgm"],
        &[
            "--csv",
            csv,
            "--interval",
            "0",
            "--keep-timestamps",
            "--topic",
            &telemetry,
        ],
    ));
    run(weir(
        &url,
        &["monitor"],
        &[
            "--topic",
            &resources,
            "--interval",
            "200ms",
            "--",
            "sleep",
            "1",
        ],
    ));
    let submit = |n: usize| {
        for _ in 0..n {
            run(weir(
                &url,
                &["gol", "submit"],
                &["3", "6", "--topic", &jobs],
            ));
        }
    };
    // Four jobs of four sizes each: sixteen results.
    submit(4);
    let results_stored = |db: &Path| count(db, "SELECT count(*) FROM job_results");
    wait_for("the first results", Duration::from_secs(90), || {
        results_stored(&db) >= 1
    });

    submit(4);
    wait_for("all 32 results", Duration::from_secs(120), || {
        results_stored(&db) >= 32
    });
    wait_for("the 80 DCGM samples", Duration::from_secs(60), || {
        count(
            &db,
            "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id \
             WHERE metric LIKE 'DCGM_%'",
        ) >= 80
    });
    wait_for("the monitor's samples", Duration::from_secs(60), || {
        count(
            &db,
            "SELECT count(*) FROM series WHERE metric = 'process_cpu_percent'",
        ) >= 1
    });

    let mut collector = collector;
    let mut a = a;
    assert!(terminate(&mut a.0).success(), "worker a stops cleanly");
    assert!(terminate(&mut b.0).success(), "worker b stops cleanly");
    assert!(
        terminate(&mut collector.0).success(),
        "the collector stops cleanly"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM job_results WHERE correct = 1"),
        results_stored(&db),
        "every result is correct"
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT job_id) FROM job_results"),
        8,
        "every job has its results"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM job_failures"), 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id \
             WHERE metric LIKE 'DCGM_%'"
        ),
        80,
        "each DCGM sample once"
    );

    // The stats of the Kafka cluster through the same CLI.
    let stats = run(weir(&url, &["queue", "stats"], &["--json"]));
    assert!(stats.contains(&jobs), "{stats}");
}

#[test]
fn bench_bus_puts_kafka_beside_the_embedded_queue() {
    let url = broker();
    let out = run(weir(
        "embedded://",
        &["bench", "bus"],
        &[
            "--bus",
            &url,
            "--messages",
            "2000",
            "--rate",
            "200",
            "--seconds",
            "1",
        ],
    ));
    // Both transports measured, then one line each side by side.
    let summary: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("transport"))
        .collect();
    assert_eq!(summary.len(), 3, "{out}");
    assert!(summary[1].starts_with("embedded://"), "{out}");
    assert!(summary[2].starts_with(&url), "{out}");
    for row in &summary[1..] {
        assert!(row.contains(" msg/s "), "{out}");
    }
    assert!(!out.contains("note:"), "nothing delivered twice: {out}");
}

/// A worker killed in the middle of a job (SIGKILL: no leave, no commit)
/// loses its partitions when its session times out, and the job, never
/// acked, is done by the worker that takes them.
#[test]
fn a_killed_workers_job_is_done_by_the_next_owner_of_its_partition() {
    let url = broker();
    let run_id = format!("{}-{}", std::process::id(), weir_queue::now_ms());
    let [jobs, results] = ["jobs", "results"].map(|t| format!("killed-{t}-{run_id}"));
    let group = format!("workers-{run_id}");
    let worker = |id: &str, engine: &str| {
        let mut c = weir(&url, &["worker"], &["--topic-in", &jobs]);
        c.args(["--topic-out", &results, "--group", &group])
            .args(["--worker-id", id, "--threads", "1", "--engine", engine])
            .stdout(Stdio::null());
        c
    };

    // `a` runs the dense engine: the last size (2^12) keeps it busy long
    // after the first is done.
    let mut a = worker("a", "dense");
    a.env("WEIR_LOG", "info").stderr(Stdio::piped());
    let mut a = Reaped(a.spawn().expect("start worker a"));
    let (said, lines) = std::sync::mpsc::channel();
    let stderr = a.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if said.send(line).is_err() {
                break;
            }
        }
    });
    run(weir(
        &url,
        &["gol", "submit"],
        &["3", "12", "--topic", &jobs],
    ));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("worker a reports its first size");
        if line.contains("size done") {
            break;
        }
    }
    a.0.kill().expect("kill worker a");
    a.0.wait().unwrap();

    // `b` joins; once a's session is over, b owns every partition and gets
    // the job again from the last commit, which a never moved past it.
    let b = Reaped(
        worker("b", "sparse")
            .stderr(Stdio::null())
            .spawn()
            .expect("start worker b"),
    );
    let by_b = |tam: u64| {
        let out = run(weir(
            &url,
            &["queue", "consume", &results],
            &["--group", &format!("check-{run_id}"), "--idle", "2s"],
        ));
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|m| m["payload"]["tam"] == tam && m["payload"]["worker"] == "b")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !by_b(4096) {
        assert!(
            Instant::now() < deadline,
            "worker b never finished the job worker a died in"
        );
    }
    drop(b);
}
