//! The collector over the embedded bus into SQLite: what is stored, what is
//! dead-lettered, retries, give-backs, sharing a group and shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, ConnectOptions, Message};
use weir_collect::{CollectConfig, Counters, Totals};
use weir_store::{Batch, ResultFilter, Sink, Store, StoreError, StoreOptions, Written};
use weir_telemetry::Sample;

const T0: i64 = 1_752_871_354_000;

struct Setup {
    bus: Arc<dyn Bus>,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bus = weir_bus::connect(
        &format!("embedded://{}", dir.path().join("queue").display()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    let url = format!("sqlite://{}", dir.path().join("weir.db").display());
    let store = weir_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    Setup {
        bus,
        store,
        _dir: dir,
    }
}

fn sample(i: usize) -> Message {
    let s = Sample::new("DCGM_FI_DEV_GPU_UTIL", i as f64, T0 + i as i64)
        .label("UUID", format!("GPU-{}", i % 4))
        .label("modelName", "NVIDIA H100 80GB HBM3");
    Message::new(s.encode().unwrap()).with_key(format!("GPU-{}", i % 4))
}

async fn publish_samples(bus: &dyn Bus, n: usize) {
    let messages: Vec<Message> = (0..n).map(sample).collect();
    for chunk in messages.chunks(500) {
        bus.publish_batch("telemetry", chunk.to_vec())
            .await
            .unwrap();
    }
}

fn config(id: &str) -> CollectConfig {
    CollectConfig {
        batch_size: 100,
        flush_interval: Duration::from_millis(50),
        retry_delay: Duration::from_millis(100),
        ..CollectConfig::new(id)
    }
}

/// A running collector and how to stop it.
struct Running {
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<Totals, weir_collect::CollectError>>,
}

fn start(bus: &Arc<dyn Bus>, sink: Arc<dyn Sink>, config: CollectConfig) -> Running {
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(weir_collect::run(
        bus.clone(),
        sink,
        config,
        counters.clone(),
        shutdown.clone(),
    ));
    Running {
        counters,
        shutdown,
        task,
    }
}

impl Running {
    async fn until(&self, what: &str, done: impl Fn(&Totals) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.counters.snapshot();
            if done(&now) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {what}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Totals {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap()
    }
}

async fn stored(store: &Store) -> i64 {
    let url = store.url.strip_prefix("sqlite://").unwrap().to_string();
    let c = rusqlite::Connection::open(url).unwrap();
    c.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .unwrap()
}

async fn depth(bus: &dyn Bus, topic: &str) -> (u64, u64) {
    let stats = bus.stats().await.unwrap();
    let g = stats
        .consumer_groups
        .iter()
        .find(|g| g.topic == topic && g.consumer_group == "collectors")
        .unwrap();
    (g.pending_messages, g.in_flight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_results_and_refused_jobs_are_stored_and_bad_messages_dead_lettered() {
    let s = setup().await;
    publish_samples(&*s.bus, 1_000).await;
    s.bus
        .publish_batch(
            "jogo-da-vida-output",
            vec![
                Message::new(r#"{"tam":8,"init":0.1,"comp":0.2,"fim":0.0,"tot":0.3,"job_id":"0-1","pow":3,"engine":"dense","threads":2,"correct":true,"generations":20,"worker":"w"}"#),
                Message::new(r#"{"job_id":"0-2","error":"powmin 5 is greater than powmax 3","reason":"reversed","worker":"w","job":"{}"}"#),
                Message::new("not json at all"),
            ],
        )
        .await
        .unwrap();
    s.bus
        .publish(
            "telemetry",
            Message::new(r#"{"metric":"m","value":"hot","ts":"2025-07-18T20:42:34Z"}"#),
        )
        .await
        .unwrap();
    let run = start(
        &s.bus,
        s.store.sink.clone(),
        CollectConfig {
            topics: vec!["telemetry".into(), "jogo-da-vida-output".into()],
            ..config("c1")
        },
    );
    run.until("everything", |t| {
        t.samples == 1_000 && t.results == 1 && t.dead_lettered == 2
    })
    .await;
    let totals = run.stop().await;
    assert_eq!(totals.failures, 1);
    assert_eq!(totals.received, 1_004);
    assert_eq!(stored(&s.store).await, 1_000);
    let query = s.store.query.clone().unwrap();
    assert_eq!(query.gpus().await.unwrap().len(), 4);
    let results = query.job_results(&ResultFilter::default()).await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].tam, results[0].correct), (8, true));
    assert!(results[0].finished_at > T0, "stamped with the publish time");

    let dead = weir_bus::contract::drain(&*s.bus, "telemetry.dlq").await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0]
        .header(weir_bus::contract::DLQ_DETAIL_HEADER)
        .unwrap_or_default();
    assert!(
        reason.contains("not a telemetry sample"),
        "{:?}",
        dead[0].headers
    );
    let dead = weir_bus::contract::drain(&*s.bus, "jogo-da-vida-output.dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        depth(&*s.bus, "telemetry").await,
        (0, 0),
        "everything acked"
    );
}

/// A sink over SQLite whose writes meet scripted outcomes first; while
/// `down` is set every write is refused as retryable; a batch holding a
/// sample of `poison` is refused for good.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Sink>,
    script: Mutex<Vec<Fault>>,
    writes: AtomicUsize,
    down: AtomicBool,
    poison: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Refused before writing: retryable.
    Busy,
    /// Refused for good.
    Broken,
    /// Written and committed, but the answer is lost (a crash before the ack).
    LostAnswer,
    /// Slow.
    Delay(Duration),
    /// Closed: no write can succeed any more.
    Closed,
}

impl Flaky {
    fn new(inner: Arc<dyn Sink>, script: Vec<Fault>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            script: Mutex::new(script.into_iter().rev().collect()),
            writes: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            poison: None,
        })
    }

    fn poisoned_by(inner: Arc<dyn Sink>, metric: &'static str) -> Arc<Flaky> {
        let mut flaky = Arc::into_inner(Flaky::new(inner, Vec::new())).unwrap();
        flaky.poison = Some(metric);
        Arc::new(flaky)
    }
}

#[async_trait::async_trait]
impl Sink for Flaky {
    async fn write(&self, batch: Arc<Batch>) -> weir_store::Result<Written> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        if let Some(poison) = self.poison
            && batch.samples.iter().any(|s| s.metric == poison)
        {
            return Err(StoreError::Fatal(
                "invalid byte sequence for encoding UTF8: 0x00".into(),
            ));
        }
        let fault = self.script.lock().unwrap().pop();
        match fault {
            None => self.inner.write(batch).await,
            Some(Fault::Busy) => Err(StoreError::Unavailable("database is locked".into())),
            Some(Fault::Broken) => Err(StoreError::Fatal("constraint failed".into())),
            Some(Fault::LostAnswer) => {
                self.inner.write(batch).await?;
                Err(StoreError::Unavailable("connection reset".into()))
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.write(batch).await
            }
            Some(Fault::Closed) => Err(StoreError::Closed("the SQLite writer stopped".into())),
        }
    }

