//! Two workers share 20 jobs and one bad job, over the embedded bus and
//! over a broker's HTTP API: every size of every job appears exactly once on
//! the output topic, and the bad job ends in the dead-letter topic with its
//! reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, ConnectOptions, Message, SubscribeOptions};
use weir_queue::{Queue, QueueConfig};
use weir_worker::WorkerConfig;

const JOBS: u32 = 20;

/// The jobs: sizes 3..=6 in varied ranges, and which sizes each must give.
fn jobs() -> Vec<(u32, u32)> {
    (0..JOBS).map(|i| (3 + i % 3, 4 + i % 3)).collect()
}

async fn share_jobs(bus_a: Arc<dyn Bus>, bus_b: Arc<dyn Bus>) {
    let mut submitted = BTreeMap::new();
    for (powmin, powmax) in jobs() {
        let job = format!("{{\"powmin\": {powmin}, \"powmax\": {powmax}}}");
        let receipt = bus_a
            .publish("jogo-da-vida", Message::new(job))
            .await
            .unwrap();
        submitted.insert(receipt.id, (powmin, powmax));
    }
    let bad = bus_a
        .publish(
            "jogo-da-vida",
            Message::new("{\"powmin\": 9, \"powmax\": 4}"),
        )
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for (name, bus) in [("w1", &bus_a), ("w2", &bus_b)] {
        let mut config = WorkerConfig::new(name);
        config.limits.max_pow = 12;
        workers.push(tokio::spawn(weir_worker::run(
            Arc::clone(bus),
            config,
            shutdown.clone(),
        )));
    }

    let want: usize = jobs()
        .iter()
        .map(|(a, b)| (b - a + 1) as usize)
        .sum::<usize>()
        + 1;
    let mut out = bus_a
        .subscribe(
            "jogo-da-vida-output",
            "checker",
            SubscribeOptions::new("checker"),
        )
        .await
        .unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} records came",
            records.len()
        );
        for d in out.receive(100, Duration::from_millis(500)).await.unwrap() {
            records.push(serde_json::from_slice::<serde_json::Value>(&d.payload).unwrap());
            d.ack().await.unwrap();
        }
    }
    assert!(
        out.receive(10, Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty(),
        "more records than sizes"
    );

    let mut sizes: HashMap<(String, u64), u32> = HashMap::new();
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    for r in &records {
        if r.get("error").is_some() {
            errors.push(r.clone());
            continue;
        }
        assert_eq!(r["correct"], true, "{r}");
        for field in [
            "tam", "init", "comp", "fim", "tot", "engine", "threads", "worker",
        ] {
            assert!(r.get(field).is_some(), "{field} missing from {r}");
        }
        *sizes
            .entry((
                r["job_id"].as_str().unwrap().to_string(),
                r["pow"].as_u64().unwrap(),
            ))
            .or_default() += 1;
        *by_worker
            .entry(r["worker"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (id, (powmin, powmax)) in &submitted {
        for pow in *powmin..=*powmax {
            assert_eq!(
                sizes.get(&(id.clone(), pow as u64)),
                Some(&1),
                "job {id} pow {pow}"
            );
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["job_id"], bad.id.as_str());
    assert_eq!(errors[0]["reason"], "powmin_greater_than_powmax");
    assert_eq!(by_worker.len(), 2, "both workers took jobs: {by_worker:?}");

    let mut dlq = bus_a
        .subscribe("jogo-da-vida.dlq", "dlq-check", SubscribeOptions::new("c"))
        .await
        .unwrap();
    let dead = dlq.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("x-weir-dlq-reason"), Some("rejected"));
    assert!(
        dead[0]
            .header("x-weir-dlq-detail")
            .unwrap()
            .contains("greater than powmax"),
        "{:?}",
        dead[0].headers
    );

    shutdown.cancel();
    let mut jobs_done = 0;
    for w in workers {
        jobs_done += w.await.unwrap().unwrap().jobs;
    }
    assert_eq!(jobs_done, u64::from(JOBS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_jobs_over_the_embedded_bus() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(QueueConfig::new(dir.path())).await.unwrap();
    let a: Arc<dyn Bus> = Arc::new(weir_bus::embedded::EmbeddedBus::new(queue.clone()));
    let b: Arc<dyn Bus> = Arc::new(weir_bus::embedded::EmbeddedBus::new(queue.clone()));
    share_jobs(a, b).await;
    queue.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_jobs_over_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(QueueConfig::new(dir.path())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(weir_server::run(
        weir_server::ServerConfig::default(),
        queue.clone(),
        listener,
        shutdown.clone(),
    ));
    let a = weir_bus::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    let b = weir_bus::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    share_jobs(a, b).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    queue.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_job_gives_the_job_back() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(QueueConfig::new(dir.path())).await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(weir_bus::embedded::EmbeddedBus::new(queue.clone()));
    let job = "{\"powmin\": 10, \"powmax\": 13}";
    bus.publish("jogo-da-vida", Message::new(job))
        .await
        .unwrap();
    let mut config = WorkerConfig::new("w1");
    config.run = weir_gol::RunConfig {
        engine: weir_gol::Engine::Dense,
        threads: 1,
        ..weir_gol::RunConfig::default()
    };
    config.limits.max_pow = 13;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(weir_worker::run(Arc::clone(&bus), config, shutdown.clone()));

    // Stop it while the job is in hand (its first size takes a while).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = queue.stats().unwrap();
        if stats
            .groups
            .iter()
            .any(|g| g.topic == "jogo-da-vida" && g.in_flight == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never took the job");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    let totals = worker.await.unwrap().unwrap();
    assert_eq!(totals.jobs, 0, "{totals:?}");
    assert_eq!(totals.given_back, 1, "{totals:?}");
    assert!((1..4).contains(&totals.sizes), "{totals:?}");

    // The job is there for the next worker, as its second delivery.
    let mut sub = bus
        .subscribe(
            "jogo-da-vida",
            "jogo-da-vida-group",
            SubscribeOptions::new("w2"),
        )
        .await
        .unwrap();
    let again = sub.receive(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].payload, job.as_bytes());
    assert_eq!(again[0].delivery_count, 2);
    drop(sub);
    queue.close().await.unwrap();
}
