//! A synthetic GPU fleet: `weir stream synth`, and the telemetry `weir up`
//! and the benchmarks use when no DCGM export is given.
//!
//! [`Fleet`] is `hosts × gpus_per_host` H100 80GB cards (module `gpu` holds the
//! physics). Each card alternates between idle spells and jobs of random
//! length (exponential around [`FleetConfig::mean_job`] and
//! [`FleetConfig::mean_idle`]). Jobs are training (near-full utilisation,
//! most of the memory, often spanning 2, 4 or all GPUs of a host),
//! inference (bursty, partial) or, now and then, video (the encoder and
//! decoder busy). Utilisation drives power, power drives temperature, and
//! temperature throttles the SM clock; FB_USED + FB_FREE is always the
//! card's 81007 MiB.
//!
//! [`Fleet::scrape`] returns one sample of each of the ten metrics per GPU
//! (the order of a DCGM export), labelled as dcgm-exporter labels them:
//! `gpu`, `device` (`nvidiaN`), `UUID` (`GPU-…`, fixed by the seed),
//! `modelName`, `Hostname` (`synth-host-000`…) and
//! `DCGM_FI_DRIVER_VERSION`. The same seed and the same scrape times give
//! the same samples, on every platform and build.
//!
//! [`stream`] publishes a fleet's scrapes to a topic at an interval.

mod gpu;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, Message};
use weir_telemetry::metric::dcgm;
use weir_telemetry::{Labels, Sample};

use crate::PublishError;
use crate::dcgm::gpu_key;
use crate::publish::{Produced, Publisher, StopAfter, pump};
use crate::rng::Rng;
use gpu::{Gpu, Job, JobKind};

pub use gpu::{DRIVER_VERSION, FB_MIB, MODEL};

/// The metrics of a scrape, in a DCGM export's order.
pub const METRICS: [&str; 10] = [
    dcgm::GPU_UTIL,
    dcgm::MEM_COPY_UTIL,
    dcgm::POWER_USAGE,
    dcgm::GPU_TEMP,
    dcgm::FB_USED,
    dcgm::FB_FREE,
    dcgm::DEC_UTIL,
    dcgm::ENC_UTIL,
    dcgm::SM_CLOCK,
    dcgm::MEM_CLOCK,
];

/// The largest fleet worth simulating, and the most `weir stream synth`
/// accepts: a scrape of 100,000 GPUs is a million samples.
pub const MAX_GPUS: u64 = 100_000;

/// The shape of a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub hosts: u32,
    pub gpus_per_host: u32,
    /// Fixes every identity and every value.
    pub seed: u64,
    /// Average length of a job.
    pub mean_job: Duration,
    /// Average idle spell of a card between jobs.
    pub mean_idle: Duration,
}

impl FleetConfig {
    /// GPUs in a fleet of this shape.
    pub fn gpus(&self) -> u64 {
        u64::from(self.hosts) * u64::from(self.gpus_per_host)
    }

    pub fn new(hosts: u32, gpus_per_host: u32) -> FleetConfig {
        FleetConfig {
            hosts,
            gpus_per_host,
            seed: 0,
            mean_job: Duration::from_secs(20 * 60),
            mean_idle: Duration::from_secs(5 * 60),
        }
    }
}

/// Random streams drawn from one seed, kept apart so that identities do not
/// depend on how many scrapes were taken.
const STREAM_IDENTITY: u64 = 1;
const STREAM_DYNAMICS: u64 = 2;