    fn exactly_once(&self) -> bool {
        self.inner.exactly_once()
    }

    async fn close(&self) -> weir_store::Result<()> {
        self.inner.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_and_a_repeated_write_stores_nothing_twice() {
    let s = setup().await;
    publish_samples(&*s.bus, 300).await;
    let sink = Flaky::new(
        s.store.sink.clone(),
        vec![Fault::Busy, Fault::LostAnswer, Fault::Busy],
    );
    let run = start(&s.bus, sink.clone(), config("c1"));
    run.until("three batches", |t| t.batches == 3).await;
    let totals = run.stop().await;
    assert_eq!(totals.retries, 3);
    assert_eq!(totals.failed_batches, 0);
    // The batch whose answer was lost was committed, then written again:
    // every sample of it is a duplicate, counted but not stored twice.
    assert_eq!(
        (totals.samples, totals.duplicates),
        (200, 100),
        "{totals:?}"
    );
    assert_eq!(stored(&s.store).await, 300, "each sample once");
    assert_eq!(depth(&*s.bus, "telemetry").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_refuses_is_dead_lettered_alone() {
    let s = setup().await;
    publish_samples(&*s.bus, 50).await;
    let poison = Sample::new("poison", 1.0, T0);
    s.bus
        .publish("telemetry", Message::new(poison.encode().unwrap()))
        .await
        .unwrap();
    publish_samples(&*s.bus, 50).await;
    let sink = Flaky::poisoned_by(s.store.sink.clone(), "poison");
    let run = start(&s.bus, sink, config("c1"));
    run.until("the poison found", |t| t.dead_lettered == 1)
        .await;
    let totals = run.stop().await;
    assert_eq!(
        stored(&s.store).await,
        50,
        "the other 100 messages carry 50 distinct samples"
    );
    assert_eq!(totals.failed_batches, 0);
    let dead = weir_bus::contract::drain(&*s.bus, "telemetry.dlq").await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].payload.starts_with(b"{\"metric\":\"poison\""));
    let reason = dead[0]
        .header(weir_bus::contract::DLQ_DETAIL_HEADER)
        .unwrap_or_default();
    assert!(reason.contains("the store refused it"), "{reason}");
    assert_eq!(depth(&*s.bus, "telemetry").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_store_refuses_every_record_the_batch_is_given_back_not_dead_lettered() {
    let s = setup().await;
    publish_samples(&*s.bus, 10).await;
    // Two rounds of refusals: a batch of 10 is tried whole, in halves and
    // so on down to each record (19 writes) before it is given back.
    let sink = Flaky::new(s.store.sink.clone(), vec![Fault::Broken; 38]);
    let run = start(&s.bus, sink, config("c1"));
    run.until("stored in the end", |t| t.samples == 10).await;
    let totals = run.stop().await;
    assert_eq!(totals.dead_lettered, 0, "{totals:?}");
    assert!(
        totals.failed_batches >= 1 && totals.received > 10,
        "{totals:?}"
    );
    assert!(
        weir_bus::contract::drain(&*s.bus, "telemetry.dlq")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pauses_receiving_and_spends_no_delivery_attempts() {
    let s = setup().await;
    publish_samples(&*s.bus, 500).await;
    let sink = Flaky::new(s.store.sink.clone(), Vec::new());
    sink.down.store(true, Ordering::SeqCst);
    let run = start(
        &s.bus,
        sink.clone(),
        CollectConfig {
            visibility_timeout: Duration::from_secs(1),
            max_concurrent: 1,
            ..config("c1")
        },
    );
    // Down for several leases' worth: the batch in hand keeps retrying and
    // nothing more is taken.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = run.counters.snapshot();
    assert_eq!(
        during.received, 100,
        "one batch taken, then paused: {during:?}"
    );
    assert!(during.retries >= 3, "{during:?}");
    sink.down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored(&s.store).await < 500 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all stored after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let totals = run.stop().await;
    assert_eq!(totals.dead_lettered, 0);
    assert!(
        weir_bus::contract::drain(&*s.bus, "telemetry.dlq")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_stops_the_collector_with_an_error_and_gives_its_batch_back() {
    let s = setup().await;
    publish_samples(&*s.bus, 100).await;
    let sink = Flaky::new(s.store.sink.clone(), vec![Fault::Closed]);
    let counters = Arc::new(Counters::default());
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        weir_collect::run(
            s.bus.clone(),
            sink,
            config("c1"),
            counters,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("run ends by itself");
    let e = outcome.unwrap_err();
    assert!(e.to_string().contains("writer stopped"), "{e}");
    // Given back, not dead-lettered: a healthy collector stores it all.
    let again = start(&s.bus, s.store.sink.clone(), config("c2"));
    again
        .until("stored by the next collector", |t| t.samples == 100)
        .await;
    assert_eq!(again.stop().await.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_in_one_group_share_the_load_and_store_each_sample_once() {
    let s = setup().await;
    publish_samples(&*s.bus, 4_000).await;
    // Slow writes, so neither collector can take everything alone.
    let slow = |n| {
        Flaky::new(
            s.store.sink.clone(),
            vec![Fault::Delay(Duration::from_millis(30)); n],
        )
    };
    let a = start(&s.bus, slow(40), config("a"));
    let b = start(&s.bus, slow(40), config("b"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored(&s.store).await < 4_000 {
        assert!(tokio::time::Instant::now() < deadline, "not all stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ta, tb) = (a.stop().await, b.stop().await);
    assert!(
        ta.samples > 0 && tb.samples > 0,
        "both took a share: {ta:?} {tb:?}"
    );
    assert_eq!(ta.samples + tb.samples, 4_000);
    assert_eq!(stored(&s.store).await, 4_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_hand_and_acks_it() {
    let s = setup().await;
    publish_samples(&*s.bus, 100).await;
    let sink = Flaky::new(
        s.store.sink.clone(),
        vec![Fault::Delay(Duration::from_millis(500))],
    );
    let run = start(
        &s.bus,
        sink.clone(),
        CollectConfig {
            batch_size: 1_000,
            ..config("c1")
        },
    );
    run.until("a batch in hand", |t| t.received == 100).await;
    let totals = run.stop().await;
    assert_eq!(
        totals.samples, 100,
        "the slow write finished before run returned"
    );
    assert_eq!(depth(&*s.bus, "telemetry").await, (0, 0), "and was acked");
    // A new collector finds nothing left to do.
    let again = start(&s.bus, s.store.sink.clone(), config("c2"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let totals = again.stop().await;
    assert_eq!(totals.received, 0);
}
