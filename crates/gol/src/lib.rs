//! Conway's Game of Life with the classic OpenMP benchmark's semantics.
//!
//! The benchmark: for each `pow`, a board of side `tam = 2^pow` with a dead
//! border (cells outside the board are dead forever; no wrap-around) starts
//! with a glider at (1,2),(2,3),(3,1),(3,2),(3,3) in the classic program's
//! 1-based coordinates, runs `4*(tam-3)` generations, and is correct when
//! exactly those five cells, shifted to the bottom-right corner, are alive.
//! Here coordinates are 0-based `(row, col)` inside the board.
//!
//! Engines ([`Engine`]):
//! - [`dense::Dense`]: bit-packed rows (64 cells per `u64`), every cell of
//!   every generation computed with word-wide logic, row bands in parallel;
//! - [`sparse::Sparse`]: cost follows the live cells, not the board's area,
//!   and a pattern that repeats itself shifted (a glider, a still life) is
//!   moved forward whole periods at once while it stays clear of the border.
//!
//! [`run_size`] runs one size of the benchmark with timings split as the
//! classic program does: `init` (allocate, place the glider), `comp`
//! (generations), `fim` (the check), `tot`.
//!
//! Invariants: both engines give, generation by generation, exactly what the
//! byte-per-cell reference in the tests gives, on any pattern; no engine
//! allocates a board it was not allowed ([`RunConfig::max_dense_bytes`]).

pub mod dense;
pub mod sparse;

use std::fmt;
use std::time::Instant;

/// A live cell: `(row, col)`, 0-based inside the board.
pub type Cell = (u64, u64);

/// What every engine offers.
pub trait Life {
    /// The board's side.
    fn side(&self) -> u64;
    /// Advances `generations` generations.
    fn advance(&mut self, generations: u64);
    /// The live cells, sorted.
    fn live_cells(&self) -> Vec<Cell>;
    /// Threads the engine really runs on.
    fn threads(&self) -> usize {
        1
    }
}

/// Which engine runs a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Dense,
    Sparse,
    /// Dense up to [`AUTO_DENSE_MAX_POW`], sparse above.
    Auto,
}

/// The largest `pow` that `auto` runs densely: beyond it the dense work
/// (`4·tam³` cell updates) takes longer than a job should.
pub const AUTO_DENSE_MAX_POW: u32 = 11;

/// The sizes the benchmark accepts: `tam - 3` must be positive, and `tam`
/// must fit the coordinates.
pub const MIN_POW: u32 = 3;
pub const MAX_POW: u32 = 62;

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "dense" => Ok(Engine::Dense),
            "sparse" => Ok(Engine::Sparse),
            "auto" => Ok(Engine::Auto),
            _ => Err(format!("expected dense, sparse or auto, not {s:?}")),
        }
    }
}

impl Engine {
    /// The engine that runs `pow`.
    pub fn resolve(self, pow: u32) -> Engine {
        match self {
            Engine::Auto if pow <= AUTO_DENSE_MAX_POW => Engine::Dense,
            Engine::Auto => Engine::Sparse,
            e => e,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Dense => "dense",
            Engine::Sparse => "sparse",
            Engine::Auto => "auto",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sizes are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunConfig {
    pub engine: Engine,
    /// Threads of the dense engine (at least 1).
    pub threads: usize,
    /// The most memory a dense run may allocate for its two boards.
    pub max_dense_bytes: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            engine: Engine::Auto,
            threads: 1,
            max_dense_bytes: 4 << 30,
        }
    }
}

/// Why a size cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GolError {
    #[error("pow {pow} is out of range: it must be {MIN_POW}..={MAX_POW}")]
    PowOutOfRange { pow: u32 },
    #[error(
        "a dense board of side {tam} needs {needed} bytes, more than the limit of {limit} bytes; the sparse engine has no such limit"
    )]
    TooLarge { tam: u64, needed: u64, limit: u64 },
}

/// One size's outcome, in the classic program's terms plus Weir's.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeResult {
    pub pow: u32,
    pub tam: u64,
    /// Seconds to allocate the board and place the glider.
    pub init: f64,
    /// Seconds of generations.
    pub comp: f64,
    /// Seconds of the correctness check.
    pub fim: f64,
    pub tot: f64,
    pub correct: bool,
    /// `dense` or `sparse`, never `auto`.
    pub engine: Engine,
    pub threads: usize,
    pub generations: u64,
}

