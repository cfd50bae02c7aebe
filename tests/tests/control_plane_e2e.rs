//! Lab e2e tier: the control plane. Each trial runs the local mesh ([`lab::cluster`]):
//! the controller watching a manifest directory, and per node a node agent and a ztunnel
//! fed by it over delta xDS and the CA. Trials edit the manifests and assert on traffic
//! between pods (apps are tokio tasks inside the pods) and on what ztunnel logged.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hbone::Identity;
use lab::cluster::{Cluster, ClusterConfig};
use lab::eventually::{until, wait_for};
use lab::{Pod, assert_eventually};
use libtest_mimic::Trial;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;
use ztunnel::ca_client::{CaClient, CaClientConfig};
use ztunnel::cert::CertificateSource;
use ztunnel::control_plane::{ControlPlane, ControlPlaneConfig};

#[path = "control_plane_e2e/metrics.rs"]
mod metrics;
#[path = "control_plane_e2e/policies.rs"]
mod policies;

use metrics::metrics_count_exact_bytes;
use policies::{OUTSIDER, allow_policies, audit_and_dry_run, live_connection_cut_off, strict_mtls};

const TRIAL_BOUND: Duration = Duration::from_secs(120);
const IO_BOUND: Duration = Duration::from_secs(5);
/// How long a config change may take to reach the proxies before a trial fails.
const PROPAGATION: Duration = Duration::from_secs(10);
const APP_PORT: u16 = 8080;

/// An enrolled namespace with a client on node 0 and a server on node 1.
const BASE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh, labels: {app: client}}
spec: {nodeName: node-0, serviceAccountName: client, containers: []}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: mesh, labels: {app: server}}
spec: {nodeName: node-1, serviceAccountName: server, containers: []}
status: {podIP: 10.244.1.10}
";

const DENY_CLIENT: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]
";

fn main() -> ExitCode {
    lab::trial::mesh_main("control_plane_e2e", || {
        vec![
            trial(
                "a_pod_added_to_the_manifests_is_reachable_within_a_second",
                new_pod_reachable,
            ),
            trial(
                "a_policy_added_denies_and_removed_allows_again",
                policy_add_remove,
            ),
            trial(
                "traffic_flows_without_the_controller_and_proxies_resync_after_restart",
                controller_restart,
            ),
            trial(
                "a_config_the_proxies_reject_does_not_break_traffic",
                nacked_config,
            ),
            trial(
                "a_node_cannot_obtain_another_nodes_pod_certificate",
                foreign_certificate,
            ),
            trial(
                "strict_mtls_resets_plaintext_and_keeps_mesh_traffic",
                strict_mtls,
            ),
            trial(
                "a_policy_change_cuts_off_live_connections_it_now_denies",
                live_connection_cut_off,
            ),
            trial(
                "allow_policies_by_principal_and_namespace_wide",
                allow_policies,
            ),
            trial(
                "audit_and_dry_run_policies_log_and_never_enforce",
                audit_and_dry_run,
            ),
            trial(
                "both_ztunnels_count_a_connections_exact_bytes_in_istio_metrics",
                metrics_count_exact_bytes,
            ),
        ]
    })
}

fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    lab::trial::trial(name, TRIAL_BOUND, test)
}

/// A running local mesh on its own manifest directory.
struct Env {
    cluster: Cluster,
    manifests: PathBuf,
    _scratch: lab::trial::Scratch,
}

impl Env {
    async fn start(name: &str) -> Result<Env> {
        let scratch = lab::trial::Scratch::new("cp-e2e", name);
        let root = scratch.path().to_owned();
        let manifests = root.join("manifests");
        std::fs::create_dir_all(&manifests)?;
        write(&manifests, "base.yaml", BASE)?;
        let cluster = Cluster::start(ClusterConfig::new(&manifests, root.join("work"))).await?;
        ensure!(
            cluster.problems().is_empty(),
            "problems: {:?}",
            cluster.problems()
        );
        Ok(Env {
            cluster,
            manifests,
            _scratch: scratch,
        })
    }

    fn pod(&self, name: &str) -> Result<Pod> {
        self.cluster
            .pod("mesh", name)
            .cloned()
            .with_context(|| format!("no pod mesh/{name}"))
    }

