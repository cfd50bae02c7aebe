//! The lab topology: a wire namespace with a bridge, nodes plugged into it, pods plugged
//! into their node, and the address plan that ties them together.
//!
//! ```text
//!  wire netns:   br0 ── node0 ── node1 ── ...            (bridge ports, no addresses)
//!                         │        │
//!  node-i netns:        eth0 172.30.0.(10+i)/24, ip_forward=1,
//!                       route 10.244.j.0/24 via 172.30.0.(10+j) for every other node j,
//!                       per pod: veth<k> 10.244.i.1/32 + route 10.244.i.k/32 dev veth<k>
//!                         │
//!  pod netns:           eth0 10.244.i.k/32, route 10.244.i.1 dev eth0, default via it
//! ```
//!
//! This is the ptp CNI's layout: every pod is a point-to-point link to its node, so the
//! node routes (and ztunnel can capture) each pod's traffic individually.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::capture::Capture;
use crate::netlink::Netlink;
use crate::pod::{Ipam, Pod, PodSpec};
use crate::process::Processes;
use crate::{LabError, Namespace};

/// An IPv4 prefix such as `10.244.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub const fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Self { addr, prefix }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The subnet the nodes share on the bridge.
pub const NODE_SUBNET: Ipv4Cidr = Ipv4Cidr::new(Ipv4Addr::new(172, 30, 0, 0), 24);

/// Most nodes a lab can have: node addresses are `.10` up to `.254` of [`NODE_SUBNET`].
pub const MAX_NODES: usize = 245;

/// Node `index`'s address on the bridge.
pub fn node_ip(index: usize) -> Ipv4Addr {
    let [a, b, c, _] = NODE_SUBNET.addr.octets();
    Ipv4Addr::new(a, b, c, 10 + index as u8)
}

/// Node `index`'s pod CIDR, `10.244.<index>.0/24`.
pub fn pod_cidr(index: usize) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::new(10, 244, index as u8, 0), 24)
}

/// The address the node side of every pod veth on node `index` carries; pods route
/// everything through it.
pub fn pod_gateway(index: usize) -> Ipv4Addr {
    let [a, b, c, _] = pod_cidr(index).addr.octets();
    Ipv4Addr::new(a, b, c, 1)
}

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabConfig {
    /// Number of nodes, 1 to [`MAX_NODES`].
    pub nodes: usize,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self { nodes: 2 }
    }
}

/// A simulated node: a network namespace on the bridge, routing for its pods.
/// [`Namespace`]'s methods apply through `Deref`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Node {
    ns: Namespace,
    index: usize,
}

impl Node {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The node's address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        node_ip(self.index)
    }

    pub fn pod_cidr(&self) -> Ipv4Cidr {
        pod_cidr(self.index)
    }
}

impl Deref for Node {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

/// The running topology. Dropping it kills every process started in it and closes every
/// namespace descriptor, which is all that keeps the namespaces alive: nothing is
/// mounted, so nothing outlives the test process either.
///
/// Must be created and used within a tokio runtime (netlink runs on it).
pub struct Lab {
    processes: Arc<Processes>,
    wire: Namespace,
    bridge: u32,
    nodes: Vec<Node>,
    ipams: Vec<Mutex<Ipam>>,
    /// `None` while the pod is being created: the name is taken, the pod not usable yet.
    pods: Mutex<BTreeMap<String, Option<PodEntry>>>,
}

struct PodEntry {
    pod: Pod,
    /// Node-side veth, deleted on removal.
    host_veth: u32,
    host: u8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const BRIDGE: &str = "br0";

impl Lab {
    /// Builds the wire, the nodes and the routes between them.
    pub async fn start(config: LabConfig) -> Result<Self, LabError> {
        if config.nodes == 0 || config.nodes > MAX_NODES {
            return Err(LabError::Config(format!(
                "nodes must be 1..={MAX_NODES}, got {}",
                config.nodes
            )));
        }
        let processes = Arc::new(Processes::default());
        let wire = Namespace::create("wire".to_owned(), Arc::clone(&processes))?;
        let wire_nl = wire.with_netns(|n| Netlink::connect(n, "wire"))??;
        wire_nl.loopback_up().await?;
        let bridge = wire_nl.add_bridge(BRIDGE).await?;
        let mut lab = Self {
            processes,
            wire,
            bridge,
            nodes: Vec::with_capacity(config.nodes),
            ipams: (0..config.nodes)
                .map(|i| Mutex::new(Ipam::new(pod_cidr(i))))
                .collect(),
            pods: Mutex::new(BTreeMap::new()),
        };
        for index in 0..config.nodes {
            let node = lab.add_node(index, &wire_nl).await?;
            lab.nodes.push(node);
        }
        wire_nl.close().await;
        for node in &lab.nodes {
            let nl = node.with_netns(|n| Netlink::connect(n, node.name()))??;
            for other in lab.nodes.iter().filter(|o| o.index != node.index) {
                let cidr = other.pod_cidr();
                nl.add_gateway_route(cidr.addr, cidr.prefix, other.ip())
                    .await?;
            }
            nl.close().await;
        }
        tracing::debug!(nodes = config.nodes, "lab topology ready");
        Ok(lab)
    }

