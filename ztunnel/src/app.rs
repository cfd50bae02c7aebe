//! ztunnel's process: flags, logging, runtime, signals. `main.rs` only calls [`main`] so
//! that tests can run the very same process (the lab re-executes its test binary as a
//! ztunnel).

use std::process::ExitCode;
use std::sync::Arc;

use crate::cert::LocalCa;
use crate::config::{Config, ConfigError, LogFormat, USAGE};
use crate::pods::PodRegistry;
use crate::proxy::ProxyInputs;
use crate::state::local::load_and_watch;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let config = match Config::parse(args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(ConfigError::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ztunnel: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_format);
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        // A second init (tests running the app twice in one process) keeps the first.
        LogFormat::Text => drop(builder.try_init()),
        LogFormat::Json => drop(builder.json().try_init()),
    }
}

async fn run(config: Config) -> Result<(), String> {
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (store, watcher) = load_and_watch(
        config.state_file.clone(),
        config.state_poll,
        shutdown.clone(),
    )
    .map_err(|e| e.to_string())?;
    let certs = Arc::new(LocalCa::from_dir(&config.ca_dir).map_err(|e| e.to_string())?);
    let inputs = ProxyInputs {
        state: store,
        certs,
        trust_domain: config.trust_domain.clone(),
        pool: hbone::PoolConfig::default(),
    };
    let watcher = tokio::spawn(watcher);
    let trimmer = tokio::spawn(crate::memory::trim_after_traffic(shutdown.clone()));
    let (snapshots, _) = watch::channel(0);
    let zds = tokio::spawn(crate::zds_client::run(
        config.zds_socket.clone(),
        PodRegistry::new(inputs),
        snapshots,
        shutdown,
    ));
    info!(zds = %config.zds_socket.display(), state = %config.state_file.display(), tls = hbone::tls::BACKEND, "ztunnel started");

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    let _ = shutdown_tx.send(true);
    let _ = zds.await;
    let _ = watcher.await;
    let _ = trimmer.await;
    info!("ztunnel stopped");
    Ok(())
}