    fn write(&self, file: &str, yaml: &str) -> Result<()> {
        write(&self.manifests, file, yaml)
    }

    /// Adds the uncaptured pod `legacy/outsider` (a plaintext client from outside the mesh).
    async fn add_outsider(&mut self) -> Result<Pod> {
        self.write("outsider.yaml", OUTSIDER)?;
        let done = self.cluster.reconcile().await?;
        ensure!(done.added.len() == 1, "{done:?}");
        self.cluster
            .pod("legacy", "outsider")
            .cloned()
            .context("no pod legacy/outsider")
    }

    fn remove(&self, file: &str) -> Result<()> {
        std::fs::remove_file(self.manifests.join(file)).with_context(|| format!("removing {file}"))
    }

    /// All ztunnel logs, for failure messages.
    fn logs(&self) -> String {
        (0..2)
            .map(|n| format!("--- node-{n} ztunnel ---\n{}", self.cluster.ztunnel_log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether node `node`'s ztunnel logged a finished tunnel from `src` to `dst`.
    fn tunnelled(&self, node: usize, src: &str, dst: SocketAddr) -> bool {
        let src = format!("src.identity=spiffe://cluster.local/ns/mesh/sa/{src}");
        let dst = format!("dst.addr={dst}");
        self.cluster.ztunnel_log(node).lines().any(|l| {
            l.contains("inbound connection closed") && l.contains(&src) && l.contains(&dst)
        })
    }
}

/// The base mesh with an echo server in `server` that `client` already reaches.
struct Echoing {
    env: Env,
    client: Pod,
    addr: SocketAddr,
    _server: tokio::task::JoinHandle<()>,
}

impl Echoing {
    async fn start(name: &str) -> Result<Echoing> {
        let env = Env::start(name).await?;
        let client = env.pod("client")?;
        let server = env.pod("server")?;
        let task = echo_server(&server)?;
        let addr = app_addr(&server);
        ensure!(
            becomes_allowed(&client, addr).await,
            "no traffic at start\n{}",
            env.logs()
        );
        Ok(Echoing {
            env,
            client,
            addr,
            _server: task,
        })
    }
}

/// Writes a manifest the way an editor or `kubectl` would leave it: whole, at once.
fn write(dir: &Path, file: &str, yaml: &str) -> Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, dir.join(file))?;
    Ok(())
}

/// A pod with no containers (the trial runs its app as a task).
fn pod_manifest(name: &str, node: usize, ip: Ipv4Addr) -> String {
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: mesh, labels: {{app: {name}}}}}
spec: {{nodeName: node-{node}, serviceAccountName: {name}, containers: []}}
status: {{podIP: {ip}}}
"
    )
}

/// Serves line echo on [`APP_PORT`] inside the pod until the task is dropped.
fn echo_server(pod: &Pod) -> Result<tokio::task::JoinHandle<()>> {
    let listener = pod.listen(APP_PORT)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    }))
}

/// One connection from `client` to `addr`: a line out, the same line back.
async fn echo(client: &Pod, addr: SocketAddr) -> Result<()> {
    let exchange = async {
        let stream = client.connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(b"marco\n").await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        if line != "marco\n" {
            bail!("echo answered {line:?}");
        }
        Ok(())
    };
    timeout(IO_BOUND, exchange)
        .await
        .unwrap_or_else(|_| bail!("no echo within {IO_BOUND:?}"))
}

/// Waits until echo from `client` to `addr` fails (true) or keeps working (false).
async fn becomes_refused(client: &Pod, addr: SocketAddr) -> bool {
    until(PROPAGATION, || async {
        Ok(echo(client, addr).await.is_err())
    })
    .await
    .unwrap_or(false)
}

/// Waits until echo from `client` to `addr` works.
async fn becomes_allowed(client: &Pod, addr: SocketAddr) -> bool {
    until(PROPAGATION, || async {
        Ok(echo(client, addr).await.is_ok())
    })
    .await
    .unwrap_or(false)
}

/// Waits until an exchange from `client` to `addr` ends in a connection reset.
async fn becomes_reset(client: &Pod, addr: SocketAddr) -> bool {
    until(PROPAGATION, || async {
        Ok(reset_by_peer(client, addr).await)
    })
    .await
    .unwrap_or(false)
}