/// A running synthetic fleet.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    /// Per GPU, host by host: its base labels and its state.
    gpus: Vec<(Labels, Gpu)>,
    rng: Rng,
    last_ms: Option<i64>,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Fleet {
        let mut ids = Rng::new(config.seed, STREAM_IDENTITY);
        let mut rng = Rng::new(config.seed, STREAM_DYNAMICS);
        let mut gpus = Vec::new();
        for host in 0..config.hosts {
            let hostname = format!("synth-host-{host:03}");
            let ambient = rng.range(22.0, 30.0);
            for index in 0..config.gpus_per_host {
                let labels = Labels::from([
                    (dcgm::LABEL_GPU.to_string(), index.to_string()),
                    (dcgm::LABEL_DEVICE.to_string(), format!("nvidia{index}")),
                    (dcgm::LABEL_UUID.to_string(), uuid(&mut ids)),
                    (dcgm::LABEL_MODEL.to_string(), MODEL.to_string()),
                    (dcgm::LABEL_HOSTNAME.to_string(), hostname.clone()),
                    (
                        dcgm::LABEL_DRIVER_VERSION.to_string(),
                        DRIVER_VERSION.to_string(),
                    ),
                ]);
                gpus.push((labels, Gpu::new(ambient, &mut rng)));
            }
        }
        let mut fleet = Fleet {
            config,
            gpus,
            rng,
            last_ms: None,
        };
        fleet.warm_up();
        fleet
    }

    /// GPUs in the fleet.
    pub fn gpus(&self) -> usize {
        self.gpus.len()
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Advances the fleet to `now_ms` and reads every GPU: ten samples per
    /// GPU, stamped `now_ms`. A time earlier than the last scrape's reads
    /// the fleet again without moving it.
    pub fn scrape(&mut self, now_ms: i64) -> Vec<Sample> {
        self.advance_to(now_ms);
        let mut out = Vec::with_capacity(self.gpus.len() * METRICS.len());
        for host in 0..self.config.hosts as usize {
            self.read_host(host, now_ms, &mut |s| out.push(s));
        }
        out
    }

    /// Moves the fleet to `now_ms` (not back: an earlier time leaves it
    /// where it is), ready for [`Fleet::read_host`].
    fn advance_to(&mut self, now_ms: i64) {
        let dt = match self.last_ms {
            Some(last) => (now_ms - last).max(0) as f64 / 1000.0,
            None => 0.0,
        };
        self.last_ms = Some(self.last_ms.map_or(now_ms, |last| last.max(now_ms)));
        self.advance(dt);
    }

    /// The samples of one host's GPUs as they are now, stamped `now_ms`,
    /// in scrape order.
    fn read_host(&self, host: usize, now_ms: i64, out: &mut dyn FnMut(Sample)) {
        let per_host = self.config.gpus_per_host as usize;
        let gpus = self.gpus.iter().skip(host * per_host).take(per_host);
        for (labels, gpu) in gpus {
            let r = gpu.reading();
            let values = [
                r.util,
                r.mem_copy,
                r.power,
                r.temp,
                r.fb_used,
                r.fb_free,
                r.dec,
                r.enc,
                r.sm_clock,
                r.mem_clock,
            ];
            for (metric, value) in METRICS.into_iter().zip(values) {
                out(Sample {
                    metric: metric.to_string(),
                    value,
                    ts: now_ms,
                    labels: labels.clone(),
                });
            }
        }
    }

    /// The fleet as if it had been running before the first scrape: a
    /// share of the cards mid-job, at the temperatures their jobs give.
    fn warm_up(&mut self) {
        let job = self.config.mean_job.as_secs_f64().max(1.0);
        let idle = self.config.mean_idle.as_secs_f64().max(1.0);
        let busy = job / (job + idle);
        for (_, gpu) in &mut self.gpus {
            // Spells are exponential, so what is left of one is too.
            gpu.remaining = if self.rng.chance(busy) {
                0.0
            } else {
                self.rng.exponential(idle)
            };
        }
        self.schedule();
        for (_, gpu) in &mut self.gpus {
            gpu.settle(&mut self.rng);
        }
    }

    fn advance(&mut self, dt: f64) {
        if dt <= 0.0 {
            return;
        }
        let idle = self.config.mean_idle.as_secs_f64().max(1.0);
        for (_, gpu) in &mut self.gpus {
            gpu.remaining -= dt;
            if gpu.job.is_some() && gpu.remaining <= 0.0 {
                gpu.stop(self.rng.exponential(idle));
            }
        }
        self.schedule();
        for (_, gpu) in &mut self.gpus {
            gpu.advance(dt, &mut self.rng);
        }
    }

    /// Starts jobs on the idle cards that are ready for one. A job takes
    /// the ready card and, when it spans several, other idle cards of the
    /// same host (ready ones first).
    fn schedule(&mut self) {
        let per_host = self.config.gpus_per_host.max(1) as usize;
        let mean_job = self.config.mean_job.as_secs_f64().max(1.0);
        for host in self.gpus.chunks_mut(per_host) {
            while let Some(first) = host
                .iter()
                .position(|(_, g)| g.job.is_none() && g.remaining <= 0.0)
            {
                let kind = self.rng.weighted(&[
                    (JobKind::Training, 0.6),
                    (JobKind::Inference, 0.3),
                    (JobKind::Video, 0.1),
                ]);
                let size: usize = match kind {
                    JobKind::Training => {
                        self.rng
                            .weighted(&[(1, 0.3), (2, 0.15), (4, 0.2), (8, 0.35)])
                    }
                    JobKind::Inference => self.rng.weighted(&[(1, 0.7), (2, 0.3)]),
                    JobKind::Video => 1,
                };
                let job = Job::new(kind, &mut self.rng);
                let seconds = self.rng.exponential(mean_job).max(30.0);
                let mut members = vec![first];
                let mut others: Vec<usize> = (0..host.len())
                    .filter(|&i| i != first && host[i].1.job.is_none())
                    .collect();
                others.sort_by(|&a, &b| host[a].1.remaining.total_cmp(&host[b].1.remaining));
                members.extend(others.into_iter().take(size.min(per_host) - 1));
                for i in members {
                    host[i].1.start(job, seconds);
                }
            }
        }
    }
}

