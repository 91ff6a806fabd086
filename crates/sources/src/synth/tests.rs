//! The fleet model: reproducible, in range, and behaving like real cards.

use std::collections::BTreeMap;

use super::*;

const T0: i64 = 1_752_871_354_000;

/// Each GPU's ten values of one scrape, in [`METRICS`] order, with its UUID.
fn by_gpu(samples: &[Sample]) -> Vec<(String, [f64; 10])> {
    samples
        .chunks(METRICS.len())
        .map(|gpu| {
            for (s, metric) in gpu.iter().zip(METRICS) {
                assert_eq!(s.metric, metric);
                assert_eq!(s.labels, gpu[0].labels, "one GPU per chunk");
            }
            let values: [f64; 10] = std::array::from_fn(|i| gpu[i].value);
            (gpu[0].labels[dcgm::LABEL_UUID].clone(), values)
        })
        .collect()
}

fn run(config: FleetConfig, steps: i64, step_ms: i64) -> Vec<Vec<Sample>> {
    let mut fleet = Fleet::new(config);
    (0..steps).map(|i| fleet.scrape(T0 + i * step_ms)).collect()
}

fn seeded(seed: u64) -> FleetConfig {
    FleetConfig {
        seed,
        ..FleetConfig::new(2, 4)
    }
}

#[test]
fn a_seed_fixes_the_fleet() {
    let a = run(seeded(7), 30, 1000);
    assert_eq!(a, run(seeded(7), 30, 1000));
    let b = run(seeded(8), 30, 1000);
    assert_ne!(a, b);
    let uuids = |r: &[Vec<Sample>]| {
        by_gpu(&r[0])
            .into_iter()
            .map(|(u, _)| u)
            .collect::<Vec<_>>()
    };
    assert_ne!(uuids(&a), uuids(&b), "identities follow the seed");
    // Identities do not depend on what was scraped before.
    assert_eq!(uuids(&a), uuids(&run(seeded(7), 1, 1000)));
}

#[test]
fn labels_look_like_dcgm_exporter() {
    let scrape = Fleet::new(seeded(1)).scrape(T0);
    assert_eq!(scrape.len(), 2 * 4 * 10);
    let s = &scrape[5 * 10];
    assert_eq!(s.ts, T0);
    let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "DCGM_FI_DRIVER_VERSION",
            "Hostname",
            "UUID",
            "device",
            "gpu",
            "modelName"
        ]
    );
    assert_eq!(s.labels["Hostname"], "synth-host-001");
    assert_eq!(s.labels["gpu"], "1");
    assert_eq!(s.labels["device"], "nvidia1");
    assert_eq!(s.labels["modelName"], MODEL);
    let uuid = &s.labels["UUID"];
    let groups: Vec<usize> = uuid["GPU-".len()..].split('-').map(str::len).collect();
    assert!(uuid.starts_with("GPU-"), "{uuid}");
    assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
    let mut all: Vec<String> = by_gpu(&scrape).into_iter().map(|(u, _)| u).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 8, "UUIDs are distinct");
}

/// Pearson's correlation of two series.
fn correlation(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let vy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn behaves_like_real_cards_over_a_long_run() {
    // Six simulated hours at 10 s, with jobs short enough to see many.
    let config = FleetConfig {
        seed: 3,
        mean_job: Duration::from_secs(15 * 60),
        mean_idle: Duration::from_secs(10 * 60),
        ..FleetConfig::new(2, 8)
    };
    let scrapes = run(config, 6 * 360, 10_000);
    let (mut utils, mut powers) = (Vec::new(), Vec::new());
    let mut idle_seen = BTreeMap::new();
    let mut busy_seen = BTreeMap::new();
    // Per GPU, how many scrapes in a row it has been busy (util ≥ 50) or idle.
    let mut streak: BTreeMap<String, (bool, u32)> = BTreeMap::new();
    let (mut hot, mut cold) = (Vec::new(), Vec::new());
    let mut throttled = 0;
    for scrape in &scrapes {
        for (uuid, v) in by_gpu(scrape) {
            let [util, copy, power, temp, used, free, dec, enc, sm, mem] = v;
            assert_eq!(used + free, f64::from(FB_MIB), "{uuid}: {v:?}");
            for pct in [util, copy, dec, enc] {
                assert!((0.0..=100.0).contains(&pct), "{uuid}: {v:?}");
            }
            assert!((50.0..=700.0).contains(&power), "{uuid}: {v:?}");
            assert!((15.0..=95.0).contains(&temp), "{uuid}: {v:?}");
            assert!((0.0..=f64::from(FB_MIB)).contains(&used), "{uuid}: {v:?}");
            assert!((345.0..=1980.0).contains(&sm), "{uuid}: {v:?}");
            assert_eq!(mem, 2619.0);
            for (i, x) in v.into_iter().enumerate() {
                // DCGM reports whole numbers for all but power.
                assert!(i == 2 || x.fract() == 0.0, "{uuid}: {v:?}");
            }
            utils.push(util);
            powers.push(power);
            *idle_seen.entry(uuid.clone()).or_insert(false) |= util == 0.0;
            *busy_seen.entry(uuid.clone()).or_insert(false) |= util >= 80.0;
            let busy = util >= 50.0;
            let s = streak.entry(uuid).or_insert((busy, 0));
            *s = if s.0 == busy {
                (busy, s.1 + 1)
            } else {
                (busy, 1)
            };
            // Five minutes of steady state one way or the other.
            if s.1 >= 30 {
                if busy {
                    hot.push(temp)
                } else {
                    cold.push(temp)
                }
            }
            if busy && sm < 1980.0 {
                throttled += 1;
            }
        }
    }
    assert!(
        idle_seen.values().all(|&b| b),
        "every GPU idles: {idle_seen:?}"
    );
    assert!(
        busy_seen.values().all(|&b| b),
        "every GPU works: {busy_seen:?}"
    );
    let r = correlation(&utils, &powers);
    assert!(r > 0.7, "power follows utilisation: r = {r}");
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    assert!(!hot.is_empty() && !cold.is_empty());
    assert!(
        mean(&hot) > mean(&cold) + 10.0,
        "sustained load heats: {} vs {}",
        mean(&hot),
        mean(&cold)
    );
    assert!(throttled > 0, "clocks dip under load now and then");
}

#[test]
fn jobs_often_span_several_gpus_of_a_host() {
    let mut fleet = Fleet::new(FleetConfig {
        seed: 11,
        ..FleetConfig::new(4, 8)
    });
    let mut shared = 0;
    for i in 0..360 {
        fleet.scrape(T0 + i * 10_000);
        for host in fleet.gpus.chunks(8) {
            let busy: Vec<f64> = host
                .iter()
                .filter(|(_, g)| g.job.is_some())
                .map(|(_, g)| g.remaining)
                .collect();
            // Members of one job end together.
            shared += busy
                .iter()
                .enumerate()
                .filter(|(i, r)| busy[..*i].contains(r))
                .count();
        }
    }
    assert!(shared > 0, "some jobs span GPUs");
}

#[test]
fn time_going_back_rereads_without_moving() {
    let mut fleet = Fleet::new(seeded(5));
    let a = fleet.scrape(T0 + 5_000);
    let b = fleet.scrape(T0);
    let values = |s: &[Sample]| s.iter().map(|s| s.value).collect::<Vec<_>>();
    assert_eq!(values(&a), values(&b));
    assert!(b.iter().all(|s| s.ts == T0));
}
