//! The CONNECT client: opens tunnels over one HTTP/2 connection inside mTLS.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::settings::{KeepaliveFailure, keepalive};
use crate::stream::H2Stream;
use crate::tls::TlsError;
use crate::{Authority, Baggage, Forwarded, H2Settings, TraceParent};

/// What to ask of the far end: where to connect and who is asking.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub authority: Authority,
    pub baggage: Option<Baggage>,
    pub forwarded: Option<Forwarded>,
    /// Trace context; a fresh one is generated when absent.
    pub traceparent: Option<TraceParent>,
}

impl ConnectRequest {
    pub fn new(authority: impl Into<Authority>) -> Self {
        ConnectRequest {
            authority: authority.into(),
            baggage: None,
            forwarded: None,
            traceparent: None,
        }
    }

    pub fn with_baggage(mut self, baggage: Baggage) -> Self {
        self.baggage = Some(baggage);
        self
    }

    pub fn with_forwarded(mut self, forwarded: Forwarded) -> Self {
        self.forwarded = Some(forwarded);
        self
    }

    pub fn with_traceparent(mut self, traceparent: TraceParent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    fn to_http(&self) -> Result<Request<()>, ConnectError> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(self.authority.to_string())
            .version(http::Version::HTTP_2)
            .body(())
            .map_err(|e| ConnectError::InvalidRequest(e.to_string()))?;
        let headers = req.headers_mut();
        let mut set = |name: &'static str, value: String| -> Result<(), ConnectError> {
            let v = HeaderValue::try_from(value)
                .map_err(|e| ConnectError::InvalidRequest(format!("{name}: {e}")))?;
            headers.insert(name, v);
            Ok(())
        };
        if let Some(b) = &self.baggage {
            set("baggage", b.to_string())?;
        }
        if let Some(f) = &self.forwarded {
            set("forwarded", f.to_string())?;
        }
        let trace = self.traceparent.unwrap_or_else(TraceParent::new_random);
        set("traceparent", trace.to_string())?;
        Ok(req)
    }
}

/// Why a tunnel could not be opened. [`ConnectError::status`] gives the HTTP status when
/// the far end answered.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connect to {addr} failed: {source} (is port 15008 reachable?)")]
    Tcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("establishing the tunnel connection timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(h2::Error),
    #[error("the tunnel connection is closed")]
    ConnectionClosed,
    #[error("CONNECT was refused with status {status}")]
    Rejected { status: StatusCode },
    #[error("CONNECT stream failed: {0}")]
    Stream(h2::Error),
    #[error("could not build the CONNECT request: {0}")]
    InvalidRequest(String),
    #[error("no client certificate for {0}")]
    NoCertificate(String),
    /// The pooled handshake this request waited on failed.
    #[error(transparent)]
    Shared(Arc<ConnectError>),
}

impl ConnectError {
    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ConnectError::Rejected { status } => Some(*status),
            ConnectError::Shared(inner) => inner.status(),
            _ => None,
        }
    }

    /// True when nothing was sent on the connection, so a retry on another one is safe.
    pub(crate) fn is_connection_unusable(&self) -> bool {
        matches!(self, ConnectError::ConnectionClosed)
    }
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Shared state of one client connection, watched by the pool.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    pub(crate) id: u64,
    closed: AtomicBool,
}

impl ConnectionState {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// One HTTP/2 client connection over mTLS; cheap to clone, each clone opens streams on
/// the same connection.
#[derive(Debug, Clone)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    pub(crate) state: Arc<ConnectionState>,
}

/// Drives a connection's frames and keepalive; resolves when the connection is over.
pub type ConnectionDriver = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Connection {
    /// Runs the HTTP/2 handshake over an established TLS stream. The returned driver must
    /// be polled (spawned) for the connection to make progress.
    pub async fn handshake<IO>(
        io: IO,
        settings: &H2Settings,
    ) -> Result<(Connection, ConnectionDriver), ConnectError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut conn) = settings
            .client_builder()
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        let state = Arc::new(ConnectionState {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            closed: AtomicBool::new(false),
        });
        let ping_pong = conn.ping_pong();
        let (interval, timeout) = (settings.keepalive_interval, settings.keepalive_timeout);
        let driver_state = state.clone();
        let driver = async move {
            let id = driver_state.id;
            let keepalive = async move {
                match ping_pong {
                    Some(pp) => keepalive(pp, interval, timeout).await,
                    None => std::future::pending::<KeepaliveFailure>().await,
                }
            };
            tokio::select! {
                res = conn => match res {
                    Ok(()) => debug!(connection = id, "tunnel connection closed"),
                    Err(e) => debug!(connection = id, error = %e, "tunnel connection failed"),
                },
                failure = keepalive => debug!(connection = id, %failure, "tunnel connection keepalive failed"),
            }
            driver_state.mark_closed();
        };
        Ok((Connection { send, state }, Box::pin(driver)))
    }

    pub fn is_closed(&self) -> bool {
        self.state.is_closed()
    }

    /// Opens one tunnel on this connection.
    pub async fn connect(&self, request: &ConnectRequest) -> Result<H2Stream, ConnectError> {
        let req = request.to_http()?;
        let mut send = self.send.clone().ready().await.map_err(|e| {
            self.state.mark_closed();
            debug!(connection = self.state.id, error = %e, "tunnel connection not usable");
            ConnectError::ConnectionClosed
        })?;
        let (response, send_stream) = send.send_request(req, false).map_err(|e| {
            if e.is_go_away() || e.is_io() {
                self.state.mark_closed();
                ConnectError::ConnectionClosed
            } else {
                ConnectError::Stream(e)
            }
        })?;
        let response = response.await.map_err(|e| {
            // Refused, or above the last stream id of a GOAWAY (a draining server): the
            // server never processed it (RFC 9113 §8.7), so another connection may retry it.
            // After a GOAWAY this connection takes no new streams either.
            if e.is_go_away() {
                self.state.mark_closed();
                ConnectError::ConnectionClosed
            } else if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                ConnectError::ConnectionClosed
            } else {
                ConnectError::Stream(e)
            }
        })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(ConnectError::Rejected { status });
        }
        Ok(H2Stream::new(send_stream, response.into_body()))
    }
}
