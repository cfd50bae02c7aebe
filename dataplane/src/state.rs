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
    /// The waypoint that traffic to this workload goes through (one that takes workload
    /// traffic), if any.
    pub waypoint: Option<Waypoint>,
    /// The pod's labels (our extension of the workload API; DestinationRule subsets and
    /// VirtualService `sourceLabels` in the waypoint).
    pub labels: Arc<BTreeMap<String, String>>,
}

impl Workload {
    /// A healthy HBONE pod `name` (also its uid, owner and canonical name, at revision
    /// `v1`) in `namespace`, running as `service_account` at `ip`, in trust domain
    /// `cluster.local` on node `node-0`, with no services, policies, waypoint or labels.
    /// For tests and tools that build workloads by hand: change the rest with struct
    /// update syntax.
    ///
    /// # Errors
    /// When the namespace or service account cannot be part of a SPIFFE identity.
    pub fn pod(
        name: &str,
        namespace: &str,
        service_account: &str,
        ip: IpAddr,
    ) -> Result<Workload, hbone::IdentityError> {
        Ok(Workload {
            uid: name.into(),
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            trust_domain: hbone::DEFAULT_TRUST_DOMAIN.into(),
            node: "node-0".into(),
            addresses: vec![ip],
            protocol: TunnelProtocol::Hbone,
            workload_name: name.into(),
            canonical_name: name.into(),
            canonical_revision: "v1".into(),
            services: BTreeMap::new(),
            healthy: true,
            authorization_policies: Vec::new(),
            identity: Identity::new(hbone::DEFAULT_TRUST_DOMAIN, namespace, service_account)?,
            waypoint: None,
            labels: Arc::default(),
        })
    }
}

/// A waypoint in front of a workload or service: the workload API's `GatewayAddress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    pub address: WaypointAddress,
    /// Its HBONE port (15008).
    pub hbone_port: u16,
}

/// Where a waypoint is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaypointAddress {
    /// The waypoint's Service (`namespace/hostname`); its endpoints are the waypoint pods.
    Service(ServiceKey),
    /// An IP: a workload's address or a service VIP.
    Ip(IpAddr),
}

