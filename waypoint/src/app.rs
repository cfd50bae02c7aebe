//! The waypoint process: flags, logging, its certificate from the controller's CA, the
//! workload state and L7 config over one delta xDS stream, the HBONE listener, and the
//! metrics, readiness and admin endpoints. `main.rs` only calls [`main`], so tests can run
//! the very same process.

use std::process::ExitCode;
use std::sync::Arc;

use dataplane::ca_client::{CaClient, CaClientConfig};
use dataplane::cert::CertificateSource;
use dataplane::control_plane::ControlPlane;
use dataplane::dialer::{CertDialer, NoDelayConnector};
use dataplane::endpoint::{bind, json_response, serve_http, text, with_type};
use dataplane::state::{ServiceKey, StateStore, WaypointAddress};
use dataplane::xds::{Backoff, NodeInfo, XdsClient, XdsConfig};
use hbone::tls::ServerTls;
use hbone::{Identity, Pool, ServerConfig, TunnelServer};
use http::{Method, StatusCode};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::authz::Binding;
use crate::config::{CompileOptions, ConfigStore};
use crate::flags::{FlagError, Flags, USAGE};
use crate::forward::Upstreams;
use crate::inbound::{self, Inbound};
use crate::jwt::{HttpFetcher, JwksCache};
use crate::metrics::RequestMetrics;
use crate::proxy::Waypoint;
use crate::upstream::Clusters;
use crate::workers::Workers;
use crate::xds::L7Subscription;

pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let flags = match Flags::parse(args, |k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(FlagError::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("waypoint: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let format = if flags.json_logs {
        runtime::LogFormat::FlatJson
    } else {
        runtime::LogFormat::Text
    };
    let _ = runtime::init_logging_as(None, format);
    // This thread: the control plane and the accept loop; requests are served by the
    // worker threads (`--worker-threads`, crate::workers).
    runtime::block_on(Some(1), run(flags))
}

async fn run(flags: Flags) -> Result<(), String> {
    let stop = runtime::stop_on_signals()?;
    let listeners = Listeners {
        hbone: bind(flags.hbone_address, "HBONE").await?,
        metrics: bind(flags.metrics_address, "metrics").await?,
        readiness: bind(flags.readiness_address, "readiness").await?,
        admin: bind(flags.admin_address, "admin").await?,
    };
    serve(flags, listeners, stop).await
}

/// The waypoint's listening sockets, bound by the caller (ports already taken fail
/// before anything starts).
#[derive(Debug)]
pub struct Listeners {
    pub hbone: TcpListener,
    pub metrics: TcpListener,
    pub readiness: TcpListener,
    pub admin: TcpListener,
}

/// Runs the waypoint on `listeners` until `stop` turns true. The addresses in `flags`
/// are not bound again.
pub async fn serve(
    flags: Flags,
    listeners: Listeners,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let Listeners {
        hbone: hbone_listener,
        metrics: metrics_listener,
        readiness: readiness_listener,
        admin: admin_listener,
    } = listeners;
    let identity = Identity::new(
        &flags.trust_domain,
        &flags.namespace,
        &flags.service_account,
    )
    .map_err(|e| format!("no valid identity for the waypoint: {e}"))?;
    let control_plane = ControlPlane::new(&flags.control_plane).map_err(|e| e.to_string())?;

    let keys = JwksCache::new(Arc::new(HttpFetcher::new()));
    let options = CompileOptions {
        domain_suffix: flags.domain_suffix.clone(),
        trust_domain: flags.trust_domain.clone(),
    };
    let config = Arc::new(ConfigStore::new(options, keys));
    let state = Arc::new(StateStore::default());
    let node = NodeInfo {
        node_name: flags.node_name.clone(),
        ztunnel_id: format!(
            "waypoint~{}.{}~{}",
            flags.name,
            flags.namespace,
            std::process::id()
        ),
    };
    let updates = config.clone();
    let xds = XdsClient::new(
        control_plane.clone(),
        XdsConfig {
            node,
            backoff: Backoff::default(),
        },
        state.clone(),
    )
    .with_extra(Box::new(L7Subscription::new(move |objects| {
        updates.update(objects)
    })));
    let xds_status = xds.status();
    let mut tasks = vec![tokio::spawn(xds.run(stop.clone()))];

    let certs: Arc<dyn CertificateSource> =
        Arc::new(CaClient::new(control_plane, CaClientConfig::default()));
    info!(%identity, "fetching the waypoint's certificate");
    // The CA may not be reachable yet (the controller starting too): keep asking.
    let mut delay = std::time::Duration::from_millis(200);
    let cert = loop {
        let fetched = tokio::select! {
            cert = certs.certificate(&identity) => cert,
            () = runtime::stopped(stop.clone()) => return Ok(()),
        };
        match fetched {
            Ok(cert) => break cert,
            Err(e) => {
                tracing::warn!(%identity, error = %e, retry_in_ms = delay.as_millis() as u64, "no certificate yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = runtime::stopped(stop.clone()) => return Ok(()),
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(15));
            }
        }
    };
    let server_tls = ServerTls::new(cert).map_err(|e| e.to_string())?;
    let mut registry = Registry::default();
    let metrics = RequestMetrics::register(&mut registry);
    let mut addresses = vec![WaypointAddress::Service(ServiceKey {
        namespace: flags.namespace.clone(),
        hostname: format!(
            "{}.{}.svc.{}",
            flags.name, flags.namespace, flags.domain_suffix
        ),
    })];
    addresses.extend(flags.pod_ip.map(WaypointAddress::Ip));
    // One server per worker thread: everything shared but the upstream HBONE pool, which
    // each worker keeps to itself so that its requests never leave its thread.
    let clusters = Arc::new(Clusters::new());
    let servers = (0..flags.worker_threads)
        .map(|_| {
            let dialer = CertDialer::new(NoDelayConnector, certs.clone());
            let pool = Pool::new(hbone::PoolConfig::default(), Arc::new(dialer));
            let waypoint = Arc::new(Waypoint {
                binding: Binding {
                    root_namespace: flags.root_namespace.clone(),
                    ..Binding::new(&flags.namespace, &flags.name)
                },
                state: state.clone(),
                config: config.clone(),
                clusters: clusters.clone(),
                upstreams: Upstreams::new(pool, identity.clone()),
                metrics: metrics.clone(),
            });
            let inbound = Inbound {
                waypoint,
                identity: inbound::Identity {
                    addresses: addresses.clone(),
                },
                shutdown: stop.clone(),
            };
            TunnelServer::new(ServerConfig::new(server_tls.clone()), inbound)
        })
        .collect();
    let connections = hbone::drain::Tracker::new();
    let workers = Workers::start(servers, &connections, &stop, &mut registry)?;

    let registry = Arc::new(registry);
    tasks.push(tokio::spawn(prune_clusters(
        state.clone(),
        clusters.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(serve_http(
        "metrics",
        metrics_listener,
        move |request| {
            if !["/metrics", "/stats/prometheus"].contains(&request.uri().path()) {
                return text(StatusCode::NOT_FOUND, "metrics are at /metrics");
            }
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &registry) {
                Ok(()) => with_type(
                    StatusCode::OK,
                    out.into_bytes(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        },
        stop.clone(),
    )));
    let ready_status = xds_status.clone();
    tasks.push(tokio::spawn(serve_http(
        "readiness",
        readiness_listener,
        move |request| {
            if request.uri().path() != "/healthz/ready" {
                return text(StatusCode::NOT_FOUND, "readiness is at /healthz/ready");
            }
            if ready_status.borrow().synced {
                text(StatusCode::OK, "ready")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: waiting for the first xDS sync",
                )
            }
        },
        stop.clone(),
    )));
    let dump_config = config.clone();
    let dump_status = xds_status.clone();
    let dump_identity = identity.to_string();
    tasks.push(tokio::spawn(serve_http(
        "admin",
        admin_listener,
        move |request| {
            if request.method() != Method::GET || request.uri().path() != "/config_dump" {
                return text(StatusCode::NOT_FOUND, "GET /config_dump");
            }
            let current = dump_config.current();
            let status = dump_status.borrow().clone();
            let body = json!({
                "identity": dump_identity,
                "xds": {
                    "connected": status.connected,
                    "synced": status.synced,
                    "applied": status.applied,
                    "rejected": status.rejected,
                    "lastRejection": status.last_rejection,
                },
                "destinationRules": current.destination_rules.len(),
                "authorizationPolicies": current.policies.iter().map(|p| p.key()).collect::<Vec<_>>(),
                "problems": current.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            json_response(StatusCode::OK, &body)
        },
        stop.clone(),
    )));

    tasks.push(tokio::spawn(dataplane::cert::refresh::keep_fresh(
        server_tls.clone(),
        certs.clone(),
        dataplane::cert::refresh::CHECK_INTERVAL,
        stop.clone(),
    )));
    info!(name = %flags.name, namespace = %flags.namespace, %identity, hbone = %flags.hbone_address, workers = flags.worker_threads, "waypoint started");
    workers.accept(hbone_listener, stop.clone()).await;
    // Every tunnel connection got a GOAWAY and every HTTP connection inside a tunnel was
    // told to close after its current request: wait for them, up to the drain deadline.
    let deadline = drain_timeout();
    info!(
        open = connections.active(),
        timeout_s = deadline.as_secs_f64(),
        "draining"
    );
    if tokio::time::timeout(deadline, connections.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.active(),
            "connections still open at the drain deadline; closing them"
        );
    }
    // The workers drop what is still open as they end.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    for task in tasks {
        let _ = task.await;
    }
    info!("waypoint stopped");
    Ok(())
}

/// How long a stopping waypoint lets requests in flight finish: the pod's termination
/// grace period minus a second (`TERMINATION_GRACE_PERIOD_SECONDS`, as ztunnel reads
/// it), else 29 s.
fn drain_timeout() -> std::time::Duration {
    let grace = std::env::var("TERMINATION_GRACE_PERIOD_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0);
    std::time::Duration::from_secs_f64(grace.map_or(29.0, |s| s - 1.0))
}

/// After every workload-state update, drops the clusters of services and workloads that
/// are gone, so that churn does not grow the cluster table; ends on `stop`.
async fn prune_clusters(
    state: Arc<dataplane::state::StateStore>,
    clusters: Arc<Clusters>,
    stop: watch::Receiver<bool>,
) {
    let mut changes = state.subscribe();
    let stopped = runtime::stopped(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = &mut stopped => return,
        }
        clusters.retain_known(&state.snapshot());
    }
}
