//! Process start-up and shutdown shared by every binary (ztunnel, node-agent, controller,
//! demo-app), so they log, exit and stop on signals the same way.

use std::future::Future;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`): free memory
/// at the top of each heap and unused whole pages inside them. glibc otherwise keeps what
/// bursts of short-lived allocations freed, so a process's RSS stays at its busiest.
/// Walks every heap: call it after a burst, not per allocation. A no-op with other C
/// libraries (musl returns memory by itself).
pub fn release_free_heap() {
    trim_heap();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    unsafe extern "C" {
        /// glibc: safe to call at any time from any thread.
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes no pointers and is thread-safe in glibc.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// Logs to stderr, coloured only on a terminal (log files and collectors get plain text).
/// `filter` overrides `RUST_LOG`, which defaults to `info`; an invalid `filter` is an
/// error. A second call (tests running an app twice in one process) keeps the first.
pub fn init_logging(filter: Option<&str>, json: bool) -> Result<(), String> {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).map_err(|e| format!("invalid log filter {f:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        drop(builder.json().try_init());
    } else {
        drop(builder.try_init());
    }
    Ok(())
}

/// Runs `main` on a tokio runtime and turns its outcome into the exit code, logging the
/// error. `threads`: `Some(1)` runs everything on this thread, `Some(n)` uses `n`
/// workers, `None` one per CPU.
pub fn block_on(
    threads: Option<usize>,
    main: impl Future<Output = Result<(), String>>,
) -> ExitCode {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A channel that turns true at the first SIGTERM or SIGINT (logged). Must be called
/// inside the runtime.
pub fn stop_on_signals() -> Result<watch::Receiver<bool>, String> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
        stop.send_replace(true);
    });
    Ok(stopped)
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_outcomes_become_exit_codes() {
        assert_eq!(block_on(Some(1), async { Ok(()) }), ExitCode::SUCCESS);
        assert_eq!(
            block_on(Some(2), async { Err("boom".into()) }),
            ExitCode::FAILURE
        );
        assert_eq!(block_on(None, async { Ok(()) }), ExitCode::SUCCESS);
    }

    #[test]
    fn an_invalid_filter_is_an_error() {
        let err = init_logging(Some("info,[[["), false).unwrap_err();
        assert!(err.contains("invalid log filter"), "{err}");
    }

    #[tokio::test]
    async fn sigterm_turns_the_channel_true() {
        let stop = stop_on_signals().unwrap();
        assert!(!*stop.borrow());
        // Signals this very process; the handler installed above catches it.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), stopped(stop))
            .await
            .expect("SIGTERM seen");
    }
}
