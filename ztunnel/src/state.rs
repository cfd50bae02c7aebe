//! The workload state: every workload and service ztunnel knows, and how a destination
//! address resolves to an upstream.
//!
//! A [`WorkloadState`] is immutable once built (validated as a whole); a new config
//! replaces it atomically in the [`StateStore`], so a bad update never leaves a half
//! state behind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use hbone::Identity;

use crate::rbac::{ConnectionInfo, Denied, Policy, PolicyStore};

pub mod local;

/// `servicePort -> targetPort`.
pub type PortMap = BTreeMap<u16, u16>;

/// How a workload receives mesh traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunnelProtocol {
    /// Plain TCP: not enrolled in the mesh.
    #[default]
    None,
    /// HBONE on port 15008.
    Hbone,
}

/// `namespace/hostname`, the key Istio's workload API uses for services.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub hostname: String,
}

impl ServiceKey {
    /// Parses `namespace/hostname`; `None` unless both parts are non-empty and the
    /// hostname has no `/`.
    pub fn parse(key: &str) -> Option<Self> {
        let (namespace, hostname) = key.split_once('/')?;
        (!namespace.is_empty() && !hostname.is_empty() && !hostname.contains('/')).then(|| {
            ServiceKey {
                namespace: namespace.to_owned(),
                hostname: hostname.to_owned(),
            }
        })
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

/// One pod (or VM) as the workload API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub trust_domain: String,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    pub protocol: TunnelProtocol,
    /// The owning controller's name (e.g. the Deployment).
    pub workload_name: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    /// Services this workload backs, with its own port mapping for each.
    pub services: BTreeMap<ServiceKey, PortMap>,
    pub healthy: bool,
    /// `namespace/name` of the selector-based authorization policies that apply to it.
    pub authorization_policies: Vec<String>,
    /// The SPIFFE identity, derived once when the workload is validated.
    pub identity: Identity,
}

/// A Kubernetes Service: virtual IPs and ports in front of workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    /// `servicePort -> targetPort`; a target of 0 means "the same port on the endpoint,
    /// unless the endpoint's own port map says otherwise".
    pub ports: PortMap,
}

impl Service {
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            hostname: self.hostname.clone(),
        }
    }
}

/// Where a captured connection goes.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A known workload, at `addr` (its IP and the resolved target port).
    Workload {
        workload: Arc<Workload>,
        addr: SocketAddr,
        service: Option<Arc<Service>>,
    },
    /// Not a mesh address: forward as plain TCP to the original destination.
    Passthrough(SocketAddr),
}

/// Why a destination has no upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("service {service} has no port {port}")]
    UnknownServicePort { service: ServiceKey, port: u16 },
    #[error("service {service} has no healthy endpoint")]
    NoHealthyEndpoints { service: ServiceKey },
}

/// A consistent, validated set of workloads, services and authorization policies.
#[derive(Debug, Default)]
pub struct WorkloadState {
    workloads: HashMap<String, Arc<Workload>>,
    /// `(namespace, name)`: how a pod handed over by the node agent is found. Its ZDS uid
    /// is the Kubernetes UID, which the workload API's uid (`cluster//Pod/ns/name`) is not.
    by_name: HashMap<(String, String), Arc<Workload>>,
    by_ip: HashMap<IpAddr, Arc<Workload>>,
    services: HashMap<ServiceKey, Arc<Service>>,
    by_vip: HashMap<IpAddr, Arc<Service>>,
    /// Endpoints of each service, ordered by uid so round robin is deterministic.
    endpoints: HashMap<ServiceKey, Vec<Arc<Workload>>>,
    round_robin: HashMap<ServiceKey, AtomicUsize>,
    policies: PolicyStore,
}

/// Two objects claim the same key, or an object is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("workload uid {0:?} appears twice")]
    DuplicateUid(String),
    #[error("address {ip} belongs to both workload {first} and workload {second}")]
    DuplicateAddress {
        ip: IpAddr,
        first: String,
        second: String,
    },
    #[error("service {0} appears twice")]
    DuplicateService(String),
    #[error("VIP {ip} belongs to both service {first} and service {second}")]
    DuplicateVip {
        ip: IpAddr,
        first: ServiceKey,
        second: ServiceKey,
    },
    #[error("authorization policy {0} appears twice")]
    DuplicatePolicy(String),
}

impl WorkloadState {
    /// Indexes workloads and services, rejecting duplicates. Workloads may name services
    /// that do not exist (yet): they are simply not endpoints of anything.
    pub fn new(workloads: Vec<Workload>, services: Vec<Service>) -> Result<Self, StateError> {
        Self::with_policies(workloads, services, Vec::new())
    }

