//! A broker app over a fresh queue in a temp dir, and request helpers.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use weir_queue::{Queue, QueueConfig};
use weir_server::ServerConfig;

pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) queue: Queue,
    pub(crate) shutdown: CancellationToken,
    _dir: TempDir,
}

pub(crate) async fn app(config: ServerConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(QueueConfig::new(dir.path())).await.unwrap();
    let shutdown = CancellationToken::new();
    let router = weir_server::router(config, queue.clone(), shutdown.clone());
    App {
        router,
        queue,
        shutdown,
        _dir: dir,
    }
}

/// An answer: status, and the body as JSON (or a JSON string of the text).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: String,
    pub(crate) body: Value,
}

impl App {
    pub(crate) async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.unwrap();
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

    pub(crate) async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    pub(crate) async fn post(&self, uri: &str, body: impl Into<Body>) -> Answer {
        self.send(
            Request::post(uri)
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn post_json(&self, uri: &str, body: Value) -> Answer {
        self.post(uri, body.to_string()).await
    }
}

impl Answer {
    /// Asserts the status and, for errors, the JSON error shape.
    pub(crate) fn expect(self, status: StatusCode) -> Answer {
        assert_eq!(self.status, status, "{:?}", self.body);
        if !status.is_success() {
            assert!(self.body["error"].is_string(), "{:?}", self.body);
            assert!(self.body["detail"].is_string(), "{:?}", self.body);
            assert!(
                self.content_type.starts_with("application/json"),
                "{self:?}"
            );
        }
        self
    }

    pub(crate) fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}
