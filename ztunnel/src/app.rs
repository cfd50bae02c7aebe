//! ztunnel's process: flags, logging, runtime, signals. `main.rs` only calls [`main`] so
//! that tests can run the very same process (the lab re-executes its test binary as a
//! ztunnel).

use std::process::ExitCode;
use std::sync::Arc;

use crate::ca_client::{CaClient, CaClientConfig};
use crate::cert::{CertificateSource, LocalCa};
use crate::config::{CertificateAuthority, Config, ConfigError, LogFormat, USAGE, WorkloadSource};
use crate::control_plane::ControlPlane;
use crate::pods::PodRegistry;
use crate::proxy::ProxyInputs;
use crate::state::StateStore;
use crate::state::local::load_and_watch;
use crate::xds::{Backoff, NodeInfo, XdsClient, XdsConfig};
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
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
        let _ = shutdown_tx.send(true);
    });
    let control_plane = match &config.control_plane {
        Some(c) => Some(ControlPlane::new(c).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut tasks = Vec::new();
    let (store, mut xds_status) = match (&config.workloads, &control_plane) {
        (WorkloadSource::File(path), _) => {
            let (store, watcher) =
                load_and_watch(path.clone(), config.state_poll, shutdown.clone())
                    .map_err(|e| e.to_string())?;
            tasks.push(tokio::spawn(watcher));
            (store, None)
        }
        (WorkloadSource::Controller, Some(cp)) => {
            let store = Arc::new(StateStore::default());
            let node = NodeInfo {
                node_name: config.node_name.clone(),
                ztunnel_id: format!("ztunnel~{}~{}", config.node_name, std::process::id()),
            };
            let client = XdsClient::new(
                cp.clone(),
                XdsConfig {
                    node,
                    backoff: Backoff::default(),
                },
                store.clone(),
            );
            let status = client.status();
            tasks.push(tokio::spawn(client.run(shutdown.clone())));
            (store, Some(status))
        }
        (WorkloadSource::Controller, None) => {
            return Err("xDS needs the controller's address (--xds-address)".into());
        }
    };
    let certs: Arc<dyn CertificateSource> = match (&config.certificates, &control_plane) {
        (CertificateAuthority::LocalDir(dir), _) => {
            Arc::new(LocalCa::from_dir(dir).map_err(|e| e.to_string())?)
        }
        (CertificateAuthority::Controller, Some(cp)) => {
            Arc::new(CaClient::new(cp.clone(), CaClientConfig::default()))
        }
        (CertificateAuthority::Controller, None) => {
            return Err("the CA needs the controller's address (--xds-address)".into());
        }
    };
    let inputs = ProxyInputs {
        state: store,
        certs,
        trust_domain: config.trust_domain.clone(),
        pool: hbone::PoolConfig::default(),
    };
    tasks.push(tokio::spawn(crate::memory::trim_after_traffic(
        shutdown.clone(),
    )));
    let source = match &control_plane {
        Some(cp) => format!("controller {}", cp.address()),
        None => format!("state file {}", describe(&config.workloads)),
    };
    info!(zds = %config.zds_socket.display(), workloads = %source, tls = hbone::tls::BACKEND, "ztunnel started");
    // Pods are taken over only once the workload state is known: before that, every
    // destination would look like a non-mesh address and go out in plaintext.
    if let Some(status) = &mut xds_status {
        info!("waiting for the first xDS sync before taking over pods");
        let mut stop = shutdown.clone();
        let synced = tokio::select! {
            ok = async { status.wait_for(|s| s.synced).await.is_ok() } => ok,
            _ = async { drop(stop.wait_for(|s| *s).await) } => false,
        };
        if synced {
            info!("xDS synced: taking over pods");
        }
    }
    let (snapshots, _) = watch::channel(0);
    tasks.push(tokio::spawn(crate::zds_client::run(
        config.zds_socket.clone(),
        PodRegistry::new(inputs),
        snapshots,
        shutdown,
    )));

    let mut stop = stopping;
    let _ = stop.wait_for(|s| *s).await;
    for task in tasks {
        let _ = task.await;
    }
    info!("ztunnel stopped");
    Ok(())
}

fn describe(source: &WorkloadSource) -> String {
    match source {
        WorkloadSource::File(path) => path.display().to_string(),
        WorkloadSource::Controller => "xDS".to_owned(),
    }
}
