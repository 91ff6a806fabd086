//! The generating sources over the embedded bus: the synthetic fleet and
//! the example generators publish what they say, keyed as they say, and
//! stop at their limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_bus::scripted::{Fault, Scripted};
use weir_bus::{Bus, ConnectOptions};
use weir_sources::StopAfter;
use weir_sources::generate::{self, GenerateConfig, GenerateError, Kind};
use weir_sources::synth::{self, FB_MIB, Fleet, FleetConfig, StreamConfig};
use weir_telemetry::Sample;

async fn embedded(dir: &std::path::Path) -> std::sync::Arc<dyn Bus> {
    let url = format!("embedded://{}", dir.display());
    weir_bus::connect(&url, &ConnectOptions::default())
        .await
        .unwrap()
}

/// Key and payload of everything on `topic`, in delivery order.
async fn drain(bus: &dyn Bus, topic: &str) -> Vec<(String, Vec<u8>)> {
    weir_bus::contract::drain(bus, topic)
        .await
        .into_iter()
        .map(|d| {
            let key = String::from_utf8(d.key.clone().unwrap().to_vec()).unwrap();
            (key, d.payload.to_vec())
        })
        .collect()
}

#[tokio::test]
async fn a_synthetic_fleet_streams_every_gpu_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let mut fleet = Fleet::new(FleetConfig {
        seed: 4,
        ..FleetConfig::new(3, 8)
    });
    let config = StreamConfig {
        interval: Duration::ZERO,
        stop: StopAfter {
            ticks: Some(3),
            duration: None,
        },
        batch: 100,
        ..StreamConfig::default()
    };
    let summary = synth::stream(&*bus, &mut fleet, &config, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((summary.scrapes, summary.samples), (3, 3 * 8 * 10 * 3));
    let out = drain(&*bus, "telemetry").await;
    assert_eq!(out.len(), 720);
    let mut series: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut memory: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (key, payload) in &out {
        let s = Sample::decode(payload).unwrap();
        assert_eq!(key, &s.labels["UUID"]);
        if s.metric.ends_with("FB_USED") || s.metric.ends_with("FB_FREE") {
            *memory.entry((key.clone(), s.ts)).or_default() += s.value;
        }
        series
            .entry((key.clone(), s.metric))
            .or_default()
            .push(s.ts);
    }
    assert_eq!(series.len(), 24 * 10);
    for (name, ts) in &series {
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{name:?}: {ts:?}");
    }
    assert!(memory.values().all(|&m| m == f64::from(FB_MIB)));
    bus.close().await.unwrap();
}

#[tokio::test]
async fn generators_publish_their_count_keyed_as_documented() {
    for kind in [Kind::Sensor, Kind::Complex] {
        let dir = tempfile::tempdir().unwrap();
        let bus = embedded(dir.path()).await;
        let config = GenerateConfig {
            hz: 1000.0,
            stop: StopAfter {
                ticks: Some(5),
                duration: None,
            },
            seed: 2,
            ..GenerateConfig::new(kind)
        };
        let mut seen = Vec::new();
        let summary = generate::run(
            &*bus,
            &config,
            &mut |m| seen.push(m.payload.to_vec()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(summary.messages, 5);
        let out = drain(&*bus, kind.default_topic()).await;
        assert_eq!(out.len(), 5);
        let mut published: Vec<Vec<u8>> = out.iter().map(|(_, p)| p.clone()).collect();
        published.sort();
        seen.sort();
        assert_eq!(published, seen, "the callback sees what was published");
        for (key, payload) in &out {
            match kind {
                Kind::Sensor => {
                    let s = Sample::decode(payload).unwrap();
                    assert_eq!(s.metric, "sensor_temperature_celsius");
                    assert_eq!(key, &s.labels["sensor"]);
                }
                Kind::Complex => {
                    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                    assert_eq!(key, &v["order"]["customer"]["id"]);
                    assert!(v["occurred_at"].as_str().unwrap().ends_with('Z'));
                }
            }
        }
        bus.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_duration_limit_ends_a_stream_and_a_seed_fixes_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path()).await;
    let config = GenerateConfig {
        hz: 1000.0,
        stop: StopAfter {
            ticks: None,
            duration: Some(Duration::from_millis(200)),
        },
        ..GenerateConfig::new(Kind::Sensor)
    };
    let summary = generate::run(&*bus, &config, &mut |_| {}, &CancellationToken::new())
        .await
        .unwrap();
    assert!(summary.messages > 0);
    bus.close().await.unwrap();

    let values = |seed| {
        let mut g = generate::Generator::new(&GenerateConfig {
            seed,
            ..GenerateConfig::new(Kind::Complex)
        });
        (0..5)
            .map(|i| g.next_message(1_700_000_000_000 + i).unwrap().payload)
            .collect::<Vec<_>>()
    };
    assert_eq!(values(1), values(1));
    assert_ne!(values(1), values(2));
}

#[tokio::test(start_paused = true)]
async fn a_generator_keeps_its_rate_when_a_publish_takes_longer_than_a_period() {
    // 1000 messages a second over a bus that takes 35 periods a publish.
    let bus = Scripted::sink();
    bus.set(Some(Fault::Delay(Duration::from_millis(35))));
    let config = GenerateConfig {
        hz: 1000.0,
        stop: StopAfter {
            ticks: None,
            duration: Some(Duration::from_secs(2)),
        },
        ..GenerateConfig::new(Kind::Sensor)
    };
    let summary = generate::run(&bus, &config, &mut |_| {}, &CancellationToken::new())
        .await
        .unwrap();
    // What fell due during the last publish may miss the deadline: at most
    // 35 messages short of 2000, not one message per publish (about 57).
    let n = summary.messages;
    assert!(
        (2000 - 36..=2000).contains(&n),
        "{n} messages in 2 s at 1000 Hz"
    );
    assert_eq!(bus.messages().len() as u64, n);
}

#[tokio::test]
async fn shutdown_abandons_a_publish_that_stalls() {
    let bus = Arc::new(Scripted::sink());
    bus.set(Some(Fault::Stall));
    let shutdown = CancellationToken::new();
    let run = {
        let (bus, shutdown) = (Arc::clone(&bus), shutdown.clone());
        tokio::spawn(async move {
            let config = GenerateConfig::new(Kind::Complex);
            generate::run(&*bus, &config, &mut |_| {}, &shutdown).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("shutdown ends a stalled publish")
        .unwrap()
        .unwrap();
    assert_eq!(summary.messages, 0, "an abandoned publish is not counted");
}

#[tokio::test]
async fn rates_too_slow_to_wait_for_are_refused() {
    let bus = Scripted::sink();
    for hz in [1e-30, 0.0, -1.0, f64::NAN, 1.0 / 86_401.0] {
        let config = GenerateConfig {
            hz,
            ..GenerateConfig::new(Kind::Sensor)
        };
        let err = generate::run(&bus, &config, &mut |_| {}, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GenerateError::Config(m) if m.contains("at least one message a day")),
            "{hz}: {err}"
        );
    }
    // One a day is accepted: the first message goes at once.
    let config = GenerateConfig {
        hz: 1.0 / 86_400.0,
        stop: StopAfter {
            ticks: Some(1),
            duration: None,
        },
        ..GenerateConfig::new(Kind::Sensor)
    };
    let summary = generate::run(&bus, &config, &mut |_| {}, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.messages, 1);
}
