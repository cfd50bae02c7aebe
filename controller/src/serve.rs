//! `controller run`: the control plane as a process. Manifests are watched and translated
//! ([`crate::pipeline`]); delta xDS and the CA are served together on one TLS port (15012)
//! with a certificate from the mesh CA; the admin endpoint shows problems, the translated
//! config and the connected proxies.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::admin::{self, Page};
use crate::auth::{NodeTokens, TokenFileError};
use crate::ca::{CaLoadError, CaService, DEFAULT_SERVING_NAME, MeshCa, SigningPolicy};
use crate::pipeline::{self, Debounce, Outputs, Published, PublishedAuthorizer};
use crate::source::ConfigSource;
use crate::source::dir::DirectorySource;
use crate::translate::{MeshOptions, render};
use crate::xds::{Snapshot, XdsServer};

mod flags;

pub use flags::{FlagError, RUN_USAGE, RunFlags};

/// xDS + CA port, as istiod's.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:15012";
/// Admin endpoint (istiod's monitoring port), localhost only by default.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15014";

/// Everything `controller run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub manifests: PathBuf,
    /// Where a generated root CA is kept across restarts.
    pub state_dir: PathBuf,
    /// Node bearer tokens (see [`crate::auth`]).
    pub tokens: PathBuf,
    /// A user-supplied CA in Istio's `cacerts` layout, instead of a generated root.
    pub plugged_ca: Option<PathBuf>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub mesh: MeshOptions,
    pub signing: SigningPolicy,
    /// Extra names and addresses for the serving certificate, besides
    /// `istiod.istio-system.svc` and the listen address.
    pub server_names: Vec<String>,
    pub server_ips: Vec<IpAddr>,
    pub debounce: Debounce,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error("the token file {0} names no node: no proxy could connect")]
    NoTokens(PathBuf),
    #[error(transparent)]
    Ca(#[from] CaLoadError),
    #[error("cannot issue the controller's serving certificate: {0}")]
    ServingCertificate(String),
    #[error("cannot listen on {addr} ({what}): {source}; is another controller running?")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("TLS setup for {0} failed: {1}")]
    Tls(SocketAddr, String),
    #[error("the xDS/CA server on {0} failed: {1}")]
    Grpc(SocketAddr, String),
}

/// Binds the configured addresses and runs until `shutdown` turns true.
pub async fn run(config: RunConfig, shutdown: watch::Receiver<bool>) -> Result<(), ServeError> {
    let listeners = Listeners {
        grpc: bind(config.listen, "xDS and CA").await?,
        admin: bind(config.admin, "admin").await?,
    };
    serve(config, listeners, shutdown).await
}

/// The sockets the controller serves on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

/// Runs on already bound sockets until `shutdown` turns true. `config.listen` and
/// `config.admin` are used only for the serving certificate's IP and for logs.
pub async fn serve(
    config: RunConfig,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let tokens = NodeTokens::from_file(&config.tokens)?;
    if tokens.is_empty() {
        return Err(ServeError::NoTokens(config.tokens.clone()));
    }
    let ca = match &config.plugged_ca {
        Some(dir) => MeshCa::from_plugged_in(dir)?,
        None => MeshCa::load_or_create(&config.state_dir)?,
    }
    .with_policy(config.signing.clone());
    let ca = Arc::new(ca);
    let tls = serving_identity(&ca, &config)?;

    let (published_tx, published) = watch::channel(Arc::new(Published::default()));
    let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::builder().build()));
    let (events_tx, events) = mpsc::channel(1024);
    let source = DirectorySource::new(&config.manifests);
    info!(source = %source.describe(), "watching config");
    let source = tokio::spawn(source.run(events_tx, shutdown.clone()));
    let pipeline = tokio::spawn(pipeline::run(
        events,
        config.mesh.clone(),
        config.debounce,
        Outputs {
            published: published_tx,
            snapshots: snapshots_tx,
        },
    ));
    let xds = XdsServer::new(snapshots, Arc::new(tokens.clone()));
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        pages(published.clone(), xds.clone()),
        shutdown.clone(),
    ));

    // Proxies are served only once the first full translation exists: a reconnecting
    // proxy must never be told that everything it holds was deleted.
    let mut first = published.clone();
    let mut stop = shutdown.clone();
    let stopped = tokio::select! {
        _ = async { drop(first.wait_for(|p| p.is_synced()).await) } => false,
        _ = async { drop(stop.wait_for(|s| *s).await) } => true,
    };
    if stopped {
        let _ = tokio::join!(source, pipeline, admin);
        return Ok(());
    }
    let authorizer = Arc::new(PublishedAuthorizer(published.clone()));
    let ca_service = CaService::new(ca.clone(), tokens, authorizer);
    let listen = config.listen;
    info!(
        %listen,
        admin = %config.admin,
        trust_domain = %config.mesh.trust_domain,
        "controller ready: serving xDS and the CA"
    );
    let mut stop = shutdown.clone();
    let served = Server::builder()
        .tls_config(tls)
        .map_err(|e| ServeError::Tls(listen, e.to_string()))?
        .add_service(xds.service())
        .add_service(ca_service.into_server())
        .serve_with_incoming_shutdown(TcpIncoming::from(listeners.grpc), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    let _ = tokio::join!(source, pipeline, admin);
    served.map_err(|e| ServeError::Grpc(listen, e.to_string()))?;
    info!("controller stopped");
    Ok(())
}

fn serving_identity(ca: &MeshCa, config: &RunConfig) -> Result<ServerTlsConfig, ServeError> {
    let mut names: Vec<&str> = vec![DEFAULT_SERVING_NAME];
    names.extend(config.server_names.iter().map(String::as_str));
    let mut ips = config.server_ips.clone();
    if !config.listen.ip().is_unspecified() {
        ips.push(config.listen.ip());
    }
    let cert = ca
        .serving_certificate(&names, &ips)
        .map_err(|e| ServeError::ServingCertificate(e.to_string()))?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert.cert_chain_pem, cert.key_pem)))
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, what, source })
}

fn pages(published: watch::Receiver<Arc<Published>>, xds: XdsServer) -> Vec<Page> {
    let ready = published.clone();
    let problems = published.clone();
    let config = published;
    vec![
        Page::new(
            "/ready",
            "200 once the manifests are loaded and proxies are served",
            move || {
                let p = ready.borrow().clone();
                let status = if p.is_synced() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (
                    status,
                    serde_json::json!({"ready": p.is_synced(), "generation": p.generation}),
                )
            },
        ),
        Page::new(
            "/debug/problems",
            "every invalid manifest or untranslatable object, with file, object and field",
            move || {
                let p = problems.borrow().clone();
                let list: Vec<serde_json::Value> = p
                    .problems
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        v["text"] = e.to_string().into();
                        v
                    })
                    .collect();
                (StatusCode::OK, serde_json::json!({"problems": list}))
            },
        ),
        Page::new(
            "/debug/config",
            "what proxies are sent: workloads, services and L4 policies",
            move || {
                let p = config.borrow().clone();
                (StatusCode::OK, render(&p.translation()))
            },
        ),
        Page::new(
            "/debug/connections",
            "connected proxies and what each acknowledged or rejected",
            move || match serde_json::to_value(xds.connections()) {
                Ok(v) => (StatusCode::OK, serde_json::json!({"connections": v})),
                Err(e) => {
                    warn!("cannot render xDS connections: {e}");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"error": e.to_string()}),
                    )
                }
            },
        ),
    ]
}
