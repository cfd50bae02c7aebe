//! The connection side of an HBONE server, shared by every kind of server: accept, mTLS,
//! HTTP/2, keepalive PINGs, GOAWAY on shutdown, then one task per CONNECT stream handed
//! to a [`StreamHandler`] (ztunnel's [`Server`](super::Server) copies it to a TCP
//! upstream; a waypoint speaks HTTP inside it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{HandshakeLimit, IncomingConnect, ServerConfig, ServerError};
use crate::Identity;
use crate::drain::Tracker;
use crate::settings::keepalive;

/// What a server does with each CONNECT stream, once the tunnel connection's mTLS is
/// verified. [`IncomingConnect::parse`] has already answered malformed ones (400).
pub trait StreamHandler: Send + Sync + 'static {
    fn serve(&self, incoming: IncomingConnect) -> impl Future<Output = ()> + Send;
}

/// Accepts HBONE connections and hands their CONNECT streams to `S`.
pub struct TunnelServer<S> {
    config: Arc<ServerConfig>,
    streams: Arc<S>,
    /// Counts the connections being served (see [`TunnelServer::tracked`]).
    tracker: Option<Tracker>,
    /// Bounds the handshakes in flight (see [`TunnelServer::handshake_limit`]).
    handshake_limit: Option<Arc<dyn HandshakeLimit>>,
}

impl<S> Clone for TunnelServer<S> {
    fn clone(&self) -> Self {
        TunnelServer {
            config: self.config.clone(),
            streams: self.streams.clone(),
            tracker: self.tracker.clone(),
            handshake_limit: self.handshake_limit.clone(),
        }
    }
}

impl<S> std::fmt::Debug for TunnelServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("identity", self.config.tls.identity())
            .finish()
    }
}

impl<S: StreamHandler> TunnelServer<S> {
    pub fn new(config: ServerConfig, streams: S) -> Self {
        TunnelServer {
            config: Arc::new(config),
            streams: Arc::new(streams),
            tracker: None,
            handshake_limit: None,
        }
    }

    /// Bounds the handshakes in flight in [`Self::serve`]: without it every accepted
    /// connection starts its handshake at once.
    pub fn handshake_limit(mut self, limit: Arc<dyn HandshakeLimit>) -> Self {
        self.handshake_limit = Some(limit);
        self
    }

    /// Counts every accepted connection in `tracker` until it is over: after `serve`
    /// returns (shutdown), [`Tracker::idle`] says when the last GOAWAYed connection has
    /// finished its tunnels and closed.
    pub fn tracked(mut self, tracker: Tracker) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Accepts tunnel connections until `shutdown` becomes true. Open connections then get
    /// a GOAWAY and their in-flight tunnels run to completion.
    pub async fn serve(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        let mut stop = shutdown.clone();
        loop {
            let slot = match &self.handshake_limit {
                Some(limit) => tokio::select! {
                    slot = limit.acquire() => Some(slot),
                    _ = signalled(&mut stop) => return,
                },
                None => None,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let server = self.clone();
                        let shutdown = shutdown.clone();
                        let guard = self.tracker.as_ref().map(Tracker::guard);
                        tokio::spawn(async move {
                            let _guard = guard;
                            if let Err(e) = server.serve_connection_with(tcp, peer, shutdown, slot).await {
                                debug!(error = %e, "tunnel connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed on the HBONE listener");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = signalled(&mut stop) => return,
            }
        }
    }

    /// Serves one accepted TCP connection: mTLS, HTTP/2, then one task per CONNECT.
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), ServerError> {
        self.serve_connection_with(tcp, peer, shutdown, None).await
    }

    /// [`Self::serve_connection`], releasing `handshake_slot` once the handshakes are over.
    async fn serve_connection_with(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
        handshake_slot: Option<Box<dyn Send>>,
    ) -> Result<(), ServerError> {
        let _ = tcp.set_nodelay(true);
        let timeout = self.config.handshake_timeout;
        let handshake = async {
            let (tls, identity) = self
                .config
                .tls
                .accept(tcp)
                .await
                .map_err(|source| ServerError::Tls { peer, source })?;
            let conn = self
                .config
                .h2
                .server_builder(self.config.max_streams_per_connection)
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|source| ServerError::Http2 { peer, source })?;
            Ok::<_, ServerError>((conn, identity))
        };
        let (mut conn, identity) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| ServerError::HandshakeTimeout { peer, timeout })??;
        drop(handshake_slot);
        debug!(%peer, %identity, "tunnel connection established");
        let conn_ping_pong = conn.ping_pong();
        // PING the client too: a vanished client host must not pin this connection forever.
        let (interval, ping_timeout) = (
            self.config.h2.keepalive_interval,
            self.config.h2.keepalive_timeout,
        );
        let keepalive = async move {
            match conn_ping_pong {
                Some(pp) => keepalive(pp, interval, ping_timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(keepalive);
        let mut draining = false;
        loop {
            tokio::select! {
                failure = &mut keepalive => return Err(ServerError::Keepalive { peer, failure }),
                next = conn.accept() => match next {
                    None => return Ok(()),
                    Some(Err(source)) => return Err(ServerError::Http2 { peer, source }),
                    Some(Ok((request, respond))) => {
                        let streams = self.streams.clone();
                        let identity = identity.clone();
                        tokio::spawn(async move { serve_stream(&*streams, request, respond, identity, peer).await });
                    }
                },
                _ = signalled(&mut shutdown), if !draining => {
                    draining = true;
                    conn.graceful_shutdown();
                }
            }
        }
    }
}

async fn serve_stream<S: StreamHandler>(
    streams: &S,
    request: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    peer_identity: Identity,
    peer_addr: SocketAddr,
) {
    if let Ok(incoming) = IncomingConnect::parse(request, respond, peer_identity, peer_addr) {
        streams.serve(incoming).await;
    }
}

/// Resolves once `shutdown` is true (or its sender is gone, which also means stop).
async fn signalled(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
