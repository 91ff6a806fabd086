//! `weir up`: the whole pipeline in one process on embedded defaults — the
//! broker with its HTTP API (queue and queries), a synthetic DCGM fleet, the
//! resource monitor watching this process (the workers), the collector into
//! SQLite, Game of Life workers and a submitter of small jobs — with a live
//! view, until Ctrl-C, SIGTERM or `--for`.
//!
//! Shutdown runs in the order data flows: the sources stop first, then the
//! workers finish or give back their jobs, then the collector writes and
//! acks what it holds, then the HTTP server drains, and last the store and
//! the queue close. Nothing acknowledged is lost.

mod view;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, Message};
use weir_collect::{CollectConfig, Counters};
use weir_monitor::{Monitor, MonitorConfig, Target};
use weir_sources::synth::{self, Fleet, FleetConfig, StreamConfig};
use weir_telemetry::Labels;
use weir_worker::WorkerConfig;

use crate::UsageError;
use crate::options::{QueueOptions, StoreTuning, parse_duration};
use crate::signal::stop_on_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    queue: QueueOptions,
    /// Address of the HTTP API (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The store the collector writes and the API reads [default:
    /// sqlite://DATA/weir.db].
    #[arg(long, env = "WEIR_STORE")]
    store: Option<String>,
    #[command(flatten)]
    tuning: StoreTuning,
    /// GPUs of the synthetic fleet (8 per host).
    #[arg(long, env = "WEIR_GPUS", default_value_t = 64)]
    gpus: u32,
    /// Game of Life workers.
    #[arg(long, env = "WEIR_WORKERS", default_value_t = 2)]
    workers: usize,
    /// How often the submitter sends a job `{"powmin": 3, "powmax": 10}`
    /// (0s: never).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    submit_every: Duration,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long = "for", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Require `Authorization: Bearer <token>` on the HTTP API (give one
    /// whenever `--listen` is not a loopback address).
    #[arg(long, env = "WEIR_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

