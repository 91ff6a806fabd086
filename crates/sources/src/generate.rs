//! Example streams for learning producers and consumers: `weir generate
//! sensor | complex`.
//!
//! **sensor** (default topic `sensors`): one temperature reading per
//! message, a [`Sample`](weir_telemetry::Sample) like every other
//! telemetry in Weir, so `weir collect` stores it; sensors (`sensor-1`,
//! `sensor-2`, …) are read in turn, each a mean-reverting random walk
//! around its room's set point. Key: the sensor id.
//!
//! ```json
//! {"metric":"sensor_temperature_celsius","value":21.37,"ts":"2025-07-18T20:42:34.000Z",
//!  "labels":{"sensor":"sensor-1","site":"lab-b"}}
//! ```
//!
//! **complex** (default topic `events`): an order-created event, a nested
//! document with a customer and address, an items array, money as integer
//! cents, timestamps, and a metadata map. Key: the customer id, so one
//! customer's events stay in order.
//!
//! ```json
//! {"event_id":"evt-000001","type":"order.created","occurred_at":"2025-07-18T20:42:34.000Z",
//!  "order":{"id":"ord-5be3c0a1","status":"created",
//!   "customer":{"id":"cus-00042","name":"Ana Souza","email":"ana.souza@example.com","tier":"gold",
//!    "address":{"street":"Rua das Flores 120","city":"Porto Alegre","postal_code":"04411","country":"BR"}},
//!   "items":[{"sku":"SKU-10137","name":"Mechanical keyboard","quantity":2,
//!    "unit_price":{"amount_cents":8900,"currency":"BRL"}}],
//!   "total":{"amount_cents":17800,"currency":"BRL"},
//!   "payment":{"method":"card","status":"authorized"},
//!   "shipping":{"method":"express","promised_by":"2025-07-19T20:42:34.000Z"}},
//!  "metadata":{"schema":"order-event/v1","source":"weir-generate","trace_id":"9f86d081884c7d65…"}}
//! ```
//!
//! Messages go out at `hz` per second on fixed deadlines; when publishing
//! takes longer than a period, the messages that fell due meanwhile go out
//! together in the next publish (up to a batch of 1000), so the rate holds.
//! Each message gets its own millisecond, so above 1000 per second the
//! times run ahead of the clock. A seed fixes every value but the times.

mod order;
mod sensor;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, Message};

use crate::publish::{Produced, Publisher, StopAfter, pump};
use crate::rng::Rng;
use crate::{MIN_RATE, PublishError};

/// Which stream to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A temperature sample per message.
    Sensor,
    /// A nested order event per message.
    Complex,
}

impl Kind {
    /// Where the stream goes unless told otherwise.
    pub fn default_topic(self) -> &'static str {
        match self {
            Kind::Sensor => "sensors",
            Kind::Complex => "events",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sensor => "sensor",
            Kind::Complex => "complex",
        }
    }
}

/// What to generate and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub kind: Kind,
    pub topic: String,
    /// Messages per second.
    pub hz: f64,
    /// `ticks` counts messages.
    pub stop: StopAfter,
    pub seed: u64,
    /// Sensors read in turn (`sensor` only).
    pub sensors: u32,
}

impl GenerateConfig {
    pub fn new(kind: Kind) -> GenerateConfig {
        GenerateConfig {
            kind,
            topic: kind.default_topic().to_string(),
            hz: 1.0,
            stop: StopAfter::default(),
            seed: 0,
            sensors: 3,
        }
    }
}

/// Why generating could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Makes the messages of one stream: key and JSON payload.
#[derive(Debug, Clone)]
pub struct Generator {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Sensor(sensor::Sensors),
    Complex(order::Orders),
}

impl Generator {
    pub fn new(config: &GenerateConfig) -> Generator {
        let rng = Rng::new(config.seed, 0);
        let source = match config.kind {
            Kind::Sensor => Source::Sensor(sensor::Sensors::new(config.sensors, rng)),
            Kind::Complex => Source::Complex(order::Orders::new(rng)),
        };
        Generator { source }
    }

    /// The next message, at `now_ms`.
    pub fn next_message(&mut self, now_ms: i64) -> Result<Message, PublishError> {
        let encode = |e: &dyn std::fmt::Display| PublishError::Encode(e.to_string());
        let (key, payload) = match &mut self.source {
            Source::Sensor(sensors) => {
                let (key, sample) = sensors.read(now_ms);
                (key, sample.encode().map_err(|e| encode(&e))?)
            }
            Source::Complex(orders) => {
                let (key, event) = orders.next(now_ms);
                (key, serde_json::to_vec(&event).map_err(|e| encode(&e))?)
            }
        };
        Ok(Message::new(payload).with_key(key))
    }
}

/// Messages per publish at most: how far a generator catches up at once.
const BATCH: usize = 1000;

/// The wait between messages at `hz` per second, if `hz` is a rate
/// [`MIN_RATE`] or faster.
fn period(hz: f64) -> Option<Duration> {
    if !(hz.is_finite() && hz >= MIN_RATE) {
        return None;
    }
    Duration::try_from_secs_f64(1.0 / hz).ok()
}

/// What a run published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    pub messages: u64,
}

/// Publishes `hz` messages a second until `config.stop` or `shutdown`;
/// `published` sees each message once it is on the bus.
pub async fn run(
    bus: &dyn Bus,
    config: &GenerateConfig,
    published: &mut (dyn FnMut(&Message) + Send),
    shutdown: &CancellationToken,
) -> Result<GenerateSummary, GenerateError> {
    let period = period(config.hz).ok_or_else(|| {
        GenerateError::Config(format!(
            "hz must be at least one message a day (1/86400 per second), not {}",
            config.hz
        ))
    })?;
    let mut generator = Generator::new(config);
    let publisher = Publisher::new(bus, &config.topic, BATCH);
    let mut produce = |now_ms, out: &mut Vec<Message>| {
        out.push(generator.next_message(now_ms)?);
        Ok(Produced::Tick)
    };
    let pumped = pump(
        &publisher,
        period,
        &config.stop,
        shutdown,
        &mut produce,
        published,
    )
    .await?;
    Ok(GenerateSummary {
        messages: pumped.messages,
    })
}
