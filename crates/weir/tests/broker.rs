//! `weir broker` as a process: killed and restarted mid-stream, stopped by
//! SIGTERM, and driven by curl (`scripts/api-smoke`).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_bus::{ConnectOptions, Message, SubscribeOptions};

mod support;

use support::{Broker, WEIR, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_restarts_without_losing_or_repeating_acked_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), "127.0.0.1:0");
    let addr = broker.listen_addr().to_string();
    let bus = weir_bus::connect(&broker.url, &ConnectOptions::default())
        .await
        .unwrap();
    let batch = |from: usize, to: usize| {
        (from..to)
            .map(|i| Message::new(format!("{{\"n\":{i}}}")).with_key(format!("k{}", i % 8)))
            .collect::<Vec<_>>()
    };
    let mut published: HashSet<String> = bus
        .publish_batch("work", batch(0, 200))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let options = SubscribeOptions {
        visibility_timeout: Some(Duration::from_secs(2)),
        max_in_flight: 50,
        ..SubscribeOptions::new("c1")
    };
    let mut sub = bus.subscribe("work", "g", options).await.unwrap();
    let acker = sub.acker();

    // Ack 60, hold 40 unacked, then kill the broker mid-stream.
    let mut held = Vec::new();
    while held.len() < 100 {
        let got = sub
            .receive(100 - held.len(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!got.is_empty(), "deliveries stopped at {}", held.len());
        for d in got {
            if held.len() < 60 {
                // Ack as they come, so the stream keeps flowing.
                acker.ack(std::slice::from_ref(&d.id)).await.unwrap();
            }
            held.push(d.id);
        }
    }
    let acked_before: HashSet<String> = held[..60].iter().cloned().collect();
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();

    let broker = Broker::start(dir.path(), &addr);
    assert_eq!(broker.listen_addr(), addr);
    published.extend(
        bus.publish_batch("work", batch(200, 250))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id),
    );
    assert_eq!(published.len(), 250);

    // The same subscription reconnects and carries on.
    let mut acked = acked_before.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < published.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} acked before the deadline",
            acked.len(),
            published.len()
        );
        let got = sub.receive(100, Duration::from_secs(1)).await.unwrap();
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        for id in &ids {
            assert!(
                !acked_before.contains(id),
                "message {id}, acked before the kill, came back"
            );
        }
        if !ids.is_empty() {
            acker.ack(&ids).await.unwrap();
            acked.extend(ids);
        }
    }
    assert_eq!(acked, published, "every message acked, none invented");
    drop(sub);
    bus.close().await.unwrap();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_broker_cleanly_with_a_subscriber_connected() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), "127.0.0.1:0");
    let bus = weir_bus::connect(&broker.url, &ConnectOptions::default())
        .await
        .unwrap();
    bus.publish("t", Message::new("x")).await.unwrap();
    let mut sub = bus
        .subscribe("t", "g", SubscribeOptions::new("c"))
        .await
        .unwrap();
    assert_eq!(
        sub.receive(1, Duration::from_secs(5)).await.unwrap().len(),
        1
    );
    let exit = terminate(&mut broker.child);
    assert!(exit.success(), "{exit:?}");
    drop(sub);
}

#[test]
fn curl_drives_the_api() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/api-smoke");
    let out = Command::new("bash")
        .arg(script)
        .arg(WEIR)
        .output()
        .expect("run scripts/api-smoke");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_queue_commands_work_against_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "127.0.0.1:0");
    let weir = |args: &[&str], stdin: &str| {
        let mut child = Command::new(WEIR)
            .args(args)
            .env("WEIR_BUS", &broker.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    weir(
        &["queue", "publish", "jobs"],
        "{\"powmin\":3,\"powmax\":4}\nplain\n",
    );
    let lines = weir(
        &[
            "queue", "consume", "jobs", "--group", "g", "--idle", "300ms",
        ],
        "",
    );
    let got: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{lines}");
    assert_eq!(got[0]["payload"]["powmax"], 4);
    assert_eq!(got[1]["payload"], "plain");
    assert_eq!(got[1]["payload_encoding"], "text");
    let stats = weir(&["queue", "stats", "--json"], "");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["consumer_groups"][0]["acked_total"], 2);
    assert_eq!(weir(&["queue", "dlq", "jobs"], ""), "");
}