impl SizeResult {
    /// The classic program's two lines: the verdict, then the timings.
    pub fn classic_lines(&self) -> String {
        let verdict = if self.correct {
            "**RESULTADO CORRETO**"
        } else {
            "**RESULTADO ERRADO**"
        };
        format!(
            "{verdict}\ntam={}; tempos: init={:.7}, comp={:.7}, fim={:.7}, tot={:.7}",
            self.tam, self.init, self.comp, self.fim, self.tot
        )
    }
}

/// `2^pow`.
pub fn side(pow: u32) -> u64 {
    1u64 << pow
}

/// Generations the benchmark runs on a board of side `tam`.
pub fn generations(tam: u64) -> u64 {
    4 * (tam - 3)
}

/// The glider the benchmark starts with.
pub fn glider() -> Vec<Cell> {
    vec![(0, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
}

/// Where the glider must be at the end: shifted to the bottom-right corner.
pub fn expected_end(tam: u64) -> Vec<Cell> {
    let shift = tam - 3;
    let mut cells: Vec<Cell> = glider()
        .into_iter()
        .map(|(r, c)| (r + shift, c + shift))
        .collect();
    cells.sort_unstable();
    cells
}

/// Bytes of the dense engine's two boards of side `tam` (its per-thread
/// scratch, a few KiB, aside): what `max_dense_bytes` limits.
pub fn dense_bytes(tam: u64) -> u64 {
    dense::Dense::bytes_for(tam)
}

/// Whether `pow` can run under `config`, and on which engine: the pow is
/// in range and a dense board fits `max_dense_bytes`. Callers that take
/// many sizes (a job, the CLI) check them all before running any.
pub fn check(pow: u32, config: &RunConfig) -> Result<Engine, GolError> {
    if !(MIN_POW..=MAX_POW).contains(&pow) {
        return Err(GolError::PowOutOfRange { pow });
    }
    let engine = config.engine.resolve(pow);
    if engine == Engine::Dense {
        let tam = side(pow);
        let needed = dense_bytes(tam);
        if needed > config.max_dense_bytes {
            return Err(GolError::TooLarge {
                tam,
                needed,
                limit: config.max_dense_bytes,
            });
        }
    }
    Ok(engine)
}

/// Runs one size of the benchmark.
pub fn run_size(pow: u32, config: &RunConfig) -> Result<SizeResult, GolError> {
    let engine = check(pow, config)?;
    let tam = side(pow);
    let generations = generations(tam);
    let t0 = Instant::now();
    let mut board: Box<dyn Life> = match engine {
        Engine::Dense => Box::new(dense::Dense::new(tam, &glider(), config.threads)),
        _ => Box::new(sparse::Sparse::new(tam, &glider())),
    };
    let t1 = Instant::now();
    board.advance(generations);
    let t2 = Instant::now();
    let correct = board.live_cells() == expected_end(tam);
    let t3 = Instant::now();
    Ok(SizeResult {
        pow,
        tam,
        init: (t1 - t0).as_secs_f64(),
        comp: (t2 - t1).as_secs_f64(),
        fim: (t3 - t2).as_secs_f64(),
        tot: (t3 - t0).as_secs_f64(),
        correct,
        engine,
        threads: board.threads(),
        generations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glider_ends_in_the_corner() {
        assert_eq!(generations(8), 20);
        assert_eq!(
            expected_end(8),
            vec![(5, 6), (6, 7), (7, 5), (7, 6), (7, 7)]
        );
        assert_eq!(Engine::Auto.resolve(AUTO_DENSE_MAX_POW), Engine::Dense);
        assert_eq!(Engine::Auto.resolve(AUTO_DENSE_MAX_POW + 1), Engine::Sparse);
        assert_eq!("sparse".parse(), Ok(Engine::Sparse));
        assert!("fast".parse::<Engine>().is_err());
    }

    #[test]
    fn out_of_range_and_too_large_are_errors() {
        let config = RunConfig::default();
        assert!(matches!(
            run_size(2, &config),
            Err(GolError::PowOutOfRange { pow: 2 })
        ));
        let tight = RunConfig {
            engine: Engine::Dense,
            max_dense_bytes: 1024,
            ..config
        };
        assert!(matches!(
            run_size(10, &tight),
            Err(GolError::TooLarge { .. })
        ));
    }

    #[test]
    fn classic_lines_match_the_c_program() {
        let r = SizeResult {
            pow: 3,
            tam: 8,
            init: 0.0000031,
            comp: 0.001014,
            fim: 0.000005,
            tot: 0.0010221,
            correct: true,
            engine: Engine::Dense,
            threads: 1,
            generations: 20,
        };
        assert_eq!(
            r.classic_lines(),
            "**RESULTADO CORRETO**\ntam=8; tempos: init=0.0000031, comp=0.0010140, fim=0.0000050, tot=0.0010221"
        );
    }
}
