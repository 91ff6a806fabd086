//! `weir stream dcgm` end to end over the embedded bus: what goes in comes
//! out (samples = valid rows, keyed by GPU, in order per GPU), bad rows and
//! blanks are counted, loop mode keeps time moving forward, pacing stops at
//! shutdown, and the bus's refusals are retried or reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_bus::scripted::{Fault, Scripted};
use weir_bus::{Bus, BusError, ConnectOptions};
use weir_sources::dcgm::{Reader, Reading};
use weir_sources::replay::{Replay, ReplayConfig, ReplayError, ReplaySummary};
use weir_telemetry::Sample;

const SAMPLE: &str = include_str!("data/dcgm_sample.csv");

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dcgm_sample.csv")
}

async fn embedded(dir: &Path) -> Arc<dyn Bus> {
    let url = format!("embedded://{}", dir.join("bus").display());
    weir_bus::connect(&url, &ConnectOptions::default())
        .await
        .unwrap()
}

/// Everything on `topic`, in delivery order: key and sample.
async fn drain(bus: &dyn Bus, topic: &str) -> Vec<(String, Sample)> {
    weir_bus::contract::drain(bus, topic)
        .await
        .into_iter()
        .map(|d| (key(&d), Sample::decode(&d.payload).unwrap()))
        .collect()
}

fn key(d: &weir_bus::Delivery) -> String {
    String::from_utf8(d.key.clone().unwrap().to_vec()).unwrap()
}

/// The file's valid samples, in file order.
fn file_samples(text: &str) -> Vec<Sample> {
    Reader::new(text.as_bytes())
        .unwrap()
        .filter_map(|r| match r.ok()?.reading {
            Reading::Sample(s) => Some(s),
            Reading::Blank(_) => None,
        })
        .collect()
}

fn fast(passes: u64, keep_timestamps: bool) -> ReplayConfig {
    ReplayConfig {
        interval: Duration::ZERO,
        passes: Some(passes),
        keep_timestamps,
        ..ReplayConfig::default()
    }
}

async fn replay(bus: &dyn Bus, path: &Path, config: ReplayConfig) -> ReplaySummary {
    Replay::open(path, config)
        .unwrap()
        .run(bus, &mut |_| {}, &CancellationToken::new())
        .await
        .unwrap()
}

/// Per GPU, the series of (metric, ts) in delivery order.
fn per_gpu(out: &[(String, Sample)]) -> BTreeMap<&str, Vec<(&str, i64)>> {
    let mut series: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for (key, s) in out {
        assert_eq!(key, &s.labels["UUID"], "keyed by GPU");
        series
            .entry(key.as_str())
            .or_default()
            .push((s.metric.as_str(), s.ts));
    }
    series
}

