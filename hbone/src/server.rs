//! The CONNECT server: terminates mTLS + HTTP/2, asks the caller what to do with each
//! CONNECT, and pumps bytes to the chosen upstream.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::copy::{CopyError, Transferred, copy_tunnel, copy_until};
use crate::drain::Tracker;
use crate::settings::KeepaliveFailure;
use crate::stream::H2Stream;
use crate::tls::{ServerTls, TlsError};

mod tunnels;

use crate::{Authority, Baggage, Forwarded, H2Settings, Identity, TraceParent};
pub use tunnels::{StreamHandler, TunnelServer};

/// One CONNECT as the server saw it, after the tunnel's mTLS was verified.
#[derive(Debug, Clone)]
pub struct InboundConnect {
    /// The client's verified SPIFFE identity.
    pub peer_identity: Identity,
    /// The TCP peer of the tunnel connection (a ztunnel or waypoint, not the app).
    pub peer_addr: SocketAddr,
    pub authority: Authority,
    pub headers: HeaderMap,
}

impl InboundConnect {
    /// The parsed `baggage` header; `None` when absent or malformed.
    pub fn baggage(&self) -> Option<Baggage> {
        self.header("baggage")?.parse().ok()
    }

    /// The parsed `forwarded` header; `None` when absent or malformed.
    pub fn forwarded(&self) -> Option<Forwarded> {
        self.header("forwarded")?.parse().ok()
    }

    pub fn traceparent(&self) -> Option<TraceParent> {
        self.header("traceparent")?.parse().ok()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// What to do with a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect to this upstream and tunnel to it (503 if unreachable).
    Connect(SocketAddr),
    /// Refuse with this status: 400 malformed, 401 denied by policy, 503 unavailable.
    Reject(StatusCode),
}

/// The caller's policy: decides each CONNECT and hears how it ended.
pub trait ConnectHandler: Send + Sync + 'static {
    fn decide(&self, request: &InboundConnect) -> impl Future<Output = Decision> + Send;

    /// Resolves, with the reason, when an accepted tunnel must be cut off (e.g. policy no
    /// longer allows it); the tunnel is then reset and [`finished`](Self::finished) hears
    /// the reason as its error. By default a tunnel runs until either side ends it.
    fn revoked(&self, _request: &InboundConnect) -> impl Future<Output = io::Error> + Send {
        std::future::pending()
    }

    /// Called once per accepted tunnel when it is over, with the bytes moved
    /// (`a_to_b` = client -> upstream); also when the upstream was reached but the client
    /// went away before the `200` could be sent (nothing moved, the error says why).
    /// Every CONNECT that [`decide`](Self::decide) answered `Connect` thus ends here,
    /// unless its upstream could not be reached (503, the connector saw the error).
    fn finished(&self, _request: &InboundConnect, _outcome: &Result<Transferred, CopyError>) {}
}

/// Opens the upstream connection for an accepted CONNECT (e.g. inside a pod's netns with
/// the client's source address).
pub trait UpstreamConnector: Send + Sync + 'static {
    fn connect(
        &self,
        request: &InboundConnect,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// Bounds the TLS + HTTP/2 handshakes in flight on a listener: [`Server::serve`] waits
/// for a slot *before* accepting (so new connections wait in the kernel's listen backlog,
/// not in the server) and holds it until that connection's handshake is over.
pub trait HandshakeLimit: Send + Sync + 'static {
    /// Resolves with a slot once there is room for one more handshake; the slot is
    /// released when dropped.
    fn acquire(&self) -> BoxFuture<'_, Box<dyn Send>>;
}

/// Plain `connect()` from the server's own network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

impl UpstreamConnector for DirectConnector {
    async fn connect(&self, _request: &InboundConnect, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Server tuning.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub tls: ServerTls,
    pub h2: H2Settings,
    /// Bound on TCP accept -> TLS + HTTP/2 handshakes done.
    pub handshake_timeout: Duration,
    /// Concurrent CONNECT streams allowed per client connection.
    pub max_streams_per_connection: u32,
}

impl ServerConfig {
    pub fn new(tls: ServerTls) -> Self {
        ServerConfig {
            tls,
            h2: H2Settings::default(),
            handshake_timeout: Duration::from_secs(10),
            max_streams_per_connection: 1000,
        }
    }
}

/// Why a tunnel connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS handshake from {peer} failed: {source}")]
    Tls { peer: SocketAddr, source: TlsError },
    #[error("handshake from {peer} did not complete within {timeout:?}")]
    HandshakeTimeout { peer: SocketAddr, timeout: Duration },
    #[error("HTTP/2 from {peer} failed: {source}")]
    Http2 { peer: SocketAddr, source: h2::Error },
    #[error("tunnel connection from {peer} is dead: {failure}")]
    Keepalive {
        peer: SocketAddr,
        failure: KeepaliveFailure,
    },
}

/// An HBONE server that tunnels each accepted CONNECT to a TCP upstream: the
/// [`ConnectHandler`] decides, the [`UpstreamConnector`] connects. (A server that wants
/// the tunnels themselves runs a [`TunnelServer`] with its own [`StreamHandler`].)
pub struct Server<H, C = DirectConnector> {
    tunnels: TunnelServer<Proxy<H, C>>,
}

impl<H, C> Clone for Server<H, C> {
    fn clone(&self) -> Self {
        Server {
            tunnels: self.tunnels.clone(),
        }
    }
}

impl<H, C> std::fmt::Debug for Server<H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tunnels.fmt(f)
    }
}

