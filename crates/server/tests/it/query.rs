//! The telemetry query API over a SQLite store in a temp dir, without
//! sockets: every route's answers, every bad parameter, authentication, and
//! the query routes merged into the broker's app.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use weir_queue::{Queue, QueueConfig};
use weir_server::ServerConfig;
use weir_store::{
    Batch, Gpu, JobResult, Point, Query, Record, ResultFilter, SeriesFilter, SeriesInfo, Store,
    StoreError, StoreOptions, TelemetryQuery,
};
use weir_telemetry::Sample;
use weir_telemetry::metric::{dcgm, sensor};

use crate::fixture::Answer;

/// 2025-07-18T20:42:34Z.
const T0: i64 = 1_752_871_354_000;

/// The GPUs: UUID, index, device, model, host.
const GPUS: [(&str, &str, &str, &str, &str); 3] = [
    (
        "GPU-aaaa",
        "0",
        "nvidia0",
        "NVIDIA H100 80GB HBM3",
        "node-1",
    ),
    (
        "GPU-bbbb",
        "1",
        "nvidia1",
        "NVIDIA H100 80GB HBM3",
        "node-1",
    ),
    (
        "GPU-cccc",
        "0",
        "nvidia0",
        "NVIDIA A100-SXM4-40GB",
        "node-2",
    ),
];

/// GPU-aaaa and GPU-bbbb report all three; GPU-cccc only the first.
const METRICS: [&str; 3] = [dcgm::GPU_UTIL, dcgm::POWER_USAGE, dcgm::GPU_TEMP];

fn gpu_sample(gpu: usize, metric: &str, ts: i64, value: f64) -> Sample {
    let (uuid, index, device, model, host) = GPUS[gpu];
    Sample::new(metric, value, ts)
        .label(dcgm::LABEL_UUID, uuid)
        .label(dcgm::LABEL_GPU, index)
        .label(dcgm::LABEL_DEVICE, device)
        .label(dcgm::LABEL_MODEL, model)
        .label(dcgm::LABEL_HOSTNAME, host)
}

/// Every GPU sample: at T0 + 0..4 s, value `100 g + 10 m + k`; and one more
/// for GPU-aaaa's utilization at T0 + 4.25 s (a time with milliseconds).
fn gpu_samples() -> Vec<Sample> {
    let mut samples = Vec::new();
    for gpu in 0..GPUS.len() {
        let metrics = if gpu == 2 { 1 } else { METRICS.len() };
        for (m, metric) in METRICS.iter().enumerate().take(metrics) {
            for k in 0..4 {
                let value = (100 * gpu + 10 * m + k) as f64;
                samples.push(gpu_sample(gpu, metric, T0 + k as i64 * 1_000, value));
            }
        }
    }
    samples.push(gpu_sample(0, dcgm::GPU_UTIL, T0 + 4_250, 42.5));
    samples
}

fn sensor_sample(id: &str, site: &str, value: f64) -> Sample {
    Sample::new(sensor::TEMPERATURE_CELSIUS, value, T0)
        .label(sensor::LABEL_SENSOR, id)
        .label(sensor::LABEL_SITE, site)
}

fn result(job_id: &str, pow: u32, finished_at: i64) -> JobResult {
    JobResult {
        job_id: job_id.into(),
        pow,
        tam: 1 << pow,
        init: 0.001,
        comp: 0.25 * f64::from(pow),
        fim: 0.002,
        tot: 0.253 + f64::from(pow),
        engine: "dense".into(),
        threads: 2,
        correct: true,
        generations: 4 * ((1 << pow) - 3),
        worker: "w1".into(),
        finished_at,
    }
}

/// Latest first.
fn results() -> Vec<JobResult> {
    vec![
        result("7-2", 3, T0 + 30),
        result("7-1", 4, T0 + 20),
        result("7-1", 3, T0 + 10),
    ]
}

/// A store filled with [`gpu_samples`], three sensors and [`results`].
struct Filled {
    store: Store,
    _dir: TempDir,
}

