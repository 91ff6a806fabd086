//! The sink contract, written once and run against every backend: each case
//! is an `async fn` taking a fresh [`Fixture`]; `sink_contract!(open)`
//! expands to one `#[tokio::test]` per case.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use weir_store::{
    Batch, JobFailure, JobResult, Record, ResultFilter, SeriesFilter, Store, StoreOptions,
    TelemetryQuery,
};
use weir_telemetry::Sample;
use weir_telemetry::metric::{dcgm, resource};

/// A stored sample as a probe reads it back: metric, labels, ts, value.
pub(crate) type Row = (String, BTreeMap<String, String>, i64, f64);

/// A usage row: order, task, resource, ts, value.
pub(crate) type UsageRow = (String, String, String, i64, f64);

/// Reads a backend's storage directly (not through `Query`), so the suite
/// checks what is really there.
#[async_trait::async_trait]
pub(crate) trait Probe: Send + Sync {
    /// Every stored sample, sorted.
    async fn samples(&self) -> Vec<Row>;
    /// Every stored result, sorted by (job_id, pow).
    async fn results(&self) -> Vec<JobResult>;
    /// Every stored failure, sorted by job_id.
    async fn failures(&self) -> Vec<JobFailure>;
    /// Usage rows, sorted; `None` where the backend keeps none (CSV).
    async fn usage(&self) -> Option<Vec<UsageRow>>;
    /// Distinct series stored; `None` where the backend interns none (CSV).
    async fn series_count(&self) -> Option<usize>;
}

/// A fresh, empty store of one backend.
pub(crate) struct Fixture {
    pub(crate) url: String,
    pub(crate) options: StoreOptions,
    pub(crate) probe: Box<dyn Probe>,
    /// Keeps a temp dir or database alive for the test.
    #[expect(dead_code, reason = "held for its Drop, never read")]
    pub(crate) guard: Box<dyn Any + Send>,
}

impl Fixture {
    pub(crate) async fn open(&self) -> Store {
        weir_store::open(&self.url, &self.options)
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }
}

#[macro_export]
macro_rules! sink_contract {
    ($open:path) => {
        $crate::sink_contract!(@cases $open;
            a_batch_is_stored_as_written,
            writing_a_batch_again_stores_nothing_twice,
            concurrent_batches_are_all_stored,
            a_reopened_store_keeps_its_rows_and_series,
            odd_labels_and_extreme_values_survive,
            an_empty_batch_is_fine,
            gpus_and_resource_usage_are_derived,
            queries_answer_from_what_was_stored,
        );
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $open().await;
                $crate::contract::$case(&fixture).await;
            }
        )*
    };
}

const T0: i64 = 1_752_871_354_000;

fn gpu_sample(uuid: &str, metric: &str, ts: i64, value: f64) -> Sample {
    Sample::new(metric, value, ts)
        .label(dcgm::LABEL_UUID, uuid)
        .label(dcgm::LABEL_GPU, "0")
        .label(dcgm::LABEL_DEVICE, "nvidia0")
        .label(dcgm::LABEL_MODEL, "NVIDIA H100 80GB HBM3")
        .label(dcgm::LABEL_HOSTNAME, "node-1")
}

fn result(job_id: &str, pow: u32) -> JobResult {
    JobResult {
        job_id: job_id.into(),
        pow,
        tam: 1 << pow,
        init: 0.001,
        comp: 0.25 * f64::from(pow),
        fim: 0.002,
        tot: 0.253,
        engine: "dense".into(),
        threads: 2,
        correct: true,
        generations: 4 * ((1 << pow) - 3),
        worker: "w1".into(),
        finished_at: T0 + i64::from(pow),
    }
}

fn failure(job_id: &str) -> JobFailure {
    JobFailure {
        job_id: job_id.into(),
        reason: "reversed".into(),
        error: "powmin 5 is greater than powmax 3".into(),
        worker: "w1".into(),
        job: r#"{"powmin":5,"powmax":3}"#.into(),
        failed_at: T0,
    }
}