#[tokio::test]
async fn samples_out_equal_valid_rows_in() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let summary = replay(&*bus, &sample_path(), fast(1, true)).await;
    assert_eq!(
        summary,
        ReplaySummary {
            rows: 80,
            samples: 80,
            blank: 0,
            bad: 0,
            scrapes: 4,
            passes: 1
        }
    );
    let out = drain(&*bus, "telemetry").await;
    let want = file_samples(SAMPLE);
    assert_eq!(out.len(), want.len());
    // Same samples, and each GPU's in file order.
    let key = |s: &Sample| (s.labels["UUID"].clone(), s.metric.clone(), s.ts);
    let mut got: Vec<Sample> = out.iter().map(|(_, s)| s.clone()).collect();
    let mut sorted_want = want.clone();
    got.sort_by_key(key);
    sorted_want.sort_by_key(key);
    assert_eq!(got, sorted_want);
    let mut want_series: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for s in &want {
        want_series
            .entry(&s.labels["UUID"])
            .or_default()
            .push((&s.metric, s.ts));
    }
    assert_eq!(per_gpu(&out), want_series);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn scrapes_are_stamped_now_and_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let before = weir_telemetry::time::now_ms();
    replay(&*bus, &sample_path(), fast(1, false)).await;
    let out = drain(&*bus, "telemetry").await;
    // Four scrapes, four stamps, in the file's scrape sizes.
    let mut stamps: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, s) in &out {
        *stamps.entry(s.ts).or_default() += 1;
        assert!(s.ts >= before);
    }
    assert_eq!(
        stamps.values().copied().collect::<Vec<_>>(),
        [24, 24, 8, 24]
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn bad_rows_and_blanks_are_counted_and_the_rest_published() {
    let dir = tempfile::tempdir().unwrap();
    let (header, rows) = SAMPLE.split_once('\n').unwrap();
    let rows: Vec<&str> = rows.lines().collect();
    let blank = rows[0].replace(",\"0\",\"DCGM", ",\"2147483634\",\"DCGM");
    assert_ne!(blank, rows[0]);
    let empty = rows[1].replace(",\"100\",\"DCGM", ",\"\",\"DCGM");
    assert_ne!(empty, rows[1]);
    let text = [
        header,
        &blank,
        &empty,
        rows[2],
        "\"2025-07-18T20:42:34Z\",\"short\"",
        rows[3],
        &rows[4].replace("2025-07-18T20:42:34Z", "not a time"),
        rows[5],
        "",
    ]
    .join("\n");
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, &text).unwrap();
    let bus = embedded(dir.path()).await;
    let summary = replay(&*bus, &path, fast(1, true)).await;
    assert_eq!(
        (summary.rows, summary.samples, summary.blank, summary.bad),
        (7, 3, 2, 2)
    );
    let out = drain(&*bus, "telemetry").await;
    let mut got: Vec<String> = out.iter().map(|(_, s)| s.labels["gpu"].clone()).collect();
    got.sort();
    // The export lists GPU 4 last: rows[5] is GPU 6.
    assert_eq!(got, ["2", "3", "6"]);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn loop_mode_timestamps_strictly_increase_per_series() {
    for keep_timestamps in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let bus = embedded(dir.path()).await;
        let summary = replay(&*bus, &sample_path(), fast(3, keep_timestamps)).await;
        assert_eq!(
            (
                summary.rows,
                summary.samples,
                summary.scrapes,
                summary.passes
            ),
            (240, 240, 12, 3)
        );
        let out = drain(&*bus, "telemetry").await;
        assert_eq!(out.len(), 240);
        let mut series: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
        for (key, s) in &out {
            series.entry((key, &s.metric)).or_default().push(s.ts);
        }
        assert_eq!(series.len(), 80, "8 GPUs × 10 metrics");
        for (name, ts) in &series {
            assert!(
                ts.windows(2).all(|w| w[0] < w[1]),
                "keep {keep_timestamps}: {name:?} goes {ts:?}"
            );
        }
        if keep_timestamps {
            // Each pass moves past the last by the file's span (3 s) plus
            // its scrape gap (1 s).
            let mut all: Vec<i64> = out.iter().map(|(_, s)| s.ts).collect();
            all.sort();
            all.dedup();
            let first = 1_752_871_354_000;
            let want: Vec<i64> = [0, 4_000, 8_000]
                .iter()
                .flat_map(|shift| [0, 1_000, 2_000, 3_000].map(|t| first + shift + t))
                .collect();
            assert_eq!(all, want);
        }
        bus.close().await.unwrap();
    }
}

