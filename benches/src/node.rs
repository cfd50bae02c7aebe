//! The node benchmark's topology: a two-node lab (`lab::mesh::Mesh`) with a real node
//! agent and ztunnel process per node, and one client pod on node 0 and one server pod on
//! node 1 per configuration:
//!
//! - `direct`: both pods in a namespace that is not enrolled; no mesh in the path.
//! - `ztunnel`: both pods enrolled, so client pod -> node 0's ztunnel (in the pod) ->
//!   HBONE -> node 1's ztunnel -> server pod.
//! - `relay`: neither pod enrolled; client pod -> a plain TCP relay process listening in
//!   the client pod -> a second one in the server pod -> server ([`crate::relay`]): the
//!   mesh path's processes and hops with none of its work, the floor for any pair of
//!   user-space proxies on this machine.
//!
//! The load server ([`crate::load::serve`]) runs in each server pod, the load client in
//! each client pod, both on the benchmark's own tokio runtime; the ztunnels are separate
//! processes (this binary re-executed, see `lab::mesh::dispatch`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lab::mesh::{Mesh, listening};
use lab::{LabProcess, Pod, PodSpec};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::host::process_memory;
use crate::topology::HopErrors;
use crate::{load, relay};

/// Enrolled namespace (carries `istio.io/dataplane-mode=ambient`).
pub const MESH_NS: &str = "mesh";
/// Not enrolled.
pub const LEGACY_NS: &str = "legacy";
/// Not enrolled; its pods talk through two TCP relays.
pub const RELAY_NS: &str = "relay";
/// Where the relays listen: in the client pod (dialled at 127.0.0.1, as captured traffic
/// reaches ztunnel's 15001) and in the server pod (as HBONE reaches 15008).
const RELAY_CLIENT_PORT: u16 = 15001;
const RELAY_SERVER_PORT: u16 = 15008;
const APP_PORT: u16 = 8080;
const SMOKE_BOUND: Duration = Duration::from_secs(15);

/// A path between two pods on different nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeConfig {
    Direct,
    Relay,
    Ztunnel,
}

impl NodeConfig {
    pub const ALL: [NodeConfig; 3] = [NodeConfig::Direct, NodeConfig::Relay, NodeConfig::Ztunnel];

    pub fn name(self) -> &'static str {
        match self {
            NodeConfig::Direct => "direct",
            NodeConfig::Relay => "relay",
            NodeConfig::Ztunnel => "ztunnel",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            NodeConfig::Direct => LEGACY_NS,
            NodeConfig::Relay => RELAY_NS,
            NodeConfig::Ztunnel => MESH_NS,
        }
    }
}

/// A client pod on node 0 and the load server's address in a pod on node 1.
#[derive(Debug, Clone)]
pub struct PodPath {
    pub config: NodeConfig,
    pub client: Pod,
    pub server: Pod,
    pub addr: SocketAddr,
}

impl PodPath {
    /// A connection from inside the client pod to the server, TCP_NODELAY set.
    pub async fn dial(&self) -> Result<TcpStream> {
        dial_from(&self.client, self.addr).await
    }

