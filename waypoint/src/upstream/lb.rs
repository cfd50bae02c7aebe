//! Endpoint selection for one cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;

use super::settings::LbPolicy;
use super::table::{Table, addresses};
use crate::context::Endpoint;

/// The load balancer of one cluster (host, subset, port): the policy plus its state
/// (round-robin position, requests in flight per endpoint, the consistent-hash table).
#[derive(Debug)]
pub struct LoadBalancer {
    policy: LbPolicy,
    next: AtomicUsize,
    /// Requests in flight per endpoint uid, kept for every policy.
    active: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
    /// The hash table and the endpoint addresses it was built from.
    table: Mutex<Option<(Vec<SocketAddr>, Arc<Table>)>>,
}

/// The outcome of [`LoadBalancer::pick`].
#[derive(Debug)]
pub enum Pick {
    /// Forward to `endpoints[index]`; keep the guard until the request (response
    /// included) is done: it counts the request as in flight for least-request.
    Endpoint(usize, ActiveRequest),
    /// `PASSTHROUGH`: forward to the original destination address.
    Passthrough,
    /// No endpoint to forward to (the proxy answers 503, response flag `UH`).
    None,
}

impl Pick {
    /// The chosen endpoint index, if any.
    pub fn index(&self) -> Option<usize> {
        match self {
            Pick::Endpoint(i, _) => Some(*i),
            Pick::Passthrough | Pick::None => None,
        }
    }
}

/// One request in flight to an endpoint; dropping it ends the request.
#[derive(Debug)]
pub struct ActiveRequest {
    count: Arc<AtomicUsize>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LoadBalancer {
    /// A load balancer with no requests in flight.
    pub fn new(policy: LbPolicy) -> Self {
        LoadBalancer {
            policy,
            next: AtomicUsize::new(0),
            active: Mutex::new(HashMap::new()),
            table: Mutex::new(None),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &LbPolicy {
        &self.policy
    }

    /// Picks one of `endpoints` (already narrowed to the subset and stripped of ejected
    /// endpoints). `hash` is the request's consistent-hash key
    /// ([`super::HashOutcome::hash`]); it is only read by consistent-hash policies, which
    /// use a random one when it is `None`, as Envoy does.
    ///
    /// - round robin: endpoints in turn, by a counter shared by all tasks;
    /// - least request: two distinct random endpoints, the one with fewer requests in
    ///   flight (ties: the first drawn); with one endpoint, that one;
    /// - random: uniform;
    /// - consistent hash: the table built from the endpoints' addresses (rebuilt when the
    ///   address list changes).
    pub fn pick<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        hash: Option<u64>,
        rng: &mut R,
    ) -> Pick {
        if matches!(self.policy, LbPolicy::Passthrough) {
            return Pick::Passthrough;
        }
        let n = endpoints.len();
        if n == 0 {
            return Pick::None;
        }
        // One lock of the in-flight counts per pick: least-request reads two under it and
        // counts the chosen one under the same lock; the others take it once chosen (the
        // consistent-hash table may be rebuilt meanwhile, which must not hold it).
        let lock = || self.active.lock().unwrap_or_else(|e| e.into_inner());
        let (index, mut active) = match &self.policy {
            LbPolicy::RoundRobin => (self.next.fetch_add(1, Ordering::Relaxed) % n, lock()),
            LbPolicy::Random => (rng.random_range(0..n), lock()),
            LbPolicy::LeastRequest if n == 1 => (0, lock()),
            LbPolicy::LeastRequest => {
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let active = lock();
                let load = |i: usize| {
                    active
                        .get(&endpoints[i].uid)
                        .map_or(0, |c| c.load(Ordering::Acquire))
                };
                let index = if load(b) < load(a) { b } else { a };
                (index, active)
            }
            LbPolicy::ConsistentHash(ch) => {
                let table = self.table_for(ch.table, endpoints);
                let hash = hash.unwrap_or_else(|| rng.random());
                match table.lookup(hash) {
                    Some(i) if i < n => (i, lock()),
                    _ => return Pick::None,
                }
            }
            LbPolicy::Passthrough => return Pick::Passthrough,
        };
        // Forget idle counters of endpoints that are gone once the map is much larger
        // than the endpoint list.
        if active.len() > 2 * n + 16 {
            active.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Acquire) > 0);
        }
        let uid = &endpoints[index].uid;
        let count = match active.get(uid) {
            Some(count) => count.clone(),
            None => active.entry(uid.clone()).or_default().clone(),
        };
        count.fetch_add(1, Ordering::AcqRel);
        Pick::Endpoint(index, ActiveRequest { count })
    }

    /// Requests in flight to the endpoint with `uid`.
    pub fn active_requests(&self, uid: &str) -> usize {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.get(uid).map_or(0, |c| c.load(Ordering::Acquire))
    }

    fn table_for(&self, kind: super::HashTable, endpoints: &[Endpoint]) -> Arc<Table> {
        let mut cached = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addrs, table)) = cached.as_ref()
            && addrs.len() == endpoints.len()
            && addrs.iter().zip(endpoints).all(|(a, e)| *a == e.addr)
        {
            return table.clone();
        }
        let table = Arc::new(Table::build(kind, endpoints));
        *cached = Some((addresses(endpoints), table.clone()));
        table
    }
}
