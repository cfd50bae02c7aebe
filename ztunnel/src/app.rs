//! ztunnel's process: flags, logging, runtime, signals, the admin and readiness
//! endpoints. `main.rs` only calls [`main`] so that tests can run the very same process
//! (the lab re-executes its test binary as a ztunnel).

use std::process::ExitCode;
use std::sync::Arc;

use crate::admin::{self, AdminState};
use crate::ca_client::{CaClient, CaClientConfig};
use crate::cert::{CertificateSource, LocalCa};
use crate::config::{CertificateAuthority, Config, ConfigError, LogFormat, USAGE, WorkloadSource};
use crate::control_plane::ControlPlane;
use crate::metrics::{self, Metrics};
use crate::pods::PodRegistry;
use crate::proxy::ProxyInputs;
use crate::readiness::{self, Readiness};
use crate::state::StateStore;
use crate::state::local::load_and_watch;
use crate::xds::{Backoff, NodeInfo, XdsClient, XdsConfig};
use tokio::sync::watch;
use tracing::info;

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
    // The level comes from RUST_LOG (and `POST /logging` later); there is no filter flag
    // to get wrong. JSON is flat: access lines' fields at the top level.
    let format = match config.log_format {
        LogFormat::Text => runtime::LogFormat::Text,
        LogFormat::Json => runtime::LogFormat::FlatJson,
    };
    let _ = runtime::init_logging_as(None, format);
    raise_open_files_limit();
    runtime::block_on(Some(config.worker_threads), run(config))
}

/// Every proxied connection costs ztunnel two descriptors (three with a pooled tunnel
/// starting), so the usual soft limit of 1024 would cap a node at a few hundred
/// connections: raise the soft limit to the hard one, as Envoy and Istio's ztunnel do.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}

/// The process's shutdown channel: it turns true at the first SIGTERM or SIGINT, or when
/// [`Shutdown::trigger`]ed (`POST /quitquitquit`); every task stops on it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A channel only [`Self::trigger`] turns true.
    pub fn new() -> Self {
        Shutdown {
            sender: Arc::new(watch::Sender::new(false)),
        }
    }

    /// A channel that SIGTERM and SIGINT also turn true, exactly as
    /// [`runtime::stop_on_signals`] (which logs the signal) does. Must be called inside
    /// the runtime.
    pub fn on_signals() -> Result<Self, String> {
        let signals = runtime::stop_on_signals()?;
        let shutdown = Self::new();
        let (forward, mut stopped) = (shutdown.clone(), shutdown.receiver());
        tokio::spawn(async move {
            tokio::select! {
                () = runtime::stopped(signals) => forward.trigger(),
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
        Ok(shutdown)
    }

    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }

    /// Starts the graceful stop (idempotent).
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }
}

