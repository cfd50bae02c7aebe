//! Pods: what a test asks for, the handle it gets back, and per-node address allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::sync::Arc;

use crate::Namespace;
use crate::topology::Ipv4Cidr;

/// What `Lab::add_pod` creates: Kubernetes-like metadata plus the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// Lab-wide unique name.
    pub name: String,
    /// Kubernetes namespace (not to be confused with the network namespace).
    pub namespace: String,
    /// Index of the node the pod is scheduled on.
    pub node: usize,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// A fixed address out of the node's pod CIDR (as a manifest's `status.podIP`
    /// says); `None` lets the node's IPAM pick one.
    pub ip: Option<Ipv4Addr>,
}

impl PodSpec {
    /// A pod in Kubernetes namespace `default` with service account `default`.
    pub fn new(name: impl Into<String>, node: usize) -> Self {
        Self {
            name: name.into(),
            namespace: "default".to_owned(),
            node,
            service_account: "default".to_owned(),
            labels: BTreeMap::new(),
            ip: None,
        }
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn service_account(mut self, service_account: impl Into<String>) -> Self {
        self.service_account = service_account.into();
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Gives the pod this address instead of the next free one.
    pub fn ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }
}

/// A running pod: its network namespace (all of [`Namespace`]'s methods apply through
/// `Deref`) and its metadata. Cheap to clone.
#[derive(Clone)]
pub struct Pod {
    ns: Namespace,
    meta: Arc<PodMeta>,
}

struct PodMeta {
    spec: PodSpec,
    ip: Ipv4Addr,
    uid: String,
}

impl Pod {
    pub(crate) fn new(ns: Namespace, spec: PodSpec, ip: Ipv4Addr, uid: String) -> Self {
        Self {
            ns,
            meta: Arc::new(PodMeta { spec, ip, uid }),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.spec.name
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.meta.spec.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.meta.spec.service_account
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.meta.spec.labels
    }

    /// Index of the node the pod runs on.
    pub fn node(&self) -> usize {
        self.meta.spec.node
    }

    /// The pod's address, out of its node's pod CIDR.
    pub fn ip(&self) -> Ipv4Addr {
        self.meta.ip
    }

    /// A unique id, as the node agent's `WorkloadRequest` carries: never reused within
    /// the process, even for a pod re-added under the same name.
    pub fn uid(&self) -> &str {
        &self.meta.uid
    }

    /// The spec the pod was created from.
    pub fn spec(&self) -> &PodSpec {
        &self.meta.spec
    }
}

impl Deref for Pod {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

impl fmt::Debug for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pod")
            .field("name", &self.name())
            .field("namespace", &self.namespace())
            .field("node", &self.node())
            .field("ip", &self.ip())
            .field("netns", &self.ns)
            .finish()
    }
}

/// Hands out host numbers in a node's /24 round-robin, like host-local IPAM, so a
/// freshly removed pod's address is not immediately given to the next pod (a stale
/// connection attempt must hit nothing, not a stranger).
#[derive(Debug)]
pub(crate) struct Ipam {
    cidr: Ipv4Cidr,
    in_use: BTreeSet<u8>,
    last: u8,
}

/// `.0` is the network, `.1` the gateway (the node side of every pod veth), `.255`
/// broadcast.
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;

impl Ipam {
    pub(crate) fn new(cidr: Ipv4Cidr) -> Self {
        Self {
            cidr,
            in_use: BTreeSet::new(),
            last: FIRST_HOST - 1,
        }
    }

    pub(crate) fn allocate(&mut self) -> Option<u8> {
        let candidates = (self.last + 1..=LAST_HOST).chain(FIRST_HOST..=self.last);
        let host = candidates
            .into_iter()
            .find(|h| (FIRST_HOST..=LAST_HOST).contains(h) && !self.in_use.contains(h))?;
        self.in_use.insert(host);
        self.last = host;
        Some(host)
    }

    /// Takes the host number of `ip`, if it is a free pod address of this CIDR.
    pub(crate) fn reserve(&mut self, ip: Ipv4Addr) -> Result<u8, String> {
        if !self.cidr.contains(ip) {
            return Err(format!("{ip} is outside the node's pod CIDR {}", self.cidr));
        }
        let host = ip.octets()[3];
        if !(FIRST_HOST..=LAST_HOST).contains(&host) {
            return Err(format!(
                "{ip} is not a pod address of {} (.{FIRST_HOST} to .{LAST_HOST}; .1 is the node's gateway)",
                self.cidr
            ));
        }
        if !self.in_use.insert(host) {
            return Err(format!("{ip} is already taken by another pod"));
        }
        Ok(host)
    }

    pub(crate) fn release(&mut self, host: u8) {
        self.in_use.remove(&host);
    }

    pub(crate) fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.cidr.addr.octets();
        Ipv4Addr::new(a, b, c, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam() -> Ipam {
        Ipam::new(Ipv4Cidr::new(Ipv4Addr::new(10, 244, 3, 0), 24))
    }

    #[test]
    fn allocates_round_robin_and_skips_the_gateway() {
        let mut ipam = ipam();
        assert_eq!(ipam.allocate(), Some(2));
        assert_eq!(ipam.allocate(), Some(3));
        ipam.release(2);
        // .2 is free again but not reused before the range wraps.
        assert_eq!(ipam.allocate(), Some(4));
        assert_eq!(ipam.address(4), Ipv4Addr::new(10, 244, 3, 4));
    }

    #[test]
    fn reserves_fixed_addresses_once_and_only_inside_the_cidr() {
        let mut ipam = ipam();
        assert_eq!(ipam.reserve(Ipv4Addr::new(10, 244, 3, 7)), Ok(7));
        let taken = ipam.reserve(Ipv4Addr::new(10, 244, 3, 7)).unwrap_err();
        assert!(taken.contains("already taken"), "{taken}");
        let outside = ipam.reserve(Ipv4Addr::new(10, 244, 4, 7)).unwrap_err();
        assert!(outside.contains("outside"), "{outside}");
        let gateway = ipam.reserve(Ipv4Addr::new(10, 244, 3, 1)).unwrap_err();
        assert!(gateway.contains("gateway"), "{gateway}");
        // Allocation skips what was reserved.
        let all: Vec<u8> = std::iter::from_fn(|| ipam.allocate()).collect();
        assert!(!all.contains(&7));
        ipam.release(7);
        assert_eq!(ipam.reserve(Ipv4Addr::new(10, 244, 3, 7)), Ok(7));
    }

    #[test]
    fn wraps_and_reports_exhaustion() {
        let mut ipam = ipam();
        let all: Vec<u8> = std::iter::from_fn(|| ipam.allocate()).collect();
        assert_eq!(all.len(), usize::from(LAST_HOST - FIRST_HOST + 1));
        assert_eq!(ipam.allocate(), None);
        ipam.release(100);
        assert_eq!(ipam.allocate(), Some(100));
    }
}
