//! Inbound HBONE (15008): mTLS with the pod's certificate, then each CONNECT is checked
//! (the authority must be this pod: 400; the pod's authorization policies: 401) and
//! connected to the app with the client's source IP. Each CONNECT, refused or not, gets
//! its access line ([`crate::access_log`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hbone::copy::{CopyError, Transferred};
use hbone::tls::ServerTls;
use hbone::{ConnectHandler, Decision, InboundConnect, Server, ServerConfig, UpstreamConnector};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use super::{PodContext, Refusal};
use crate::access_log::{self, ConnectionLog, ResponseFlag};
use crate::limits::ConnectionSlot;

pub(super) async fn serve(
    context: Arc<PodContext>,
    tls: ServerTls,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let tunnels = Arc::new(Tunnels::default());
    let handler = InboundHandler {
        context: context.clone(),
        tunnels: tunnels.clone(),
    };
    let connections = context.inputs.connections.clone();
    // Handshakes wait for a slot before their connection is even accepted.
    let handshakes = context.limits.clone();
    let connector = PodUpstream { context, tunnels };
    // `shutdown` stops accepting and GOAWAYs the tunnel connections, whose tunnels in
    // flight go on; each connection is counted until it has closed.
    Server::new(ServerConfig::new(tls), handler, connector)
        .tracked(connections)
        .handshake_limit(handshakes)
        .serve(listener, shutdown)
        .await;
}

struct InboundHandler {
    context: Arc<PodContext>,
    tunnels: Arc<Tunnels>,
}

impl InboundHandler {
    /// The access line of `request`, so far.
    fn log(&self, request: &InboundConnect) -> ConnectionLog {
        access_log(&self.context, request)
    }
}

/// `request`'s access line, before anything happened: the tunnel peer and its verified
/// identity, this pod, and the CONNECT's target.
fn access_log(context: &PodContext, request: &InboundConnect) -> ConnectionLog {
    let state = context.inputs.state.snapshot();
    ConnectionLog::inbound(
        &state,
        &context.info,
        &context.identity,
        request.peer_addr,
        Some(&request.peer_identity),
        Some(request.authority.to_string()),
    )
    .addressed(&state, request.forwarded().and_then(|f| f.host))
    .counted(context)
}

impl ConnectHandler for InboundHandler {
    async fn decide(&self, request: &InboundConnect) -> Decision {
        let started = Instant::now();
        let Some(target) = request.authority.socket_addr() else {
            warn!(authority = %request.authority, src.identity = %request.peer_identity, "inbound CONNECT to a hostname; this pod only accepts ip:port");
            self.log(request)
                .failed(
                    ResponseFlag::NoRoute,
                    "CONNECT to a hostname; only ip:port is accepted",
                )
                .lasted(Some(started.elapsed()))
                .emit();
            return Decision::Reject(StatusCode::BAD_REQUEST);
        };
        // The cheapest refusal first: a pod at its limit spends nothing on policy.
        let Some(slot) = self.context.limits.try_connection("HBONE") else {
            let max = self.context.inputs.limits.config().max_inbound_connections;
            self.log(request)
                .failed(
                    ResponseFlag::UpstreamOverflow,
                    format_args!("the pod is at its limit of {max} concurrent inbound connections"),
                )
                .lasted(Some(started.elapsed()))
                .emit();
            return Decision::Reject(StatusCode::SERVICE_UNAVAILABLE);
        };
        let src = &request.peer_identity;
        let refusal = match self
            .context
            .admit(request.peer_addr.ip(), Some(src), target)
        {
            Ok(()) => {
                self.tunnels.admit(slot);
                return Decision::Connect(target);
            }
            Err(refusal) => refusal,
        };
        let status = match &refusal {
            Refusal::NotThisPod => {
                warn!(%target, src.identity = %src, "inbound CONNECT for an address that is not this pod");
                StatusCode::BAD_REQUEST
            }
            Refusal::Denied(denied) => {
                warn!(src.addr = %request.peer_addr, src.identity = %src, dst.addr = %target, dst.identity = %self.context.identity, policy = %denied.policy, reason = %denied.reason, "inbound CONNECT denied by authorization policy");
                StatusCode::UNAUTHORIZED
            }
        };
        self.log(request)
            .refused(&refusal)
            .lasted(Some(started.elapsed()))
            .emit();
        Decision::Reject(status)
    }