async fn run(config: Config) -> Result<(), String> {
    // Two phases: SIGTERM (or /quitquitquit) starts the drain, and once the pods'
    // connections are over (or the drain deadline passed) everything else stops.
    let stop = Shutdown::on_signals()?;
    let draining = stop.receiver();
    let exit = Shutdown::new();
    let shutdown = exit.receiver();
    // The ports before anything else: one already taken is a startup error naming it.
    let admin_listener = admin::bind(config.admin_address, "admin").await?;
    let readiness_listener = admin::bind(config.readiness_address, "readiness").await?;
    let metrics_listener = admin::bind(config.metrics_address, "metrics").await?;
    // Ready once the node agent's snapshot (the pods to serve) is applied, and the
    // workloads are known: the state file loaded, or the first xDS response of each type
    // applied.
    let readiness = Readiness::new();
    // Bumped by the ZDS client each time it has applied a snapshot from the node agent.
    let (snapshots, _) = watch::channel(0);
    readiness.require_zds_snapshot(snapshots.subscribe());
    let control_plane = match &config.control_plane {
        Some(c) => Some(ControlPlane::new(c).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut tasks = Vec::new();
    let (store, mut xds_status) = match (&config.workloads, &control_plane) {
        (WorkloadSource::File(path), _) => {
            let loaded = readiness.gate("waiting for the workload state file");
            let (store, watcher) =
                load_and_watch(path.clone(), config.state_poll, shutdown.clone())
                    .map_err(|e| e.to_string())?;
            loaded.open();
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
            readiness.require_xds_sync(status.clone());
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
    let limits = Arc::new(crate::limits::Limits::new(config.limits));
    let metrics = Metrics::new().with(|registry| limits.register(registry));
    let inputs = ProxyInputs {
        state: store.clone(),
        certs: certs.clone(),
        trust_domain: config.trust_domain.clone(),
        pool: hbone::PoolConfig::default(),
        metrics: metrics.tcp().clone(),
        connections: hbone::drain::Tracker::new(),
        limits,
    };
    let connections = inputs.connections.clone();
    let registry = PodRegistry::new(inputs);
    let readiness_view = readiness.clone();
    let (admin_address, readiness_address) = (
        local_address(&admin_listener),
        local_address(&readiness_listener),
    );
    let metrics_address = local_address(&metrics_listener);
    let metrics = metrics.with_status(metrics::Status {
        xds: xds_status.clone(),
        certs: certs.clone(),
        pods: registry.view(),
    });
    tasks.push(tokio::spawn(metrics::serve(
        metrics_listener,
        Arc::new(metrics),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(readiness::serve(
        readiness_listener,
        readiness.clone(),
        shutdown.clone(),
    )));
    let state_changes = store.subscribe();
    tasks.push(tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            state: store,
            certs,
            pods: registry.view(),
            xds: xds_status.clone(),
            readiness,
            shutdown: stop,
            log_filter: runtime::log_filter(),
        },
    )));
    // The trimmer below gives freed memory back after traffic, so the allocator need not.
    runtime::hold_freed_heap_until_trim();
    tasks.push(tokio::spawn(crate::memory::trim_after_traffic(
        state_changes,
        shutdown.clone(),
    )));
    let source = match (&config.workloads, &control_plane) {
        (WorkloadSource::File(path), _) => format!("state file {}", path.display()),
        (WorkloadSource::Controller, Some(cp)) => format!("controller {}", cp.address()),
        (WorkloadSource::Controller, None) => "controller".to_owned(),
    };
    info!(zds = %config.zds_socket.display(), workloads = %source, tls = hbone::tls::BACKEND, admin = %admin_address, readiness = %readiness_address, metrics = %metrics_address, "ztunnel started");
    // Pods are taken over only once the workload state is known: before that, every
    // destination would look like a non-mesh address and go out in plaintext.
    if let Some(status) = &mut xds_status {
        info!("waiting for the first xDS sync before taking over pods");
        let mut stop = draining.clone();
        let synced = tokio::select! {
            ok = async { status.wait_for(|s| s.synced).await.is_ok() } => ok,
            _ = async { drop(stop.wait_for(|s| *s).await) } => false,
        };
        if synced {
            info!("xDS synced: taking over pods");
        }
    }
    let (cut_now, cut_now_rx) = watch::channel(false);
    let drain = crate::zds_client::Drain {
        timeout: config.drain_timeout,
        connections,
        cut_now: cut_now_rx,
    };
    let pods = tokio::spawn(crate::zds_client::run(
        config.zds_socket.clone(),
        registry,
        snapshots,
        draining.clone(),
        drain,
    ));

    runtime::stopped(draining).await;
    // The kubelet (and a node-local load balancer) should stop counting on this one.
    readiness_view.set_draining();
    // A second SIGTERM / SIGINT (an impatient Ctrl-C) ends the drain at once.
    if let Ok(again) = runtime::stop_on_signals() {
        tokio::spawn(async move {
            runtime::stopped(again).await;
            cut_now.send_replace(true);
        });
    }
    let _ = pods.await;
    exit.trigger();
    for task in tasks {
        let _ = task.await;
    }
    info!("ztunnel stopped");
    Ok(())
}

fn local_address(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string())
}
