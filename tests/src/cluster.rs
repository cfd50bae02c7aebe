//! The local mesh: a lab cluster driven by a directory of manifests, as Kubernetes would
//! run it. The controller (in node 0's namespace, on node 0's address, port 15012)
//! watches the directory itself and serves xDS and the CA; every node runs a node agent
//! and a ztunnel that talks to the controller with the node's own token. The cluster
//! plays kubelet: [`Cluster::reconcile`] reads the same directory and creates, relabels
//! or deletes the pods it describes (each at its manifest's `status.podIP` on its
//! `spec.nodeName`) and runs their containers' commands inside them.
//!
//! Work files (logs, tokens, the controller's CA state, the node agents' pod lists) live
//! in [`ClusterConfig::work_dir`]:
//!
//! ```text
//! controller.log  controller-state/root-cert.pem  tokens.yaml
//! node-N/{token, pods.json, zds.sock, node-agent.log, ztunnel.log}
//! pods/NAMESPACE.NAME/CONTAINER.log
//! ```

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use controller::source::reader::DirectoryReader;
use nix::sys::signal::Signal;

use crate::eventually::wait_for;
use crate::mesh::{EXEC_ENV, component, holds, listening, write_atomically, write_pod_list};
use crate::{Lab, LabConfig, LabProcess, Pod, PodSpec, node_ip};

pub mod plan;
pub mod waypoints;

use controller::translate::labels::Labels;
use plan::{Plan, PodKey, PodPlan};

/// The controller's gRPC port (xDS and the CA), as istiod's.
pub const CONTROLLER_PORT: u16 = 15012;
/// The controller's admin pages, on 127.0.0.1 inside node 0.
pub const CONTROLLER_ADMIN_PORT: u16 = 15014;
/// Bound on a component starting, a pod being captured or let go.
pub const SETTLE: Duration = Duration::from_secs(15);
/// How long a stopping process gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    /// The manifests; the controller and the pod runner both watch this directory.
    pub manifests: PathBuf,
    /// Logs, tokens, CA state and pod lists; created if missing.
    pub work_dir: PathBuf,
    /// `RUST_LOG` for the components (default `info`).
    pub log_filter: String,
}

impl ClusterConfig {
    pub fn new(manifests: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        ClusterConfig {
            nodes: 2,
            manifests: manifests.into(),
            work_dir: work_dir.into(),
            log_filter: "info".into(),
        }
    }
}

struct RunningPod {
    plan: PodPlan,
    pod: Pod,
    containers: Vec<LabProcess>,
    /// Containers that did not start, as problems.
    failures: Vec<String>,
}

/// What one [`Cluster::reconcile`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub added: Vec<PodKey>,
    pub removed: Vec<PodKey>,
    pub relabelled: Vec<PodKey>,
    /// Problems that appeared with this pass (manifests the lab cannot run, pods that
    /// failed to start); problems already reported are not repeated.
    pub new_problems: Vec<String>,
}

impl Reconciled {
    pub fn is_empty(&self) -> bool {
        *self == Reconciled::default()
    }
}