    /// As [`WorkloadState::new`], with authorization policies (unique by `namespace/name`).
    pub fn with_policies(
        workloads: Vec<Workload>,
        services: Vec<Service>,
        policies: Vec<Policy>,
    ) -> Result<Self, StateError> {
        let mut state = WorkloadState {
            policies: PolicyStore::new(policies)?,
            ..WorkloadState::default()
        };
        for w in workloads {
            let w = Arc::new(w);
            if state.workloads.insert(w.uid.clone(), w.clone()).is_some() {
                return Err(StateError::DuplicateUid(w.uid.clone()));
            }
            state
                .by_name
                .entry((w.namespace.clone(), w.name.clone()))
                .or_insert_with(|| w.clone());
            for ip in &w.addresses {
                if let Some(other) = state.by_ip.insert(*ip, w.clone()) {
                    return Err(StateError::DuplicateAddress {
                        ip: *ip,
                        first: other.uid.clone(),
                        second: w.uid.clone(),
                    });
                }
            }
        }
        for s in services {
            let s = Arc::new(s);
            let key = s.key();
            if state.services.insert(key.clone(), s.clone()).is_some() {
                return Err(StateError::DuplicateService(key.to_string()));
            }
            for ip in &s.vips {
                if let Some(other) = state.by_vip.insert(*ip, s.clone()) {
                    return Err(StateError::DuplicateVip {
                        ip: *ip,
                        first: other.key(),
                        second: key,
                    });
                }
            }
            state.round_robin.insert(key, AtomicUsize::new(0));
        }
        let mut sorted: Vec<_> = state.workloads.values().cloned().collect();
        sorted.sort_by(|a, b| a.uid.cmp(&b.uid));
        for w in sorted {
            for key in w.services.keys() {
                if state.services.contains_key(key) {
                    state
                        .endpoints
                        .entry(key.clone())
                        .or_default()
                        .push(w.clone());
                }
            }
        }
        Ok(state)
    }

    pub fn workload(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(uid)
    }

    /// The pod `namespace/name` (the first one by uid order if several share the name).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.by_name.get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.by_ip.get(&ip)
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.by_vip.get(&ip)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.values()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// The workloads backing `service` (ordered by uid), healthy or not.
    pub fn endpoints(&self, service: &ServiceKey) -> &[Arc<Workload>] {
        self.endpoints.get(service).map_or(&[], Vec::as_slice)
    }

    /// Whether the destination workload's policies let `conn` in.
    pub fn authorize(&self, conn: &ConnectionInfo) -> Result<(), Denied> {
        self.policies.authorize(conn)
    }

    /// Resolves a captured connection's original destination. A service VIP picks the
    /// next healthy endpoint (round robin) and maps the port; a workload IP is that
    /// workload; anything else is passthrough.
    pub fn resolve(&self, dst: SocketAddr) -> Result<Upstream, ResolveError> {
        if let Some(service) = self.by_vip.get(&dst.ip()) {
            return self.resolve_service(service, dst.port());
        }
        if let Some(workload) = self.by_ip.get(&dst.ip()) {
            return Ok(Upstream::Workload {
                workload: workload.clone(),
                addr: dst,
                service: None,
            });
        }
        Ok(Upstream::Passthrough(dst))
    }

    fn resolve_service(&self, service: &Arc<Service>, port: u16) -> Result<Upstream, ResolveError> {
        let key = service.key();
        let Some(&target) = service.ports.get(&port) else {
            return Err(ResolveError::UnknownServicePort { service: key, port });
        };
        let healthy: Vec<&Arc<Workload>> = self
            .endpoints
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|w| w.healthy && !w.addresses.is_empty())
            .collect();
        if healthy.is_empty() {
            return Err(ResolveError::NoHealthyEndpoints { service: key });
        }
        let next = self.round_robin[&key].fetch_add(1, Ordering::Relaxed);
        let workload = healthy[next % healthy.len()];
        let target = match workload
            .services
            .get(&key)
            .and_then(|ports| ports.get(&port))
        {
            Some(&endpoint_port) if endpoint_port != 0 => endpoint_port,
            _ if target != 0 => target,
            _ => port,
        };
        let ip = workload.addresses[0];
        Ok(Upstream::Workload {
            workload: workload.clone(),
            addr: SocketAddr::new(ip, target),
            service: Some(service.clone()),
        })
    }
}

/// The current state, swapped atomically on updates; readers take a cheap snapshot, and
/// whoever must react to changes (live connections re-checking their policies)
/// subscribes.
#[derive(Debug)]
pub struct StateStore {
    current: RwLock<Arc<WorkloadState>>,
    /// Bumped on every replacement.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for StateStore {
    fn default() -> Self {
        Self::new(WorkloadState::default())
    }
}

impl StateStore {
    pub fn new(state: WorkloadState) -> Self {
        Self {
            current: RwLock::new(Arc::new(state)),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Notified after every replacement of the state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn snapshot(&self) -> Arc<WorkloadState> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, state: WorkloadState) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        self.changes.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests;