#[tokio::test]
async fn interval_pacing_stops_at_shutdown_after_the_batch_in_hand() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let config = ReplayConfig {
        interval: Duration::from_secs(3600),
        passes: None,
        ..ReplayConfig::default()
    };
    let published = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&published);
    let shutdown = CancellationToken::new();
    let run = {
        let bus = Arc::clone(&bus);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let replay = Replay::open(&sample_path(), config).unwrap();
            let mut progress = |p: &weir_sources::replay::ReplayProgress| {
                seen.store(p.totals.samples, Ordering::SeqCst);
            };
            replay.run(&*bus, &mut progress, &shutdown).await
        })
    };
    // The first scrape goes at once; the second waits an hour.
    let deadline = Instant::now() + Duration::from_secs(20);
    while published.load(Ordering::SeqCst) < 24 {
        assert!(Instant::now() < deadline, "the first scrape never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.samples, summary.scrapes), (24, 1));
    assert_eq!(drain(&*bus, "telemetry").await.len(), 24);
    bus.close().await.unwrap();
}

/// An error and its sources, as the binary prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

#[tokio::test]
async fn whole_scrapes_are_coalesced_into_batches() {
    // (batch, publish sizes): scrapes of 24, 24, 8 and 24 rows.
    let cases: [(usize, &[usize]); 3] = [
        (1000, &[80]),
        (30, &[24, 24, 8, 24]),
        (10, &[10, 10, 4, 10, 10, 4, 8, 10, 10, 4]),
    ];
    for (batch, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let bus = Scripted::over(embedded(dir.path()).await);
        let config = ReplayConfig {
            batch,
            ..fast(1, false)
        };
        assert_eq!(replay(&bus, &sample_path(), config).await.samples, 80);
        assert_eq!(bus.batch_sizes(), want, "batch {batch}");
        bus.close().await.unwrap();
    }
}

#[tokio::test]
async fn retryable_refusals_are_retried_and_fatal_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    let unavailable = || BusError::Unavailable("the broker is restarting".into());
    let bus = Scripted::over(embedded(dir.path()).await);
    bus.then(Fault::Refuse(unavailable()));
    bus.then(Fault::Refuse(unavailable()));
    let summary = replay(&bus, &sample_path(), fast(1, false)).await;
    assert_eq!(summary.samples, 80);
    assert_eq!(drain(&bus, "telemetry").await.len(), 80);
    bus.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let bus = Scripted::over(embedded(dir.path()).await);
    bus.then(Fault::Refuse(BusError::Unauthorized("bad token".into())));
    let err = Replay::open(&sample_path(), fast(1, false))
        .unwrap()
        .run(&bus, &mut |_| {}, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::Publish(_)), "{err:?}");
    assert_eq!(chain(&err), "publishing to telemetry: bad token");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_an_export_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(&path, "a,b\n1,2\n").unwrap();
    let err = Replay::open(&path, ReplayConfig::default()).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "{}: line 1: not a DCGM export: no `timestamp` column",
            path.display()
        )
    );
    let missing = dir.path().join("missing.csv");
    let err = Replay::open(&missing, ReplayConfig::default()).unwrap_err();
    let message = chain(&err);
    assert!(
        message.starts_with(&format!("cannot open {}: ", missing.display())),
        "{message}"
    );
    // Rates slower than a sample a day would overflow a wait.
    for rate in [0.0, 1e-300, 1.0 / 86_401.0, f64::NAN] {
        let config = ReplayConfig {
            rate: Some(rate),
            ..ReplayConfig::default()
        };
        let err = Replay::open(&sample_path(), config).unwrap_err();
        assert!(
            matches!(&err, ReplayError::Config(m) if m.contains("at least one sample a day")),
            "{rate}: {err}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_slowest_rate_waits_a_day_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let config = ReplayConfig {
        rate: Some(1.0 / 86_400.0),
        // One pass: the reading thread is done at once (paused time does
        // not move while a blocking task runs).
        passes: Some(1),
        ..ReplayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let published = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&published);
    let run = {
        let (bus, shutdown) = (Arc::clone(&bus), shutdown.clone());
        tokio::spawn(async move {
            let replay = Replay::open(&sample_path(), config).unwrap();
            let mut progress = |p: &weir_sources::replay::ReplayProgress| {
                seen.store(p.totals.samples, Ordering::SeqCst);
            };
            replay.run(&*bus, &mut progress, &shutdown).await
        })
    };
    // One sample at once, the next a day later, and so on.
    while published.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() - start < Duration::from_secs(10 * 86_400));
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    assert!(tokio::time::Instant::now() - start >= Duration::from_secs(2 * 86_400));
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.samples, 3);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn rate_pacing_publishes_everything_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let config = ReplayConfig {
        rate: Some(100_000.0),
        ..ReplayConfig::default()
    };
    let replay = Replay::open(&sample_path(), config).unwrap();
    let size = replay.file_bytes();
    let mut last = None;
    let summary = replay
        .run(&*bus, &mut |p| last = Some(*p), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.samples, 80);
    let last = last.expect("progress was reported");
    assert_eq!((last.pass, last.bytes, last.totals), (1, size, summary));
    assert_eq!(drain(&*bus, "telemetry").await.len(), 80);
    bus.close().await.unwrap();
}
