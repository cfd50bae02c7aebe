//! Upstream HTTP: each upstream HTTP connection runs inside its own HBONE CONNECT stream
//! to the endpoint (`ip:port` as the authority, sent to its ztunnel's 15008 with the
//! waypoint's identity, on the shared [`hbone::Pool`]), or over plain TCP to an endpoint
//! outside the mesh. HTTP/1.1 connections are kept alive and reused one request at a
//! time; an HTTP/2 connection per endpoint carries every HTTP/2 request (gRPC included)
//! to it. A connection that closes is dropped and replaced on the next request.
//!
//! The DestinationRule's connection settings apply: `tcp.connectTimeout` bounds opening
//! a connection (the tunnel and the endpoint's answer to the CONNECT); a connection idle
//! for `http.idleTimeout` (HTTP/2: no request started for that long) or older than
//! `tcp.maxConnectionDuration` is not reused and is closed once its last request is over
//! (a sweep each second drops the idle ones).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hbone::{ConnectRequest, Identity, Pool, PoolKey};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::debug;

use crate::upstream::{ConnectionPermit, ConnectionPool, Overflow};

/// Boxed errors of request and response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type requests are forwarded with.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The ztunnel port an HBONE endpoint is reached on.
pub const HBONE_PORT: u16 = 15008;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The endpoint's IP and target port.
    pub addr: SocketAddr,
    /// `Some(identity)`: an HBONE endpoint whose ztunnel must present this identity;
    /// `None`: plain TCP.
    pub hbone: Option<Identity>,
}

/// Why a request got no upstream response. The variants map to Envoy's retry
/// conditions (`connect-failure`, `refused-stream`, `reset`).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (TCP, TLS, or the endpoint's ztunnel refused the
    /// CONNECT). The request was not sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The upstream refused the stream before processing it (HTTP/2 REFUSED_STREAM).
    #[error("{addr} refused the stream")]
    Refused { addr: SocketAddr },
    /// The connection or stream broke after the request was (maybe) sent.
    #[error("{addr} reset the request: {reason}")]
    Reset { addr: SocketAddr, reason: String },
    /// The cluster's connection pool is at a limit (answered 503, flag `UO`).
    #[error(transparent)]
    Overflow(Overflow),
}

/// Upstream HTTP connections by endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

/// Connections are shared within a cluster (its pool, by address) and an endpoint.
type Key = (usize, SocketAddr);

struct Inner {
    pool: Pool,
    identity: Identity,
    http1: Mutex<HashMap<Key, Vec<Http1Connection>>>,
    http2: Mutex<HashMap<Key, Http2Connection>>,
    /// Wakes requests waiting for an HTTP/1.1 connection of a cluster and endpoint.
    freed: Mutex<HashMap<Key, Arc<tokio::sync::Notify>>>,
    /// Requests waiting for one (the common case, none, skips `freed` altogether).
    waiting: AtomicUsize,
    /// Whether the task that closes idle connections runs (started by the first request,
    /// on the runtime that serves it).
    sweeping: AtomicBool,
}

/// Counts a request waiting for a connection while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often idle and aged connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How often a pending request looks again for a connection whose slot was freed by a
/// close (a connection handed back wakes it at once).
const PENDING_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// An upstream HTTP/1.1 connection and its slot in the cluster's `maxConnections`
/// (given back when the connection is dropped).
struct Http1Connection {
    sender: http1::SendRequest<Body>,
    permit: ConnectionPermit,
    age: Age,
}

struct Http2Connection {
    sender: http2::SendRequest<Body>,
    permit: ConnectionPermit,
    age: Age,
}

/// When a connection was opened and last used, against its cluster's `http.idleTimeout`
/// and `tcp.maxConnectionDuration`.
#[derive(Debug, Clone, Copy)]
struct Age {
    opened: Instant,
    used: Instant,
}

impl Age {
    fn new(now: Instant) -> Self {
        Age {
            opened: now,
            used: now,
        }
    }

