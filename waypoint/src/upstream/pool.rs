//! Connection pool admission (Envoy's cluster circuit breakers) for one cluster.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::settings::PoolLimits;

/// The counters of one cluster's pool. Admission is a compare-and-swap on a counter and
/// every grant is an RAII permit that gives its slot back when dropped.
///
/// How the proxy uses it, per request: [`ConnectionPool::try_request`] first (the
/// request is active until its permit drops); if it needs a new upstream connection,
/// [`ConnectionPool::try_connection`], and while it waits for one,
/// [`ConnectionPool::try_pending`]; each retry holds a [`ConnectionPool::try_retry`]
/// permit. Any [`Overflow`] is answered with 503 and response flag `UO`.
#[derive(Debug)]
pub struct ConnectionPool {
    limits: PoolLimits,
    counters: [AtomicU32; 4],
}

/// Which limit overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `tcp.maxConnections`.
    Connections = 0,
    /// `http.http1MaxPendingRequests`.
    PendingRequests = 1,
    /// `http.http2MaxRequests`.
    Requests = 2,
    /// `http.maxRetries`.
    Retries = 3,
}

/// A limit was reached: the proxy answers 503 with response flag `UO` (a retry that
/// overflows is not attempted, and the previous attempt's response stands, as in Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// The limit.
    pub limit: Limit,
    /// Its value.
    pub max: u32,
}

impl Overflow {
    /// The access-log response flag: `UO` (upstream overflow).
    pub const RESPONSE_FLAG: &'static str = "UO";
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream overflow: {:?} limit {} reached",
            self.limit, self.max
        )
    }
}

impl std::error::Error for Overflow {}

/// A slot of one counter.
#[derive(Debug)]
struct Slot {
    pool: Arc<ConnectionPool>,
    limit: Limit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.counters[self.limit as usize].fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted request (counts against `http2MaxRequests` until dropped).
#[derive(Debug)]
pub struct RequestPermit(Slot);

/// An admitted retry (counts against `maxRetries` until dropped).
#[derive(Debug)]
pub struct RetryPermit(Slot);

/// A request waiting for a connection (counts against `http1MaxPendingRequests`).
#[derive(Debug)]
pub struct PendingPermit(Slot);

macro_rules! permit_pool {
    ($($permit:ident),*) => {$(
        impl $permit {
            /// The pool the permit was taken from.
            pub fn pool(&self) -> &Arc<ConnectionPool> {
                &self.0.pool
            }
        }
    )*};
}

permit_pool!(RequestPermit, RetryPermit, PendingPermit);

/// An upstream connection (counts against `maxConnections` until dropped), with the
/// number of requests it has carried for `maxRequestsPerConnection`.
#[derive(Debug)]
pub struct ConnectionPermit {
    slot: Slot,
    requests: u32,
}

impl ConnectionPermit {
    /// Counts a request sent on this connection. Returns whether the connection may be
    /// reused afterwards (false once it has carried `maxRequestsPerConnection`).
    pub fn start_request(&mut self) -> bool {
        self.requests = self.requests.saturating_add(1);
        !self.is_exhausted()
    }

    /// Whether the connection has carried `maxRequestsPerConnection` requests and must
    /// not take another.
    pub fn is_exhausted(&self) -> bool {
        self.slot
            .pool
            .limits
            .max_requests_per_connection
            .is_some_and(|max| self.requests >= max)
    }

    /// Requests carried so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The cluster's connection settings (timeouts) the connection lives by.
    pub fn limits(&self) -> &PoolLimits {
        &self.slot.pool.limits
    }
}

impl ConnectionPool {
    /// An empty pool with `limits`.
    pub fn new(limits: PoolLimits) -> Arc<Self> {
        Arc::new(ConnectionPool {
            limits,
            counters: Default::default(),
        })
    }

    /// The limits (also the connection settings: timeouts, keepalive, protocol).
    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Admits a request if fewer than `http2MaxRequests` are in flight.
    pub fn try_request(self: &Arc<Self>) -> Result<RequestPermit, Overflow> {
        self.acquire(Limit::Requests, self.limits.max_requests)
            .map(RequestPermit)
    }

    /// Admits a retry if fewer than `maxRetries` are in flight.
    pub fn try_retry(self: &Arc<Self>) -> Result<RetryPermit, Overflow> {
        self.acquire(Limit::Retries, self.limits.max_retries)
            .map(RetryPermit)
    }

    /// Queues a request for a connection if fewer than `http1MaxPendingRequests` wait.
    pub fn try_pending(self: &Arc<Self>) -> Result<PendingPermit, Overflow> {
        self.acquire(Limit::PendingRequests, self.limits.max_pending_requests)
            .map(PendingPermit)
    }

    /// Admits a new upstream connection if fewer than `maxConnections` are open.
    pub fn try_connection(self: &Arc<Self>) -> Result<ConnectionPermit, Overflow> {
        self.acquire(Limit::Connections, self.limits.max_connections)
            .map(|slot| ConnectionPermit { slot, requests: 0 })
    }

    /// How many of `limit` are in use.
    pub fn in_use(&self, limit: Limit) -> u32 {
        self.counters[limit as usize].load(Ordering::Acquire)
    }

    fn acquire(self: &Arc<Self>, limit: Limit, max: u32) -> Result<Slot, Overflow> {
        self.counters[limit as usize]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Slot {
                pool: self.clone(),
                limit,
            })
            .map_err(|_| Overflow { limit, max })
    }
}