impl fmt::Display for Waypoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            WaypointAddress::Service(key) => write!(f, "{key}:{}", self.hbone_port),
            WaypointAddress::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.hbone_port)),
        }
    }
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
    /// The waypoint that traffic to this service goes through (one that takes service
    /// traffic), if any.
    pub waypoint: Option<Waypoint>,
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
    /// The destination has a waypoint: one HBONE hop to the waypoint (`addr`, its
    /// HBONE port) with the original `target` as the CONNECT authority.
    Waypoint {
        /// The waypoint pod chosen.
        waypoint: Arc<Workload>,
        addr: SocketAddr,
        /// The service VIP and port addressed, or the workload's IP and port.
        target: SocketAddr,
        /// The service addressed, for service traffic.
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
    /// Traffic that must go through a waypoint never bypasses it: its policies live there.
    #[error("waypoint {waypoint} for {destination} is unavailable: {reason}")]
    WaypointUnavailable {
        waypoint: String,
        destination: String,
        reason: String,
    },
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
    /// Services by hostname (the first by key when several namespaces claim one).
    by_hostname: HashMap<String, Arc<Service>>,
    /// Endpoints of each service, ordered by uid so round robin is deterministic.
    endpoints: HashMap<ServiceKey, Vec<Arc<Workload>>>,
    round_robin: HashMap<ServiceKey, AtomicUsize>,
    /// Spreads connections over a waypoint's pods.
    waypoint_round_robin: AtomicUsize,
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
            state
                .by_hostname
                .entry(s.hostname.clone())
                .and_modify(|other| {
                    if key < other.key() {
                        *other = s.clone();
                    }
                })
                .or_insert_with(|| s.clone());
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

    /// The service with this hostname (`NAME.NAMESPACE.svc.<suffix>`).
    pub fn service_by_hostname(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.by_hostname.get(hostname)
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
    /// workload; anything else is passthrough. Waypoints are not considered: see
    /// [`WorkloadState::resolve_from`].
    pub fn resolve(&self, dst: SocketAddr) -> Result<Upstream, ResolveError> {
        self.resolve_with(dst, None, false)
    }

    /// [`WorkloadState::resolve`] for traffic sent by `source`, through waypoints as Istio
    /// ambient does: service traffic goes to the service's waypoint; otherwise, once an
    /// endpoint is chosen (or a workload was addressed directly), to that workload's
    /// waypoint. A waypoint's own traffic never goes back to it.
    pub fn resolve_from(
        &self,
        dst: SocketAddr,
        source: Option<&Workload>,
    ) -> Result<Upstream, ResolveError> {
        self.resolve_with(dst, source, true)
    }

    fn resolve_with(
        &self,
        dst: SocketAddr,
        source: Option<&Workload>,
        waypoints: bool,
    ) -> Result<Upstream, ResolveError> {
        let (upstream, service) = if let Some(service) = self.by_vip.get(&dst.ip()) {
            if waypoints && let Some(waypoint) = &service.waypoint {
                return self.via_waypoint(waypoint, dst, Some(service), source);
            }
            (self.resolve_service(service, dst.port())?, Some(service))
        } else if let Some(workload) = self.by_ip.get(&dst.ip()) {
            let upstream = Upstream::Workload {
                workload: workload.clone(),
                addr: dst,
                service: None,
            };
            (upstream, None)
        } else {
            return Ok(Upstream::Passthrough(dst));
        };
        if waypoints
            && let Upstream::Workload { workload, addr, .. } = &upstream
            && let Some(waypoint) = &workload.waypoint
        {
            return self.via_waypoint(waypoint, *addr, service, source);
        }
        Ok(upstream)
    }

    /// The upstream for `target` through `waypoint`, unless `source` is that waypoint.
    fn via_waypoint(
        &self,
        waypoint: &Waypoint,
        target: SocketAddr,
        service: Option<&Arc<Service>>,
        source: Option<&Workload>,
    ) -> Result<Upstream, ResolveError> {
        let unavailable = |reason: String| ResolveError::WaypointUnavailable {
            waypoint: waypoint.to_string(),
            destination: target.to_string(),
            reason,
        };
        let pods: Vec<&Arc<Workload>> = match &waypoint.address {
            WaypointAddress::Service(key) => match self.services.get(key) {
                Some(_) => self.endpoints(key).iter().collect(),
                None => return Err(unavailable("no such service".into())),
            },
            WaypointAddress::Ip(ip) => match (self.by_ip.get(ip), self.by_vip.get(ip)) {
                (Some(w), _) => vec![w],
                (None, Some(s)) => self.endpoints(&s.key()).iter().collect(),
                (None, None) => return Err(unavailable("no workload or service has it".into())),
            },
        };
        if let Some(source) = source
            && pods.iter().any(|p| p.uid == source.uid)
        {
            // The waypoint's own upstream traffic: straight to the destination.
            return self.resolve_with(target, None, false);
        }
        let ready: Vec<&Arc<Workload>> = pods
            .into_iter()
            .filter(|w| w.healthy && !w.addresses.is_empty())
            .collect();
        if ready.is_empty() {
            return Err(unavailable("no healthy waypoint pod".into()));
        }
        let next = self.waypoint_round_robin.fetch_add(1, Ordering::Relaxed);
        let pod = ready[next % ready.len()];
        Ok(Upstream::Waypoint {
            waypoint: pod.clone(),
            addr: SocketAddr::new(pod.addresses[0], waypoint.hbone_port),
            target,
            service: service.cloned(),
        })
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
        let target = target_port(&key, target, workload, port);
        let ip = workload.addresses[0];
        Ok(Upstream::Workload {
            workload: workload.clone(),
            addr: SocketAddr::new(ip, target),
            service: Some(service.clone()),
        })
    }
}

/// The port `workload` listens on for `port` of the service `key` whose own map says
/// `target`: the endpoint's own mapping, else the service's, else the same port.
fn target_port(key: &ServiceKey, target: u16, workload: &Workload, port: u16) -> u16 {
    match workload
        .services
        .get(key)
        .and_then(|ports| ports.get(&port))
    {
        Some(&endpoint_port) if endpoint_port != 0 => endpoint_port,
        _ if target != 0 => target,
        _ => port,
    }
}

impl Service {
    /// The port `workload` (an endpoint) listens on for this service's `port`; `None` if
    /// the service has no such port.
    pub fn target_port(&self, workload: &Workload, port: u16) -> Option<u16> {
        let &target = self.ports.get(&port)?;
        Some(target_port(&self.key(), target, workload, port))
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
