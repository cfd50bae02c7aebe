//! The environment knobs both benchmarks share: `BENCH_QUICK`, `BENCH_RUNS`,
//! `BENCH_WORKERS`, and a reader for numeric knobs with a default and a range.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use anyhow::{Context, Result, ensure};

use crate::host::nproc;

/// `BENCH_QUICK` set to anything but empty or `0`: a short smoke run.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The numeric knob `name`, or `default` when unset; an error if it does not parse or
/// falls outside `range`.
pub fn number<T>(name: &str, default: T, range: RangeInclusive<T>) -> Result<T>
where
    T: FromStr + PartialOrd + Display,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let value = match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}"))?,
        Err(_) => default,
    };
    ensure!(
        range.contains(&value),
        "{name} must be {}..={}, got {value}",
        range.start(),
        range.end()
    );
    Ok(value)
}

/// `BENCH_RUNS`: runs to take the median over (default 5, or 2 when quick).
pub fn runs(quick: bool) -> Result<usize> {
    number("BENCH_RUNS", if quick { 2 } else { 5 }, 1..=50)
}

/// `BENCH_WORKERS`: the load generator's runtime threads (default one per CPU).
pub fn workers() -> Result<usize> {
    number("BENCH_WORKERS", nproc(), 1..=64)
}
