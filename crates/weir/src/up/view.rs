//! What `weir up` shows while it runs: on a terminal, a screen redrawn every
//! second (topics with rates, depth, in flight and dead letters; samples
//! stored; the latest job results; where the API is); otherwise a plain log
//! line every few seconds.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, Stats};
use weir_collect::Counters;
use weir_store::{JobResult, Query, ResultFilter};

/// What the view reads.
pub(super) struct Sources {
    pub(super) bus: Arc<dyn Bus>,
    pub(super) counters: Arc<Counters>,
    pub(super) query: Option<Arc<dyn Query>>,
    pub(super) url: String,
    pub(super) data: String,
    pub(super) store: String,
}

/// Shows the pipeline until `shutdown`.
pub(super) async fn run(src: Sources, shutdown: CancellationToken) {
    let terminal = std::io::stdout().is_terminal();
    let every = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    if !terminal {
        let first = format!(
            "weir up: API at {} (try {}/api/v1/gpus); data {}, store {}\n",
            src.url, src.url, src.data, src.store
        );
        if !show(&first, &shutdown) {
            return;
        }
    }
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut before = Counts::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let stats = src.bus.stats().await.unwrap_or_default();
        let totals = src.counters.snapshot();
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = (totals.samples - last.1) as f64 / secs;
        last = (now, totals.samples);
        let counts = Counts::of(&stats);
        let table = rows(&stats, &counts, &before, secs);
        before = counts;
        let results = match &src.query {
            Some(q) => q
                .job_results(&ResultFilter {
                    job_id: None,
                    limit: 5,
                })
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let text = if terminal {
            screen(&src, &table, &totals, rate, &results, started.elapsed())
        } else {
            line(&table, &totals, rate)
        };
        if !show(&text, &shutdown) {
            return;
        }
    }
    if terminal {
        let _ = show("\n", &shutdown);
    }
}

/// Writes to stdout; when whoever read it has gone (a closed pipe), stops
/// `weir up` as Ctrl-C would and says false.
fn show(text: &str, shutdown: &CancellationToken) -> bool {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            shutdown.cancel();
            false
        }
        _ => true,
    }
}

/// Published and delivered totals by topic, to turn into rates.
#[derive(Debug, Default)]
struct Counts(std::collections::HashMap<String, (u64, u64)>);

impl Counts {
    fn of(stats: &Stats) -> Counts {
        let mut counts = std::collections::HashMap::new();
        for t in &stats.topics {
            let delivered = stats
                .consumer_groups
                .iter()
                .filter(|g| g.topic == t.topic)
                .map(|g| g.delivered_total)
                .sum();
            counts.insert(t.topic.clone(), (t.published_total, delivered));
        }
        Counts(counts)
    }
}

/// A topic's row: publish/s, deliver/s, depth, in flight, dead letters.
type Row = (String, f64, f64, u64, u64, u64);

fn rows(stats: &Stats, now: &Counts, before: &Counts, secs: f64) -> Vec<Row> {
    stats
        .topics
        .iter()
        .filter(|t| !t.topic.ends_with(".dlq"))
        .map(|t| {
            let (p1, d1) = now.0.get(&t.topic).copied().unwrap_or_default();
            let (p0, d0) = before.0.get(&t.topic).copied().unwrap_or((p1, d1));
            let in_flight = stats
                .consumer_groups
                .iter()
                .filter(|g| g.topic == t.topic)
                .map(|g| g.in_flight)
                .sum();
            (
                t.topic.clone(),
                p1.saturating_sub(p0) as f64 / secs,
                d1.saturating_sub(d0) as f64 / secs,
                t.queue_depth,
                in_flight,
                t.dead_letter_count,
            )
        })
        .collect()
}

fn screen(
    src: &Sources,
    table: &[Row],
    totals: &weir_collect::Totals,
    rate: f64,
    results: &[JobResult],
    up: Duration,
) -> String {
    let mut s = String::from("\x1b[H\x1b[2J");
    let _ = writeln!(
        s,
        "weir up — {} for {}s   (Ctrl-C stops it; nothing acknowledged is lost)",
        src.url,
        up.as_secs()
    );
    let _ = writeln!(s, "  curl {}/api/v1/gpus", src.url);
    let _ = writeln!(s, "  curl {}/api/v1/queue/stats", src.url);
    let _ = writeln!(s, "  data {}   store {}\n", src.data, src.store);
    let _ = writeln!(
        s,
        "{:<22} {:>11} {:>11} {:>9} {:>10} {:>13}",
        "topic", "publish/s", "deliver/s", "depth", "in flight", "dead letters"
    );
    for (topic, publish, deliver, depth, in_flight, dead) in table {
        let _ = writeln!(
            s,
            "{topic:<22} {publish:>11.1} {deliver:>11.1} {depth:>9} {in_flight:>10} {dead:>13}"
        );
    }
    let _ = writeln!(
        s,
        "\nsamples stored {} ({rate:.0}/s), job results {}, refused jobs {}, dead-lettered by the collector {}",
        totals.samples, totals.results, totals.failures, totals.dead_lettered
    );
    if !results.is_empty() {
        let _ = writeln!(s, "\nlatest job results");
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>10} {:>10} {:>8}  worker",
            "job", "tam", "comp (s)", "tot (s)", "correct"
        );
        for r in results {
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>10.6} {:>10.6} {:>8}  {}",
                r.job_id,
                r.tam,
                r.comp,
                r.tot,
                if r.correct { "yes" } else { "NO" },
                r.worker
            );
        }
    }
    s
}

fn line(table: &[Row], totals: &weir_collect::Totals, rate: f64) -> String {
    let topics: Vec<String> = table
        .iter()
        .map(|(topic, publish, _, depth, _, dead)| {
            format!("{topic} {publish:.1}/s depth {depth} dlq {dead}")
        })
        .collect();
    format!(
        "weir up: {}; {} samples stored ({rate:.0}/s), {} job results\n",
        topics.join("; "),
        totals.samples,
        totals.results
    )
}
