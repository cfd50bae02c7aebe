//! Shared tunnel connections. Streams to the same (source identity, expected destination
//! identities, next hop, source IP) ride one HTTP/2 connection until it carries
//! `max_streams_per_connection`, then a new one opens. At most one handshake per key is in
//! flight; idle connections are released; dead ones are evicted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tracing::debug;

use crate::client::{ConnectError, ConnectRequest, Connection, ConnectionDriver, ConnectionState};
use crate::stream::H2Stream;
use crate::tls::{ClientTls, TlsStream};
use crate::{H2Settings, Identity};

/// Retries of a request whose connection turned out unusable before the server saw it.
const MAX_UNUSABLE_RETRIES: u32 = 3;

/// What makes two tunnels shareable on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub src_identity: Identity,
    /// Sorted and deduplicated, so equal sets give equal keys.
    pub dst_identities: Vec<Identity>,
    pub next_hop: SocketAddr,
    pub src_ip: Option<IpAddr>,
}

impl PoolKey {
    pub fn new(
        src_identity: Identity,
        mut dst_identities: Vec<Identity>,
        next_hop: SocketAddr,
        src_ip: Option<IpAddr>,
    ) -> Self {
        dst_identities.sort();
        dst_identities.dedup();
        PoolKey {
            src_identity,
            dst_identities,
            next_hop,
            src_ip,
        }
    }
}

/// Opens the mTLS connection for a key: the caller decides sockets (netns, marks,
/// source address) and which certificate to present.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, key: &PoolKey)
    -> BoxFuture<'static, Result<TlsStream<TcpStream>, ConnectError>>;
}

/// Dials from this network namespace with one client certificate.
#[derive(Debug, Clone)]
pub struct TlsDialer {
    tls: ClientTls,
}

impl TlsDialer {
    pub fn new(tls: ClientTls) -> Self {
        TlsDialer { tls }
    }
}

impl Dialer for TlsDialer {
    fn dial(
        &self,
        key: &PoolKey,
    ) -> BoxFuture<'static, Result<TlsStream<TcpStream>, ConnectError>> {
        let tls = self.tls.clone();
        let key = key.clone();
        Box::pin(async move {
            if tls.identity() != &key.src_identity {
                return Err(ConnectError::NoCertificate(key.src_identity.to_string()));
            }
            let addr = key.next_hop;
            let tcp_err = |source| ConnectError::Tcp { addr, source };
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(tcp_err)?;
            if let Some(ip) = key.src_ip {
                socket.bind(SocketAddr::new(ip, 0)).map_err(tcp_err)?;
            }
            let tcp = socket.connect(addr).await.map_err(tcp_err)?;
            tcp.set_nodelay(true).map_err(tcp_err)?;
            Ok(tls.connect(tcp, &key.dst_identities).await?)
        })
    }
}

/// Pool limits.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_streams_per_connection: usize,
    /// A connection with no streams for this long is closed.
    pub idle_timeout: Duration,
    /// Bound on TCP connect + TLS + HTTP/2 handshake.
    pub connect_timeout: Duration,
    pub h2: H2Settings,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            h2: H2Settings::default(),
        }
    }
}

/// Counters for tests, metrics and the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Destinations (pool keys) with state: live connections or a handshake in flight.
    pub keys: usize,
    /// Live pooled connections.
    pub connections: usize,
    /// Connections ever established (one TLS handshake each).
    pub handshakes: u64,
}

/// A pool of HBONE client connections. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

struct PoolInner {
    config: PoolConfig,
    dialer: Arc<dyn Dialer>,
    keys: Mutex<HashMap<PoolKey, KeyEntry>>,
    handshakes: AtomicU64,
}

#[derive(Default)]
struct KeyEntry {
    conns: Vec<Pooled>,
    /// Held while a handshake for this key is in flight.
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// The last handshake failure, so waiters behind it fail fast instead of retrying.
    last_failure: Option<(Instant, Arc<ConnectError>)>,
    /// Checkouts waiting for or running a handshake; the entry lives while any remain.
    pending: usize,
}

