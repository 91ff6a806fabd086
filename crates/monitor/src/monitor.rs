//! The async shell: ticks on a fixed schedule, samples on the blocking
//! pool, publishes each tick's samples in one batch, and rides out a bus
//! that is down with a bounded backlog.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, BusError, Message};
use weir_telemetry::Sample;
use weir_telemetry::metric::{dcgm, resource as m};

use crate::backlog::{Backlog, Event};
use crate::error::MonitorError;
use crate::sampler::{Sampler, SamplerConfig};
use crate::watch::MonitorHandle;

/// Messages per `publish_batch`: a tick of 100 watched processes is about
/// 900; a backlog drains in batches this size, well under any bus's limit.
const MAX_BATCH: usize = 2048;

/// What the monitor samples, how often, and where it publishes.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The topic samples go to.
    pub topic: String,
    /// Time between ticks.
    pub interval: Duration,
    /// Messages kept while the bus is down; beyond this the oldest go.
    pub backlog: usize,
    /// How long the last samples may wait for the bus at shutdown, a
    /// publish already under way included; what is left then is dropped.
    pub final_flush: Duration,
    pub sampler: SamplerConfig,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            topic: "resources".into(),
            interval: Duration::from_secs(1),
            backlog: 100_000,
            final_flush: Duration::from_secs(5),
            sampler: SamplerConfig::default(),
        }
    }
}

/// What a monitor did, once it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorStats {
    pub ticks: u64,
    /// Samples taken.
    pub samples: u64,
    /// Samples the bus accepted.
    pub published: u64,
    /// Samples lost: beyond the backlog, refused by the bus, or still
    /// waiting when the bus did not come back at shutdown.
    pub dropped: u64,
}

/// A running monitor.
#[derive(Debug)]
pub struct Monitor {
    handle: MonitorHandle,
    host: String,
    gpus: usize,
    task: JoinHandle<Result<MonitorStats, MonitorError>>,
}

/// The samples between the sampling task and the publishing task.
#[derive(Debug)]
struct Outbox {
    backlog: Mutex<Backlog>,
    ready: Notify,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Monitor {
    /// Starts sampling (the first tick now) until `shutdown`, which takes
    /// one last sample, publishes what it can within
    /// [`MonitorConfig::final_flush`] and stops. Must be called within a
    /// tokio runtime. Looks for GPUs first, on the blocking pool (NVML may
    /// take seconds per GPU to start): the runtime's threads go on.
    pub async fn spawn(
        bus: Arc<dyn Bus>,
        config: MonitorConfig,
        shutdown: CancellationToken,
    ) -> Result<Monitor, MonitorError> {
        if config.interval.is_zero() {
            return Err(MonitorError::Config(
                "the sampling interval must not be zero".into(),
            ));
        }
        if config.topic.is_empty() {
            return Err(MonitorError::Config("the topic must not be empty".into()));
        }
        let sampler_config = config.sampler.clone();
        let sampler = tokio::task::spawn_blocking(move || Sampler::new(sampler_config))
            .await
            .map_err(|e| MonitorError::Task(e.to_string()))??;
        let handle = sampler.handle();
        let host = sampler.host().to_string();
        let gpus = sampler.gpu_count();
        let task = tokio::spawn(run(bus, config, sampler, shutdown));
        Ok(Monitor {
            handle,
            host,
            gpus,
            task,
        })
    }

    /// The handle that starts and stops watching processes.
    pub fn handle(&self) -> MonitorHandle {
        self.handle.clone()
    }

    /// The `host` label of this monitor's samples.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How many GPUs are sampled (0 without an NVIDIA driver).
    pub fn gpu_count(&self) -> usize {
        self.gpus
    }

    /// Waits for the monitor to stop (after its shutdown token is
    /// cancelled).
    pub async fn join(self) -> Result<MonitorStats, MonitorError> {
        self.task
            .await
            .map_err(|e| MonitorError::Task(e.to_string()))?
    }
}

async fn run(
    bus: Arc<dyn Bus>,
    config: MonitorConfig,
    sampler: Sampler,
    shutdown: CancellationToken,
) -> Result<MonitorStats, MonitorError> {
    let outbox = Arc::new(Outbox {
        backlog: Mutex::new(Backlog::new(config.backlog)),
        ready: Notify::new(),
    });
    let sampled = CancellationToken::new();
    let publisher = tokio::spawn(publish(
        bus,
        config.topic.clone(),
        Arc::clone(&outbox),
        sampled.clone(),
        config.final_flush,
    ));
    let sampled_result = sample(sampler, config.interval, &outbox, &shutdown).await;
    sampled.cancel();
    let published = publisher
        .await
        .map_err(|e| MonitorError::Task(e.to_string()))?;
    let mut stats = sampled_result?;
    stats.published = published;
    stats.dropped = outbox.lock().dropped;
    Ok(stats)
}

/// Ticks until shutdown, then once more; each tick's samples go to the
/// outbox. Returns the ticks and samples taken.
async fn sample(
    mut sampler: Sampler,
    interval: Duration,
    outbox: &Outbox,
    shutdown: &CancellationToken,
) -> Result<MonitorStats, MonitorError> {
    let mut stats = MonitorStats::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let last = tokio::select! {
            biased;
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let (back, messages) = tokio::task::spawn_blocking(move || {
            let samples = sampler.sample();
            let messages: Vec<Message> = samples.iter().filter_map(message).collect();
            (sampler, messages)
        })
        .await
        .map_err(|e| MonitorError::Task(e.to_string()))?;
        sampler = back;
        stats.ticks += 1;
        stats.samples += messages.len() as u64;
        if let Some(Event::StartedDropping) = outbox.lock().push(messages) {
            tracing::warn!(
                "the bus is not taking samples and the backlog is full: dropping the oldest"
            );
        }
        outbox.ready.notify_one();
        if last {
            return Ok(stats);
        }
    }
}

/// A sample as a bus message, keyed so that each series stays in order:
/// a process tree by host and pid, a cgroup by host and path, a GPU by its
/// UUID, the host by its name.
fn message(sample: &Sample) -> Option<Message> {
    let payload = match sample.encode() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("sample left out: {e}");
            return None;
        }
    };
    let label = |name: &str| sample.labels.get(name).map(String::as_str);
    let host = label(m::LABEL_HOST).unwrap_or_default();
    let key = if let Some(pid) = label(m::LABEL_PID) {
        format!("{host}/{pid}")
    } else if let Some(group) = label(m::LABEL_CGROUP) {
        format!("{host}/cgroup:{group}")
    } else if let Some(uuid) = label(dcgm::LABEL_UUID) {
        uuid.to_string()
    } else {
        host.to_string()
    };
    Some(Message::new(payload).with_key(key))
}

