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
use lab::eventually::until;
use lab::{Pod, assert_eventually};
use libtest_mimic::Trial;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;
use ztunnel::ca_client::{CaClient, CaClientConfig};
use ztunnel::cert::CertificateSource;
use ztunnel::control_plane::{ControlPlane, ControlPlaneConfig};

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

/// A scratch directory, removed on drop unless `LAB_MESH_KEEP` is set.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("LAB_MESH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running local mesh on its own manifest directory.
struct Env {
    cluster: Cluster,
    manifests: PathBuf,
    _scratch: Scratch,
}

impl Env {
    async fn start(name: &str) -> Result<Env> {
        let root = std::env::temp_dir().join(format!("cp-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let scratch = Scratch(root.clone());
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

/// A namespace outside the mesh with one pod on node 0: its traffic reaches captured pods
/// in plaintext (on their ztunnel's 15006).
const OUTSIDER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: legacy, labels: {app: outsider}}
spec: {nodeName: node-0, serviceAccountName: outsider, containers: []}
status: {podIP: 10.244.0.20}
";

/// STRICT mutual TLS for the whole `mesh` namespace.
const STRICT_MESH: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mesh}
spec: {mtls: {mode: STRICT}}
";

/// An ALLOW policy on the server for one principal of the `mesh` namespace.
fn allow_principal(service_account: &str) -> String {
    format!(
        "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-one, namespace: mesh}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/mesh/sa/{service_account}]}}}}]
"
    )
}

/// A namespace-wide ALLOW (no selector): only peers from the `mesh` namespace.
const ALLOW_MESH_NAMESPACE: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-only, namespace: mesh}
spec:
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [mesh]}}]
";

/// A dry-run DENY of the client and an AUDIT of everything reaching the server.
const DRY_RUN_AND_AUDIT: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-client-dry-run
  namespace: mesh
  annotations: {istio.io/dry-run: 'true'}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-server, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: AUDIT
  rules: [{}]
";

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
    ensure!(env.tunnelled(1, "client", addr), "not over HBONE");

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