    async fn add_node(&self, index: usize, wire_nl: &Netlink) -> Result<Node, LabError> {
        let ns = Namespace::create(format!("node-{index}"), Arc::clone(&self.processes))?;
        let nl = ns.with_netns(|n| Netlink::connect(n, ns.name()))??;
        nl.loopback_up().await?;
        let port = format!("node{index}");
        let eth0 = nl.add_veth("eth0", &port, &self.wire.netns()?).await?;
        let port_index = wire_nl.index(&port).await?;
        wire_nl.attach_to_bridge(port_index, self.bridge).await?;
        nl.add_address(eth0, node_ip(index), NODE_SUBNET.prefix)
            .await?;
        nl.set_up(eth0).await?;
        nl.wait_ready(eth0).await?;
        wire_nl.wait_ready(port_index).await?;
        nl.close().await;
        ns.set_sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Node { ns, index })
    }

    /// The namespace holding the bridge: where captures run.
    pub fn wire(&self) -> &Namespace {
        &self.wire
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index`. Panics if there is no such node, like slice indexing.
    pub fn node(&self, index: usize) -> &Node {
        self.nodes
            .get(index)
            .unwrap_or_else(|| panic!("no node {index}: the lab has {} node(s)", self.nodes.len()))
    }

    /// Creates a pod on `spec.node`: a namespace, a veth to the node, an address from
    /// the node's pod CIDR and the routes both ways. Pods can be added while traffic
    /// flows elsewhere in the lab.
    pub async fn add_pod(&self, spec: PodSpec) -> Result<Pod, LabError> {
        let node = self
            .nodes
            .get(spec.node)
            .ok_or(LabError::UnknownNode {
                index: spec.node,
                nodes: self.nodes.len(),
            })?
            .clone();
        {
            let mut pods = lock(&self.pods);
            if pods.contains_key(&spec.name) {
                return Err(LabError::DuplicatePod(spec.name));
            }
            pods.insert(spec.name.clone(), None);
        }
        let name = spec.name.clone();
        let host = match spec.ip {
            Some(ip) => {
                lock(&self.ipams[node.index])
                    .reserve(ip)
                    .map_err(|reason| LabError::PodAddress {
                        pod: name.clone(),
                        reason,
                    })
            }
            None => lock(&self.ipams[node.index])
                .allocate()
                .ok_or_else(|| LabError::PodCidrFull {
                    node: node.index,
                    cidr: node.pod_cidr().to_string(),
                }),
        };
        let (result, host) = match host {
            Ok(host) => (self.build_pod(&node, spec, host).await, Some(host)),
            Err(e) => (Err(e), None),
        };
        let mut pods = lock(&self.pods);
        match result {
            Ok(entry) => {
                let pod = entry.pod.clone();
                pods.insert(name, Some(entry));
                Ok(pod)
            }
            Err(e) => {
                pods.remove(&name);
                if let Some(host) = host {
                    lock(&self.ipams[node.index]).release(host);
                }
                Err(e)
            }
        }
    }

    async fn build_pod(&self, node: &Node, spec: PodSpec, host: u8) -> Result<PodEntry, LabError> {
        let ip = lock(&self.ipams[node.index]).address(host);
        let gateway = pod_gateway(node.index);
        let label = format!("pod {}/{}", spec.namespace, spec.name);
        let ns = Namespace::create(label, Arc::clone(&self.processes))?;
        let node_nl = node.with_netns(|n| Netlink::connect(n, node.name()))??;
        let pod_nl = ns.with_netns(|n| Netlink::connect(n, ns.name()))??;
        let host_veth = node_nl
            .add_veth(&format!("veth{host}"), "eth0", &ns.netns()?)
            .await?;
        let plumbing = async {
            node_nl.add_address(host_veth, gateway, 32).await?;
            node_nl.set_up(host_veth).await?;
            node_nl.add_link_route(ip, 32, host_veth).await?;
            pod_nl.loopback_up().await?;
            let eth0 = pod_nl.index("eth0").await?;
            pod_nl.add_address(eth0, ip, 32).await?;
            pod_nl.set_up(eth0).await?;
            pod_nl.add_link_route(gateway, 32, eth0).await?;
            pod_nl
                .add_gateway_route(Ipv4Addr::UNSPECIFIED, 0, gateway)
                .await?;
            node_nl.wait_ready(host_veth).await?;
            pod_nl.wait_ready(eth0).await
        };
        let plumbed = plumbing.await;
        if plumbed.is_err() {
            node_nl.delete_link(host_veth).await.ok();
        }
        node_nl.close().await;
        pod_nl.close().await;
        plumbed?;
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        let uid = format!(
            "lab-{}-{}",
            std::process::id(),
            NEXT_UID.fetch_add(1, Ordering::Relaxed)
        );
        Ok(PodEntry {
            pod: Pod::new(ns, spec, ip, uid),
            host_veth,
            host,
        })
    }

    /// Removes a pod: kills its processes, deletes its veth (and with it the routes to
    /// it, so connections to its address fail at once) and closes its namespace.
    pub async fn remove_pod(&self, name: &str) -> Result<(), LabError> {
        let removed = lock(&self.pods).remove(name);
        let entry = match removed {
            Some(Some(entry)) => entry,
            Some(None) => {
                // Still being created: put the reservation back and refuse.
                lock(&self.pods).insert(name.to_owned(), None);
                return Err(LabError::UnknownPod(name.to_owned()));
            }
            None => return Err(LabError::UnknownPod(name.to_owned())),
        };
        let node = self.node(entry.pod.node()).clone();
        let deleted = async {
            let nl = node.with_netns(|n| Netlink::connect(n, node.name()))??;
            let deleted = nl.delete_link(entry.host_veth).await;
            nl.close().await;
            deleted
        }
        .await;
        entry.pod.tear_down();
        lock(&self.ipams[node.index]).release(entry.host);
        deleted
    }

    /// The pod called `name`, if it exists.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        lock(&self.pods)
            .get(name)
            .and_then(|e| e.as_ref().map(|e| e.pod.clone()))
    }

    /// Every pod, by name.
    pub fn pods(&self) -> Vec<Pod> {
        lock(&self.pods)
            .values()
            .flatten()
            .map(|e| e.pod.clone())
            .collect()
    }

    /// Starts recording every frame that crosses the bridge.
    pub fn capture(&self) -> Result<Capture, LabError> {
        Capture::start(&self.wire, self.bridge)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.processes.shutdown();
        for entry in std::mem::take(&mut *lock(&self.pods))
            .into_values()
            .flatten()
        {
            entry.pod.tear_down();
        }
        for node in &self.nodes {
            node.tear_down();
        }
        self.wire.tear_down();
    }
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("wire", &self.wire)
            .field("nodes", &self.nodes)
            .field("pods", &lock(&self.pods).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_and_handles_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Lab>();
        shareable::<Node>();
        shareable::<Pod>();
        shareable::<crate::LabProcess>();
        shareable::<Capture>();
    }

    #[test]
    fn address_plan() {
        assert_eq!(node_ip(0), Ipv4Addr::new(172, 30, 0, 10));
        assert_eq!(node_ip(MAX_NODES - 1), Ipv4Addr::new(172, 30, 0, 254));
        assert_eq!(pod_cidr(3).to_string(), "10.244.3.0/24");
        assert_eq!(pod_gateway(3), Ipv4Addr::new(10, 244, 3, 1));
        assert!(pod_cidr(3).contains(Ipv4Addr::new(10, 244, 3, 200)));
        assert!(!pod_cidr(3).contains(Ipv4Addr::new(10, 244, 4, 2)));
        assert!(Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).contains(Ipv4Addr::BROADCAST));
        assert!(NODE_SUBNET.contains(node_ip(7)));
    }
}
