//! `weir broker`: the embedded queue as an HTTP + SSE service, until
//! Ctrl-C or SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use weir_server::ServerConfig;

use crate::options::{QueueOptions, StoreTuning};
use crate::signal::stop_on_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    queue: QueueOptions,
    /// Require `Authorization: Bearer <token>` on the queue API.
    #[arg(long, env = "WEIR_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// The largest request body, in bytes.
    #[arg(long, env = "WEIR_MAX_BODY", default_value_t = ServerConfig::default().max_body_bytes)]
    max_body: usize,
    /// Unsettled messages one SSE consumer holds at most, unless it asks
    /// for another limit.
    #[arg(long, env = "WEIR_MAX_IN_FLIGHT", default_value_t = ServerConfig::default().max_in_flight)]
    max_in_flight: usize,
    /// Requests handled at once before answering 503.
    #[arg(long, default_value_t = ServerConfig::default().max_concurrent_requests)]
    max_requests: usize,
    /// SSE streams open at once before answering 503.
    #[arg(long, default_value_t = ServerConfig::default().max_subscribers)]
    max_subscribers: usize,
    /// Also serve the telemetry query API (`/api/v1/gpus`, `/api/v1/series`,
    /// `/api/v1/jobs/results`) from this store: `sqlite://PATH` or
    /// `postgres://…`.
    #[arg(long, env = "WEIR_STORE")]
    store: Option<String>,
    #[command(flatten)]
    tuning: StoreTuning,
}

pub(crate) async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let store = match &args.store {
        Some(url) => Some(crate::api::open_query(&args.tuning, url).await?),
        None => None,
    };
    let queue = args.queue.open().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = ServerConfig {
        auth_token: args.auth_token.filter(|t| !t.is_empty()),
        max_body_bytes: args.max_body,
        max_in_flight: args.max_in_flight.max(1),
        max_concurrent_requests: args.max_requests.max(1),
        max_subscribers: args.max_subscribers.max(1),
        ..ServerConfig::default()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir broker", shutdown.clone()));
    eprintln!(
        "weir broker: serving {} on http://{addr} (API description at /api/v1/openapi.json)",
        args.queue.data.display()
    );
    let token = config.auth_token.clone();
    let mut app = weir_server::router(config, queue.clone(), shutdown.clone());
    if let Some(store) = &store {
        eprintln!(
            "weir broker: queries of {} at http://{addr}/api/v1/gpus",
            store.url
        );
        let query = store.query.clone().expect("open_query checked");
        app = app.merge(weir_server::query_router(query, token));
    }
    let served = weir_server::serve(app, listener, shutdown).await;
    if let Some(store) = store {
        store.sink.close().await.context("closing the store")?;
    }
    queue.close().await.context("closing the queue")?;
    served.context("serving HTTP")?;
    eprintln!("weir broker: stopped; everything acknowledged is on disk");
    Ok(())
}