async fn filled() -> Filled {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("weir.db").display());
    let store = weir_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    let mut batch = Batch::new("telemetry");
    for s in gpu_samples() {
        batch.push(Record::Sample(s));
    }
    for s in [
        sensor_sample("s-1", "lab", 21.5),
        sensor_sample("s-2", "lab", 22.0),
        sensor_sample("s-3", "roof:north", 9.5),
    ] {
        batch.push(Record::Sample(s));
    }
    for r in results() {
        batch.push(Record::Result(r));
    }
    store.sink.write(Arc::new(batch)).await.unwrap();
    Filled { store, _dir: dir }
}

impl Filled {
    fn query(&self) -> Arc<dyn Query> {
        self.store.query.clone().expect("SQLite answers queries")
    }

    fn app(&self) -> Router {
        weir_server::query_app(self.query(), None)
    }
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        content_type,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_with_token(app: &Router, uri: &str, token: &str) -> Answer {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// A 200 answer's body, its content type checked.
async fn ok(app: &Router, uri: &str) -> Value {
    let answer = get(app, uri).await.expect(StatusCode::OK);
    assert!(
        answer.content_type.starts_with("application/json"),
        "{uri}: {answer:?}"
    );
    answer.body
}

fn point(metric: &str, ts: &str, value: f64) -> Value {
    json!({"metric": metric, "ts": ts, "value": value})
}

/// What the telemetry route answers for GPU `gpu` with no parameters, from
/// the samples written: by time, then metric.
fn all_points(gpu: usize) -> Vec<Value> {
    let mut points: Vec<Point> = gpu_samples()
        .into_iter()
        .filter(|s| s.labels[dcgm::LABEL_UUID] == GPUS[gpu].0)
        .map(|s| Point {
            metric: s.metric,
            ts: s.ts,
            value: s.value,
        })
        .collect();
    points.sort_by(|a, b| (a.ts, &a.metric).cmp(&(b.ts, &b.metric)));
    points
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect()
}

#[tokio::test]
async fn gpus_are_listed_by_uuid_and_one_has_its_metrics() {
    let f = filled().await;
    let app = f.app();
    let body = ok(&app, "/api/v1/gpus").await;
    assert_eq!(
        body,
        json!({"gpus": [
            {
                "uuid": "GPU-aaaa", "index": 0, "device": "nvidia0",
                "model": "NVIDIA H100 80GB HBM3", "host": "node-1",
                "first_seen": "2025-07-18T20:42:34.000Z",
                "last_seen": "2025-07-18T20:42:38.250Z",
            },
            {
                "uuid": "GPU-bbbb", "index": 1, "device": "nvidia1",
                "model": "NVIDIA H100 80GB HBM3", "host": "node-1",
                "first_seen": "2025-07-18T20:42:34.000Z",
                "last_seen": "2025-07-18T20:42:37.000Z",
            },
            {
                "uuid": "GPU-cccc", "index": 0, "device": "nvidia0",
                "model": "NVIDIA A100-SXM4-40GB", "host": "node-2",
                "first_seen": "2025-07-18T20:42:34.000Z",
                "last_seen": "2025-07-18T20:42:37.000Z",
            },
        ]})
    );

    let body = ok(&app, "/api/v1/gpus/GPU-bbbb").await;
    assert_eq!(
        body,
        json!({
            "uuid": "GPU-bbbb", "index": 1, "device": "nvidia1",
            "model": "NVIDIA H100 80GB HBM3", "host": "node-1",
            "first_seen": "2025-07-18T20:42:34.000Z",
            "last_seen": "2025-07-18T20:42:37.000Z",
            "metrics": [dcgm::GPU_TEMP, dcgm::GPU_UTIL, dcgm::POWER_USAGE],
        })
    );
    let body = ok(&app, "/api/v1/gpus/GPU-cccc").await;
    assert_eq!(body["metrics"], json!([dcgm::GPU_UTIL]));

    for uri in ["/api/v1/gpus/GPU-none", "/api/v1/gpus/GPU-none/telemetry"] {
        let answer = get(&app, uri).await.expect(StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"], "not_found");
        assert_eq!(answer.detail(), "no GPU GPU-none has been seen");
    }
}

#[tokio::test]
async fn telemetry_answers_a_gpus_samples_by_time() {
    let f = filled().await;
    let app = f.app();
    let body = ok(&app, "/api/v1/gpus/GPU-aaaa/telemetry").await;
    assert_eq!(body, json!({"uuid": "GPU-aaaa", "points": all_points(0)}));
    assert_eq!(body["points"].as_array().unwrap().len(), 13);
    assert_eq!(
        body["points"].as_array().unwrap()[..3],
        [
            point(dcgm::GPU_TEMP, "2025-07-18T20:42:34.000Z", 20.0),
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:34.000Z", 0.0),
            point(dcgm::POWER_USAGE, "2025-07-18T20:42:34.000Z", 10.0),
        ],
        "by time, then metric"
    );
    let body = ok(&app, "/api/v1/gpus/GPU-cccc/telemetry").await;
    assert_eq!(body, json!({"uuid": "GPU-cccc", "points": all_points(2)}));

    // Empty values count as absent.
    let body = ok(
        &app,
        "/api/v1/gpus/GPU-aaaa/telemetry?start_time=&end_time=&limit=&metric=&order=",
    )
    .await;
    assert_eq!(body["points"], json!(all_points(0)));

    // A known GPU with nothing in the range: 200, no points.
    let body = ok(
        &app,
        "/api/v1/gpus/GPU-bbbb/telemetry?start_time=2030-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(body, json!({"uuid": "GPU-bbbb", "points": []}));
}

#[tokio::test]
async fn telemetry_ranges_include_both_ends_with_or_without_milliseconds() {
    let f = filled().await;
    let app = f.app();
    let util = |from: &str, to: &str| {
        format!(
            "/api/v1/gpus/GPU-aaaa/telemetry?metric={}&start_time={from}&end_time={to}",
            dcgm::GPU_UTIL
        )
    };
    let body = ok(&app, &util("2025-07-18T20:42:35Z", "2025-07-18T20:42:37Z")).await;
    assert_eq!(
        body["points"],
        json!([
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:35.000Z", 1.0),
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:36.000Z", 2.0),
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:37.000Z", 3.0),
        ])
    );
    let body = ok(
        &app,
        &util("2025-07-18T20:42:37.000Z", "2025-07-18T20:42:38.250Z"),
    )
    .await;
    assert_eq!(
        body["points"],
        json!([
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:37.000Z", 3.0),
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:38.250Z", 42.5),
        ])
    );
    // One millisecond either side leaves the ends out.
    let body = ok(
        &app,
        &util("2025-07-18T20:42:37.001Z", "2025-07-18T20:42:38.249Z"),
    )
    .await;
    assert_eq!(body["points"], json!([]));
    // Only an end, or only a start.
    let body = ok(
        &app,
        "/api/v1/gpus/GPU-aaaa/telemetry?end_time=2025-07-18T20:42:34Z",
    )
    .await;
    assert_eq!(body["points"], json!(all_points(0)[..3]));
    let body = ok(
        &app,
        "/api/v1/gpus/GPU-aaaa/telemetry?start_time=2025-07-18T20:42:38.001Z",
    )
    .await;
    assert_eq!(
        body["points"],
        json!([point(dcgm::GPU_UTIL, "2025-07-18T20:42:38.250Z", 42.5)])
    );
}

#[tokio::test]
async fn telemetry_limit_and_order() {
    let f = filled().await;
    let app = f.app();
    let uri = |rest: &str| {
        format!(
            "/api/v1/gpus/GPU-aaaa/telemetry?metric={}&{rest}",
            dcgm::GPU_UTIL
        )
    };
    let body = ok(&app, &uri("limit=2")).await;
    assert_eq!(
        body["points"],
        json!([
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:34.000Z", 0.0),
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:35.000Z", 1.0),
        ])
    );
    let body = ok(&app, &uri("limit=2&order=asc")).await;
    assert_eq!(body["points"].as_array().unwrap().len(), 2);
    assert_eq!(body["points"][0]["ts"], "2025-07-18T20:42:34.000Z");
    let body = ok(&app, &uri("order=desc&limit=2")).await;
    assert_eq!(
        body["points"],
        json!([
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:38.250Z", 42.5),
            point(dcgm::GPU_UTIL, "2025-07-18T20:42:37.000Z", 3.0),
        ]),
        "the latest first"
    );
    let body = ok(&app, &uri("order=desc")).await;
    let times: Vec<&str> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ts"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2025-07-18T20:42:38.250Z",
            "2025-07-18T20:42:37.000Z",
            "2025-07-18T20:42:36.000Z",
            "2025-07-18T20:42:35.000Z",
            "2025-07-18T20:42:34.000Z",
        ]
    );
    let body = ok(&app, "/api/v1/gpus/GPU-aaaa/telemetry?limit=100000").await;
    assert_eq!(body["points"].as_array().unwrap().len(), 13);
}

fn gpu_series(gpu: usize, metric: &str) -> Value {
    let (uuid, index, device, model, host) = GPUS[gpu];
    json!({"metric": metric, "labels": {
        "UUID": uuid, "gpu": index, "device": device, "modelName": model, "Hostname": host,
    }})
}

fn sensor_series(id: &str, site: &str) -> Value {
    json!({"metric": sensor::TEMPERATURE_CELSIUS, "labels": {"sensor": id, "site": site}})
}

#[tokio::test]
async fn series_by_metric_and_repeated_labels() {
    let f = filled().await;
    let app = f.app();
    let body = ok(&app, "/api/v1/series").await;
    assert_eq!(body["series"].as_array().unwrap().len(), 10);

    let body = ok(&app, &format!("/api/v1/series?metric={}", dcgm::GPU_UTIL)).await;
    assert_eq!(
        body,
        json!({"series": [
            gpu_series(0, dcgm::GPU_UTIL),
            gpu_series(1, dcgm::GPU_UTIL),
            gpu_series(2, dcgm::GPU_UTIL),
        ]})
    );
    let body = ok(
        &app,
        &format!("/api/v1/series?metric={}&limit=2", dcgm::GPU_UTIL),
    )
    .await;
    assert_eq!(
        body["series"],
        json!([gpu_series(0, dcgm::GPU_UTIL), gpu_series(1, dcgm::GPU_UTIL)])
    );

    let body = ok(&app, "/api/v1/series?label=site:lab").await;
    assert_eq!(
        body,
        json!({"series": [sensor_series("s-1", "lab"), sensor_series("s-2", "lab")]})
    );
    let body = ok(&app, "/api/v1/series?label=site:lab&label=sensor:s-2").await;
    assert_eq!(body["series"], json!([sensor_series("s-2", "lab")]));
    let body = ok(&app, "/api/v1/series?label=site:lab&label=sensor:s-3").await;
    assert_eq!(body["series"], json!([]), "every label must match");
    // Split at the first colon; percent-encoding decoded.
    let body = ok(&app, "/api/v1/series?label=site:roof:north").await;
    assert_eq!(body["series"], json!([sensor_series("s-3", "roof:north")]));
    let body = ok(&app, "/api/v1/series?label=site%3Aroof%3Anorth").await;
    assert_eq!(body["series"], json!([sensor_series("s-3", "roof:north")]));

    let body = ok(
        &app,
        &format!(
            "/api/v1/series?metric={}&label=Hostname:node-1&label=gpu:1",
            dcgm::POWER_USAGE
        ),
    )
    .await;
    assert_eq!(body["series"], json!([gpu_series(1, dcgm::POWER_USAGE)]));
    let body = ok(&app, "/api/v1/series?metric=&label=").await;
    assert_eq!(
        body["series"].as_array().unwrap().len(),
        10,
        "empty is absent"
    );
}

#[tokio::test]
async fn job_results_latest_first() {
    let f = filled().await;
    let app = f.app();
    let all: Vec<Value> = results()
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    let body = ok(&app, "/api/v1/jobs/results").await;
    assert_eq!(body, json!({"results": all}));
    assert_eq!(
        body["results"][0]["finished_at"],
        "2025-07-18T20:42:34.030Z"
    );
    let body = ok(&app, "/api/v1/jobs/results?job_id=7-1").await;
    assert_eq!(body["results"], json!(all[1..]));
    let body = ok(&app, "/api/v1/jobs/results?limit=1").await;
    assert_eq!(body["results"], json!(all[..1]));
    let body = ok(&app, "/api/v1/jobs/results?job_id=&limit=").await;
    assert_eq!(body["results"], json!(all));
    let body = ok(&app, "/api/v1/jobs/results?job_id=8-1").await;
    assert_eq!(body, json!({"results": []}));
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_naming_it() {
    let f = filled().await;
    let app = f.app();
    let telemetry = "/api/v1/gpus/GPU-aaaa/telemetry";
    let limit_detail =
        |v: &str| format!("limit: expected a whole number from 1 to 100000, not {v:?}");
    let cases: Vec<(String, String)> = vec![
        (
            format!("{telemetry}?start_time=yesterday"),
            r#"start_time: expected an RFC 3339 time like 2025-07-18T20:42:34Z, not "yesterday""#.into(),
        ),
        (
            format!("{telemetry}?end_time=2025-13-01T00:00:00Z"),
            r#"end_time: expected an RFC 3339 time like 2025-07-18T20:42:34Z, not "2025-13-01T00:00:00Z""#.into(),
        ),
        (
            format!("{telemetry}?start_time=1752871354"),
            r#"start_time: expected an RFC 3339 time like 2025-07-18T20:42:34Z, not "1752871354""#.into(),
        ),
        (
            format!("{telemetry}?start_time=2025-07-18T20:42:35Z&end_time=2025-07-18T20:42:34.999Z"),
            "start_time is after end_time".into(),
        ),
        (format!("{telemetry}?limit=0"), limit_detail("0")),
        (format!("{telemetry}?limit=100001"), limit_detail("100001")),
        (format!("{telemetry}?limit=-1"), limit_detail("-1")),
        (format!("{telemetry}?limit=ten"), limit_detail("ten")),
        (format!("{telemetry}?limit=1.5"), limit_detail("1.5")),
        (
            format!("{telemetry}?order=up"),
            r#"order: expected asc or desc, not "up""#.into(),
        ),
        (
            format!("{telemetry}?order=DESC"),
            r#"order: expected asc or desc, not "DESC""#.into(),
        ),
        (
            format!("{telemetry}?limit=1&limit=2"),
            "limit: expected once, given 2 times".into(),
        ),
        (
            format!("{telemetry}?metric=a&metric=b"),
            "metric: expected once, given 2 times".into(),
        ),
        (
            format!("{telemetry}?start=2025-07-18T20:42:34Z"),
            r#"unknown parameter "start": this route takes start_time, end_time, limit, metric, order"#.into(),
        ),
        (
            format!("{telemetry}?Limit=5"),
            r#"unknown parameter "Limit": this route takes start_time, end_time, limit, metric, order"#.into(),
        ),
        (
            "/api/v1/series?label=site".into(),
            r#"label: expected name:value, not "site""#.into(),
        ),
        (
            "/api/v1/series?label=site:lab&label=lab".into(),
            r#"label: expected name:value, not "lab""#.into(),
        ),
        ("/api/v1/series?limit=0".into(), limit_detail("0")),
        (
            "/api/v1/series?labels=site:lab".into(),
            r#"unknown parameter "labels": this route takes metric, label, limit"#.into(),
        ),
        ("/api/v1/jobs/results?limit=all".into(), limit_detail("all")),
        (
            "/api/v1/jobs/results?job=7-1".into(),
            r#"unknown parameter "job": this route takes job_id, limit"#.into(),
        ),
        (
            "/api/v1/jobs/results?job_id=7-1&job_id=7-2".into(),
            "job_id: expected once, given 2 times".into(),
        ),
        (
            "/api/v1/gpus?limit=5".into(),
            r#"unknown parameter "limit": this route takes none"#.into(),
        ),
        (
            "/api/v1/gpus/GPU-aaaa?metric=".into(),
            r#"unknown parameter "metric": this route takes none"#.into(),
        ),
    ];
    for (uri, detail) in cases {
        let answer = get(&app, &uri).await.expect(StatusCode::BAD_REQUEST);
        assert_eq!(answer.body["error"], "bad_request", "{uri}");
        assert_eq!(answer.detail(), detail, "{uri}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let f = filled().await;
    let app = f.app();
    for uri in [
        "/api/v1/nope",
        "/api/v1/gpus/GPU-aaaa/telemetry/more",
        "/api/v1/queue/stats",
    ] {
        let answer = get(&app, uri).await.expect(StatusCode::NOT_FOUND);
        assert!(
            answer.detail().contains("no such route"),
            "{uri}: {answer:?}"
        );
    }
    let req = Request::post("/api/v1/gpus").body(Body::empty()).unwrap();
    send(&app, req).await.expect(StatusCode::METHOD_NOT_ALLOWED);
    let body = ok(&app, "/health").await;
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let f = filled().await;
    let app = weir_server::query_app(f.query(), Some("s3cret".into()));
    for uri in [
        "/api/v1/gpus",
        "/api/v1/gpus/GPU-aaaa",
        "/api/v1/gpus/GPU-aaaa/telemetry",
        "/api/v1/series",
        "/api/v1/jobs/results",
    ] {
        let answer = get(&app, uri).await.expect(StatusCode::UNAUTHORIZED);
        assert!(answer.detail().contains("missing bearer token"), "{uri}");
        let answer = get_with_token(&app, uri, "guess")
            .await
            .expect(StatusCode::UNAUTHORIZED);
        assert_eq!(answer.detail(), "wrong bearer token", "{uri}");
        get_with_token(&app, uri, "s3cret")
            .await
            .expect(StatusCode::OK);
    }
    // Health and the document stay open.
    get(&app, "/health").await.expect(StatusCode::OK);
    get(&app, "/api/v1/openapi.json")
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_broker_serves_the_query_api_merged_into_its_own() {
    let f = filled().await;
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(QueueConfig::new(dir.path())).await.unwrap();
    let token = "s3cret".to_string();
    let config = ServerConfig {
        auth_token: Some(token.clone()),
        ..ServerConfig::default()
    };
    let app = weir_server::router(config, queue.clone(), CancellationToken::new())
        .merge(weir_server::query_router(f.query(), Some(token.clone())));

    let stats = get_with_token(&app, "/api/v1/queue/stats", &token)
        .await
        .expect(StatusCode::OK);
    assert!(stats.body["topics"].is_array(), "{:?}", stats.body);
    let gpus = get_with_token(&app, "/api/v1/gpus", &token)
        .await
        .expect(StatusCode::OK);
    assert_eq!(gpus.body["gpus"].as_array().unwrap().len(), 3);
    let telemetry = get_with_token(
        &app,
        "/api/v1/gpus/GPU-cccc/telemetry?order=desc&limit=1",
        &token,
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        telemetry.body["points"],
        json!([point(dcgm::GPU_UTIL, "2025-07-18T20:42:37.000Z", 203.0)])
    );
    get(&app, "/api/v1/queue/stats")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    get(&app, "/api/v1/gpus")
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // The broker's JSON 404 and 405 cover the merged routes too.
    get(&app, "/api/v1/nope")
        .await
        .expect(StatusCode::NOT_FOUND);
    let req = Request::delete("/api/v1/series")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(&app, req).await.expect(StatusCode::METHOD_NOT_ALLOWED);

    // Its document has both APIs.
    let doc = ok(&app, "/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/queue/stats"].is_object());
    assert!(doc["paths"]["/api/v1/gpus/{uuid}/telemetry"].is_object());
    queue.close().await.unwrap();
}

#[tokio::test]
async fn the_document_describes_the_query_api() {
    let f = filled().await;
    let doc = ok(&f.app(), "/api/v1/openapi.json").await;
    let telemetry = &doc["paths"]["/api/v1/gpus/{uuid}/telemetry"]["get"];
    assert_eq!(telemetry["tags"], json!(["telemetry"]), "{telemetry}");
    let params: Vec<&str> = telemetry["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        ["uuid", "start_time", "end_time", "limit", "metric", "order"]
    );
    assert_eq!(
        telemetry["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Telemetry"
    );
    for status in ["400", "404"] {
        assert!(telemetry["responses"][status].is_object(), "{status}");
    }
    for path in [
        "/api/v1/gpus",
        "/api/v1/gpus/{uuid}",
        "/api/v1/series",
        "/api/v1/jobs/results",
        "/health",
        "/api/v1/openapi.json",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
    assert!(
        doc["paths"]["/api/v1/queue/stats"].is_null(),
        "weir api serves no queue"
    );
    for schema in [
        "GpuList",
        "Gpu",
        "Telemetry",
        "Point",
        "SeriesList",
        "SeriesInfo",
        "ResultList",
        "JobResult",
        "ErrorBody",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let series = &doc["paths"]["/api/v1/series"]["get"]["parameters"];
    let label = series
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "label")
        .unwrap();
    assert_eq!(label["schema"]["type"], "array", "{label}");
    assert_eq!(
        (&label["style"], &label["explode"]),
        (&json!("form"), &json!(true))
    );

    let broker: Value = serde_json::from_str(&weir_server::openapi_json()).unwrap();
    assert!(broker["paths"]["/api/v1/gpus/{uuid}/telemetry"]["get"].is_object());
    assert!(broker["paths"]["/api/v1/queue/stats"]["get"].is_object());
}

/// Makes the error a [`Failing`] store fails with (`StoreError` is not
/// `Clone`).
type MakeError = fn() -> StoreError;

/// A store whose every query fails with one error.
#[derive(Debug)]
struct Failing(MakeError);

#[async_trait::async_trait]
impl Query for Failing {
    async fn gpus(&self) -> weir_store::Result<Vec<Gpu>> {
        Err((self.0)())
    }
    async fn gpu(&self, _: &str) -> weir_store::Result<Option<Gpu>> {
        Err((self.0)())
    }
    async fn telemetry(&self, _: &str, _: &TelemetryQuery) -> weir_store::Result<Vec<Point>> {
        Err((self.0)())
    }
    async fn series(&self, _: &SeriesFilter) -> weir_store::Result<Vec<SeriesInfo>> {
        Err((self.0)())
    }
    async fn job_results(&self, _: &ResultFilter) -> weir_store::Result<Vec<JobResult>> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn store_errors_map_to_statuses_without_their_causes() {
    let cases: [(MakeError, StatusCode, &str); 4] = [
        (
            || StoreError::Unavailable("reading /secret/weir.db: database is locked".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            || StoreError::Fatal("reading /secret/weir.db: malformed".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
        (
            || StoreError::Unsupported("a CSV store answers no queries".into()),
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
        ),
        (
            || StoreError::Invalid("limit must be between 1 and 100000, not 0".into()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (error, status, code) in cases {
        let app = weir_server::query_app(Arc::new(Failing(error)), None);
        for uri in [
            "/api/v1/gpus",
            "/api/v1/gpus/GPU-aaaa",
            "/api/v1/gpus/GPU-aaaa/telemetry",
            "/api/v1/series",
            "/api/v1/jobs/results",
        ] {
            let answer = get(&app, uri).await.expect(status);
            assert_eq!(answer.body["error"], code, "{uri}");
            assert!(!answer.detail().contains("secret"), "{uri}: {answer:?}");
        }
    }
}
