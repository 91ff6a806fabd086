//! Every route and every error status, without sockets.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use serde_json::{Value, json};
use weir_server::ServerConfig;

use crate::fixture::app;

#[tokio::test]
async fn publish_answers_the_seed_shape_and_rejects_bad_input() {
    let app = app(ServerConfig::default()).await;
    let ok = app
        .post_json(
            "/api/v1/queue/publish",
            json!({"topic": "t", "payload": {"gpu": 1}, "metadata": {"src": "x"}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(ok.body["topic"], "t");
    assert!(ok.body["message_id"].as_str().unwrap().contains('-'));
    assert!(ok.body["timestamp"].as_str().unwrap().ends_with('Z'));

    let bad = app
        .post("/api/v1/queue/publish", "{not json")
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("invalid JSON"), "{}", bad.detail());
    let bad = app
        .post_json("/api/v1/queue/publish", json!({"topic": "t"}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("payload"), "{}", bad.detail());
    let bad = app
        .post_json("/api/v1/queue/publish", json!({"payload": 1}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("topic"), "{}", bad.detail());
    let bad = app
        .post_json(
            "/api/v1/queue/publish",
            json!({"topic": "no/slashes", "payload": 1}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("topic name"), "{}", bad.detail());
    let bad = app
        .post_json(
            "/api/v1/queue/publish",
            json!({"topic": "t", "payload": 5, "payload_encoding": "base64"}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("JSON string"), "{}", bad.detail());
}

#[tokio::test]
async fn bodies_and_messages_over_the_limits_are_413() {
    let app = app(ServerConfig {
        max_body_bytes: 4 << 20,
        ..ServerConfig::default()
    })
    .await;
    let big = "x".repeat(2 << 20);
    let answer = app
        .post_json(
            "/api/v1/queue/publish",
            json!({"topic": "t", "payload": big}),
        )
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.detail().contains("exceeds the limit"),
        "{}",
        answer.detail()
    );
    let huge = "x".repeat(5 << 20);
    app.post_json(
        "/api/v1/queue/publish",
        json!({"topic": "t", "payload": huge}),
    )
    .await
    .expect(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn batches_take_arrays_or_ndjson_and_publish_all_or_nothing() {
    let app = app(ServerConfig::default()).await;
    let items: Vec<Value> = (0..10).map(|i| json!({"payload": {"n": i}})).collect();
    let answer = app
        .post_json("/api/v1/queue/publish/batch?topic=b", Value::Array(items))
        .await
        .expect(StatusCode::OK);
    assert_eq!(answer.body["count"], 10);
    assert_eq!(answer.body["results"].as_array().unwrap().len(), 10);
    let ndjson = "{\"topic\":\"b\",\"payload\":1}\n{\"topic\":\"c\",\"payload\":2}\n";
    let answer = app
        .post("/api/v1/queue/publish/batch", ndjson)
        .await
        .expect(StatusCode::OK);
    assert_eq!(answer.body["results"][1]["topic"], "c");

    let bad = app
        .post(
            "/api/v1/queue/publish/batch?topic=b",
            "{\"payload\":1}\n{oops}\n",
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("line 2"), "{}", bad.detail());
    app.post("/api/v1/queue/publish/batch?topic=b", "[]")
        .await
        .expect(StatusCode::BAD_REQUEST);
    app.post("/api/v1/queue/publish/batch", "{\"payload\":1}")
        .await
        .expect(StatusCode::BAD_REQUEST);
    // A bad topic in the second item: the first is not published either.
    app.post(
        "/api/v1/queue/publish/batch",
        "{\"topic\":\"d\",\"payload\":1}\n{\"topic\":\"bad topic\",\"payload\":1}",
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    assert!(!app.queue.topics().contains(&"d".to_string()));
    // A message too large for one topic: the other topic is not written.
    let big = "x".repeat(2 << 20);
    let body = json!([{"topic": "e", "payload": 1}, {"topic": "f", "payload": big}]);
    app.post_json("/api/v1/queue/publish/batch", body)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!app.queue.topics().contains(&"e".to_string()));
    let stats = app.queue.stats().unwrap();
    let b = stats.topics.iter().find(|t| t.topic == "b").unwrap();
    assert_eq!(b.messages, 11);
}

#[tokio::test]
async fn receive_then_ack_nack_reject_answer_each_status() {
    let app = app(ServerConfig::default()).await;
    for i in 0..3 {
        app.post_json(
            "/api/v1/queue/publish",
            json!({"topic": "s", "payload": i, "key": "k"}),
        )
        .await
        .expect(StatusCode::OK);
    }
    let got = app
        .get("/api/v1/queue/receive?topic=s&consumer_group=g&max=2&wait_ms=1000")
        .await
        .expect(StatusCode::OK);
    let messages = got.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["payload"], 0);
    assert_eq!(messages[0]["delivery_count"], 1);
    let first = messages[0]["id"].as_str().unwrap().to_string();
    let second = messages[1]["id"].as_str().unwrap().to_string();
    let settle = |id: &str| json!({"topic": "s", "consumer_group": "g", "message_id": id});

    let done = app
        .post_json("/api/v1/queue/ack", settle(&first))
        .await
        .expect(StatusCode::OK);
    assert_eq!(done.body["status"], "done");
    let again = app
        .post_json("/api/v1/queue/ack", settle(&first))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.body["status"], "already_done");
    app.post_json("/api/v1/queue/ack", settle("0-999"))
        .await
        .expect(StatusCode::NOT_FOUND);
    app.post_json("/api/v1/queue/ack", settle("zero"))
        .await
        .expect(StatusCode::BAD_REQUEST);
    app.post_json(
        "/api/v1/queue/ack",
        json!({"topic": "s", "consumer_group": "g"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    let unknown = app
        .post_json(
            "/api/v1/queue/ack",
            json!({"topic": "s", "consumer_group": "nobody", "message_id": first}),
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    assert!(unknown.detail().contains("nobody"), "{}", unknown.detail());

    // nack → comes again; a nack of a message not leased → 409.
    app.post_json("/api/v1/queue/nack", settle(&second))
        .await
        .expect(StatusCode::OK);
    app.post_json("/api/v1/queue/nack", settle(&second))
        .await
        .expect(StatusCode::CONFLICT);
    let got = app
        .get("/api/v1/queue/receive?topic=s&consumer_group=g&max=10&wait_ms=1000")
        .await
        .expect(StatusCode::OK);
    let ids: Vec<&str> = got.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&second.as_str()), "{ids:?}");

    // The batch form answers a status per id.
    let mut body =
        json!({"topic": "s", "consumer_group": "g", "message_ids": ids, "reason": "bad shape"});
    body["message_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!("0-999"));
    let batch = app
        .post_json("/api/v1/queue/reject", body)
        .await
        .expect(StatusCode::OK);
    let statuses: Vec<&str> = batch.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"not_delivered"));
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == "done"));

    // They are dead letters now, with the reason; redrive brings them back.
    let dlq = app
        .get("/api/v1/queue/dlq?topic=s")
        .await
        .expect(StatusCode::OK);
    let letters = dlq.body["messages"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{dlq:?}");
    assert_eq!(letters[0]["reason"], "rejected");
    assert_eq!(letters[0]["detail"], "bad shape");
    assert_eq!(letters[0]["origin_topic"], "s");
    assert_eq!(letters[0]["consumer_group"], "g");
    assert!(
        letters[0]["message"]["headers"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    assert_eq!(letters[0]["message"]["id"], letters[0]["origin_id"]);
    let stats = app.get("/api/v1/queue/stats").await.expect(StatusCode::OK);
    let topic = |name: &str| {
        stats.body["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(topic("s")["dead_letter_count"], 2);
    assert_eq!(topic("s")["queue_depth"], 0);
    let redriven = app
        .post_json("/api/v1/queue/dlq/redrive", json!({"topic": "s"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(redriven.body["redriven"], 2);
    let got = app
        .get("/api/v1/queue/receive?topic=s&consumer_group=g&max=10&wait_ms=1000")
        .await
        .expect(StatusCode::OK);
    assert_eq!(got.body["messages"].as_array().unwrap().len(), 2);
    let redriven = app
        .post_json("/api/v1/queue/dlq/redrive", json!({"topic": "s"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        redriven.body["redriven"], 0,
        "each dead letter is redriven once"
    );
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let app = app(ServerConfig::default()).await;
    for uri in [
        "/api/v1/queue/receive?consumer_group=g",
        "/api/v1/queue/receive?topic=t&consumer_group=g&max=lots",
        "/api/v1/queue/receive?topic=t&consumer_group=g&start=middle",
        "/api/v1/queue/receive?topic=t&consumer_group=g&max_deliveries=0",
        "/api/v1/queue/receive?topic=t&consumer_group=g&visibility_timeout_ms=0",
        "/api/v1/queue/subscribe?topic=t",
        "/api/v1/queue/dlq",
    ] {
        app.get(uri).await.expect(StatusCode::BAD_REQUEST);
    }
    app.get("/api/v1/nothing")
        .await
        .expect(StatusCode::NOT_FOUND);
    let wrong = app
        .get("/api/v1/queue/publish")
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.body["error"], "method_not_allowed");
    app.post_json(
        "/api/v1/queue/seek",
        json!({"topic": "t", "consumer_group": "g", "to": "earliest"}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_token_guards_the_queue_api_but_not_health() {
    let app = app(ServerConfig {
        auth_token: Some("s3cret".into()),
        ..ServerConfig::default()
    })
    .await;
    let publish = |auth: Option<&str>| {
        let mut req =
            Request::post("/api/v1/queue/publish").header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(Body::from(r#"{"topic":"t","payload":1}"#))
            .unwrap()
    };
    let missing = app
        .send(publish(None))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert!(missing.detail().contains("missing"), "{}", missing.detail());
    app.send(publish(Some("Bearer nope")))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.send(publish(Some("s3cret")))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.send(publish(Some("Bearer s3cret")))
        .await
        .expect(StatusCode::OK);
    app.get("/api/v1/queue/subscribe?topic=t&consumer_group=g")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    app.get("/health").await.expect(StatusCode::OK);
    app.get("/metrics").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn overload_is_503_for_subscribers_and_requests() {
    let app = app(ServerConfig {
        max_subscribers: 1,
        max_concurrent_requests: 1,
        ..ServerConfig::default()
    })
    .await;
    let first = app
        .router
        .clone()
        .oneshot_get("/api/v1/queue/subscribe?topic=t&consumer_group=g")
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = app
        .get("/api/v1/queue/subscribe?topic=t&consumer_group=g")
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.body["error"], "overloaded");
    drop(first);
    let again = app
        .router
        .clone()
        .oneshot_get("/api/v1/queue/subscribe?topic=t&consumer_group=g")
        .await;
    assert_eq!(again.status(), StatusCode::OK, "the permit came back");
    drop(again);

    // One long poll in hand: the next request is shed.
    let router = app.router.clone();
    let poll = tokio::spawn(async move {
        router
            .oneshot_get("/api/v1/queue/receive?topic=empty&consumer_group=g&wait_ms=3000")
            .await
            .status()
    });
    let shed = loop {
        let answer = app.get("/api/v1/queue/stats").await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        shed.expect(StatusCode::SERVICE_UNAVAILABLE).body["error"],
        "overloaded"
    );
    assert_eq!(poll.await.unwrap(), StatusCode::OK);
    app.get("/api/v1/queue/stats").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn sse_sends_connected_then_messages_with_ids_and_holds_the_in_flight_limit() {
    let app = app(ServerConfig::default()).await;
    for i in 0..5 {
        app.post_json(
            "/api/v1/queue/publish",
            json!({"topic": "e", "payload": {"i": i}}),
        )
        .await
        .expect(StatusCode::OK);
    }
    let res = app
        .router
        .clone()
        .oneshot_get(
            "/api/v1/queue/subscribe?topic=e&consumer_group=g&consumer_id=c1&max_in_flight=3",
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body().into_data_stream();
    let mut text = String::new();
    while text.matches("event: message").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        text.starts_with("event: connected\ndata: {\"consumer_id\":\"c1\"}\n\n"),
        "{text}"
    );
    assert!(text.contains("event: message\nid: "), "{text}");
    // At the limit: nothing more comes until something is settled.
    let more = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
    assert!(
        more.is_err(),
        "a fourth message came past the limit: {more:?}"
    );
    let first_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    app.post_json(
        "/api/v1/queue/ack",
        json!({"topic": "e", "consumer_group": "g", "message_id": first_id}),
    )
    .await
    .expect(StatusCode::OK);
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("room made by the ack")
        .unwrap()
        .unwrap();
    assert!(
        std::str::from_utf8(&chunk)
            .unwrap()
            .contains("event: message")
    );

    // Shutdown ends the stream and readiness.
    app.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while body.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the stream did not end at shutdown");
    app.get("/ready")
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
    app.get("/api/v1/queue/subscribe?topic=e&consumer_group=g")
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_and_openapi_describe_everything() {
    let app = app(ServerConfig::default()).await;
    app.post_json("/api/v1/queue/publish", json!({"topic": "m", "payload": 1}))
        .await
        .expect(StatusCode::OK);
    app.get("/api/v1/queue/receive?topic=m&consumer_group=g")
        .await
        .expect(StatusCode::OK);
    let metrics = app.get("/metrics").await.expect(StatusCode::OK);
    assert!(metrics.content_type.starts_with("text/plain"));
    let text = metrics.body.as_str().unwrap();
    for family in [
        "weir_published_messages_total{topic=\"m\"} 1",
        "weir_delivered_messages_total{topic=\"m\",group=\"g\"} 1",
        "weir_in_flight_messages{topic=\"m\",group=\"g\"} 1",
        "weir_acked_messages_total",
        "weir_nacked_messages_total",
        "weir_redelivered_messages_total",
        "weir_dead_lettered_messages_total",
        "weir_queue_depth_messages",
        "weir_http_request_duration_seconds_bucket{route=\"/api/v1/queue/publish\",method=\"POST\",status=\"200\"",
    ] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    let doc = app.get("/api/v1/openapi.json").await.expect(StatusCode::OK);
    let paths = doc.body["paths"].as_object().unwrap();
    for path in [
        "/api/v1/queue/publish",
        "/api/v1/queue/publish/batch",
        "/api/v1/queue/subscribe",
        "/api/v1/queue/receive",
        "/api/v1/queue/ack",
        "/api/v1/queue/nack",
        "/api/v1/queue/reject",
        "/api/v1/queue/seek",
        "/api/v1/queue/stats",
        "/api/v1/queue/dlq",
        "/api/v1/queue/dlq/redrive",
        "/health",
        "/ready",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for schema in [
        "PublishRequest",
        "WireMessage",
        "ErrorBody",
        "StatsResponse",
        "SettleRequest",
    ] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
    app.get("/ready").await.expect(StatusCode::OK);
}

/// `oneshot` of a GET, keeping the response (and its streaming body).
trait OneshotGet {
    async fn oneshot_get(self, uri: &str) -> axum::response::Response;
}

impl OneshotGet for axum::Router {
    async fn oneshot_get(self, uri: &str) -> axum::response::Response {
        use tower::ServiceExt;
        self.oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_subscriber_that_names_no_settings_keeps_the_groups() {
    let app = app(ServerConfig::default()).await;
    app.get("/api/v1/queue/receive?topic=k&consumer_group=g&visibility_timeout_ms=60000&max_deliveries=9")
        .await
        .expect(StatusCode::OK);
    app.get("/api/v1/queue/receive?topic=k&consumer_group=g")
        .await
        .expect(StatusCode::OK);
    let config = app.queue.group_config("k", "g").unwrap();
    assert_eq!(config.visibility_timeout, Duration::from_secs(60));
    assert_eq!(config.max_deliveries, 9);
    app.get("/api/v1/queue/receive?topic=k&consumer_group=g&max_deliveries=2")
        .await
        .expect(StatusCode::OK);
    assert_eq!(app.queue.group_config("k", "g").unwrap().max_deliveries, 2);
}
