//! The Game of Life worker: a member of a consumer group that takes jobs
//! `{"powmin","powmax"}` from a topic, runs each size with `weir-gol`, and
//! publishes one result per size, `{tam, init, comp, fim, tot}` plus the job
//! id, pow, engine, threads, correctness and worker id.
//!
//! - [`WorkerConfig`]: topics, group, worker id, engine, threads, limits.
//! - [`run`]: until the shutdown token fires; [`job::parse`]: the checks a
//!   job passes before any work starts.
//!
//! Invariants:
//! - a job is acked only after every size's result is published; a worker
//!   that dies mid-job leaves it to be delivered again (at-least-once);
//! - a bad job (not JSON, wrong shape, `powmin > powmax`, a pow out of
//!   range, a dense board over the memory limit) is rejected to the
//!   dead-letter topic with its reason and reported on the output topic as
//!   an error record; the worker carries on;
//! - at shutdown the job in hand is finished size by size or, if shutdown
//!   comes between sizes, given back (nack) for another worker;
//! - the worker reaches the transport only through `weir_bus::Bus`.

pub mod job;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, BusError, Delivery, Message, Start, SubscribeOptions};
use weir_gol::{RunConfig, SizeResult};

pub use job::{Job, JobError, Limits};

/// What the owner of a worker chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Jobs come from here (default `jogo-da-vida`).
    pub topic_in: String,
    /// Results go here (default `jogo-da-vida-output`).
    pub topic_out: String,
    /// The consumer group replicas share (default `jogo-da-vida-group`).
    pub group: String,
    /// Names this worker in results and stats.
    pub worker_id: String,
    pub run: RunConfig,
    pub limits: Limits,
    /// A job not finished within this is given to another worker.
    pub visibility_timeout: Duration,
}

impl WorkerConfig {
    pub fn new(worker_id: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            topic_in: "jogo-da-vida".into(),
            topic_out: "jogo-da-vida-output".into(),
            group: "jogo-da-vida-group".into(),
            worker_id: worker_id.into(),
            run: RunConfig::default(),
            limits: Limits::default(),
            visibility_timeout: Duration::from_secs(600),
        }
    }
}

/// One size's result as published: the classic fields first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRecord {
    pub tam: u64,
    pub init: f64,
    pub comp: f64,
    pub fim: f64,
    pub tot: f64,
    pub job_id: String,
    pub pow: u32,
    pub engine: String,
    pub threads: usize,
    pub correct: bool,
    pub generations: u64,
    pub worker: String,
}

impl ResultRecord {
    fn new(r: &SizeResult, job_id: &str, worker: &str) -> ResultRecord {
        ResultRecord {
            tam: r.tam,
            init: r.init,
            comp: r.comp,
            fim: r.fim,
            tot: r.tot,
            job_id: job_id.to_string(),
            pow: r.pow,
            engine: r.engine.name().to_string(),
            threads: r.threads,
            correct: r.correct,
            generations: r.generations,
            worker: worker.to_string(),
        }
    }
}

/// A refused job as reported on the output topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    pub job_id: String,
    pub error: String,
    pub reason: String,
    pub worker: String,
    /// The job as received (lossy text).
    pub job: String,
}

/// What one worker did, for its log line at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub jobs: u64,
    pub sizes: u64,
    pub rejected: u64,
    pub given_back: u64,
}

/// Why a worker stopped before its shutdown token fired.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("subscribing to {topic} as group {group}: {source}")]
    Subscribe {
        topic: String,
        group: String,
        #[source]
        source: BusError,
    },
    #[error("the bus refused the worker: {0}")]
    Bus(#[source] BusError),
}