async fn strict_mtls() -> Result<()> {
    let Echoing {
        mut env,
        client,
        addr,
        _server,
    } = Echoing::start("strict").await?;
    let outsider = env.add_outsider().await?;
    // PERMISSIVE (no PeerAuthentication): plaintext from outside the mesh is accepted.
    ensure!(
        becomes_allowed(&outsider, addr).await,
        "plaintext was refused before any PeerAuthentication\n{}",
        env.logs()
    );

    env.write("strict.yaml", STRICT_MESH)?;
    let reset = becomes_reset(&outsider, addr).await;
    ensure!(reset, "STRICT never reset plaintext\n{}", env.logs());
    assert_eventually!(
        env.cluster.ztunnel_log(1).lines().any(|l| l
            .contains("policy=istio-system/istio_converted_static_strict")
            && l.contains("src.addr=10.244.0.20")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not name the static STRICT policy for the refused plaintext"
    );
    // Mesh traffic is mutual TLS, so STRICT lets it through.
    echo(&client, addr)
        .await
        .with_context(|| format!("HBONE traffic under STRICT\n{}", env.logs()))?;

    env.remove("strict.yaml")?;
    ensure!(
        becomes_allowed(&outsider, addr).await,
        "plaintext still refused after the PeerAuthentication was removed\n{}",
        env.logs()
    );
    Ok(())
}

async fn live_connection_cut_off() -> Result<()> {
    let Echoing {
        env,
        client,
        addr,
        _server,
    } = Echoing::start("cut-off").await?;
    // A long-lived connection, working before the policy changes.
    let stream = client.connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"before\n").await?;
    let echoed = timeout(IO_BOUND, lines.next_line()).await??;
    ensure!(
        echoed.as_deref() == Some("before"),
        "echo answered {echoed:?}"
    );

    env.write("deny.yaml", DENY_CLIENT)?;
    // The connection is closed by the server's ztunnel; the client sees its end (or an
    // error), never another echo.
    let ended = timeout(PROPAGATION, async {
        match lines.next_line().await {
            Ok(Some(line)) => bail!("the denied connection still echoed {line:?}"),
            Ok(None) | Err(_) => Ok(()),
        }
    })
    .await;
    match ended {
        Ok(result) => result?,
        Err(_) => bail!(
            "the live connection was not cut off within {PROPAGATION:?}\n{}",
            env.logs()
        ),
    }
    assert_eventually!(
        env.cluster.ztunnel_log(1).lines().any(|l| l
            .contains("live connection now denied by authorization policy")
            && l.contains("policy=mesh/deny-client")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not log the cut-off by mesh/deny-client"
    );
    // New connections are refused too; once the policy goes, they work again.
    ensure!(
        echo(&client, addr).await.is_err(),
        "a new connection was allowed"
    );
    env.remove("deny.yaml")?;
    ensure!(
        becomes_allowed(&client, addr).await,
        "traffic did not come back after the policy was removed\n{}",
        env.logs()
    );
    Ok(())
}

async fn allow_policies() -> Result<()> {
    let Echoing {
        mut env,
        client,
        addr,
        _server,
    } = Echoing::start("allow").await?;
    // An ALLOW policy for someone else: the client matches none, so it is refused.
    env.write("allow.yaml", &allow_principal("nobody"))?;
    ensure!(
        becomes_refused(&client, addr).await,
        "an ALLOW policy for another principal let the client in\n{}",
        env.logs()
    );
    assert_eventually!(
        env.cluster
            .ztunnel_log(1)
            .lines()
            .any(|l| l.contains("matched none of the ALLOW policies")
                && l.contains("policy=mesh/allow-one")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not name the unmatched ALLOW policy"
    );
    // The same policy naming the client's principal allows it.
    env.write("allow.yaml", &allow_principal("client"))?;
    ensure!(
        becomes_allowed(&client, addr).await,
        "an ALLOW policy for the client's principal did not let it in\n{}",
        env.logs()
    );

    // Namespace-wide: every pod of `mesh` accepts peers from `mesh`, and nothing else
    // (plaintext from outside the mesh has no namespace).
    env.remove("allow.yaml")?;
    let outsider = env.add_outsider().await?;
    // Without policies plaintext is accepted (which also shows allow-one is gone).
    ensure!(
        becomes_allowed(&outsider, addr).await,
        "plaintext refused with no policy in force\n{}",
        env.logs()
    );
    env.write("mesh-only.yaml", ALLOW_MESH_NAMESPACE)?;
    let reset = becomes_reset(&outsider, addr).await;
    ensure!(
        reset,
        "the namespace-wide ALLOW did not refuse plaintext\n{}",
        env.logs()
    );
    ensure!(
        becomes_allowed(&client, addr).await,
        "the namespace-wide ALLOW refused a peer from its namespace\n{}",
        env.logs()
    );
    assert_eventually!(
        env.cluster
            .ztunnel_log(1)
            .lines()
            .any(|l| l.contains("policy=mesh/mesh-only") && l.contains("src.addr=10.244.0.20")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not name mesh/mesh-only for the refused plaintext"
    );
    Ok(())
}

async fn audit_and_dry_run() -> Result<()> {
    let Echoing {
        env,
        client,
        addr,
        _server,
    } = Echoing::start("audit").await?;
    env.write("observe.yaml", DRY_RUN_AND_AUDIT)?;
    // Nothing is enforced: wait until a connection is logged as audited (the policies
    // have arrived), and check it went through.
    let seen = |what: &'static str, policy: &'static str| {
        let env = &env;
        move || {
            env.cluster
                .ztunnel_log(1)
                .lines()
                .any(|l| l.contains(what) && l.contains(policy))
        }
    };
    let audited = seen(
        "connection audited by authorization policy",
        "policy=mesh/audit-server",
    );
    let would_deny = seen(
        "dry-run authorization policy would deny this connection",
        "policy=mesh/deny-client-dry-run",
    );
    let arrived = until(PROPAGATION, || async {
        echo(&client, addr)
            .await
            .with_context(|| format!("traffic under dry-run and AUDIT\n{}", env.logs()))?;
        Ok(audited() && would_deny())
    })
    .await;
    ensure!(
        matches!(arrived, Ok(true)),
        "no audited or dry-run line on node-1 ({arrived:?})\n{}",
        env.logs()
    );
    echo(&client, addr)
        .await
        .context("traffic after the policies arrived")?;
    Ok(())
}

/// ztunnel's metrics port, on every interface of its node.
const METRICS_PORT: u16 = 15020;
/// The metered exchange: the client sends this many bytes, the server answers with
/// [`RESPONSE_BYTES`], then both close.
const REQUEST_BYTES: usize = 3_000;
const RESPONSE_BYTES: usize = 70_001;
const METERED_PORT: u16 = 9090;

/// Node `node`'s ztunnel metrics page, fetched from inside the node (ztunnel runs in the
/// node's namespace and listens on `0.0.0.0:15020` there).
async fn scrape(cluster: &Cluster, node: usize) -> Result<String> {
    let lab_node = cluster.lab().node(node);
    let addr = SocketAddr::new(IpAddr::V4(lab_node.ip()), METRICS_PORT);
    let fetch = async {
        let mut s = lab_node.connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: ztunnel\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = timeout(IO_BOUND, fetch)
        .await
        .with_context(|| format!("no answer from {addr}/metrics within {IO_BOUND:?}"))?
        .with_context(|| format!("scraping node-{node}'s ztunnel at {addr}"))?;
    let (head, body) = out.split_once("\r\n\r\n").context("not an HTTP answer")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}/metrics answered {head}"
    );
    Ok(body.to_owned())
}

type Labels = std::collections::BTreeMap<String, String>;

/// The samples of `name` whose labels include every pair of `want`.
fn series(page: &str, name: &str, want: &[(&str, &str)]) -> Vec<(Labels, f64)> {
    page.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels: Labels = labels
                .split("\",")
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            let matches = want
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
            Some((labels, value.parse().ok()?)).filter(|_| matches)
        })
        .collect()
}

