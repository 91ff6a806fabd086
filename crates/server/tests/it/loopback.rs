//! Real HTTP over loopback: the bus contract through the `http://` backend,
//! authentication, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_bus::contract::Guard;
use weir_bus::{Bus, BusError, ConnectOptions, Message, SubscribeOptions};
use weir_queue::{Queue, QueueConfig};
use weir_server::ServerConfig;

/// A broker serving a fresh queue on 127.0.0.1, stopped when dropped.
pub(crate) struct Broker {
    pub(crate) url: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl Broker {
    pub(crate) async fn start(config: ServerConfig) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(QueueConfig {
            default_partitions: 4,
            ..QueueConfig::new(dir.path())
        })
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(weir_server::run(config, queue, listener, shutdown.clone()));
        Broker {
            url,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn connect() -> (Arc<dyn Bus>, Guard) {
    let broker = Broker::start(ServerConfig::default()).await;
    let bus = weir_bus::connect(&broker.url, &ConnectOptions::default())
        .await
        .unwrap();
    (bus, Box::new(broker))
}

mod contract {
    weir_bus::contract_suite!(super::connect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_the_broker_has_one() {
    let broker = Broker::start(ServerConfig {
        auth_token: Some("tok".into()),
        ..ServerConfig::default()
    })
    .await;
    let with = |token: Option<&str>| ConnectOptions {
        auth_token: token.map(str::to_string),
        ..ConnectOptions::default()
    };
    let wrong = weir_bus::connect(&broker.url, &with(Some("nope")))
        .await
        .unwrap();
    let err = wrong.publish("t", Message::new("x")).await.unwrap_err();
    assert!(matches!(err, BusError::Unauthorized(_)), "{err:?}");
    let none = weir_bus::connect(&broker.url, &with(None)).await.unwrap();
    let err = none
        .subscribe("t", "g", SubscribeOptions::new("c"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unauthorized(_)), "{err:?}");
    let right = weir_bus::connect(&broker.url, &with(Some("tok")))
        .await
        .unwrap();
    right.publish("t", Message::new("x")).await.unwrap();
    let mut sub = right
        .subscribe("t", "g", SubscribeOptions::new("c"))
        .await
        .unwrap();
    let got = sub.receive(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_and_returns() {
    let mut broker = Broker::start(ServerConfig::default()).await;
    let bus = weir_bus::connect(&broker.url, &ConnectOptions::default())
        .await
        .unwrap();
    let _sub = bus
        .subscribe("t", "g", SubscribeOptions::new("c"))
        .await
        .unwrap();
    broker.shutdown.cancel();
    let task = broker.task.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the server returns at shutdown with a subscriber connected");
    result.unwrap().unwrap();
}