/// A job small enough to finish in well under a second here.
const JOB: &str = r#"{"powmin": 3, "powmax": 10}"#;

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.gpus == 0 || args.workers == 0 {
        return Err(UsageError("--gpus and --workers must be at least 1".into()).into());
    }
    if args.gpus > 8 && !args.gpus.is_multiple_of(8) {
        return Err(UsageError(format!(
            "--gpus {}: a fleet is hosts of 8 GPUs; give up to 8, or a multiple of 8",
            args.gpus
        ))
        .into());
    }
    let (hosts, per_host) = (args.gpus.div_ceil(8), args.gpus.min(8));
    if FleetConfig::new(hosts, per_host).gpus() > synth::MAX_GPUS {
        return Err(
            UsageError(format!("--gpus: at most {} are simulated", synth::MAX_GPUS)).into(),
        );
    }
    let queue = weir_queue::Queue::open(args.queue.config())
        .await
        .map_err(|e| match e {
            weir_queue::QueueError::Locked { .. } => anyhow::anyhow!(
                "{} is in use by another weir process (weir up, weir broker or an embedded:// bus): stop it, or give this one another --data",
                args.queue.data.display()
            ),
            e => anyhow::Error::new(e)
                .context(format!("opening the queue in {}", args.queue.data.display())),
        })?;
    let store_url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", args.queue.data.join("weir.db").display()));
    let store = args.tuning.open(&store_url).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let bus: Arc<dyn Bus> = Arc::new(weir_bus::embedded::EmbeddedBus::new(queue.clone()));
    // Each stage has its own token, cancelled in the order data flows.
    let sources = CancellationToken::new();
    // Started before anything else runs, so that its failure leaves nothing
    // behind.
    let monitor = Monitor::spawn(bus.clone(), MonitorConfig::default(), sources.clone())
        .await
        .context("starting the resource monitor")?;
    // The workers are tasks of this process: watching it is watching them.
    let labels = Labels::from([("service".to_string(), "weir-up".to_string())]);
    let watch = monitor
        .handle()
        .watch(Target::Pid(std::process::id()), labels)
        .context("watching this process")?;

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal("weir up", shutdown.clone()));
    if let Some(d) = args.duration {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let workers = CancellationToken::new();
    let collector = CancellationToken::new();
    let server = CancellationToken::new();

    let token = args.auth_token.clone().filter(|t| !t.is_empty());
    let config = weir_server::ServerConfig {
        auth_token: token.clone(),
        ..weir_server::ServerConfig::default()
    };
    let mut app = weir_server::router(config, queue.clone(), server.clone());
    if let Some(query) = store.query.clone() {
        app = app.merge(weir_server::query_router(query, token));
    }
    let mut serving = Some(tokio::spawn(weir_server::serve(
        app,
        listener,
        server.clone(),
    )));

    let counters = Arc::new(Counters::default());
    let mut collecting = Some(tokio::spawn(weir_collect::run(
        bus.clone(),
        store.sink.clone(),
        CollectConfig {
            topics: vec![
                "telemetry".into(),
                "resources".into(),
                "jogo-da-vida-output".into(),
            ],
            // Its own group: a `weir collect` pointed at this broker does not
            // take half of what this one stores.
            group: "weir-up".into(),
            ..CollectConfig::new("weir-up")
        },
        counters.clone(),
        collector.clone(),
    )));

    let mut working = JoinSet::new();
    for i in 1..=args.workers {
        let config = WorkerConfig {
            run: weir_gol::RunConfig {
                threads: 1,
                ..weir_gol::RunConfig::default()
            },
            ..WorkerConfig::new(format!("up-worker-{i}"))
        };
        let (bus, stop) = (bus.clone(), workers.clone());
        working.spawn(async move {
            weir_worker::run(bus, config, stop)
                .await
                .map(|_| ())
                .context("a Game of Life worker stopped")
        });
    }

    let mut producing = JoinSet::new();
    {
        let (bus, stop) = (bus.clone(), sources.clone());
        producing.spawn(async move {
            let mut fleet = Fleet::new(FleetConfig::new(hosts, per_host));
            let config = StreamConfig::default();
            synth::stream(&*bus, &mut fleet, &config, &stop)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("the synthetic fleet stopped: {e}"))
        });
    }
    if !args.submit_every.is_zero() {
        producing.spawn(submit(bus.clone(), args.submit_every, sources.clone()));
    }

    let view = tokio::spawn(view::run(
        view::Sources {
            bus: bus.clone(),
            counters: counters.clone(),
            query: store.query.clone(),
            url: url.clone(),
            data: args.queue.data.display().to_string(),
            store: store.url.clone(),
        },
        shutdown.clone(),
    ));

    // Run until asked to stop, or until a component stops by itself: that
    // is a failure, and everything else is stopped in order.
    let mut errors: Vec<anyhow::Error> = Vec::new();
    tokio::select! {
        () = shutdown.cancelled() => {}
        Some(done) = producing.join_next() => errors.push(ended("a source", flatten(done))),
        Some(done) = working.join_next() => errors.push(ended("a worker", flatten(done))),
        done = collecting.as_mut().expect("running") => {
            collecting = None;
            errors.push(ended("the collector", done.map_err(anyhow::Error::new).and_then(|r| r.map(|_| ()).map_err(Into::into))));
        }
        done = serving.as_mut().expect("running") => {
            serving = None;
            errors.push(ended("the HTTP server", done.map_err(anyhow::Error::new).and_then(|r| r.map_err(Into::into))));
        }
    }
    shutdown.cancel();
    let _ = view.await;

    // Stop in the order data flows; every step runs, errors are kept.
    sources.cancel();
    while let Some(done) = producing.join_next().await {
        keep(&mut errors, flatten(done));
    }
    drop(watch);
    keep(
        &mut errors,
        monitor
            .join()
            .await
            .map(|_| ())
            .context("the resource monitor"),
    );
    workers.cancel();
    while let Some(done) = working.join_next().await {
        keep(&mut errors, flatten(done));
    }
    collector.cancel();
    let mut totals = counters.snapshot();
    if let Some(task) = collecting {
        match task.await {
            Ok(Ok(t)) => totals = t,
            Ok(Err(e)) => errors.push(anyhow::Error::new(e).context("the collector")),
            Err(e) => errors.push(anyhow::Error::new(e).context("the collector panicked")),
        }
    }
    server.cancel();
    if let Some(task) = serving {
        keep(
            &mut errors,
            task.await
                .map_err(anyhow::Error::new)
                .and_then(|r| r.context("serving HTTP")),
        );
    }
    keep(
        &mut errors,
        store.sink.close().await.context("closing the store"),
    );
    keep(
        &mut errors,
        queue.close().await.context("closing the queue"),
    );
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "weir up: stopped; {} samples and {} job results stored in {}; everything acknowledged is on disk",
        totals.samples,
        totals.results,
        store.url
    );
    Ok(())
}

/// A component that stopped before it was asked to: its error, or a
/// sentence saying it stopped.
fn ended(what: &str, outcome: anyhow::Result<()>) -> anyhow::Error {
    match outcome {
        Err(e) => e,
        Ok(()) => anyhow::anyhow!("{what} stopped by itself"),
    }
}

fn flatten(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    done.map_err(|e| anyhow::Error::new(e).context("a component panicked"))?
}

fn keep(errors: &mut Vec<anyhow::Error>, outcome: anyhow::Result<()>) {
    if let Err(e) = outcome {
        errors.push(e);
    }
}

/// Sends the small job every `every` until `stop`.
async fn submit(bus: Arc<dyn Bus>, every: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = bus.publish("jogo-da-vida", Message::new(JOB)).await {
            tracing::warn!(error = %e, "could not submit a job");
        }
    }
}