impl<H: ConnectHandler, C: UpstreamConnector> Server<H, C> {
    pub fn new(config: ServerConfig, handler: H, connector: C) -> Self {
        let proxy = Proxy {
            handler: Arc::new(handler),
            connector: Arc::new(connector),
        };
        Server {
            tunnels: TunnelServer::new(config, proxy),
        }
    }

    /// See [`TunnelServer::handshake_limit`].
    pub fn handshake_limit(self, limit: Arc<dyn HandshakeLimit>) -> Self {
        Server {
            tunnels: self.tunnels.handshake_limit(limit),
        }
    }

    /// See [`TunnelServer::tracked`].
    pub fn tracked(self, tracker: Tracker) -> Self {
        Server {
            tunnels: self.tunnels.tracked(tracker),
        }
    }

    /// See [`TunnelServer::serve`].
    pub async fn serve(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        self.tunnels.serve(listener, shutdown).await
    }

    /// See [`TunnelServer::serve_connection`].
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), ServerError> {
        self.tunnels.serve_connection(tcp, peer, shutdown).await
    }
}

/// The stream handler of [`Server`]: decide, connect upstream, copy, report.
struct Proxy<H, C> {
    handler: Arc<H>,
    connector: Arc<C>,
}

impl<H: ConnectHandler, C: UpstreamConnector> StreamHandler for Proxy<H, C> {
    async fn serve(&self, incoming: IncomingConnect) {
        let decision = self.handler.decide(&incoming.request).await;
        let upstream_addr = match decision {
            Decision::Connect(addr) => addr,
            Decision::Reject(status) => {
                debug!(authority = %incoming.request.authority, %status, "CONNECT rejected");
                incoming.reject(status);
                return;
            }
        };
        let mut upstream = match self
            .connector
            .connect(&incoming.request, upstream_addr)
            .await
        {
            Ok(upstream) => upstream,
            Err(e) => {
                debug!(%upstream_addr, error = %e, "upstream unreachable");
                incoming.reject(StatusCode::SERVICE_UNAVAILABLE);
                return;
            }
        };
        let (request, accepted) = incoming.accept_parts();
        let mut tunnel = match accepted {
            Ok(tunnel) => tunnel,
            Err(e) => {
                debug!(error = %e, "client went away before the tunnel was up");
                let outcome = Err(CopyError {
                    transferred: Transferred::default(),
                    source: crate::stream::h2_to_io(e),
                });
                self.handler.finished(&request, &outcome);
                return;
            }
        };
        // `finished` reports client -> upstream as `a_to_b`.
        let swap = |t: Transferred| Transferred {
            a_to_b: t.b_to_a,
            b_to_a: t.a_to_b,
        };
        let revoked = self.handler.revoked(&request);
        let outcome = copy_until(copy_tunnel(&mut upstream, &mut tunnel), revoked)
            .await
            .map(swap)
            .map_err(|e| CopyError {
                transferred: swap(e.transferred),
                source: e.source,
            });
        self.handler.finished(&request, &outcome);
    }
}

/// Why a request on the tunnel port was answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedConnect {
    #[error("method {0} is not CONNECT")]
    NotConnect(Method),
    #[error("CONNECT has no authority")]
    MissingAuthority,
    #[error("CONNECT authority is malformed: {0}")]
    Authority(crate::AuthorityError),
}

/// A CONNECT stream awaiting an answer: the building block for servers that want the
/// tunnel itself (e.g. a waypoint speaking HTTP inside it) instead of a TCP upstream.
#[derive(Debug)]
pub struct IncomingConnect {
    pub request: InboundConnect,
    respond: h2::server::SendResponse<Bytes>,
    body: h2::RecvStream,
}

impl IncomingConnect {
    /// Validates method and authority; answers 400 itself when they are wrong.
    pub fn parse(
        request: Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        peer_identity: Identity,
        peer_addr: SocketAddr,
    ) -> Result<IncomingConnect, MalformedConnect> {
        let (parts, body) = request.into_parts();
        let authority = if parts.method != Method::CONNECT {
            Err(MalformedConnect::NotConnect(parts.method.clone()))
        } else {
            match parts.uri.authority() {
                Some(a) => a
                    .as_str()
                    .parse::<Authority>()
                    .map_err(MalformedConnect::Authority),
                None => Err(MalformedConnect::MissingAuthority),
            }
        };
        match authority {
            Ok(authority) => {
                let request = InboundConnect {
                    peer_identity,
                    peer_addr,
                    authority,
                    headers: parts.headers,
                };
                Ok(IncomingConnect {
                    request,
                    respond,
                    body,
                })
            }
            Err(e) => {
                debug!(error = %e, %peer_identity, %peer_addr, "malformed request on the tunnel port");
                send_status(&mut respond, StatusCode::BAD_REQUEST);
                Err(e)
            }
        }
    }

    /// Answers 200 and returns the tunnel.
    pub fn accept(self) -> Result<H2Stream, h2::Error> {
        self.accept_parts().1
    }

    /// [`Self::accept`], keeping the request (without copying its headers).
    fn accept_parts(mut self) -> (InboundConnect, Result<H2Stream, h2::Error>) {
        let accepted = self
            .respond
            .send_response(Response::new(()), false)
            .map(|send| H2Stream::new(send, self.body));
        (self.request, accepted)
    }

    /// Answers with `status` and ends the stream.
    pub fn reject(mut self, status: StatusCode) {
        send_status(&mut self.respond, status);
    }
}

fn send_status(respond: &mut h2::server::SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Err(e) = respond.send_response(response, true) {
        debug!(error = %e, %status, "could not send the CONNECT response");
    }
}
