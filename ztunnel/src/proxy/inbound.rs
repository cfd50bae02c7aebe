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

pub(super) async fn serve(
    context: Arc<PodContext>,
    tls: ServerTls,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let handler = InboundHandler {
        context: context.clone(),
        tunnels: TunnelStarts::default(),
    };
    let connector = PodUpstream { context };
    Server::new(ServerConfig::new(tls), handler, connector)
        .serve(listener, shutdown)
        .await;
}

struct InboundHandler {
    context: Arc<PodContext>,
    tunnels: TunnelStarts,
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
    ConnectionLog::inbound(
        &context.inputs.state.snapshot(),
        &context.info,
        &context.identity,
        request.peer_addr,
        Some(&request.peer_identity),
        Some(request.authority.to_string()),
    )
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
        let src = &request.peer_identity;
        let refusal = match self
            .context
            .admit(request.peer_addr.ip(), Some(src), target)
        {
            Ok(()) => return Decision::Connect(target),
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
        let context = self.context.clone();
        let (src_ip, src) = (request.peer_addr.ip(), request.peer_identity.clone());
        let target = request.authority.socket_addr();
        async move {
            match target {
                Some(target) => {
                    access_log::revoked(context.revoked(src_ip, Some(src), target).await)
                }
                None => std::future::pending().await, // never accepted
            }
        }
    }

    fn finished(&self, request: &InboundConnect, outcome: &Result<Transferred, CopyError>) {
        self.log(request)
            .copied(outcome)
            .lasted(self.tunnels.end())
            .emit();
        crate::memory::connection_closed();
    }
}

/// When each accepted tunnel started. hbone serves each CONNECT stream in a task of its
/// own, in which it calls [`ConnectHandler::revoked`] as the tunnel starts and
/// [`ConnectHandler::finished`] once as it ends: the task's id ties the two together.
#[derive(Default)]
struct TunnelStarts(Mutex<HashMap<tokio::task::Id, Instant>>);

impl TunnelStarts {
    fn start(&self) {
        if let Some(task) = tokio::task::try_id() {
            self.lock().insert(task, Instant::now());
        }
    }

    /// How long the current task's tunnel lasted; `None` if it was never started here.
    fn end(&self) -> Option<Duration> {
        let task = tokio::task::try_id()?;
        self.lock().remove(&task).map(|started| started.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<tokio::task::Id, Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Connects to the app inside the pod, from the tunnel client's own IP.
struct PodUpstream {
    context: Arc<PodContext>,
}

impl UpstreamConnector for PodUpstream {
    async fn connect(&self, request: &InboundConnect, addr: SocketAddr) -> io::Result<TcpStream> {
        let started = Instant::now();
        let connected = self
            .context
            .sockets
            .connect(addr, Some(request.peer_addr.ip()))
            .await;
        // hbone answers 503 and the tunnel never starts: its access line is written here.
        if let Err(e) = &connected {
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