/// Consumes jobs until `shutdown` fires. Transient bus failures are
/// retried with backoff; a refusal that retrying cannot fix (bad
/// credentials, a closed bus) ends the worker with an error.
pub async fn run(
    bus: Arc<dyn Bus>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<Totals, WorkerError> {
    let options = SubscribeOptions {
        start: Start::Earliest,
        visibility_timeout: Some(config.visibility_timeout),
        max_in_flight: 1,
        ..SubscribeOptions::new(config.worker_id.clone())
    };
    let mut sub = bus
        .subscribe(&config.topic_in, &config.group, options)
        .await
        .map_err(|source| WorkerError::Subscribe {
            topic: config.topic_in.clone(),
            group: config.group.clone(),
            source,
        })?;
    tracing::info!(worker = %config.worker_id, topic = %config.topic_in,
        group = %config.group, engine = %config.run.engine, threads = config.run.threads,
        "worker started");
    let mut totals = Totals::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Receive first: a job leased in the same instant as shutdown must
        // reach `handle`, which gives it back, rather than be dropped and
        // wait out its lease.
        let received = tokio::select! {
            biased;
            r = sub.receive(1, Duration::from_secs(1)) => r,
            () = shutdown.cancelled() => break,
        };
        let deliveries = match received {
            Ok(d) => {
                backoff = Duration::from_millis(100);
                d
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, ?backoff, "cannot receive jobs; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(WorkerError::Bus(e)),
        };
        for delivery in deliveries {
            handle(&*bus, &config, &delivery, &shutdown, &mut totals).await;
        }
    }
    drop(sub);
    tracing::info!(worker = %config.worker_id, jobs = totals.jobs, sizes = totals.sizes,
        rejected = totals.rejected, given_back = totals.given_back, "worker stopped");
    Ok(totals)
}

/// One job: refuse it, or run it size by size and ack it.
async fn handle(
    bus: &dyn Bus,
    config: &WorkerConfig,
    delivery: &Delivery,
    shutdown: &CancellationToken,
    totals: &mut Totals,
) {
    let job_id = delivery.id.clone();
    let job = match job::parse(&delivery.payload, &config.limits, &config.run) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(job = %job_id, reason = e.kind(), error = %e, "job refused");
            let record = ErrorRecord {
                job_id: job_id.clone(),
                error: e.to_string(),
                reason: e.kind().to_string(),
                worker: config.worker_id.clone(),
                job: String::from_utf8_lossy(&delivery.payload).into_owned(),
            };
            publish(bus, config, &job_id, &record, shutdown).await;
            if let Err(e) = delivery.reject(&e.to_string()).await {
                tracing::warn!(job = %job_id, error = %e, "could not dead-letter the job; it will come again");
            }
            totals.rejected += 1;
            return;
        }
    };
    for pow in job.powmin..=job.powmax {
        if shutdown.is_cancelled() {
            give_back(delivery, Duration::ZERO, "shutting down", totals).await;
            return;
        }
        let run = config.run;
        let result = match tokio::task::spawn_blocking(move || weir_gol::run_size(pow, &run)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // parse() checked every size; reaching here is a bug, not a bad job.
                tracing::error!(job = %job_id, pow, error = %e, "size failed after the job was checked");
                let _ = delivery.reject(&e.to_string()).await;
                totals.rejected += 1;
                return;
            }
            Err(e) => {
                tracing::error!(job = %job_id, pow, error = %e, "size panicked");
                give_back(delivery, Duration::from_secs(1), "a size panicked", totals).await;
                return;
            }
        };
        tracing::info!(job = %job_id, tam = result.tam, comp = result.comp,
            engine = %result.engine, correct = result.correct, "size done");
        let record = ResultRecord::new(&result, &job_id, &config.worker_id);
        if !publish(bus, config, &job_id, &record, shutdown).await {
            give_back(
                delivery,
                Duration::from_secs(1),
                "a result was not published",
                totals,
            )
            .await;
            return;
        }
        totals.sizes += 1;
    }
    match delivery.ack().await {
        Ok(_) => totals.jobs += 1,
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, "could not ack the job; it may run again")
        }
    }
}

/// Nacks the job in hand, so another worker (or this one) runs it again;
/// its sizes already published will be published again.
async fn give_back(delivery: &Delivery, delay: Duration, why: &str, totals: &mut Totals) {
    tracing::info!(job = %delivery.id, why, "giving the job back");
    if let Err(e) = delivery.nack(delay).await {
        tracing::warn!(job = %delivery.id, error = %e, "could not give the job back; it returns after its lease");
    }
    totals.given_back += 1;
}

/// Publishes a record to the output topic, keyed by job id, retrying
/// transient failures until it is durable; false when the bus refused it
/// or shutdown came first.
async fn publish(
    bus: &dyn Bus,
    config: &WorkerConfig,
    job_id: &str,
    record: &impl Serialize,
    shutdown: &CancellationToken,
) -> bool {
    let payload = serde_json::to_vec(record).expect("records serialize");
    let mut backoff = Duration::from_millis(100);
    loop {
        let message = Message::new(payload.clone()).with_key(job_id.to_string());
        match bus.publish(&config.topic_out, message).await {
            Ok(_) => return true,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, ?backoff, "cannot publish a result; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, topic = %config.topic_out, "the bus refused a record");
                return false;
            }
        }
    }
}