/// `n` samples over two GPUs and two metrics, distinct times per series.
fn samples(n: usize, from: i64) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let uuid = if i % 2 == 0 { "GPU-aaaa" } else { "GPU-bbbb" };
            let metric = if i % 4 < 2 {
                dcgm::GPU_UTIL
            } else {
                dcgm::POWER_USAGE
            };
            gpu_sample(uuid, metric, from + (i / 4) as i64 * 1_000, i as f64 + 0.5)
        })
        .collect()
}

fn batch(samples: Vec<Sample>) -> Batch {
    let mut b = Batch::new("telemetry");
    for s in samples {
        b.push(Record::Sample(s));
    }
    b
}

fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut rows: Vec<Row> = samples
        .iter()
        .map(|s| (s.metric.clone(), s.labels.clone(), s.ts, s.value))
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    rows
}

async fn write(store: &Store, batch: Batch) -> weir_store::Written {
    store.sink.write(Arc::new(batch)).await.expect("write")
}

pub(crate) async fn a_batch_is_stored_as_written(f: &Fixture) {
    let store = f.open().await;
    let sent = samples(40, T0);
    let mut b = batch(sent.clone());
    b.push(Record::Result(result("0-7", 3)));
    b.push(Record::Result(result("0-7", 4)));
    b.push(Record::Failure(failure("0-8")));
    let written = write(&store, b).await;
    assert_eq!(written.samples, 40);
    assert_eq!((written.results, written.failures), (2, 1));
    assert_eq!(f.probe.samples().await, rows(&sent));
    assert_eq!(
        f.probe.results().await,
        vec![result("0-7", 3), result("0-7", 4)]
    );
    assert_eq!(f.probe.failures().await, vec![failure("0-8")]);
    if let Some(n) = f.probe.series_count().await {
        assert_eq!(n, 4, "two GPUs × two metrics");
    }
    store.sink.close().await.expect("close");
}

pub(crate) async fn writing_a_batch_again_stores_nothing_twice(f: &Fixture) {
    let store = f.open().await;
    let sent = samples(100, T0);
    let mut b = batch(sent.clone());
    b.push(Record::Result(result("1-1", 5)));
    let b = Arc::new(b);
    store.sink.write(b.clone()).await.expect("first write");
    // A redelivery: the same batch, and the same samples mixed with new ones.
    let again = store.sink.write(b.clone()).await.expect("second write");
    let more = samples(120, T0);
    store
        .sink
        .write(Arc::new(batch(more.clone())))
        .await
        .expect("overlapping write");
    let stored = f.probe.samples().await;
    if store.sink.exactly_once() {
        assert_eq!((again.samples, again.duplicates), (0, 100));
        assert_eq!(stored, rows(&more), "each sample exactly once");
        assert_eq!(f.probe.results().await.len(), 1);
    } else {
        // At-least-once: everything is there, nothing else is.
        let mut distinct = stored.clone();
        distinct.dedup();
        assert_eq!(distinct, rows(&more));
        assert_eq!(stored.len(), 100 + 100 + 120);
    }
    store.sink.close().await.expect("close");
}