/// A GPU UUID as NVIDIA writes them: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn uuid(rng: &mut Rng) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// How a fleet is streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub topic: String,
    /// One scrape per interval; zero = as fast as the bus takes them.
    pub interval: Duration,
    pub stop: StopAfter,
    /// Messages per publish at most.
    pub batch: usize,
}

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            topic: "telemetry".into(),
            interval: Duration::from_secs(1),
            stop: StopAfter::default(),
            batch: 1000,
        }
    }
}

/// What a stream published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub scrapes: u64,
    pub samples: u64,
}

/// Publishes the fleet's scrapes, each sample keyed by its GPU's UUID,
/// until `config.stop` or `shutdown`. Scrape times strictly increase.
///
/// A scrape is encoded and published host by host, so what is held at
/// once is about a batch of messages, whatever the fleet's size.
pub async fn stream(
    bus: &dyn Bus,
    fleet: &mut Fleet,
    config: &StreamConfig,
    shutdown: &CancellationToken,
) -> Result<StreamSummary, PublishError> {
    let publisher = Publisher::new(bus, &config.topic, config.batch);
    let hosts = fleet.config.hosts as usize;
    // The next host of the scrape under way.
    let mut next_host = 0;
    let mut encode = |now_ms: i64, out: &mut Vec<Message>| {
        if next_host == 0 {
            fleet.advance_to(now_ms);
        }
        let mut failed = None;
        fleet.read_host(next_host, now_ms, &mut |s| match s.encode() {
            Ok(payload) => {
                let mut message = Message::new(payload);
                message.key = gpu_key(&s.labels).map(Into::into);
                out.push(message);
            }
            Err(e) => {
                failed.get_or_insert_with(|| PublishError::Encode(e.to_string()));
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        next_host += 1;
        if next_host < hosts {
            return Ok(Produced::More);
        }
        next_host = 0;
        Ok(Produced::Tick)
    };
    let pumped = pump(
        &publisher,
        config.interval,
        &config.stop,
        shutdown,
        &mut encode,
        &mut |_| {},
    )
    .await?;
    Ok(StreamSummary {
        scrapes: pumped.ticks,
        samples: pumped.messages,
    })
}

#[cfg(test)]
mod tests;
