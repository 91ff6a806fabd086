//! `weir gol`: the Game of Life benchmark from a terminal, with the classic
//! C program's output, and `weir gol submit` to queue jobs for workers.

use anyhow::Context;
use weir_bus::Message;
use weir_gol::{Engine, RunConfig};

use crate::UsageError;
use crate::options::BusOptions;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct GolArgs {
    #[command(subcommand)]
    command: Option<GolCommand>,
    /// Smallest board: side 2^POWMIN.
    #[arg(required = true)]
    powmin: Option<u32>,
    /// Largest board: side 2^POWMAX.
    #[arg(required = true)]
    powmax: Option<u32>,
    #[command(flatten)]
    run: RunOptions,
    /// One JSON object per size instead of the classic lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum GolCommand {
    /// Publish a job `{"powmin": N, "powmax": M}` for `weir worker`.
    Submit {
        #[command(flatten)]
        bus: BusOptions,
        powmin: u32,
        powmax: u32,
        /// The topic workers consume.
        #[arg(long, default_value = "jogo-da-vida")]
        topic: String,
        /// Publish this many copies.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

/// How sizes run: shared by `weir gol` and `weir worker`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunOptions {
    /// `dense` (every cell, bit-packed, multi-threaded), `sparse` (cost
    /// follows the live cells) or `auto` (dense up to 2^11, sparse above).
    #[arg(long, env = "WEIR_GOL_ENGINE", default_value = "auto", value_parser = parse_engine)]
    pub(crate) engine: Engine,
    /// Threads of the dense engine; `OMP_NUM_THREADS` when absent, else
    /// every core.
    #[arg(long, env = "WEIR_THREADS")]
    pub(crate) threads: Option<usize>,
    /// The most memory a dense board may take, in bytes.
    #[arg(long, env = "WEIR_MAX_MEMORY", default_value_t = 4 << 30)]
    pub(crate) max_memory: u64,
}

impl RunOptions {
    pub(crate) fn config(&self) -> RunConfig {
        let threads = self
            .threads
            .or_else(|| std::env::var("OMP_NUM_THREADS").ok()?.trim().parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
            .max(1);
        RunConfig {
            engine: self.engine,
            threads,
            max_dense_bytes: self.max_memory,
        }
    }
}

fn parse_engine(s: &str) -> anyhow::Result<Engine> {
    Engine::parse(s).ok_or_else(|| anyhow::anyhow!("expected dense, sparse or auto, not {s:?}"))
}

pub(crate) async fn run(args: GolArgs) -> anyhow::Result<()> {
    if let Some(GolCommand::Submit {
        bus,
        powmin,
        powmax,
        topic,
        count,
    }) = args.command
    {
        let b = bus.connect().await?;
        let job = serde_json::json!({"powmin": powmin, "powmax": powmax}).to_string();
        let messages = (0..count.max(1))
            .map(|_| Message::new(job.clone()))
            .collect();
        let receipts = b
            .publish_batch(&topic, messages)
            .await
            .with_context(|| format!("publishing to {topic}"))?;
        b.close().await?;
        for r in receipts {
            println!(
                "{}",
                serde_json::json!({"job_id": r.id, "topic": topic, "job": job})
            );
        }
        return Ok(());
    }
    let (powmin, powmax) = (
        args.powmin.expect("required"),
        args.powmax.expect("required"),
    );
    if powmin > powmax {
        return Err(UsageError(format!("powmin {powmin} is greater than powmax {powmax}")).into());
    }
    for pow in [powmin, powmax] {
        if !(weir_gol::MIN_POW..=weir_gol::MAX_POW).contains(&pow) {
            return Err(UsageError(format!(
                "pow {pow} is out of range: it must be {}..={}",
                weir_gol::MIN_POW,
                weir_gol::MAX_POW
            ))
            .into());
        }
    }
    let config = args.run.config();
    let mut wrong = 0;
    for pow in powmin..=powmax {
        let result = tokio::task::spawn_blocking(move || weir_gol::run_size(pow, &config))
            .await
            .context("the size's thread failed")??;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "tam": result.tam, "init": result.init, "comp": result.comp,
                    "fim": result.fim, "tot": result.tot, "pow": result.pow,
                    "engine": result.engine.name(), "threads": result.threads,
                    "correct": result.correct, "generations": result.generations,
                })
            );
        } else {
            println!("{}", result.classic_lines());
        }
        if !result.correct {
            wrong += 1;
        }
    }
    if wrong > 0 {
        anyhow::bail!("{wrong} size(s) gave a wrong result");
    }
    Ok(())
}
