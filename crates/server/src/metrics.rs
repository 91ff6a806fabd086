//! `GET /metrics`: Prometheus text format. Queue counters and gauges come
//! from the queue's own stats at scrape time; the broker adds nack counts,
//! subscriber counts and request latency histograms, kept here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use weir_queue::Stats;

use crate::error::ApiError;
use crate::state::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One number of a group's stats.
type GroupValue = dyn Fn(&weir_queue::GroupStats) -> u64;

/// What the broker counts itself.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    nacks: Mutex<BTreeMap<(String, String), u64>>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Metrics {
    pub(crate) fn count_nacks(&self, topic: &str, group: &str, n: u64) {
        if n > 0 {
            let mut nacks = self.nacks.lock().unwrap_or_else(|p| p.into_inner());
            *nacks
                .entry((topic.to_string(), group.to_string()))
                .or_default() += n;
        }
    }

    fn observe(&self, route: String, method: String, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let h = requests.entry((route, method, status)).or_default();
        h.counts[bucket] += 1;
        h.sum += secs;
    }

    /// The exposition: queue stats, then the broker's own series.
    pub(crate) fn render(&self, stats: &Stats, subscribers: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let topic_rows = |f: &dyn Fn(&weir_queue::TopicStats) -> u64| {
            stats
                .topics
                .iter()
                .map(|t| (labels(&[("topic", &t.topic)]), f(t).to_string()))
                .collect()
        };
        family(
            "weir_published_messages_total",
            "counter",
            "Messages published to a topic since the broker started.",
            topic_rows(&|t| t.published_total),
        );
        family(
            "weir_topic_messages",
            "gauge",
            "Messages retained in a topic.",
            topic_rows(&|t| t.messages),
        );
        family(
            "weir_topic_bytes",
            "gauge",
            "Bytes a topic's logs take on disk.",
            topic_rows(&|t| t.bytes),
        );
        let group_rows = |f: &dyn Fn(&weir_queue::GroupStats) -> u64| {
            stats
                .groups
                .iter()
                .map(|g| {
                    let l = labels(&[("topic", &g.topic), ("group", &g.group)]);
                    (l, f(g).to_string())
                })
                .collect()
        };
        let group_families: [(&str, &str, &str, &GroupValue); 8] = [
            (
                "weir_delivered_messages_total",
                "counter",
                "Deliveries to a group's consumers, redeliveries included.",
                &|g| g.delivered_total,
            ),
            (
                "weir_acked_messages_total",
                "counter",
                "Messages a group acked.",
                &|g| g.acked_total,
            ),
            (
                "weir_redelivered_messages_total",
                "counter",
                "Messages delivered again after a nack or an expired lease.",
                &|g| g.redelivered_total,
            ),
            (
                "weir_dead_lettered_messages_total",
                "counter",
                "Messages a group sent to the dead-letter topic.",
                &|g| g.dead_lettered_total,
            ),
            (
                "weir_queue_depth_messages",
                "gauge",
                "Messages a group has not yet acked or dead-lettered.",
                &|g| g.depth,
            ),
            (
                "weir_in_flight_messages",
                "gauge",
                "Messages leased to a group's consumers and not yet settled.",
                &|g| g.in_flight,
            ),
            ("weir_consumers", "gauge", "Consumers in a group.", &|g| {
                g.consumers as u64
            }),
            (
                "weir_oldest_unacked_age_seconds",
                "gauge",
                "Age of a group's oldest message not yet acked.",
                &|g| g.oldest_unacked_age_ms.unwrap_or(0) / 1000,
            ),
        ];
        for (name, kind, help, f) in group_families {
            family(name, kind, help, group_rows(f));
        }
        let nacks = self.nacks.lock().unwrap_or_else(|p| p.into_inner());
        family(
            "weir_nacked_messages_total",
            "counter",
            "Messages consumers gave back through the broker.",
            nacks
                .iter()
                .map(|((t, g), n)| (labels(&[("topic", t), ("group", g)]), n.to_string()))
                .collect(),
        );
        drop(nacks);
        family(
            "weir_sse_subscribers",
            "gauge",
            "Server-Sent Events streams open.",
            vec![(String::new(), subscribers.to_string())],
        );
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let name = "weir_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an HTTP request (to the first byte for streams).\n# TYPE {name} histogram"
        );
        for ((route, method, status), h) in requests.iter() {
            let status = status.to_string();
            let base = [
                ("route", route.as_str()),
                ("method", method.as_str()),
                ("status", status.as_str()),
            ];
            let mut cumulative = 0;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                let mut l = base.to_vec();
                l.push(("le", &le));
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(&l));
            }
            let _ = writeln!(out, "{name}_sum{} {}", labels(&base), h.sum);
            let _ = writeln!(out, "{name}_count{} {cumulative}", labels(&base));
        }
        out
    }
}

/// `{a="x",b="y"}` with values escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Middleware: times every request by route, method and status.
pub(crate) async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Known methods only, so clients cannot grow the label set.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    st.metrics
        .observe(route, method, response.status().as_u16(), start.elapsed());
    response
}

/// Prometheus text exposition of the queue and the broker.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let stats = st.queue.stats()?;
    let subscribers = st
        .config
        .max_subscribers
        .max(1)
        .saturating_sub(st.subscribers.available_permits());
    let body = st.metrics.render(&stats, subscribers);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_families_escaped_labels_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("/x".into(), "GET".into(), 200, Duration::from_micros(300));
        m.observe("/x".into(), "GET".into(), 200, Duration::from_secs(5));
        m.count_nacks("t\"q", "g", 2);
        let stats = Stats {
            topics: vec![weir_queue::TopicStats {
                topic: "t\"q".into(),
                published_total: 7,
                ..Default::default()
            }],
            groups: vec![],
        };
        let text = m.render(&stats, 3);
        assert!(text.contains("weir_published_messages_total{topic=\"t\\\"q\"} 7"));
        assert!(text.contains("weir_nacked_messages_total{topic=\"t\\\"q\",group=\"g\"} 2"));
        assert!(text.contains("weir_sse_subscribers 3"));
        assert!(text.contains(
            "weir_http_request_duration_seconds_bucket{route=\"/x\",method=\"GET\",status=\"200\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "weir_http_request_duration_seconds_bucket{route=\"/x\",method=\"GET\",status=\"200\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "weir_http_request_duration_seconds_count{route=\"/x\",method=\"GET\",status=\"200\"} 2"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
