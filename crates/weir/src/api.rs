//! `weir api`: the telemetry query API over a store, without a queue, until
//! Ctrl-C or SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::options::StoreTuning;
use crate::signal::stop_on_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    /// The store to answer from: `sqlite://PATH` or `postgres://…`.
    #[arg(long, env = "WEIR_STORE", default_value = "sqlite://weir-data/weir.db")]
    store: String,
    #[command(flatten)]
    tuning: StoreTuning,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// Require `Authorization: Bearer <token>` on the query API.
    #[arg(long, env = "WEIR_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

/// Opens a store that can answer queries: SQLite or PostgreSQL (CSV is only
/// written). A server opens it even before a collector has written to it.
pub(crate) async fn open_query(
    tuning: &StoreTuning,
    url: &str,
) -> anyhow::Result<weir_store::Store> {
    if url.starts_with("csv://") {
        anyhow::bail!(
            "{url} cannot be queried (CSV is written, not read): use sqlite:// or postgres://"
        );
    }
    let store = tuning.open(url).await?;
    anyhow::ensure!(store.query.is_some(), "{url} cannot be queried");
    Ok(store)
}

pub(crate) async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let store = open_query(&args.tuning, &args.store).await?;
    let query = store.query.clone().expect("open_query checked");
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let app = weir_server::query_app(query, args.auth_token.filter(|t| !t.is_empty()));
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir api", shutdown.clone()));
    eprintln!(
        "weir api: serving queries of {} on http://{addr}/api/v1/gpus (API description at /api/v1/openapi.json)",
        store.url
    );
    let served = weir_server::serve(app, listener, shutdown).await;
    store.sink.close().await.context("closing the store")?;
    served.context("serving HTTP")?;
    eprintln!("weir api: stopped");
    Ok(())
}
