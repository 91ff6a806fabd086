//! A Game of Life job: parsing and checking, before any work starts.

use serde::Deserialize;
use weir_gol::{GolError, RunConfig};

/// What users send: `{"powmin": 3, "powmax": 10}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Job {
    pub powmin: u32,
    pub powmax: u32,
}

/// Which jobs a worker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_pow: u32,
    pub max_pow: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_pow: weir_gol::MIN_POW,
            max_pow: 30,
        }
    }
}

/// Why a job is refused; the text goes with it to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job is not JSON: {0}")]
    NotJson(String),
    #[error("job has the wrong shape (expected {{\"powmin\": N, \"powmax\": M}}): {0}")]
    Shape(String),
    #[error("powmin {powmin} is greater than powmax {powmax}")]
    Reversed { powmin: u32, powmax: u32 },
    #[error("pow {pow} is outside this worker's range {min}..={max}")]
    OutOfRange { pow: u32, min: u32, max: u32 },
    /// A size the engines cannot run here (a dense board over the memory
    /// limit).
    #[error(transparent)]
    Gol(#[from] GolError),
}

impl JobError {
    /// A short name for the reason, for records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::NotJson(_) => "not_json",
            JobError::Shape(_) => "bad_shape",
            JobError::Reversed { .. } => "powmin_greater_than_powmax",
            JobError::OutOfRange { .. } => "pow_out_of_range",
            JobError::Gol(GolError::TooLarge { .. }) => "board_too_large",
            JobError::Gol(GolError::PowOutOfRange { .. }) => "pow_out_of_range",
        }
    }
}

/// Parses a job and checks that every size can run under `limits` and
/// `run` (`weir_gol::check`: a dense board must fit `run.max_dense_bytes`).
pub fn parse(payload: &[u8], limits: &Limits, run: &RunConfig) -> Result<Job, JobError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| JobError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(JobError::Shape("not a JSON object".into()));
    }
    let job: Job = serde_json::from_value(value).map_err(|e| JobError::Shape(e.to_string()))?;
    if job.powmin > job.powmax {
        return Err(JobError::Reversed {
            powmin: job.powmin,
            powmax: job.powmax,
        });
    }
    let (min, max) = (
        limits.min_pow.max(weir_gol::MIN_POW),
        limits.max_pow.min(weir_gol::MAX_POW),
    );
    for pow in [job.powmin, job.powmax] {
        if !(min..=max).contains(&pow) {
            return Err(JobError::OutOfRange { pow, min, max });
        }
    }
    for pow in job.powmin..=job.powmax {
        weir_gol::check(pow, run)?;
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(payload: &str, want: Result<(u32, u32), &str>) {
        let run = RunConfig {
            engine: weir_gol::Engine::Dense,
            max_dense_bytes: 1 << 30,
            ..RunConfig::default()
        };
        let limits = Limits {
            min_pow: 3,
            max_pow: 20,
        };
        let got = parse(payload.as_bytes(), &limits, &run);
        match (got, want) {
            (Ok(job), Ok((a, b))) => assert_eq!((job.powmin, job.powmax), (a, b), "{payload}"),
            (Err(e), Err(kind)) => assert_eq!(e.kind(), kind, "{payload}: {e}"),
            (got, want) => panic!("{payload}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn jobs_are_checked_before_any_work() {
        check(r#"{"powmin": 3, "powmax": 10}"#, Ok((3, 10)));
        check(r#"{"powmin": 5, "powmax": 5, "extra": true}"#, Ok((5, 5)));
        check("powmin=3", Err("not_json"));
        check("", Err("not_json"));
        check(r#"{"powmin": 3}"#, Err("bad_shape"));
        check(r#"{"powmin": "3", "powmax": 4}"#, Err("bad_shape"));
        check(r#"{"powmin": -1, "powmax": 4}"#, Err("bad_shape"));
        check("[3, 4]", Err("bad_shape"));
        check(
            r#"{"powmin": 9, "powmax": 4}"#,
            Err("powmin_greater_than_powmax"),
        );
        check(r#"{"powmin": 2, "powmax": 4}"#, Err("pow_out_of_range"));
        check(r#"{"powmin": 3, "powmax": 21}"#, Err("pow_out_of_range"));
        // 2^16 dense needs 2 × 65538 × 1026 × 8 bytes ≈ 1.08 GB > 1 GiB.
        check(r#"{"powmin": 16, "powmax": 16}"#, Err("board_too_large"));
    }
}
