//! The node agent's process: flags, logging, runtime, signals. `main.rs` only calls
//! [`main`], so tests can run the very same process (the lab re-executes its test binary
//! as a node agent).

use std::process::ExitCode;

use crate::config::{Config, ConfigError, USAGE};
use crate::{Agent, AgentConfig, NftCapture, PodListFile, ZdsHub, ZdsServer, ZdsServerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let config = match Config::parse(args) {
        Ok(c) => c,
        Err(ConfigError::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("node-agent: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let filter = match &config.log_level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("node-agent: invalid --log-level: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .ok();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

async fn run(config: Config) -> Result<(), String> {
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| format!("installing the SIGINT handler: {e}"))?;
    // The agent stops first, so that with --cleanup-on-exit ztunnel still hears the dels.
    let (stop_agent, agent_shutdown) = watch::channel(false);
    let (stop_server, server_shutdown) = watch::channel(false);
    let hub = ZdsHub::new();
    let server = ZdsServer::bind(&config.zds_socket, hub.clone(), ZdsServerConfig::default())
        .map_err(|e| e.to_string())?;
    let server = tokio::spawn(server.run(server_shutdown));
    let agent = Agent::new(
        PodListFile::with_interval(&config.pods, config.poll_interval),
        NftCapture::new(&config.nft),
        hub,
        AgentConfig {
            cleanup_on_exit: config.cleanup_on_exit,
            ..AgentConfig::default()
        },
    );
    let agent = tokio::spawn(agent.run(agent_shutdown));
    info!(pods = %config.pods.display(), "node agent started");
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        _ = sigint.recv() => info!("SIGINT: shutting down"),
    }
    stop_agent.send_replace(true);
    agent.await.map_err(|e| format!("agent task: {e}"))?;
    stop_server.send_replace(true);
    server.await.map_err(|e| format!("ZDS server task: {e}"))?;
    Ok(())
}