    /// Called as an accepted tunnel starts (hbone asks for its revocation future right
    /// after answering 200), which also starts its clock.
    fn revoked(&self, request: &InboundConnect) -> impl Future<Output = io::Error> + Send {
        self.tunnels.start();
        // Counted as opened now; active as long as the tunnel runs.
        let open = self.log(request).opened().open();
        let context = self.context.clone();
        let (src_ip, src) = (request.peer_addr.ip(), request.peer_identity.clone());
        let target = request.authority.socket_addr();
        async move {
            let _active = open;
            let by_policy = async {
                match target {
                    Some(target) => {
                        access_log::revoked(context.revoked(src_ip, Some(src), target).await)
                    }
                    None => std::future::pending().await, // never accepted
                }
            };
            tokio::select! {
                e = by_policy => e,
                () = context.cut() => io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed: the pod is gone or ztunnel's drain deadline passed",
                ),
            }
        }
    }

    fn finished(&self, request: &InboundConnect, outcome: &Result<Transferred, CopyError>) {
        let lasted = self.tunnels.end();
        self.log(request)
            .was_opened(lasted.is_some())
            .copied(outcome)
            .lasted(lasted)
            .emit();
        crate::memory::connection_closed();
    }
}

/// The admitted CONNECTs: each one's slot of the pod's connection limit, and when its
/// tunnel started. hbone serves each CONNECT stream in a task of its own, in which it
/// calls [`ConnectHandler::decide`], then either the connector (whose failure ends the
/// CONNECT with 503) or [`ConnectHandler::revoked`] as the tunnel starts and
/// [`ConnectHandler::finished`] once as it ends (also when the client left before the
/// 200): the task's id ties them together, and one of the two ends releases the slot.
#[derive(Default)]
struct Tunnels(Mutex<HashMap<tokio::task::Id, Tunnel>>);

struct Tunnel {
    _slot: ConnectionSlot,
    started: Option<Instant>,
}

impl Tunnels {
    /// The current task's CONNECT was admitted and holds `slot`.
    fn admit(&self, slot: ConnectionSlot) {
        if let Some(task) = tokio::task::try_id() {
            let tunnel = Tunnel {
                _slot: slot,
                started: None,
            };
            self.lock().insert(task, tunnel);
        }
    }

    /// The current task's tunnel starts.
    fn start(&self) {
        if let Some(task) = tokio::task::try_id()
            && let Some(tunnel) = self.lock().get_mut(&task)
        {
            tunnel.started = Some(Instant::now());
        }
    }

    /// Releases the current task's slot; returns how long its tunnel lasted (`None` if
    /// it never started).
    fn end(&self) -> Option<Duration> {
        let task = tokio::task::try_id()?;
        let tunnel = self.lock().remove(&task)?;
        tunnel.started.map(|started| started.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<tokio::task::Id, Tunnel>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Connects to the app inside the pod, from the tunnel client's own IP.
struct PodUpstream {
    context: Arc<PodContext>,
    tunnels: Arc<Tunnels>,
}

impl UpstreamConnector for PodUpstream {
    async fn connect(&self, request: &InboundConnect, addr: SocketAddr) -> io::Result<TcpStream> {
        let started = Instant::now();
        let connected = self
            .context
            .sockets
            .connect(addr, Some(request.peer_addr.ip()))
            .await;
        // hbone answers 503 and the tunnel never starts: its access line is written here,
        // and its slot released.
        if let Err(e) = &connected {
            self.tunnels.end();
            access_log(&self.context, request)
                .failed(
                    ResponseFlag::UpstreamFailure,
                    format_args!("connect to {addr}: {e}"),
                )
                .lasted(Some(started.elapsed()))
                .emit();
        }
        connected
    }
}