/// Publishes what the sampler leaves in the outbox until it is done, then
/// flushes; from the end of sampling on, everything (a publish under way
/// included: a stalled bus may hold it for its whole request timeout) has
/// `final_flush` to finish. Returns how many were published.
async fn publish(
    bus: Arc<dyn Bus>,
    topic: String,
    outbox: Arc<Outbox>,
    sampled: CancellationToken,
    final_flush: Duration,
) -> u64 {
    let mut publisher = Publisher {
        bus,
        topic,
        outbox,
        published: 0,
        failing: false,
    };
    let work = async {
        loop {
            tokio::select! {
                biased;
                _ = sampled.cancelled() => break,
                _ = publisher.outbox.ready.notified() => {}
            }
            // Retried at the next tick when it fails.
            let _ = publisher.drain().await;
        }
        while publisher.drain().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let time_up = async {
        sampled.cancelled().await;
        tokio::time::sleep(final_flush).await;
    };
    // Either ends the other: a publish cut short is still in the backlog
    // (which is only peeked at until the bus takes it), so nothing is lost
    // that is not counted.
    let flushed = tokio::select! {
        _ = work => true,
        _ = time_up => false,
    };
    if !flushed {
        let lost = publisher.outbox.lock().abandon();
        tracing::warn!("stopping with {lost} samples the bus did not take");
    }
    publisher.published
}

#[derive(Debug)]
struct Publisher {
    bus: Arc<dyn Bus>,
    topic: String,
    outbox: Arc<Outbox>,
    published: u64,
    /// Whether the last publish failed (its warning was given).
    failing: bool,
}

impl Publisher {
    /// Publishes the backlog in batches until it is empty; stops at the
    /// first failure that retrying may cure.
    async fn drain(&mut self) -> Result<(), BusError> {
        loop {
            let (start, chunk) = self.outbox.lock().peek(MAX_BATCH);
            let n = chunk.len();
            if n == 0 {
                return Ok(());
            }
            match self.bus.publish_batch(&self.topic, chunk).await {
                Ok(_) => {
                    self.published += n as u64;
                    if std::mem::take(&mut self.failing) {
                        tracing::warn!("publishing samples to {} again", self.topic);
                    }
                    if let Some(Event::StoppedDropping(lost)) =
                        self.outbox.lock().published(start, n)
                    {
                        tracing::warn!("{lost} samples were dropped while the bus was down");
                    }
                }
                Err(BusError::Invalid(why)) => {
                    tracing::warn!("the bus refused {n} samples for {}: {why}", self.topic);
                    self.outbox.lock().refused(start, n);
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!(
                            "cannot publish samples to {} ({e}); keeping them and retrying at each tick",
                            self.topic
                        );
                    } else {
                        tracing::debug!("publishing samples still fails: {e}");
                    }
                    return Err(e);
                }
            }
        }
    }
}
