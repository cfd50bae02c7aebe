//! Live per-connection xDS status for the admin endpoint: who is connected, what each proxy
//! was sent, what it acknowledged and the last config it rejected.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One connected proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    /// Unique among this controller's connections.
    pub connection_id: u64,
    /// The node its bearer token names.
    pub node: String,
    /// `node.id` from its first request; empty until that arrives.
    pub node_id: String,
    pub peer: Option<SocketAddr>,
    pub connected_since_unix_ms: u64,
    /// By type URL; only types it subscribed to.
    pub types: BTreeMap<String, TypeStatus>,
}

/// One subscribed type on one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    pub wildcard: bool,
    /// Explicitly subscribed names (besides the wildcard).
    pub subscribed_names: usize,
    /// Resources the proxy holds, as far as the server knows.
    pub resources_held: usize,
    /// Resources sent (added or changed) over the connection's life.
    pub resources_sent: u64,
    /// Removals sent over the connection's life.
    pub removals_sent: u64,
    pub responses_sent: u64,
    pub last_sent_nonce: Option<String>,
    pub last_acked_nonce: Option<String>,
    pub last_nack: Option<Nack>,
}

/// A rejected response: the proxy kept its previous config for the type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub nonce: String,
    pub message: String,
    pub at_unix_ms: u64,
}

pub(super) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Status cells of the live connections.
#[derive(Debug, Default)]
pub(super) struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Mutex<ProxyStatus>>>>,
}

/// A status lock that a panicked writer poisoned still holds plain data worth reading.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Adds a connection; it is listed until the returned guard drops.
    pub(super) fn register(
        self: &Arc<Self>,
        node: String,
        peer: Option<SocketAddr>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let status = Arc::new(Mutex::new(ProxyStatus {
            connection_id: id,
            node,
            node_id: String::new(),
            peer,
            connected_since_unix_ms: unix_ms_now(),
            types: BTreeMap::new(),
        }));
        lock(&self.live).insert(id, status.clone());
        Registration {
            id,
            registry: self.clone(),
            status,
        }
    }

    /// Copies of every live connection's status, oldest connection first.
    pub(super) fn list(&self) -> Vec<ProxyStatus> {
        let cells: Vec<_> = lock(&self.live).values().cloned().collect();
        let mut list: Vec<ProxyStatus> = cells.iter().map(|c| lock(c).clone()).collect();
        list.sort_by_key(|s| s.connection_id);
        list
    }
}

/// A connection's entry in the [`Registry`]; removing it on drop keeps the list true however
/// the stream ends.
#[derive(Debug)]
pub(super) struct Registration {
    id: u64,
    registry: Arc<Registry>,
    status: Arc<Mutex<ProxyStatus>>,
}

impl Registration {
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn update<R>(&self, f: impl FnOnce(&mut ProxyStatus) -> R) -> R {
        f(&mut lock(&self.status))
    }

    pub(super) fn update_type<R>(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus) -> R) -> R {
        self.update(|s| f(s.types.entry(type_url.to_owned()).or_default()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.live).remove(&self.id);
    }
}
