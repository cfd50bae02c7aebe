//! A node-level mesh on the lab: per node, a node agent and a ztunnel (real processes in
//! the node's namespace), fed by the files a control plane would produce: the pod list
//! each agent watches and the workload state every ztunnel reads. Certificates come from
//! a local CA written to disk.
//!
//! The processes are this very test binary, re-executed with `LAB_EXEC=ztunnel` or
//! `LAB_EXEC=node-agent`: call [`dispatch`] first thing in the test's `main`. They run
//! the same `app::main` as the `ztunnel` and `node-agent` binaries, so there is no
//! separately built binary to go stale. `LAB_ZTUNNEL_BIN=PATH` runs that ztunnel binary
//! instead (the node benchmark uses it to measure the shipped binary's memory).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use hbone::testing::TestCa;
use ztunnel::cert::LocalCa;
use ztunnel::state::local::{LocalConfig, LocalService, LocalTunnelProtocol, LocalWorkload};

use crate::{Lab, LabConfig, LabProcess, Namespace, NetnsIdentity, Pod, PodSpec, netns_holders};

/// The namespace label that enrolls pods, and the pod label value that opts out.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

pub(crate) const EXEC_ENV: &str = "LAB_EXEC";
/// What ztunnel logs each time it (re)loads its state file.
const STATE_APPLIED: &str = "state file applied";
/// Bound on waiting for ztunnel to pick up or let go of a pod.
const SETTLE: Duration = Duration::from_secs(15);

/// Runs a mesh component (ztunnel, node-agent, controller or demo-app) if this process
/// was started as one. Call it first in `main`
/// (before `sandbox::enter`: a child is already inside the sandbox).
pub fn dispatch() -> Option<ExitCode> {
    let which = std::env::var(EXEC_ENV).ok()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    Some(match which.as_str() {
        "ztunnel" => ztunnel::app::main(args),
        "node-agent" => daemonset::app::main(args),
        "controller" => controller::app::main(args),
        "demo-app" => demo_app::main(args),
        "waypoint" => waypoint::app::main(args),
        other => {
            eprintln!("{EXEC_ENV}={other}: unknown component");
            ExitCode::from(2)
        }
    })
}

/// A Kubernetes Service for the state file: `vip:port` in front of the pods whose labels
/// include `selector`.
#[derive(Debug, Clone)]
pub struct MeshService {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    pub selector: BTreeMap<String, String>,
}