    /// Whether a connection of this age may take no more requests under `permit`'s
    /// cluster settings.
    fn expired(&self, permit: &ConnectionPermit, now: Instant) -> bool {
        let limits = permit.limits();
        let idle = !limits.idle_timeout.is_zero()
            && now.saturating_duration_since(self.used) >= limits.idle_timeout;
        let aged = limits
            .max_connection_duration
            .is_some_and(|max| now.saturating_duration_since(self.opened) >= max);
        idle || aged
    }
}

impl Inner {
    /// Drops closed connections, idle or aged ones (their last request over, they close),
    /// endpoints with none left and wake-ups nobody waits for.
    fn prune(&self) {
        let now = Instant::now();
        let mut http1 = self.http1.lock().unwrap_or_else(|e| e.into_inner());
        http1.retain(|_, conns| {
            conns.retain(|c| !c.sender.is_closed() && !c.age.expired(&c.permit, now));
            !conns.is_empty()
        });
        drop(http1);
        let mut http2 = self.http2.lock().unwrap_or_else(|e| e.into_inner());
        http2.retain(|_, c| !c.sender.is_closed() && !c.age.expired(&c.permit, now));
        drop(http2);
        // A waiter holds its own clone; one without is re-created on demand (and a waiter
        // looks at the idle connections after it starts listening, so no hand-back is lost).
        let mut freed = self.freed.lock().unwrap_or_else(|e| e.into_inner());
        freed.retain(|_, notify| Arc::strong_count(notify) > 1);
    }
}