/// The one sample of `name` matching `want` (0 when there is none yet); more than one
/// is an error, as the label set must single the connection out.
fn sample(page: &str, name: &str, want: &[(&str, &str)]) -> Result<f64> {
    match series(page, name, want).as_slice() {
        [] => Ok(0.0),
        [(_, v)] => Ok(*v),
        many => bail!("{} series of {name} match {want:?}: {many:?}", many.len()),
    }
}

/// Answers [`REQUEST_BYTES`] with [`RESPONSE_BYTES`] on [`METERED_PORT`] inside the pod,
/// then waits for the client to close.
fn metered_server(pod: &Pod) -> Result<tokio::task::JoinHandle<()>> {
    let listener = pod.listen(METERED_PORT)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0; REQUEST_BYTES];
                if stream.read_exact(&mut request).await.is_err() {
                    return;
                }
                let response: Vec<u8> = (0..RESPONSE_BYTES).map(|i| (i % 251) as u8).collect();
                if stream.write_all(&response).await.is_err() {
                    return;
                }
                let _ = stream.shutdown().await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    }))
}

/// Waits until both ztunnels have the client and the server in their state and each
/// proxies its pod, as their own gauges say.
async fn ztunnels_ready(cluster: &Cluster) -> Result<bool> {
    until(PROPAGATION, || async {
        for node in 0..2 {
            let page = scrape(cluster, node).await?;
            let addresses = sample(
                &page,
                "ztunnel_xds_resources",
                &[("type_url", "type.googleapis.com/istio.workload.Address")],
            )?;
            let running = sample(&page, "ztunnel_pods", &[("state", "running")])?;
            if addresses < 2.0 || running < 1.0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

async fn metrics_count_exact_bytes() -> Result<()> {
    let env = Env::start("metrics").await?;
    let client = env.pod("client")?;
    let server = env.pod("server")?;
    let _server = metered_server(&server)?;
    let addr = SocketAddr::new(IpAddr::V4(server.ip()), METERED_PORT);
    ensure!(
        ztunnels_ready(&env.cluster).await?,
        "the ztunnels' gauges never showed both workloads and their pods\n{}",
        env.logs()
    );

    // One connection, the first between these pods: its counts are the totals.
    let exchange = async {
        let mut stream = client.connect(addr).await?;
        let request: Vec<u8> = (0..REQUEST_BYTES).map(|i| (i % 241) as u8).collect();
        stream.write_all(&request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response.len())
    };
    let received = timeout(IO_BOUND, exchange)
        .await
        .context("the metered exchange did not finish")?
        .with_context(|| format!("the metered exchange failed\n{}", env.logs()))?;
    ensure!(
        received == RESPONSE_BYTES,
        "the client got {received} bytes"
    );

    let connection = |reporter| {
        [
            ("reporter", reporter),
            ("source_workload_namespace", "mesh"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/mesh/sa/client",
            ),
            ("destination_workload_namespace", "mesh"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/mesh/sa/server",
            ),
            ("request_protocol", "tcp"),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
        ]
    };
    let reporters = [(0, "source", "outbound"), (1, "destination", "inbound")];
    // Both sides write their close once the client and the server have both closed.
    let closed = until(PROPAGATION, || async {
        for (node, reporter, direction) in reporters {
            let page = scrape(&env.cluster, node).await?;
            let closed = sample(
                &page,
                "istio_tcp_connections_closed_total",
                &connection(reporter),
            )?;
            let active = sample(
                &page,
                "ztunnel_active_connections",
                &[("direction", direction)],
            )?;
            if closed < 1.0 || active != 0.0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    ensure!(
        closed,
        "the connection's close was not counted on both ztunnels\n{}",
        env.logs()
    );

    let mut label_sets = Vec::new();
    for (node, reporter, _) in reporters {
        let page = scrape(&env.cluster, node).await?;
        let want = connection(reporter);
        let count = |name: &str| sample(&page, name, &want);
        let seen = (
            count("istio_tcp_connections_opened_total")?,
            count("istio_tcp_connections_closed_total")?,
            count("istio_tcp_received_bytes_total")?,
            count("istio_tcp_sent_bytes_total")?,
        );
        let expected = (1.0, 1.0, REQUEST_BYTES as f64, RESPONSE_BYTES as f64);
        ensure!(
            seen == expected,
            "node-{node} ({reporter}): (opened, closed, received, sent) = {seen:?}, expected {expected:?}\n{page}"
        );
        let (mut labels, _) = series(&page, "istio_tcp_sent_bytes_total", &want)
            .pop()
            .context("no series")?;
        for (label, value) in [
            ("source_workload", "client"),
            ("source_canonical_service", "client"),
            ("destination_workload", "server"),
            ("destination_canonical_service", "server"),
            ("destination_service", "unknown"),
        ] {
            ensure!(
                labels.get(label).map(String::as_str) == Some(value),
                "node-{node}: {label} is {:?}, expected {value:?}: {labels:?}",
                labels.get(label)
            );
        }
        ensure!(labels["source_cluster"] != "unknown", "{labels:?}");
        labels.remove("reporter");
        label_sets.push(labels);
    }
    ensure!(
        label_sets[0] == label_sets[1],
        "both reporters label the connection alike, but for the reporter: {label_sets:#?}"
    );
    Ok(())
}
