//! `weir gol`: the Game of Life benchmark from a terminal, with the classic
//! C program's output, and `weir gol submit` to queue jobs for workers.

use anyhow::Context;
use weir_bus::Message;

use crate::UsageError;
use crate::options::{BusOptions, RunOptions};

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
    let config = args.run.config();
    // Every size is checked before any runs: no minutes of work, then a refusal.
    for pow in powmin..=powmax {
        weir_gol::check(pow, &config).map_err(|e| UsageError(e.to_string()))?;
    }
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