#[derive(Clone)]
struct Pooled {
    conn: Connection,
    slots: Arc<Slots>,
}

/// Stream accounting for one connection.
struct Slots {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
    became_idle: Notify,
}

/// Holds one stream slot; the connection becomes idle when the last one drops.
struct SlotGuard {
    slots: Arc<Slots>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.slots.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.slots.idle_since) = Instant::now();
            self.slots.became_idle.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves no broken invariant worth propagating.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub fn new(config: PoolConfig, dialer: Arc<dyn Dialer>) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                config,
                dialer,
                keys: Mutex::new(HashMap::new()),
                handshakes: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let keys = lock(&self.inner.keys);
        PoolStats {
            keys: keys.len(),
            connections: keys.values().map(|e| e.conns.len()).sum(),
            handshakes: self.inner.handshakes.load(Ordering::Relaxed),
        }
    }

    /// Opens a tunnel for `request` on a pooled connection for `key`.
    pub async fn connect(
        &self,
        key: &PoolKey,
        request: &ConnectRequest,
    ) -> Result<H2Stream, ConnectError> {
        let mut retries = 0;
        loop {
            let (conn, guard) = self.checkout(key).await?;
            match conn.connect(request).await {
                Ok(stream) => return Ok(stream.with_guard(Box::new(guard))),
                // The connection died or is draining (GOAWAY, reset, refused stream) and the
                // server saw nothing of this request: retrying on another connection is safe.
                // More than once, because during a ztunnel upgrade a fresh connection can
                // still reach the draining server.
                Err(e) if e.is_connection_unusable() && retries < MAX_UNUSABLE_RETRIES => {
                    debug!(next_hop = %key.next_hop, "pooled connection unusable, retrying on a new one");
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn checkout(&self, key: &PoolKey) -> Result<(Connection, SlotGuard), ConnectError> {
        let waiting_since = Instant::now();
        let connecting = {
            let mut keys = lock(&self.inner.keys);
            if let Some(found) = self.inner.reserve(&mut keys, key) {
                return Ok(found);
            }
            let entry = keys.entry(key.clone()).or_default();
            entry.pending += 1;
            entry.connecting.clone()
        };
        // Declared before any `keys` guard below, so it drops (and locks) after them.
        let _pending = Pending {
            inner: &self.inner,
            key,
        };
        let _one_handshake = connecting.lock().await;
        {
            let mut keys = lock(&self.inner.keys);
            if let Some(found) = self.inner.reserve(&mut keys, key) {
                return Ok(found);
            }
            let failed = keys.get(key).and_then(|e| e.last_failure.clone());
            if let Some((at, err)) = failed
                && at >= waiting_since
            {
                return Err(ConnectError::Shared(err));
            }
        }
        // Boxed: a handshake's state (TLS session, HTTP/2 codec) is large and needed by
        // one checkout in many; inline, every stream's task would carry room for it for
        // as long as the stream lives.
        let established = Box::pin(self.establish(key)).await;
        let mut keys = lock(&self.inner.keys);
        let entry = keys.entry(key.clone()).or_default();
        match established {
            Ok((conn, driver)) => {
                entry.last_failure = None;
                let slots = Arc::new(Slots {
                    active: AtomicUsize::new(1),
                    idle_since: Mutex::new(Instant::now()),
                    became_idle: Notify::new(),
                });
                entry.conns.push(Pooled {
                    conn: conn.clone(),
                    slots: slots.clone(),
                });
                tokio::spawn(run_connection(
                    Arc::downgrade(&self.inner),
                    key.clone(),
                    conn.state.clone(),
                    slots.clone(),
                    driver,
                ));
                Ok((conn, SlotGuard { slots }))
            }
            Err(e) => {
                let e = Arc::new(e);
                entry.last_failure = Some((Instant::now(), e.clone()));
                Err(ConnectError::Shared(e))
            }
        }
    }

    async fn establish(
        &self,
        key: &PoolKey,
    ) -> Result<(Connection, ConnectionDriver), ConnectError> {
        let timeout = self.inner.config.connect_timeout;
        let attempt = async {
            let tls = self.inner.dialer.dial(key).await?;
            Connection::handshake(tls, &self.inner.config.h2).await
        };
        let established = tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
        self.inner.handshakes.fetch_add(1, Ordering::Relaxed);
        debug!(next_hop = %key.next_hop, src = %key.src_identity, "new pooled tunnel connection");
        Ok(established)
    }
}

impl PoolInner {
    /// Takes a slot on a live connection with room, if any.
    fn reserve(
        &self,
        keys: &mut HashMap<PoolKey, KeyEntry>,
        key: &PoolKey,
    ) -> Option<(Connection, SlotGuard)> {
        let entry = keys.get_mut(key)?;
        entry.conns.retain(|p| !p.conn.is_closed());
        let max = self.config.max_streams_per_connection;
        let pooled = entry
            .conns
            .iter()
            .find(|p| p.slots.active.load(Ordering::Acquire) < max)?;
        pooled.slots.active.fetch_add(1, Ordering::AcqRel);
        Some((
            pooled.conn.clone(),
            SlotGuard {
                slots: pooled.slots.clone(),
            },
        ))
    }

    /// Removes an idle connection if it is still idle; false if it got busy meanwhile.
    fn evict_if_idle(&self, key: &PoolKey, state: &ConnectionState, slots: &Slots) -> bool {
        let mut keys = lock(&self.keys);
        let idle_for = lock(&slots.idle_since).elapsed();
        if slots.active.load(Ordering::Acquire) != 0 || idle_for < self.config.idle_timeout {
            return false;
        }
        state.mark_closed();
        Self::remove_locked(&mut keys, key, state.id);
        true
    }

    fn remove(&self, key: &PoolKey, id: u64) {
        Self::remove_locked(&mut lock(&self.keys), key, id);
    }

    fn remove_locked(keys: &mut HashMap<PoolKey, KeyEntry>, key: &PoolKey, id: u64) {
        if let Some(entry) = keys.get_mut(key) {
            entry.conns.retain(|p| p.conn.state.id != id);
            if entry.conns.is_empty() && entry.pending == 0 {
                keys.remove(key);
            }
        }
    }
}

/// Marks a checkout in progress for a key; the key's state is dropped when the last
/// checkout ends (however it ends, cancellation included) and no connection remains.
struct Pending<'a> {
    inner: &'a PoolInner,
    key: &'a PoolKey,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut keys = lock(&self.inner.keys);
        if let Some(entry) = keys.get_mut(self.key) {
            entry.pending -= 1;
            if entry.pending == 0 && entry.conns.is_empty() {
                keys.remove(self.key);
            }
        }
    }
}

/// Drives one pooled connection; evicts it when it dies or stays idle too long.
async fn run_connection(
    pool: Weak<PoolInner>,
    key: PoolKey,
    state: Arc<ConnectionState>,
    slots: Arc<Slots>,
    mut driver: ConnectionDriver,
) {
    loop {
        let idle_deadline = match pool.upgrade() {
            Some(p) if slots.active.load(Ordering::Acquire) == 0 => {
                Some(*lock(&slots.idle_since) + p.config.idle_timeout)
            }
            Some(_) => None,
            // The pool is gone: finish in-flight streams, then let the connection close.
            None => {
                driver.await;
                return;
            }
        };
        let idle_expired = async {
            match idle_deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut driver => break,
            _ = slots.became_idle.notified() => {}
            _ = idle_expired => {
                if pool.upgrade().is_some_and(|p| p.evict_if_idle(&key, &state, &slots)) {
                    debug!(connection = state.id, next_hop = %key.next_hop, "released idle tunnel connection");
                    return;
                }
            }
        }
    }
    state.mark_closed();
    if let Some(p) = pool.upgrade() {
        p.remove(&key, state.id);
    }
}
