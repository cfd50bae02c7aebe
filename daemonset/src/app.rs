//! The node agent's process: flags, logging, runtime, signals. `main.rs` only calls
//! [`main`], so tests can run the very same process (the lab re-executes its test binary
//! as a node agent).

use std::process::ExitCode;

use crate::config::{Config, ConfigError, USAGE};
use crate::{Agent, AgentConfig, NftCapture, PodListFile, ZdsHub, ZdsServer, ZdsServerConfig};
use tokio::sync::watch;
use tracing::info;

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
    if let Err(e) = runtime::init_logging(config.log_level.as_deref(), false) {
        eprintln!("node-agent: --log-level: {e}");
        return ExitCode::from(2);
    }
    runtime::block_on(None, run(config))
}

async fn run(config: Config) -> Result<(), String> {
    let stop = runtime::stop_on_signals()?;
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
    runtime::stopped(stop).await;
    stop_agent.send_replace(true);
    agent.await.map_err(|e| format!("agent task: {e}"))?;
    stop_server.send_replace(true);
    server.await.map_err(|e| format!("ZDS server task: {e}"))?;
    Ok(())
}
