//! Inbound HBONE (15008): mTLS with the pod's certificate, then each CONNECT is checked
//! (the authority must be this pod: 400; the pod's authorization policies: 401) and
//! connected to the app with the client's source IP.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hbone::copy::{CopyError, Transferred};
use hbone::tls::ServerTls;
use hbone::{ConnectHandler, Decision, InboundConnect, Server, ServerConfig, UpstreamConnector};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{PodContext, Refusal};

pub(super) async fn serve(
    context: Arc<PodContext>,
    tls: ServerTls,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let handler = InboundHandler {
        context: context.clone(),
    };
    let connector = PodUpstream { context };
    Server::new(ServerConfig::new(tls), handler, connector)
        .serve(listener, shutdown)
        .await;
}

struct InboundHandler {
    context: Arc<PodContext>,
}

impl ConnectHandler for InboundHandler {
    async fn decide(&self, request: &InboundConnect) -> Decision {
        let Some(target) = request.authority.socket_addr() else {
            warn!(authority = %request.authority, src.identity = %request.peer_identity, "inbound CONNECT to a hostname; this pod only accepts ip:port");
            return Decision::Reject(StatusCode::BAD_REQUEST);
        };
        let src = &request.peer_identity;
        match self
            .context
            .admit(request.peer_addr.ip(), Some(src), target)
        {
            Ok(()) => Decision::Connect(target),
            Err(Refusal::NotThisPod) => {
                warn!(%target, src.identity = %src, "inbound CONNECT for an address that is not this pod");
                Decision::Reject(StatusCode::BAD_REQUEST)
            }
            Err(Refusal::Denied(denied)) => {
                warn!(src.addr = %request.peer_addr, src.identity = %src, dst.addr = %target, dst.identity = %self.context.identity, policy = %denied.policy, reason = %denied.reason, "inbound CONNECT denied by authorization policy");
                Decision::Reject(StatusCode::UNAUTHORIZED)
            }
        }
    }

    fn revoked(&self, request: &InboundConnect) -> impl Future<Output = io::Error> + Send {
        let context = self.context.clone();
        let (src_ip, src) = (request.peer_addr.ip(), request.peer_identity.clone());
        let target = request.authority.socket_addr();
        async move {
            match target {
                Some(target) => context.revoked(src_ip, Some(src), target).await,
                None => std::future::pending().await, // never accepted
            }
        }
    }

    fn finished(&self, request: &InboundConnect, outcome: &Result<Transferred, CopyError>) {
        let (transferred, error) = match outcome {
            Ok(t) => (*t, None),
            Err(e) => (e.transferred, Some(e.source.to_string())),
        };
        info!(
            src.addr = %request.peer_addr,
            src.identity = %request.peer_identity,
            dst.addr = %request.authority,
            dst.identity = %self.context.identity,
            bytes_received = transferred.a_to_b,
            bytes_sent = transferred.b_to_a,
            error = error.as_deref().unwrap_or(""),
            "inbound connection closed"
        );
        crate::memory::connection_closed();
    }
}

/// Connects to the app inside the pod, from the tunnel client's own IP.
struct PodUpstream {
    context: Arc<PodContext>,
}

impl UpstreamConnector for PodUpstream {
    async fn connect(&self, request: &InboundConnect, addr: SocketAddr) -> io::Result<TcpStream> {
        self.context
            .sockets
            .connect(addr, Some(request.peer_addr.ip()))
            .await
    }
}
