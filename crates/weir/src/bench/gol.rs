//! `weir bench gol`: the dense engine against a straightforward C + OpenMP
//! program (compiled here, at run time, with the system's C compiler) on the
//! same sizes and thread count, and the sparse engine on the example job
//! users send, `{"powmin": 10, "powmax": 20}`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use weir_gol::{Engine, RunConfig};

use super::machine;

/// The baseline's source, compiled with `$CC -O2 -fopenmp`.
const BASELINE_C: &str = include_str!("gol_baseline.c");

#[derive(Debug, clap::Args)]
pub(crate) struct GolBench {
    /// Sizes (pow) to compare, comma-separated.
    #[arg(long, default_value = "10,11", value_delimiter = ',')]
    pows: Vec<u32>,
    /// Threads for both the C program and the dense engine.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip the C baseline (it takes a while: one int per cell).
    #[arg(long)]
    no_baseline: bool,
}

pub(super) async fn run(b: GolBench) -> anyhow::Result<()> {
    println!("weir bench gol");
    print!("{}", machine());
    println!(
        "config:  pows {:?}, {} thread(s) for C and dense; sparse on pow 10..=20",
        b.pows, b.threads
    );
    let tmp = tempfile::tempdir()?;
    let baseline = if b.no_baseline {
        None
    } else {
        match compile(tmp.path()) {
            Ok(exe) => Some(exe),
            Err(e) => {
                println!("C baseline: skipped ({e:#})");
                None
            }
        }
    };
    println!(
        "{:>6} {:>12} {:>12} {:>9} {:>22}",
        "tam", "C comp s", "dense comp s", "ratio", "dense updates/s/core"
    );
    for &pow in &b.pows {
        let c_comp = match &baseline {
            Some(exe) => Some(run_baseline(exe, pow, b.threads)?),
            None => None,
        };
        let config = RunConfig {
            engine: Engine::Dense,
            threads: b.threads,
            ..RunConfig::default()
        };
        let r = tokio::task::spawn_blocking(move || weir_gol::run_size(pow, &config)).await??;
        if !r.correct {
            bail!("the dense engine was wrong at tam {}", r.tam);
        }
        let updates = (r.tam * r.tam) as f64 * r.generations as f64;
        println!(
            "{:>6} {:>12} {:>12.4} {:>9} {:>22.3e}",
            r.tam,
            c_comp.map_or("-".into(), |c| format!("{c:.3}")),
            r.comp,
            c_comp.map_or("-".into(), |c| format!("{:.1}x", c / r.comp)),
            updates / r.comp / b.threads as f64,
        );
    }
    let start = Instant::now();
    let sparse = RunConfig {
        engine: Engine::Sparse,
        ..RunConfig::default()
    };
    let results = tokio::task::spawn_blocking(move || {
        (10..=20)
            .map(|pow| weir_gol::run_size(pow, &sparse))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let took = start.elapsed();
    let correct = results.iter().all(|r| r.correct);
    println!(
        "sparse, pow 10..=20 (the example job): {:.1} µs in all, {}",
        took.as_secs_f64() * 1e6,
        if correct { "all correct" } else { "WRONG" }
    );
    Ok(())
}

fn compile(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let src = dir.join("gol_baseline.c");
    let exe = dir.join("gol_baseline");
    std::fs::write(&src, BASELINE_C)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-O2", "-fopenmp", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .with_context(|| format!("running {cc}"))?;
    if !out.status.success() {
        bail!(
            "{cc} -fopenmp failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(exe)
}

/// Runs the C program on one size and reads `comp` from its classic line.
fn run_baseline(exe: &Path, pow: u32, threads: usize) -> anyhow::Result<f64> {
    let out = Command::new(exe)
        .args([pow.to_string(), pow.to_string()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .context("running the C baseline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("RESULTADO CORRETO") {
        bail!("the C baseline was wrong or failed: {text}");
    }
    text.split("comp=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|c| c.trim().parse().ok())
        .with_context(|| format!("no comp= in the C baseline's output: {text}"))
}