/// Every [`SWEEP_EVERY`], drops what [`Inner::prune`] drops; ends with the upstreams.
async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inner.upgrade() {
            Some(inner) => inner.prune(),
            None => return,
        }
    }
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Tunnels leave on `pool` as `identity` (the waypoint's).
    pub fn new(pool: Pool, identity: Identity) -> Self {
        Upstreams {
            inner: Arc::new(Inner {
                pool,
                identity,
                http1: Mutex::default(),
                http2: Mutex::default(),
                freed: Mutex::default(),
                waiting: AtomicUsize::new(0),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// The identity tunnels leave with.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The HBONE connection pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Sends `request` to `target` over HTTP/1.1 or HTTP/2 (`version`), reusing a
    /// connection of the same cluster when one is free. `pool` is the cluster's
    /// DestinationRule connection pool: `maxConnections` bounds the connections opened
    /// for it, `maxRequestsPerConnection` retires a connection, and an HTTP/1.1 request
    /// that finds every connection busy at the limit waits for one as a pending request
    /// (`http1MaxPendingRequests`); beyond the limits it fails with [`UpstreamError::Overflow`].
    pub async fn send(
        &self,
        target: &Target,
        version: Version,
        mut request: Request<Body>,
        pool: &Arc<ConnectionPool>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = target.addr;
        let key = (Arc::as_ptr(pool) as usize, addr);
        self.start_sweeping();
        if version == Version::HTTP_2 {
            *request.uri_mut() = absolute(request.uri(), addr);
            *request.version_mut() = Version::HTTP_2;
            let mut sender = self.http2_sender(target, key, pool).await?;
            sender
                .send_request(request)
                .await
                .map_err(|e| classify(addr, &e))
        } else {
            *request.uri_mut() = origin_form(request.uri());
            *request.version_mut() = Version::HTTP_11;
            let mut conn = self.http1_connection(target, key, pool).await?;
            let reusable = conn.permit.start_request();
            let response = conn.sender.send_request(request).await;
            // Once its response body is read it can take the next request; a retired one
            // closes when this response is over.
            if reusable {
                conn.age.used = Instant::now();
                self.lock_http1().entry(key).or_default().push(conn);
                self.wake_one(key);
            }
            response.map_err(|e| classify(addr, &e))
        }
    }

    fn lock_http1(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Http1Connection>>> {
        self.inner.http1.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free connection, a new one within `maxConnections`, or (at the limit) the next
    /// one to come free, waited for as a pending request (`http1MaxPendingRequests`).
    async fn http1_connection(
        &self,
        target: &Target,
        key: Key,
        pool: &Arc<ConnectionPool>,
    ) -> Result<Http1Connection, UpstreamError> {
        let mut pending = None;
        let mut _waiting = None;
        loop {
            // Hand-backs are listened for once the request has to wait (the first look
            // found nothing and the pool is at its limit); listening starts before the
            // next look, so none is missed.
            let freed = pending.is_some().then(|| self.freed(key));
            let notified = freed.as_ref().map(|f| f.notified());
            tokio::pin!(notified);
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            let found = {
                let mut idle = self.lock_http1();
                let conns = idle.entry(key).or_default();
                let now = Instant::now();
                conns.retain(|c| !c.sender.is_closed() && !c.age.expired(&c.permit, now));
                match conns.iter().position(|c| c.sender.is_ready()) {
                    Some(i) => Ok(conns.swap_remove(i)),
                    // One whose response body is still being read: ready soon.
                    None => conns.pop().ok_or(()),
                }
            };
            match found {
                Ok(conn) if conn.sender.is_ready() => return Ok(conn),
                Ok(mut conn) => {
                    if conn.sender.ready().await.is_ok() {
                        return Ok(conn);
                    }
                    continue; // closed meanwhile: its slot is free again
                }
                Err(()) => {}
            }
            match pool.try_connection() {
                // Boxed: opening a connection is rare, and its large state would otherwise
                // be part of every request's future.
                Ok(permit) => return Box::pin(self.open_http1(target, permit)).await,
                Err(overflow) => {
                    if pending.is_none() {
                        pending = Some(
                            pool.try_pending()
                                .map_err(|_| UpstreamError::Overflow(overflow))?,
                        );
                        _waiting = Some(Waiting::new(&self.inner.waiting));
                        continue; // look again, listening
                    }
                }
            }
            // Wait for a connection to be handed back (or a slot to free: closed
            // connections are noticed on the next look).
            if let Some(notified) = notified.as_pin_mut() {
                let _ = tokio::time::timeout(PENDING_RECHECK, notified).await;
            }
        }
    }

    /// Wakes a request waiting for a connection of `key`, if one is.
    fn wake_one(&self, key: Key) {
        // Ordered against `Waiting::new`: either the waiter's next look finds the
        // connection just handed back, or this sees the waiter (see `http1_connection`).
        if self.inner.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let freed = self.inner.freed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = freed.get(&key) {
            notify.notify_one();
        }
    }

    /// Woken when a connection of `key` is handed back.
    fn freed(&self, key: Key) -> Arc<tokio::sync::Notify> {
        let mut freed = self.inner.freed.lock().unwrap_or_else(|e| e.into_inner());
        freed.entry(key).or_default().clone()
    }

    async fn open_http1(
        &self,
        target: &Target,
        permit: ConnectionPermit,
    ) -> Result<Http1Connection, UpstreamError> {
        // Before each new connection: the maps stay as large as what is in use.
        self.inner.prune();
        let io = self.open_within(target, &permit).await?;
        let (sender, conn) = http1::handshake(io).await.map_err(|e| connect(target, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Http1Connection {
            sender,
            permit,
            age: Age::new(Instant::now()),
        })
    }

    /// The endpoint's HTTP/2 connection for this cluster, opened within
    /// `maxConnections`; one that has carried `maxRequestsPerConnection` is replaced.
    async fn http2_sender(
        &self,
        target: &Target,
        key: Key,
        pool: &Arc<ConnectionPool>,
    ) -> Result<http2::SendRequest<Body>, UpstreamError> {
        {
            let mut held = self.inner.http2.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(conn) = held.get_mut(&key) {
                let now = Instant::now();
                if !conn.sender.is_closed()
                    && !conn.permit.is_exhausted()
                    && !conn.age.expired(&conn.permit, now)
                {
                    conn.age.used = now;
                    conn.permit.start_request();
                    return Ok(conn.sender.clone());
                }
                held.remove(&key);
            }
        }
        let permit = pool.try_connection().map_err(UpstreamError::Overflow)?;
        // Boxed: opening a connection is rare, and its large state would otherwise be part
        // of every request's future.
        Box::pin(self.open_http2(target, key, permit)).await
    }

    /// Opens the endpoint's HTTP/2 connection for this cluster under `permit` and keeps it
    /// for the requests that follow.
    async fn open_http2(
        &self,
        target: &Target,
        key: Key,
        mut permit: ConnectionPermit,
    ) -> Result<http2::SendRequest<Body>, UpstreamError> {
        // Before each new connection: the maps stay as large as what is in use.
        self.inner.prune();
        let io = self.open_within(target, &permit).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| connect(target, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        permit.start_request();
        let mut held = self.inner.http2.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(
            key,
            Http2Connection {
                sender: sender.clone(),
                permit,
                age: Age::new(Instant::now()),
            },
        );
        Ok(sender)
    }

    /// Starts the task that closes idle and aged connections, once, on the runtime that
    /// serves this request.
    fn start_sweeping(&self) {
        // A plain load on the per-request path; the swap only until the task runs.
        if self.inner.sweeping.load(Ordering::Relaxed)
            || self.inner.sweeping.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(sweep(inner));
    }

    /// [`Self::open`] within the cluster's `tcp.connectTimeout`.
    async fn open_within(
        &self,
        target: &Target,
        permit: &ConnectionPermit,
    ) -> Result<TokioIo<Stream>, UpstreamError> {
        let timeout = permit.limits().connect_timeout;
        tokio::time::timeout(timeout, self.open(target))
            .await
            .unwrap_or_else(|_| {
                Err(connect(
                    target,
                    format!("no connection within the connect timeout ({timeout:?})"),
                ))
            })
    }

    /// How many keys each map holds (HTTP/1.1, HTTP/2, wake-ups), for tests.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize, usize) {
        let http2 = self.inner.http2.lock().unwrap().len();
        let freed = self.inner.freed.lock().unwrap().len();
        (self.lock_http1().len(), http2, freed)
    }

    /// Whether every HTTP/1.1 connection kept for reuse has closed, for tests.
    #[cfg(test)]
    fn all_http1_closed(&self) -> bool {
        self.lock_http1()
            .values()
            .flatten()
            .all(|c| c.sender.is_closed())
    }

    /// A byte stream to the endpoint: an HBONE tunnel, or a TCP connection.
    async fn open(&self, target: &Target) -> Result<TokioIo<Stream>, UpstreamError> {
        let addr = target.addr;
        let stream = match &target.hbone {
            Some(identity) => {
                let key = PoolKey::new(
                    self.inner.identity.clone(),
                    vec![identity.clone()],
                    SocketAddr::new(addr.ip(), HBONE_PORT),
                    None,
                );
                let tunnel = self
                    .inner
                    .pool
                    .connect(&key, &ConnectRequest::new(addr))
                    .await
                    .map_err(|e| connect(target, e))?;
                Stream::Hbone(Box::new(tunnel))
            }
            None => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| connect(target, e))?;
                let _ = tcp.set_nodelay(true);
                Stream::Tcp(tcp)
            }
        };
        Ok(TokioIo::new(stream))
    }
}

fn connect(target: &Target, e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Connect {
        addr: target.addr,
        reason: e.to_string(),
    }
}

/// hyper's error for a request that got no response.
fn classify(addr: SocketAddr, e: &hyper::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return UpstreamError::Refused { addr };
        }
        source = err.source();
    }
    UpstreamError::Reset {
        addr,
        reason: e.to_string(),
    }
}

/// `http://{addr}{path}`: HTTP/2 requests carry scheme and authority. The original
/// authority travels on in the `Host`/`:authority`: hyper takes it from the URI, so
/// keep the request's own when it has one.
fn absolute(uri: &Uri, addr: SocketAddr) -> Uri {
    let mut parts = uri.clone().into_parts();
    if parts.scheme.is_none() {
        parts.scheme = Some(http::uri::Scheme::HTTP);
    }
    if parts.authority.is_none() {
        parts.authority = addr.to_string().parse().ok();
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// `/path?query`: what an HTTP/1.1 request line carries to an origin server.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

/// An upstream byte stream.
enum Stream {
    Hbone(Box<hbone::H2Stream>),
    Tcp(TcpStream),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Hbone($s) => {
                let $s = std::pin::Pin::new(&mut **$s);
                $e
            }
            Stream::Tcp($s) => {
                let $s = std::pin::Pin::new($s);
                $e
            }
        }
    };
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests;