impl MeshService {
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

struct NodeRuntime {
    dir: PathBuf,
    agent: LabProcess,
    ztunnel: Option<LabProcess>,
    /// ztunnels started on this node so far (each upgrade gets its own ports).
    ztunnels_started: u16,
}

/// The lab plus one node agent and one ztunnel per node.
pub struct Mesh {
    lab: Lab,
    dir: PathBuf,
    ambient: Vec<String>,
    services: Vec<MeshService>,
    nodes: Vec<NodeRuntime>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("dir", &self.dir)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Mesh {
    /// Starts `nodes` nodes; pods in `ambient_namespaces` are enrolled.
    pub async fn start(nodes: usize, ambient_namespaces: &[&str]) -> Result<Self> {
        let lab = Lab::start(LabConfig { nodes }).await?;
        let dir =
            std::env::temp_dir().join(format!("lab-mesh-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        LocalCa::write_dir(&TestCa::new(), &dir.join("ca"))?;
        let mut mesh = Mesh {
            lab,
            dir,
            ambient: ambient_namespaces.iter().map(|s| s.to_string()).collect(),
            services: Vec::new(),
            nodes: Vec::new(),
        };
        mesh.write_state()?;
        for node in 0..nodes {
            let dir = mesh.dir.join(format!("node-{node}"));
            fs::create_dir_all(&dir)?;
            mesh.write_pod_list_for(node, &dir)?;
            let agent = mesh.spawn_agent(node, &dir)?;
            mesh.nodes.push(NodeRuntime {
                dir,
                agent,
                ztunnel: None,
                ztunnels_started: 0,
            });
            mesh.start_ztunnel(node).await?;
        }
        Ok(mesh)
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Adds a pod; when it is enrolled, returns once ztunnel listens inside it.
    pub async fn add_pod(&mut self, spec: PodSpec) -> Result<Pod> {
        let pod = self.lab.add_pod(spec).await?;
        self.push_state().await?;
        self.write_pod_list_for(pod.node(), &self.nodes[pod.node()].dir.clone())?;
        if self.enrolled(&pod) {
            self.wait_captured(&pod).await?;
        }
        Ok(pod)
    }

    /// Deletes a pod the way Kubernetes does: the control plane forgets it, the node agent
    /// tells ztunnel, and then the sandbox goes. Returns once ztunnel let go of the pod's
    /// namespace (every listener and socket in it closed).
    pub async fn remove_pod(&mut self, name: &str) -> Result<()> {
        let pod = self
            .lab
            .pod(name)
            .with_context(|| format!("no pod {name}"))?;
        let node = pod.node();
        let identity = pod.identity();
        drop(pod);
        let dir = self.nodes[node].dir.clone();
        self.write_pod_list_except(node, &dir, Some(name))?;
        let ztunnel = self.nodes[node].ztunnel.as_ref().map(|z| z.pid());
        if let Some(pid) = ztunnel {
            crate::assert_eventually!(
                !holds(pid, &identity),
                timeout = SETTLE,
                "ztunnel (pid {pid}) still holds pod {name}'s namespace"
            );
        }
        self.lab.remove_pod(name).await?;
        // The node's pod list already left the pod out; only the state still has it.
        self.push_state().await
    }

    /// Adds a service to the workload state.
    pub async fn add_service(&mut self, service: MeshService) -> Result<()> {
        self.services.push(service);
        self.push_state().await
    }

    /// Whether the node agent captures this pod.
    pub fn enrolled(&self, pod: &Pod) -> bool {
        self.ambient.iter().any(|ns| ns == pod.namespace())
            && pod.labels().get(DATAPLANE_MODE).map(String::as_str) != Some("none")
    }

    /// The SPIFFE identity of a pod.
    pub fn identity(pod: &Pod) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            pod.namespace(),
            pod.service_account()
        )
    }

    /// Everything the node's ztunnel logged so far (all its incarnations).
    pub fn ztunnel_log(&self, node: usize) -> String {
        fs::read_to_string(self.nodes[node].dir.join("ztunnel.log")).unwrap_or_default()
    }

    /// How many node agent snapshots the node's ztunnels (all incarnations) applied.
    pub fn snapshots_applied(&self, node: usize) -> usize {
        self.ztunnel_log(node)
            .matches("node agent snapshot applied")
            .count()
    }

    pub fn agent_log(&self, node: usize) -> String {
        fs::read_to_string(self.nodes[node].dir.join("node-agent.log")).unwrap_or_default()
    }

    pub fn zds_socket(&self, node: usize) -> PathBuf {
        self.nodes[node].dir.join("zds.sock")
    }

    pub fn agent_pid(&self, node: usize) -> u32 {
        self.nodes[node].agent.pid()
    }

    pub fn ztunnel_pid(&self, node: usize) -> Option<u32> {
        self.nodes[node].ztunnel.as_ref().map(|z| z.pid())
    }

    /// SIGKILLs the node's ztunnel (a crash, not a graceful stop).
    pub fn kill_ztunnel(&mut self, node: usize) -> Result<()> {
        if let Some(z) = self.nodes[node].ztunnel.take() {
            z.kill().context("killing ztunnel")?;
        }
        Ok(())
    }

    /// Starts a ztunnel on the node (after [`Self::kill_ztunnel`], a restart) and waits
    /// until it has loaded its state and is connecting to the node agent.
    pub async fn start_ztunnel(&mut self, node: usize) -> Result<()> {
        let started = |mesh: &Self| mesh.ztunnel_log(node).matches("ztunnel started").count();
        let before = started(self);
        let process = self.spawn_ztunnel(node, &[])?;
        self.nodes[node].ztunnel = Some(process);
        crate::assert_eventually!(
            started(self) > before,
            timeout = SETTLE,
            "node {node}'s ztunnel did not start:\n{}",
            self.ztunnel_log(node)
        );
        Ok(())
    }

    /// A DaemonSet upgrade as Kubernetes rolls it with `maxSurge`: a new ztunnel (with
    /// `args`, e.g. its `--drain-timeout`) starts beside the running one and takes over
    /// the listeners in every pod (`SO_REUSEPORT`); once it has applied the node agent's
    /// snapshot, the old one gets SIGTERM and drains. Returns the old process, to wait
    /// for; the new one is the node's ztunnel from now on. Both log to `ztunnel.log`.
    pub async fn upgrade_ztunnel(&mut self, node: usize, args: &[&str]) -> Result<LabProcess> {
        let before = self.snapshots_applied(node);
        let new = self.spawn_ztunnel(node, args)?;
        let old = self.nodes[node]
            .ztunnel
            .replace(new)
            .context("no ztunnel running to upgrade")?;
        crate::assert_eventually!(
            self.snapshots_applied(node) > before,
            timeout = SETTLE,
            "node {node}'s new ztunnel never applied the node agent's snapshot:\n{}",
            self.ztunnel_log(node)
        );
        old.signal(nix::sys::signal::Signal::SIGTERM)
            .context("SIGTERM to the old ztunnel")?;
        Ok(old)
    }

    /// A ztunnel process for `node`. The first on a node uses the default admin,
    /// readiness and metrics ports; later ones (upgrades, running beside it in the same
    /// node namespace) get ports of their own.
    fn spawn_ztunnel(&mut self, node: usize, args: &[&str]) -> Result<LabProcess> {
        let runtime = &mut self.nodes[node];
        let generation = runtime.ztunnels_started;
        runtime.ztunnels_started += 1;
        let dir = &runtime.dir;
        let mut cmd = component("ztunnel", &dir.join("ztunnel.log"))?;
        cmd.args(["--state-file"])
            .arg(self.dir.join("state.yaml"))
            .arg("--ca-dir")
            .arg(self.dir.join("ca"))
            .arg("--zds-socket")
            .arg(dir.join("zds.sock"))
            .args(args);
        if generation > 0 {
            // 15100, 15120, 15121 for the second; 15200... for the third.
            let base = 15000 + 100 * (generation % 50);
            cmd.env("ZTUNNEL_ADMIN_ADDRESS", format!("127.0.0.1:{base}"))
                .env("ZTUNNEL_METRICS_ADDRESS", format!("0.0.0.0:{}", base + 20))
                .env(
                    "ZTUNNEL_READINESS_ADDRESS",
                    format!("0.0.0.0:{}", base + 21),
                );
        }
        Ok(self.lab.node(node).spawn(cmd)?)
    }

    /// Waits until ztunnel listens on 15001, 15006 and 15008 inside the pod.
    pub async fn wait_captured(&self, pod: &Pod) -> Result<()> {
        crate::assert_eventually!(
            [15001, 15006, 15008]
                .iter()
                .all(|p| listening(pod, *p).unwrap_or(false)),
            timeout = SETTLE,
            "ztunnel never listened inside pod {}",
            pod.name()
        );
        Ok(())
    }

    fn spawn_agent(&self, node: usize, dir: &Path) -> Result<LabProcess> {
        let mut cmd = component("node-agent", &dir.join("node-agent.log"))?;
        cmd.arg("--pods")
            .arg(dir.join("pods.json"))
            .arg("--zds-socket")
            .arg(dir.join("zds.sock"));
        Ok(self.lab.node(node).spawn(cmd)?)
    }

    /// Rewrites the workload state and waits until every running ztunnel re-read it, as
    /// a control plane push would be acknowledged.
    async fn push_state(&self) -> Result<()> {
        let applied =
            |mesh: &Self, node: usize| mesh.ztunnel_log(node).matches(STATE_APPLIED).count();
        let before: Vec<usize> = (0..self.nodes.len()).map(|n| applied(self, n)).collect();
        self.write_state()?;
        for (node, before) in before.into_iter().enumerate() {
            if self.nodes[node].ztunnel.is_some() {
                crate::assert_eventually!(
                    applied(self, node) > before,
                    timeout = SETTLE,
                    "node {node}'s ztunnel did not apply the new state file"
                );
            }
        }
        Ok(())
    }

    /// The workload state every ztunnel reads: all pods, all services.
    fn write_state(&self) -> Result<()> {
        let pods = self.lab.pods();
        let workloads = pods
            .iter()
            .map(|pod| LocalWorkload {
                uid: pod.uid().to_owned(),
                name: pod.name().to_owned(),
                namespace: pod.namespace().to_owned(),
                service_account: pod.service_account().to_owned(),
                node: format!("node-{}", pod.node()),
                addresses: vec![IpAddr::V4(pod.ip())],
                tunnel_protocol: if self.enrolled(pod) {
                    LocalTunnelProtocol::Hbone
                } else {
                    LocalTunnelProtocol::None
                },
                canonical_name: pod.labels().get("app").cloned().unwrap_or_default(),
                canonical_revision: pod.labels().get("version").cloned().unwrap_or_default(),
                services: self
                    .services
                    .iter()
                    .filter(|s| {
                        s.namespace == pod.namespace() && selects(&s.selector, pod.labels())
                    })
                    .map(|s| {
                        (
                            format!("{}/{}", s.namespace, s.hostname()),
                            BTreeMap::from([(s.port, s.target_port)]),
                        )
                    })
                    .collect(),
                ..LocalWorkload::default()
            })
            .collect();
        let services = self
            .services
            .iter()
            .map(|s| LocalService {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                hostname: s.hostname(),
                vips: vec![IpAddr::V4(s.vip)],
                ports: BTreeMap::from([(s.port, s.target_port)]),
            })
            .collect();
        let yaml = serde_yaml_ng::to_string(&LocalConfig {
            workloads,
            services,
        })?;
        write_atomically(&self.dir.join("state.yaml"), yaml.as_bytes())
    }

    fn write_pod_list_for(&self, node: usize, dir: &Path) -> Result<()> {
        self.write_pod_list_except(node, dir, None)
    }

    /// The pod list a node agent watches: its node's pods and every namespace.
    fn write_pod_list_except(&self, node: usize, dir: &Path, except: Option<&str>) -> Result<()> {
        let namespaces = self
            .ambient
            .iter()
            .map(|ns| {
                (
                    ns.clone(),
                    BTreeMap::from([(DATAPLANE_MODE.to_owned(), "ambient".to_owned())]),
                )
            })
            .collect();
        let pods = self.lab.pods();
        let pods = pods
            .iter()
            .filter(|p| p.node() == node && Some(p.name()) != except)
            .map(|p| (p, p.name(), p.labels()));
        write_pod_list(&dir.join("pods.json"), &namespaces, pods)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Processes die with their LabProcess handles and the Lab; the files go here,
        // unless LAB_MESH_KEEP asks to keep them (logs) for debugging.
        if std::env::var_os("LAB_MESH_KEEP").is_some() {
            eprintln!("mesh files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A command that runs `which` (see [`dispatch`]) with its output appended to `log`.
pub(crate) fn component(which: &str, log: &Path) -> Result<Command> {
    let log = OpenOptions::new().create(true).append(true).open(log)?;
    // LAB_ZTUNNEL_BIN runs a built `ztunnel` binary instead of re-executing this one
    // (benchmarks measure the shipped binary's memory that way).
    let mut cmd = match std::env::var_os("LAB_ZTUNNEL_BIN") {
        Some(bin) if which == "ztunnel" => Command::new(bin),
        _ => {
            let mut cmd =
                Command::new(std::env::current_exe().context("locating the test binary")?);
            cmd.env(EXEC_ENV, which);
            cmd
        }
    };
    cmd.env(
        "RUST_LOG",
        std::env::var("LAB_MESH_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::from(log.try_clone()?))
    .stderr(Stdio::from(log));
    Ok(cmd)
}

/// Writes a node agent's pod list: every namespace with its labels, and `pods` as
/// (lab pod, Kubernetes name, labels).
pub(crate) fn write_pod_list<'a>(
    path: &Path,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: impl Iterator<Item = (&'a Pod, &'a str, &'a BTreeMap<String, String>)>,
) -> Result<()> {
    let namespaces: Vec<_> = namespaces
        .iter()
        .map(|(name, labels)| serde_json::json!({"name": name, "labels": labels}))
        .collect();
    let pods: Vec<serde_json::Value> = pods
        .map(|(p, name, labels)| {
            Ok(serde_json::json!({
                "uid": p.uid(),
                "name": name,
                "namespace": p.namespace(),
                "serviceAccount": p.service_account(),
                "labels": labels,
                "ip": p.ip().to_string(),
                "netns": p.netns_path()?,
            }))
        })
        .collect::<Result<_>>()?;
    let doc = serde_json::json!({"namespaces": namespaces, "pods": pods});
    write_atomically(path, &serde_json::to_vec_pretty(&doc)?)
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether process `pid` still holds the namespace (a descriptor, a socket, a thread).
pub(crate) fn holds(pid: u32, namespace: &NetnsIdentity) -> bool {
    let prefix = format!("/proc/{pid}/");
    netns_holders(namespace)
        .iter()
        .any(|h| h.starts_with(&prefix))
}

/// Whether something listens on TCP `port` inside the namespace (any address).
pub fn listening(ns: &Namespace, port: u16) -> Result<bool> {
    let tables = ns.run(|| {
        ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
    })?;
    let wanted = format!(":{port:04X}");
    Ok(tables.iter().flat_map(|t| t.lines().skip(1)).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // local_address is column 1, st (state) column 3; 0A = LISTEN.
        cols.len() > 3 && cols[1].ends_with(&wanted) && cols[3] == "0A"
    }))
}