/// Whether one exchange from `client` to `addr` ends in a connection reset (what STRICT
/// does to plaintext), as opposed to working or failing some other way.
async fn reset_by_peer(client: &Pod, addr: SocketAddr) -> bool {
    let exchange = async {
        let stream = client.connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(b"marco\n").await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    matches!(
        timeout(IO_BOUND, exchange).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset
    )
}

fn app_addr(pod: &Pod) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(pod.ip()), APP_PORT)
}

async fn new_pod_reachable() -> Result<()> {
    let mut env = Env::start("new-pod").await?;
    let client = env.pod("client")?;
    let ip = Ipv4Addr::new(10, 244, 1, 30);
    let addr = SocketAddr::new(IpAddr::V4(ip), APP_PORT);

    // The clock starts when the manifest lands; the lab then plays kubelet (sandbox and
    // app), and the mesh must carry a tunnel from the client to it within a second.
    let written = Instant::now();
    env.write("late.yaml", &pod_manifest("late", 1, ip))?;
    let done = env.cluster.reconcile().await?;
    ensure!(done.added.len() == 1, "{done:?}");
    let late = env.pod("late")?;
    let _server = echo_server(&late)?;
    let mut tunnelled_after = None;
    while written.elapsed() < Duration::from_secs(10) {
        if echo(&client, addr).await.is_ok() {
            // Over HBONE with the client's identity, not passed through in plaintext.
            let logged = Instant::now();
            while logged.elapsed() < Duration::from_millis(500) {
                if env.tunnelled(1, "client", addr) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if env.tunnelled(1, "client", addr) {
                tunnelled_after = Some(written.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(after) = tunnelled_after else {
        bail!("the new pod was never reached over HBONE\n{}", env.logs());
    };
    eprintln!("new pod reached over HBONE {after:?} after its manifest was written");
    ensure!(
        after < Duration::from_secs(1),
        "the new pod took {after:?} to be reachable over HBONE (limit 1 s)"
    );

    // Deleted again: node-1's ztunnel lets go of it and of its certificate.
    env.remove("late.yaml")?;
    let done = env.cluster.reconcile().await?;
    ensure!(done.removed.len() == 1, "{done:?}");
    assert_eventually!(
        env.cluster
            .ztunnel_log(1)
            .lines()
            .any(|l| l.contains("certificate is dropped") && l.contains("/sa/late")),
        timeout = IO_BOUND,
        "node-1's ztunnel kept the certificate of a pod it no longer runs"
    );
    Ok(())
}

async fn policy_add_remove() -> Result<()> {
    let Echoing {
        env,
        client,
        addr,
        _server,
    } = Echoing::start("policy").await?;

    env.write("deny.yaml", DENY_CLIENT)?;
    ensure!(
        becomes_refused(&client, addr).await,
        "the DENY policy never took effect\n{}",
        env.logs()
    );
    assert_eventually!(
        env.cluster
            .ztunnel_log(1)
            .contains("policy=mesh/deny-client"),
        timeout = IO_BOUND,
        "node-1's ztunnel did not log the denial by mesh/deny-client"
    );

    env.remove("deny.yaml")?;
    ensure!(
        becomes_allowed(&client, addr).await,
        "traffic did not come back after the policy was removed\n{}",
        env.logs()
    );
    Ok(())
}

async fn controller_restart() -> Result<()> {
    let Echoing {
        mut env,
        client,
        addr,
        _server,
    } = Echoing::start("restart").await?;

    env.cluster.kill_controller()?;
    // New connections keep flowing on the last state, with the certificates held.
    for i in 0..20 {
        echo(&client, addr)
            .await
            .with_context(|| format!("connection {i} with the controller down"))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        wait_for(IO_BOUND, || env.tunnelled(1, "client", addr)).await,
        "not over HBONE"
    );

    // An edit made while the controller is down reaches the proxies once it is back.
    env.write("deny.yaml", DENY_CLIENT)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo(&client, addr)
        .await
        .context("with no controller, nothing can have changed")?;
    let before: Vec<usize> = (0..2).map(|n| env.cluster.xds_updates(n)).collect();
    env.cluster.start_controller().await?;
    ensure!(
        becomes_refused(&client, addr).await,
        "the proxies never resynced with the restarted controller\n{}",
        env.logs()
    );
    // The client's ztunnel (node-0) resyncs too, on its own reconnect backoff.
    for (node, before) in before.into_iter().enumerate() {
        assert_eventually!(
            env.cluster.xds_updates(node) > before,
            timeout = PROPAGATION,
            "node-{node}'s ztunnel applied nothing from the restarted controller"
        );
    }
    Ok(())
}

async fn nacked_config() -> Result<()> {
    let Echoing {
        env,
        client,
        addr,
        _server,
    } = Echoing::start("nack").await?;

    // Valid for Kubernetes (port 53 over TCP to 53, over UDP to 5353), but the workload
    // API has no protocol: ztunnel cannot tell which target TCP means, refuses the
    // resource, and the push is NACKed.
    env.write(
        "dns.yaml",
        "
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: mesh}
spec:
  clusterIP: 10.96.0.53
  selector: {app: server}
  ports:
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
  - {name: dns-udp, port: 53, protocol: UDP, targetPort: 5353}
",
    )?;
    assert_eventually!(
        (0..2).all(|n| env
            .cluster
            .ztunnel_log(n)
            .contains("xds update rejected (NACK)")),
        timeout = PROPAGATION,
        "the proxies did not reject the duplicate port\n{}",
        env.logs()
    );
    for i in 0..10 {
        echo(&client, addr)
            .await
            .with_context(|| format!("connection {i} after the NACK"))?;
    }
    // And the proxies still take the next good change that does not involve the refused
    // resources (the server's workload carries the bad service, so a policy selecting
    // it would wait for the service to be fixed): a namespace-wide policy.
    env.write(
        "deny.yaml",
        &DENY_CLIENT.replace("  selector: {matchLabels: {app: server}}\n", ""),
    )?;
    ensure!(
        becomes_refused(&client, addr).await,
        "a good change after the NACK never took effect\n{}",
        env.logs()
    );
    Ok(())
}

async fn foreign_certificate() -> Result<()> {
    let env = Env::start("cert").await?;
    let work = env.cluster.config().work_dir.clone();
    let address = env.cluster.controller_address();
    let node0 = env.cluster.lab().node(0).clone();
    // node-0's ztunnel credentials, used from node-0's network namespace, asking for its
    // own client's identity and then for the server's, which runs on node-1.
    let answers = tokio::task::spawn_blocking(move || {
        node0.run(
            move || -> Result<(Result<(), String>, Result<(), String>)> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let control_plane = ControlPlane::new(&ControlPlaneConfig {
                        address,
                        server_name: ztunnel::control_plane::DEFAULT_SERVER_NAME.into(),
                        root_cert: work.join("controller-state/root-cert.pem"),
                        token_file: work.join("node-0/token"),
                    })?;
                    let ca = Arc::new(CaClient::new(
                        control_plane,
                        CaClientConfig {
                            request_timeout: IO_BOUND,
                            ..CaClientConfig::default()
                        },
                    ));
                    let ask = |sa: &str| {
                        let ca = ca.clone();
                        let identity = Identity::new("cluster.local", "mesh", sa);
                        async move {
                            let identity = identity.map_err(|e| e.to_string())?;
                            ca.certificate(&identity)
                                .await
                                .map(drop)
                                .map_err(|e| e.to_string())
                        }
                    };
                    Ok((ask("client").await, ask("server").await))
                })
            },
        )
    })
    .await???;
    let (own, foreign) = answers;
    own.map_err(anyhow::Error::msg)
        .context("node-0 could not get its own pod's certificate")?;
    let refusal = match foreign {
        Ok(()) => bail!("node-0 obtained a certificate for node-1's pod"),
        Err(e) => e,
    };
    ensure!(
        refusal.contains("node \"node-0\" runs no pod with identity"),
        "refused for the wrong reason: {refusal}"
    );
    assert_eventually!(
        env.cluster
            .controller_log()
            .contains("certificate request refused"),
        timeout = IO_BOUND,
        "the controller did not log the refusal"
    );
    Ok(())
}