/// The running local mesh.
pub struct Cluster {
    lab: Lab,
    config: ClusterConfig,
    reader: DirectoryReader,
    /// What the controller and the pod runner read: the manifests and the lab's own.
    api: waypoints::ApiServer,
    controller: Option<LabProcess>,
    agents: Vec<LabProcess>,
    ztunnels: Vec<Option<LabProcess>>,
    pods: BTreeMap<PodKey, RunningPod>,
    /// Every namespace's labels, from the latest plan (the node agents' pod lists carry
    /// them: enrollment is decided there).
    namespaces: BTreeMap<String, Labels>,
    problems: Vec<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("manifests", &self.config.manifests)
            .field("work_dir", &self.config.work_dir)
            .field("pods", &self.pods.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the lab, the controller, a node agent and a ztunnel per node, then the pods
    /// the manifests describe; returns once every enrolled pod is captured.
    pub async fn start(config: ClusterConfig) -> Result<Self> {
        if !config.manifests.is_dir() {
            bail!(
                "{} is not a directory of manifests",
                config.manifests.display()
            );
        }
        fs::create_dir_all(&config.work_dir)
            .with_context(|| format!("creating {}", config.work_dir.display()))?;
        let lab = Lab::start(LabConfig {
            nodes: config.nodes,
        })
        .await?;
        write_tokens(&config)?;
        let api = waypoints::ApiServer::create(&config.work_dir, &config.manifests)?;
        let reader = DirectoryReader::new(&api.root);
        let mut cluster = Cluster {
            lab,
            reader,
            api,
            controller: None,
            agents: Vec::new(),
            ztunnels: Vec::new(),
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            problems: Vec::new(),
            config,
        };
        cluster.start_controller().await?;
        for node in 0..cluster.config.nodes {
            cluster.write_pod_list(node)?;
            let agent = cluster.spawn_agent(node)?;
            cluster.agents.push(agent);
            cluster.ztunnels.push(None);
            cluster.start_ztunnel(node).await?;
        }
        cluster.sync_waypoints()?;
        cluster.apply_plan().await?;
        Ok(cluster)
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The running pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .get(&PodKey {
                namespace: namespace.into(),
                name: name.into(),
            })
            .map(|r| &r.pod)
    }

    /// The process ids of the pod's running containers.
    pub fn container_pids(&self, namespace: &str, name: &str) -> Vec<u32> {
        let key = PodKey {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.pods
            .get(&key)
            .map(|r| r.containers.iter().map(LabProcess::pid).collect())
            .unwrap_or_default()
    }

    /// Every running pod with the plan it was started from.
    pub fn pods(&self) -> impl Iterator<Item = (&PodPlan, &Pod)> {
        self.pods.values().map(|r| (&r.plan, &r.pod))
    }

    /// Problems currently seen: manifests the controller rejects and pods the lab
    /// cannot run.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Re-reads the manifests and brings the pods in line: deleted or re-placed pods go
    /// (ztunnel lets go of them first), new ones start, relabelled ones get new labels
    /// in place. Returns once every new enrolled pod is captured.
    pub async fn reconcile(&mut self) -> Result<Reconciled> {
        self.reader.refresh();
        self.sync_waypoints()?;
        self.apply_plan().await
    }

    /// Writes (or removes) the Service and pod of every waypoint Gateway (see
    /// [`waypoints`]) and reads them back.
    fn sync_waypoints(&mut self) -> Result<()> {
        let control_plane = waypoints::ControlPlane {
            xds_address: self.controller_address(),
            root_cert: self.root_cert(),
            token_file: self.node_dir(0).join("token"),
        };
        if waypoints::sync(self.reader.store(), &self.api, &control_plane)? {
            self.reader.refresh();
        }
        Ok(())
    }

    fn root_cert(&self) -> PathBuf {
        self.config
            .work_dir
            .join("controller-state")
            .join("root-cert.pem")
    }

    async fn apply_plan(&mut self) -> Result<Reconciled> {
        let Plan {
            namespaces,
            pods: wanted,
            problems: unrunnable,
        } = plan::plan(self.reader.store(), self.config.nodes);
        let namespaces_changed = namespaces != self.namespaces;
        self.namespaces = namespaces;
        let mut problems: Vec<String> = self
            .reader
            .store()
            .problems()
            .iter()
            .map(|p| self.api.user_paths(&p.to_string()))
            .collect();
        problems.extend(unrunnable);
        let mut done = Reconciled::default();
        let mut gone = Vec::new();
        for (key, running) in &mut self.pods {
            match wanted.get(key) {
                Some(plan) if running.plan.same_sandbox(plan) => {
                    if running.plan.labels != plan.labels || running.plan.enrolled != plan.enrolled
                    {
                        running.plan.labels = plan.labels.clone();
                        running.plan.enrolled = plan.enrolled;
                        done.relabelled.push(key.clone());
                    }
                }
                _ => gone.push(key.clone()),
            }
        }
        let mut stopping = Vec::new();
        for key in &gone {
            stopping.extend(self.pods.remove(key));
        }
        if namespaces_changed || !gone.is_empty() || !done.relabelled.is_empty() {
            self.write_pod_lists()?;
        }
        for running in stopping {
            if let Err(e) = self.stop_pod(running).await {
                problems.push(format!("{e:#}"));
            }
        }
        done.removed = gone;

        let mut added = Vec::new();
        for (key, plan) in wanted {
            if self.pods.contains_key(&key) {
                continue;
            }
            match self.start_pod(plan).await {
                Ok(running) => {
                    added.push(key.clone());
                    self.pods.insert(key, running);
                }
                Err(e) => problems.push(format!("pod {key}: {e:#}")),
            }
        }
        if !added.is_empty() {
            self.write_pod_lists()?;
        }
        for key in &added {
            let running = &self.pods[key];
            if running.plan.enrolled && !captured(&running.pod).await {
                problems.push(format!(
                    "pod {key}: ztunnel did not start listening inside it within {SETTLE:?} \
                     (see node-{}/ztunnel.log)",
                    running.plan.node
                ));
            }
        }
        done.added = added;
        for running in self.pods.values() {
            problems.extend(running.failures.iter().cloned());
        }
        done.new_problems = problems
            .iter()
            .filter(|p| !self.problems.contains(p))
            .cloned()
            .collect();
        self.problems = problems;
        Ok(done)
    }

    /// Creates the sandbox and starts the containers. A container that cannot start is
    /// a problem of the running pod, not a missing pod: as in Kubernetes, the pod and its
    /// other containers run.
    async fn start_pod(&self, plan: PodPlan) -> Result<RunningPod> {
        let spec = PodSpec {
            name: plan.key.to_string(),
            namespace: plan.key.namespace.clone(),
            node: plan.node,
            service_account: plan.service_account.clone(),
            labels: plan.labels.clone(),
            ip: Some(plan.ip),
        };
        let pod = self.lab.add_pod(spec).await?;
        let dir = self.pod_dir(&plan.key);
        let mut containers = Vec::new();
        let mut failures = Vec::new();
        for container in &plan.containers {
            let started = fs::create_dir_all(&dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| container_log(&dir, &container.name))
                .and_then(|log| {
                    let mut cmd = pod_command(&container.argv, &container.env)?;
                    cmd.stdout(log.try_clone()?).stderr(log);
                    Ok(pod.spawn(cmd)?)
                });
            match started {
                Ok(process) => containers.push(process),
                Err(e) => failures.push(format!(
                    "pod {}: container {} ({:?}) did not start: {e:#}",
                    plan.key, container.name, container.argv
                )),
            }
        }
        Ok(RunningPod {
            plan,
            pod,
            containers,
            failures,
        })
    }

    /// The pod list no longer has the pod: waits for ztunnel to let go of it, stops its
    /// containers and removes the sandbox.
    async fn stop_pod(&self, running: RunningPod) -> Result<()> {
        let key = &running.plan.key;
        if let Some(pid) = self.ztunnel_pid(running.plan.node) {
            let identity = running.pod.identity();
            if !wait_for(SETTLE, || !holds(pid, &identity)).await {
                bail!("pod {key}: ztunnel (pid {pid}) still holds its namespace after {SETTLE:?}");
            }
        }
        for container in &running.containers {
            stop(container).await;
        }
        self.lab
            .remove_pod(&key.to_string())
            .await
            .with_context(|| format!("removing pod {key}"))
    }

    /// Runs `argv` inside pod `namespace/name` with the pod's environment, as `kubectl
    /// exec` does, and collects its output; killed after `timeout`.
    pub async fn exec(
        &self,
        namespace: &str,
        name: &str,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let key = PodKey {
            namespace: namespace.into(),
            name: name.into(),
        };
        let running = self
            .pods
            .get(&key)
            .with_context(|| format!("no running pod {key}"))?;
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let mut cmd = pod_command(&argv, &running.plan.env)?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut process = running.pod.spawn(cmd)?;
        let read = |pipe: Option<Box<dyn Read + Send>>| {
            tokio::task::spawn_blocking(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = read(process.take_stdout().map(|p| Box::new(p) as _));
        let stderr = read(process.take_stderr().map(|p| Box::new(p) as _));
        let status = match tokio::time::timeout(timeout, process.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                process.kill().ok();
                bail!("{argv:?} in pod {key} still running after {timeout:?}");
            }
        };
        Ok(ExecOutput {
            status,
            stdout: stdout.await?,
            stderr: stderr.await?,
        })
    }

    /// Where the pod's container logs go.
    pub fn pod_dir(&self, key: &PodKey) -> PathBuf {
        self.config
            .work_dir
            .join("pods")
            .join(format!("{}.{}", key.namespace, key.name))
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        node_dir(&self.config, node)
    }

    fn write_pod_lists(&self) -> Result<()> {
        (0..self.config.nodes).try_for_each(|node| self.write_pod_list(node))
    }

    fn write_pod_list(&self, node: usize) -> Result<()> {
        let pods = self
            .pods
            .values()
            .filter(|r| r.plan.node == node)
            .map(|r| (&r.pod, r.plan.key.name.as_str(), &r.plan.labels));
        write_pod_list(
            &self.node_dir(node).join("pods.json"),
            &self.namespaces,
            pods,
        )
    }

    // --- the controller ---

    /// The controller's address as ztunnel dials it.
    pub fn controller_address(&self) -> String {
        format!("https://{}:{CONTROLLER_PORT}", node_ip(0))
    }

    pub fn controller_log(&self) -> String {
        read_log(&self.config.work_dir.join("controller.log"))
    }

    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(LabProcess::pid)
    }

    /// Starts the controller in node 0 and waits until it serves.
    pub async fn start_controller(&mut self) -> Result<()> {
        let ready = |log: &str| log.matches("controller ready").count();
        let before = ready(&self.controller_log());
        let dir = &self.config.work_dir;
        let mut cmd = component("controller", &dir.join("controller.log"))?;
        cmd.env("RUST_LOG", &self.config.log_filter)
            .arg("run")
            .arg("--manifests")
            .arg(&self.api.root)
            .arg("--tokens")
            .arg(dir.join("tokens.yaml"))
            .arg("--state-dir")
            .arg(dir.join("controller-state"))
            .arg("--listen")
            .arg(format!("{}:{CONTROLLER_PORT}", node_ip(0)))
            .arg("--admin")
            .arg(format!("127.0.0.1:{CONTROLLER_ADMIN_PORT}"));
        let process = self.lab.node(0).spawn(cmd)?;
        self.controller = Some(process);
        if !wait_for(SETTLE, || ready(&self.controller_log()) > before).await {
            bail!(
                "the controller did not become ready within {SETTLE:?}:\n{}",
                self.controller_log()
            );
        }
        Ok(())
    }

    /// SIGKILLs the controller (a crash).
    pub fn kill_controller(&mut self) -> Result<()> {
        if let Some(c) = self.controller.take() {
            c.kill().context("killing the controller")?;
        }
        Ok(())
    }

    // --- node agents and ztunnels ---

    fn spawn_agent(&self, node: usize) -> Result<LabProcess> {
        let dir = self.node_dir(node);
        let mut cmd = component("node-agent", &dir.join("node-agent.log"))?;
        cmd.env("RUST_LOG", &self.config.log_filter)
            .arg("--pods")
            .arg(dir.join("pods.json"))
            .arg("--zds-socket")
            .arg(dir.join("zds.sock"));
        Ok(self.lab.node(node).spawn(cmd)?)
    }

    pub fn ztunnel_log(&self, node: usize) -> String {
        read_log(&self.node_dir(node).join("ztunnel.log"))
    }

    /// Whether any node's ztunnel logged a line matching `line`.
    pub fn ztunnel_logged(&self, line: impl Fn(&str) -> bool) -> bool {
        (0..self.config.nodes).any(|node| self.ztunnel_log(node).lines().any(&line))
    }

    pub fn ztunnel_pid(&self, node: usize) -> Option<u32> {
        self.ztunnels[node].as_ref().map(LabProcess::pid)
    }

    /// How many xDS updates the node's ztunnel has applied so far (all incarnations).
    pub fn xds_updates(&self, node: usize) -> usize {
        self.ztunnel_log(node).matches("xds update applied").count()
    }

    /// Starts the node's ztunnel and waits until it has its first xDS state.
    pub async fn start_ztunnel(&mut self, node: usize) -> Result<()> {
        let started = |log: &str| log.matches("ztunnel started").count();
        let before = started(&self.ztunnel_log(node));
        let dir = self.node_dir(node);
        let mut cmd = component("ztunnel", &dir.join("ztunnel.log"))?;
        cmd.env("RUST_LOG", &self.config.log_filter)
            .arg("--xds-address")
            .arg(self.controller_address())
            .arg("--root-cert")
            .arg(self.root_cert())
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--node-name")
            .arg(format!("node-{node}"))
            .arg("--zds-socket")
            .arg(dir.join("zds.sock"));
        let process = self.lab.node(node).spawn(cmd)?;
        self.ztunnels[node] = Some(process);
        if !wait_for(SETTLE, || started(&self.ztunnel_log(node)) > before).await {
            bail!(
                "node-{node}'s ztunnel did not start within {SETTLE:?}:\n{}",
                self.ztunnel_log(node)
            );
        }
        Ok(())
    }

    /// Stops everything, politely: containers, then ztunnels and node agents, then the
    /// controller each get SIGTERM and [`STOP_GRACE`] to exit before they are killed;
    /// dropping the lab then removes every namespace.
    pub async fn shutdown(mut self) {
        for running in std::mem::take(&mut self.pods).into_values() {
            for container in &running.containers {
                stop(container).await;
            }
        }
        for ztunnel in self.ztunnels.iter().flatten() {
            stop(ztunnel).await;
        }
        for agent in &self.agents {
            stop(agent).await;
        }
        if let Some(controller) = &self.controller {
            stop(controller).await;
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(process: &LabProcess) {
    if process.signal(Signal::SIGTERM).is_ok()
        && tokio::time::timeout(STOP_GRACE, process.wait())
            .await
            .is_ok()
    {
        return;
    }
    process.kill().ok();
}

/// Whether ztunnel listens on its three ports inside the pod (waiting up to [`SETTLE`]).
async fn captured(pod: &Pod) -> bool {
    wait_for(SETTLE, || {
        [15001, 15006, 15008]
            .iter()
            .all(|p| listening(pod, *p).unwrap_or(false))
    })
    .await
}

fn node_dir(config: &ClusterConfig, node: usize) -> PathBuf {
    config.work_dir.join(format!("node-{node}"))
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// One random token per node: `node-N/token` for its ztunnel, `tokens.yaml` for the
/// controller. Kept across restarts of the cluster in the same work directory.
fn write_tokens(config: &ClusterConfig) -> Result<()> {
    let mut table = String::new();
    for node in 0..config.nodes {
        let dir = node_dir(config, node);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("token");
        let token = match fs::read_to_string(&path) {
            Ok(token) if token.trim().len() >= 16 => token.trim().to_owned(),
            _ => {
                let token = random_token()?;
                write_atomically(&path, token.as_bytes())?;
                token
            }
        };
        table.push_str(&format!("node-{node}: {token}\n"));
    }
    write_atomically(&config.work_dir.join("tokens.yaml"), table.as_bytes())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a node token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A container's log file, appended to.
fn container_log(pod_dir: &Path, container: &str) -> Result<fs::File> {
    let path = pod_dir.join(format!("{container}.log"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A command line as a pod runs it: `demo-app` and `waypoint` are this binary
/// re-executed as the demo app or the waypoint (`LAB_WAYPOINT_BIN=PATH` runs that
/// waypoint binary instead); anything else is looked up on `PATH`. The environment is `env` (plus `PATH` and
/// `RUST_LOG` from the host), as kubelet builds a container's.
pub fn pod_command(argv: &[String], env: &[(String, String)]) -> Result<Command> {
    let (program, args) = argv.split_first().context("an empty command line")?;
    let built_waypoint = std::env::var_os("LAB_WAYPOINT_BIN").filter(|_| program == "waypoint");
    let mut cmd = if let Some(binary) = built_waypoint {
        // A built `waypoint` binary (the benchmark measures the shipped binary's memory).
        let mut cmd = Command::new(binary);
        cmd.env_clear();
        cmd
    } else if program == "demo-app" || program == "waypoint" {
        let mut cmd = Command::new(std::env::current_exe().context("locating this binary")?);
        cmd.env_clear().env(EXEC_ENV, program);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.env_clear();
        cmd
    };
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    Ok(cmd)
}

/// What a command run with [`Cluster::exec`] did.
#[derive(Debug)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}
