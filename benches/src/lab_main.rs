//! `main` of a benchmark on the lab: runs a lab component when re-executed as one, skips
//! under `cargo test --all-targets` (which runs bench binaries without `--bench`), enters
//! the lab's sandbox while the process has one thread, refuses debug builds, then runs.

use std::process::ExitCode;

use anyhow::Result;

/// Runs `bench` (given the sandbox mode, for the report) as benchmark `name`.
pub fn lab_main(name: &str, bench: impl FnOnce(String) -> Result<()>) -> ExitCode {
    // A ztunnel, node agent, controller or waypoint of the lab: this binary re-executed.
    if let Some(code) = lab::mesh::dispatch() {
        return code;
    }
    // The node benchmark's TCP relay, re-executed the same way.
    if let Some(code) = crate::relay::dispatch() {
        return code;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name} benchmark: skipped (run it with `cargo bench -p benches --bench {name}`)");
        return ExitCode::SUCCESS;
    }
    // First, while the process has one thread: the lab's privileges.
    let sandbox = match lab::sandbox::enter() {
        Ok(mode) => format!("{mode:?}"),
        Err(e) => {
            eprintln!("{name} benchmark: cannot set up the lab sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if cfg!(debug_assertions) {
        Err(anyhow::anyhow!(
            "debug build: benchmark numbers would be meaningless; use `cargo bench`"
        ))
    } else {
        bench(sandbox)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