    /// [`Self::dial`] as a cloneable closure, for the load generator's workers.
    pub fn dialer(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<TcpStream>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static {
        let (client, addr) = (self.client.clone(), self.addr);
        move || {
            let client = client.clone();
            Box::pin(async move { dial_from(&client, addr).await })
        }
    }
}

async fn dial_from(client: &Pod, addr: SocketAddr) -> Result<TcpStream> {
    let tcp = client
        .connect(addr)
        .await
        .with_context(|| format!("{} -> {addr}", client.name()))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Memory of one ztunnel process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Memory {
    pub node: usize,
    pub pid: u32,
    pub rss_mib: f64,
    /// The anonymous part of the RSS (heap, stacks).
    pub rss_anon_mib: f64,
    /// The file-backed part of the RSS (mostly the executable's touched pages).
    pub rss_file_mib: f64,
    /// Peak RSS over the process's life.
    pub hwm_mib: f64,
}

/// The running lab: the mesh, one [`PodPath`] per configuration and the load servers.
#[derive(Debug)]
pub struct NodeLab {
    pub mesh: Mesh,
    pub paths: Vec<PodPath>,
    /// Load-server failures; a healthy run has none.
    pub errors: Arc<HopErrors>,
    servers: Vec<JoinHandle<()>>,
    /// The `relay` path's two relay processes (client side, server side).
    relays: Vec<LabProcess>,
    /// Lines each ztunnel had logged when the lab was ready: startup noise (e.g. retrying
    /// the node agent's socket before it exists) is not a complaint about the run.
    log_marks: [usize; 2],
}

impl NodeLab {
    /// Starts the mesh and the pods, then proves every path is what it claims to be.
    pub async fn start() -> Result<NodeLab> {
        let mut mesh = Mesh::start(2, &[MESH_NS])
            .await
            .context("starting the mesh")?;
        let errors = Arc::new(HopErrors::default());
        let (mut paths, mut servers, mut relays) = (Vec::new(), Vec::new(), Vec::new());
        for config in NodeConfig::ALL {
            let pod = |role: &str, node: usize| {
                let name = format!("{}-{role}", config.name());
                PodSpec::new(name.clone(), node)
                    .namespace(config.namespace())
                    .service_account(name.clone())
                    .label("app", name)
            };
            let server = mesh.add_pod(pod("server", 1)).await?;
            let client = mesh.add_pod(pod("client", 0)).await?;
            for p in [&client, &server] {
                // Repeated runs open tens of thousands of short connections.
                p.set_sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
            }
            servers.push(serve(&server, errors.clone())?);
            let mut addr = SocketAddr::from((server.ip(), APP_PORT));
            if config == NodeConfig::Relay {
                let to_app = SocketAddr::from((Ipv4Addr::LOCALHOST, APP_PORT));
                relays.push(relay::spawn(
                    &client,
                    RELAY_CLIENT_PORT,
                    (server.ip(), RELAY_SERVER_PORT).into(),
                )?);
                relays.push(relay::spawn(&server, RELAY_SERVER_PORT, to_app)?);
                addr = (Ipv4Addr::LOCALHOST, RELAY_CLIENT_PORT).into();
            }
            paths.push(PodPath {
                config,
                client,
                server,
                addr,
            });
        }
        let mut lab = NodeLab {
            mesh,
            paths,
            errors,
            servers,
            relays,
            log_marks: [0; 2],
        };
        lab.verify().await?;
        lab.log_marks = [0, 1].map(|node| lab.mesh.ztunnel_log(node).lines().count());
        Ok(lab)
    }

    /// One echo per path, then the ztunnel logs must show that only the `ztunnel` path
    /// went through the mesh, over HBONE.
    async fn verify(&self) -> Result<()> {
        for path in &self.paths {
            let relayed = path.config == NodeConfig::Relay;
            if relayed {
                // The relays bind as they start; the smoke check below proves they relay.
                lab::assert_eventually!(
                    listening(&path.client, RELAY_CLIENT_PORT).unwrap_or(false)
                        && listening(&path.server, RELAY_SERVER_PORT).unwrap_or(false),
                    timeout = SMOKE_BOUND,
                    "the TCP relays did not start listening"
                );
            } else {
                let captured = listening(&path.client, 15001)?;
                ensure!(
                    captured == (path.config == NodeConfig::Ztunnel),
                    "{}: client pod captured = {captured}",
                    path.config.name()
                );
            }
            tokio::time::timeout(
                SMOKE_BOUND,
                load::new_connection_rate(path.dialer(), 1, 1, 1),
            )
            .await
            .with_context(|| format!("{}: smoke check hung", path.config.name()))?
            .with_context(|| format!("{}: smoke check", path.config.name()))?;
        }
        for path in &self.paths {
            let dst = format!("dst.addr={}", path.addr);
            let seen = |node: usize, marker: &str| {
                self.mesh
                    .ztunnel_log(node)
                    .lines()
                    .any(|l| l.contains(marker) && l.contains(&dst))
            };
            match path.config {
                NodeConfig::Ztunnel => {
                    lab::assert_eventually!(
                        seen(0, "protocol=\"HBONE\"") && seen(1, "inbound connection closed"),
                        timeout = SMOKE_BOUND,
                        "the ztunnel path did not go over HBONE between the two ztunnels"
                    );
                }
                NodeConfig::Direct | NodeConfig::Relay => {
                    ensure!(
                        !seen(0, "") && !seen(1, ""),
                        "the {} path went through a ztunnel",
                        path.config.name()
                    );
                }
            }
        }
        Ok(())
    }

    pub fn path(&self, config: NodeConfig) -> &PodPath {
        self.paths
            .iter()
            .find(|p| p.config == config)
            .expect("every configuration has a path")
    }

    /// The relay processes (to pin with the rest of the path).
    pub fn relay_pids(&self) -> Vec<u32> {
        self.relays.iter().map(LabProcess::pid).collect()
    }

    /// Both ztunnels' memory right now.
    pub fn ztunnel_memory(&self) -> Result<Vec<Memory>> {
        (0..2)
            .map(|node| {
                let pid = self
                    .mesh
                    .ztunnel_pid(node)
                    .with_context(|| format!("node {node} has no ztunnel"))?;
                let m = process_memory(pid)?;
                Ok(Memory {
                    node,
                    pid,
                    rss_mib: m.rss_mib,
                    rss_anon_mib: m.rss_anon_mib,
                    rss_file_mib: m.rss_file_mib,
                    hwm_mib: m.hwm_mib,
                })
            })
            .collect()
    }

    /// Warnings and errors the ztunnels logged since the lab was ready (a healthy run has
    /// none).
    pub fn ztunnel_complaints(&self) -> Vec<String> {
        (0..2)
            .flat_map(|node| {
                self.mesh
                    .ztunnel_log(node)
                    .lines()
                    .skip(self.log_marks[node])
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .map(|l| format!("node {node}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// The load server on `APP_PORT` inside the pod.
fn serve(pod: &Pod, errors: Arc<HopErrors>) -> Result<JoinHandle<()>> {
    let listener = pod
        .listen(APP_PORT)
        .with_context(|| format!("listening in {}", pod.name()))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let errors = errors.clone();
                    tokio::spawn(async move {
                        let served = async {
                            tcp.set_nodelay(true)?;
                            load::serve(tcp).await
                        };
                        if let Err(e) = served.await {
                            errors.record("load server", format!("{e:#}"));
                        }
                    });
                }
                Err(e) => {
                    errors.record("load server", format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}
