//! Room-temperature sensors: each reading is one [`Sample`].
//!
//! A sensor's temperature is a mean-reverting random walk
//! (Ornstein–Uhlenbeck) around its own set point: it wanders by a few
//! tenths of a degree, drifts back, and never runs away, which is what a
//! thermometer in a heated room shows.

use weir_telemetry::Sample;
use weir_telemetry::metric::sensor as names;

use crate::rng::Rng;

const SITES: [&str; 4] = ["lab-a", "lab-b", "warehouse", "server-room"];
/// How fast a reading returns to its set point, per second.
const REVERSION: f64 = 0.05;
/// Random wander, degrees per √second.
const WANDER: f64 = 0.08;

#[derive(Debug, Clone)]
struct Sensor {
    id: String,
    site: &'static str,
    set_point: f64,
    value: f64,
    last_ms: Option<i64>,
}

/// A set of sensors read in turn.
#[derive(Debug, Clone)]
pub(crate) struct Sensors {
    sensors: Vec<Sensor>,
    next: usize,
    rng: Rng,
}

impl Sensors {
    pub(crate) fn new(count: u32, rng: Rng) -> Sensors {
        let mut rng = rng;
        let sensors = (1..=count.max(1))
            .map(|i| {
                let site = SITES[rng.below(SITES.len() as u64) as usize];
                let set_point = if site == "server-room" {
                    rng.range(17.0, 20.0)
                } else {
                    rng.range(19.5, 23.5)
                };
                Sensor {
                    id: format!("sensor-{i}"),
                    site,
                    set_point,
                    value: set_point + rng.normal() * 0.3,
                    last_ms: None,
                }
            })
            .collect();
        Sensors {
            sensors,
            next: 0,
            rng,
        }
    }

    /// The next sensor's reading at `now_ms`, and the sensor's id (the key).
    pub(crate) fn read(&mut self, now_ms: i64) -> (String, Sample) {
        let turn = self.next;
        self.next = (turn + 1) % self.sensors.len();
        let s = &mut self.sensors[turn];
        let dt = s
            .last_ms
            .map_or(0.0, |last| (now_ms - last).max(0) as f64 / 1000.0);
        s.last_ms = Some(now_ms);
        // The exact OU step, stable for any gap between readings.
        let keep = (-REVERSION * dt).exp();
        let spread = WANDER * ((1.0 - keep * keep) / (2.0 * REVERSION)).sqrt();
        s.value = s.set_point + (s.value - s.set_point) * keep + spread * self.rng.normal();
        let value = (s.value * 100.0).round() / 100.0;
        let sample = Sample::new(names::TEMPERATURE_CELSIUS, value, now_ms)
            .label(names::LABEL_SENSOR, s.id.clone())
            .label(names::LABEL_SITE, s.site);
        (s.id.clone(), sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_take_turns_and_stay_believable() {
        let mut sensors = Sensors::new(3, Rng::new(1, 0));
        let mut ids = Vec::new();
        for i in 0..3000 {
            let (id, sample) = sensors.read(1_700_000_000_000 + i * 1000);
            assert!(
                (10.0..35.0).contains(&sample.value),
                "{id} read {}",
                sample.value
            );
            assert_eq!(sample.labels[names::LABEL_SENSOR], id);
            ids.push(id);
        }
        assert_eq!(ids[..4], ["sensor-1", "sensor-2", "sensor-3", "sensor-1"]);
    }
}