pub(crate) async fn concurrent_batches_are_all_stored(f: &Fixture) {
    let store = f.open().await;
    let mut tasks = Vec::new();
    let mut all = Vec::new();
    for k in 0..8 {
        // Shared series, disjoint times: every batch interns the same series.
        let part = samples(200, T0 + k * 1_000_000);
        all.extend(part.clone());
        let sink = store.sink.clone();
        tasks.push(tokio::spawn(async move {
            sink.write(Arc::new(batch(part))).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("write");
    }
    assert_eq!(f.probe.samples().await, rows(&all));
    if let Some(n) = f.probe.series_count().await {
        assert_eq!(n, 4);
    }
    store.sink.close().await.expect("close");
}

pub(crate) async fn a_reopened_store_keeps_its_rows_and_series(f: &Fixture) {
    let first = samples(20, T0);
    {
        let store = f.open().await;
        write(&store, batch(first.clone())).await;
        store.sink.close().await.expect("close");
    }
    let store = f.open().await;
    let second = samples(20, T0 + 60_000);
    write(&store, batch(second.clone())).await;
    let mut all = first;
    all.extend(second);
    assert_eq!(f.probe.samples().await, rows(&all));
    if let Some(n) = f.probe.series_count().await {
        assert_eq!(n, 4, "series are interned once across opens");
    }
    store.sink.close().await.expect("close");
}

pub(crate) async fn odd_labels_and_extreme_values_survive(f: &Fixture) {
    let store = f.open().await;
    let sent = vec![
        Sample::new("m", 1e-300, T0)
            .label("quote", "say \"hi\"")
            .label("comma", "a,b")
            .label("newline", "one\ntwo")
            .label("unicode", "temp °C ✓"),
        Sample::new("m", -1.7976931348623157e308, T0),
        Sample::new("m", 0.1 + 0.2, T0 + 1),
        Sample::new("metric with spaces, \"quotes\"", 42.0, 0),
        Sample::new("m", 3.0, 253_402_300_799_999).label("", "empty name"),
    ];
    write(&store, batch(sent.clone())).await;
    assert_eq!(f.probe.samples().await, rows(&sent));
    store.sink.close().await.expect("close");
}

pub(crate) async fn an_empty_batch_is_fine(f: &Fixture) {
    let store = f.open().await;
    let written = write(&store, Batch::new("telemetry")).await;
    assert_eq!(written, weir_store::Written::default());
    assert!(f.probe.samples().await.is_empty());
    store.sink.close().await.expect("close");
}

pub(crate) async fn gpus_and_resource_usage_are_derived(f: &Fixture) {
    let store = f.open().await;
    let usage = [
        Sample::new(resource::PROCESS_CPU_PERCENT, 150.0, T0)
            .label(resource::LABEL_ORDER, "7")
            .label(resource::LABEL_TASK, "service1"),
        Sample::new(resource::PROCESS_RESIDENT_MEMORY_BYTES, 2e9, T0)
            .label(resource::LABEL_ORDER, "7")
            .label(resource::LABEL_TASK, "service1")
            .label(resource::LABEL_HOST, "a"),
        // The same task, resource and time on another host: its own row.
        Sample::new(resource::PROCESS_RESIDENT_MEMORY_BYTES, 3e9, T0)
            .label(resource::LABEL_ORDER, "7")
            .label(resource::LABEL_TASK, "service1")
            .label(resource::LABEL_HOST, "b"),
        Sample::new(resource::CGROUP_CPU_PERCENT, 80.0, T0 + 1_000)
            .label(resource::LABEL_SERVICE, "ingest"),
        Sample::new(resource::HOST_CPU_PERCENT, 30.0, T0),
    ];
    let mut sent = samples(8, T0);
    sent.extend(usage);
    write(&store, batch(sent.clone())).await;
    // Written again later with a newer sample: last_seen moves, first stays.
    write(
        &store,
        batch(vec![gpu_sample(
            "GPU-aaaa",
            dcgm::GPU_UTIL,
            T0 + 99_000,
            1.0,
        )]),
    )
    .await;
    if let Some(rows) = f.probe.usage().await {
        let want: Vec<UsageRow> = vec![
            ("".into(), "ingest".into(), "CPU".into(), T0 + 1_000, 80.0),
            ("7".into(), "service1".into(), "CPU".into(), T0, 150.0),
            ("7".into(), "service1".into(), "RAM".into(), T0, 2e9),
            ("7".into(), "service1".into(), "RAM".into(), T0, 3e9),
        ];
        assert_eq!(rows, want);
    }
    if let Some(query) = &store.query {
        let gpus = query.gpus().await.expect("gpus");
        let uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids, ["GPU-aaaa", "GPU-bbbb"]);
        let a = &gpus[0];
        assert_eq!((a.first_seen, a.last_seen), (T0, T0 + 99_000));
        assert_eq!(a.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(a.host.as_deref(), Some("node-1"));
        assert_eq!((a.index, a.device.as_deref()), (Some(0), Some("nvidia0")));
        assert!(a.metrics.is_empty(), "the list leaves metrics out");
        let one = query.gpu("GPU-bbbb").await.expect("gpu").expect("known");
        assert_eq!(one.metrics, [dcgm::GPU_UTIL, dcgm::POWER_USAGE]);
        assert_eq!(query.gpu("GPU-none").await.expect("gpu"), None);
    }
    store.sink.close().await.expect("close");
}

pub(crate) async fn queries_answer_from_what_was_stored(f: &Fixture) {
    let store = f.open().await;
    let Some(query) = store.query.clone() else {
        assert!(!store.sink.exactly_once() || store.url.starts_with("csv://"));
        return;
    };
    // GPU-aaaa: util at T0, T0+1s, …, power likewise; 25 times each.
    let mut b = batch(samples(200, T0));
    b.push(Record::Sample(
        Sample::new("sensor_temperature_celsius", 21.5, T0)
            .label("sensor", "s-1")
            .label("site", "lab"),
    ));
    b.push(Record::Result(result("9-1", 3)));
    b.push(Record::Result(result("9-1", 4)));
    b.push(Record::Result(result("9-2", 3)));
    write(&store, b).await;

    let all = query
        .telemetry("GPU-aaaa", &TelemetryQuery::default())
        .await
        .expect("telemetry");
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0].ts <= w[1].ts), "earliest first");
    assert_eq!(all[0].ts, T0);

    let util = TelemetryQuery {
        metric: Some(dcgm::GPU_UTIL.into()),
        start: Some(T0 + 10_000),
        end: Some(T0 + 12_000),
        ..TelemetryQuery::default()
    };
    let got = query.telemetry("GPU-aaaa", &util).await.expect("range");
    let times: Vec<i64> = got.iter().map(|p| p.ts).collect();
    assert_eq!(
        times,
        [T0 + 10_000, T0 + 11_000, T0 + 12_000],
        "both ends inclusive"
    );
    assert!(got.iter().all(|p| p.metric == dcgm::GPU_UTIL));
    assert_eq!(got[0].value, 40.5, "sample 40 is GPU-aaaa util at T0+10s");

    let latest = TelemetryQuery {
        limit: 3,
        latest_first: true,
        metric: Some(dcgm::POWER_USAGE.into()),
        ..TelemetryQuery::default()
    };
    let got = query.telemetry("GPU-aaaa", &latest).await.expect("latest");
    let times: Vec<i64> = got.iter().map(|p| p.ts).collect();
    assert_eq!(times, [T0 + 49_000, T0 + 48_000, T0 + 47_000]);
    assert!(
        query
            .telemetry("GPU-none", &TelemetryQuery::default())
            .await
            .expect("none")
            .is_empty()
    );

    let by_metric = SeriesFilter {
        metric: Some(dcgm::POWER_USAGE.into()),
        ..SeriesFilter::default()
    };
    assert_eq!(query.series(&by_metric).await.expect("series").len(), 2);
    let by_label = SeriesFilter {
        labels: vec![("site".into(), "lab".into())],
        ..SeriesFilter::default()
    };
    let got = query.series(&by_label).await.expect("series");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].metric, "sensor_temperature_celsius");
    assert_eq!(got[0].labels.get("sensor").map(String::as_str), Some("s-1"));
    let both = SeriesFilter {
        metric: Some(dcgm::GPU_UTIL.into()),
        labels: vec![(dcgm::LABEL_UUID.into(), "GPU-bbbb".into())],
        limit: 10,
    };
    assert_eq!(query.series(&both).await.expect("series").len(), 1);
    let none = SeriesFilter {
        labels: vec![("site".into(), "elsewhere".into())],
        ..SeriesFilter::default()
    };
    assert!(query.series(&none).await.expect("series").is_empty());

    let results = query
        .job_results(&ResultFilter::default())
        .await
        .expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].finished_at, T0 + 4, "latest first");
    let one_job = ResultFilter {
        job_id: Some("9-1".into()),
        limit: 10,
    };
    let got = query.job_results(&one_job).await.expect("results");
    let mut pows: Vec<u32> = got.iter().map(|r| r.pow).collect();
    pows.sort();
    assert_eq!(pows, [3, 4]);
    assert_eq!(got.iter().find(|r| r.pow == 4), Some(&result("9-1", 4)));
    store.sink.close().await.expect("close");
}
