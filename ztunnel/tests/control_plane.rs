//! Tier 2 (in-process): the real controller (`controller::serve`: manifest directory,
//! translation, delta xDS and the CA on one TLS port) and ztunnel's own xDS and CA clients,
//! on loopback. Proves the two halves agree on the wire: manifests become ztunnel state,
//! edits flow live, a node only gets its own pods' certificates, problems show on the
//! admin endpoint, and ztunnel keeps its state across a controller restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use controller::serve::{Listeners, RunConfig, serve};
use controller::translate::MeshOptions;
use hbone::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ztunnel::ca_client::{CaClient, CaClientConfig};
use ztunnel::cert::{CertError, CertificateSource};
use ztunnel::control_plane::{ControlPlane, ControlPlaneConfig, DEFAULT_SERVER_NAME};
use ztunnel::state::StateStore;
use ztunnel::xds::{Backoff, NodeInfo, XdsClient, XdsConfig, XdsStatus};

const BOUND: Duration = Duration::from_secs(20);
const TOKENS: &str = "node-0: node-0-token-0123456789\nnode-1: node-1-token-0123456789\n";

const BASE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
";

fn pod(name: &str, node: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: cart}}}}
spec:
  nodeName: {node}
  serviceAccountName: {name}
  containers: [{{name: app, image: demo-app}}]
status: {{podIP: {ip}}}
"
    )
}

/// Polls `check` until it holds, failing with `what` after [`BOUND`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Controller {
    grpc: SocketAddr,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn start_controller(dir: &Path, grpc: Option<SocketAddr>) -> Controller {
    let grpc_listener = TcpListener::bind(grpc.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc, admin) = (
        grpc_listener.local_addr().unwrap(),
        admin_listener.local_addr().unwrap(),
    );
    let config = RunConfig {
        manifests: dir.join("manifests"),
        state_dir: dir.join("controller"),
        tokens: dir.join("tokens.yaml"),
        plugged_ca: None,
        listen: grpc,
        admin,
        mesh: MeshOptions::default(),
        signing: Default::default(),
        server_names: Vec::new(),
        server_ips: Vec::new(),
        debounce: Default::default(),
    };
    let (stop, shutdown) = watch::channel(false);
    let listeners = Listeners {
        grpc: grpc_listener,
        admin: admin_listener,
    };
    let task = tokio::spawn(async move {
        serve(config, listeners, shutdown)
            .await
            .expect("controller runs")
    });
    Controller {
        grpc,
        admin,
        stop,
        task,
    }
}

impl Controller {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("the controller stops on shutdown")
            .unwrap();
    }

    async fn admin_page(&self, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

fn control_plane(dir: &Path, grpc: SocketAddr, node: &str) -> ControlPlane {
    let token = dir.join(format!("{node}.token"));
    let line = TOKENS.lines().find(|l| l.starts_with(node)).unwrap();
    std::fs::write(&token, line.split_once(": ").unwrap().1).unwrap();
    ControlPlane::new(&ControlPlaneConfig {
        address: format!("https://{grpc}"),
        server_name: DEFAULT_SERVER_NAME.into(),
        root_cert: dir.join("controller/root-cert.pem"),
        token_file: token,
    })
    .unwrap()
}

struct Ztunnel {
    store: Arc<StateStore>,
    status: watch::Receiver<XdsStatus>,
    stop: watch::Sender<bool>,
}

fn start_xds(cp: ControlPlane, node: &str) -> Ztunnel {
    let store = Arc::new(StateStore::default());
    let client = XdsClient::new(
        cp,
        XdsConfig {
            node: NodeInfo {
                node_name: node.into(),
                ztunnel_id: format!("ztunnel~{node}~test"),
            },
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
        },
        store.clone(),
    );
    let status = client.status();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(client.run(shutdown));
    Ztunnel {
        store,
        status,
        stop,
    }
}

fn workload_names(store: &StateStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .snapshot()
        .workloads()
        .map(|w| w.name.clone())
        .collect();
    names.sort();
    names
}

fn setup(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ztunnel-cp-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("tokens.yaml"), TOKENS).unwrap();
    std::fs::write(dir.join("manifests/base.yaml"), BASE).unwrap();
    std::fs::write(
        dir.join("manifests/cart-a.yaml"),
        pod("cart-a", "node-0", "10.244.0.5"),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/cart-b.yaml"),
        pod("cart-b", "node-1", "10.244.1.5"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_flow_to_ztunnel_live_and_survive_a_controller_restart() {
    let dir = setup("flow");
    let controller = start_controller(&dir, None).await;
    let root = dir.join("controller/root-cert.pem");
    eventually("the mesh root to be written", || root.exists()).await;
    let zt = start_xds(control_plane(&dir, controller.grpc, "node-0"), "node-0");
    let mut status = zt.status.clone();
    tokio::time::timeout(BOUND, status.wait_for(|s| s.synced))
        .await
        .expect("ztunnel syncs")
        .unwrap();
    assert_eq!(workload_names(&zt.store), ["cart-a", "cart-b"]);
    let state = zt.store.snapshot();
    let cart = state
        .services()
        .find(|s| s.name == "cart")
        .expect("the cart service");
    assert_eq!(cart.hostname, "cart.shop.svc.cluster.local");
    assert_eq!(
        cart.vips,
        vec!["10.96.0.20".parse::<std::net::IpAddr>().unwrap()]
    );
    let a = state.workloads().find(|w| w.name == "cart-a").unwrap();
    assert_eq!(
        a.identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/cart-a"
    );
    assert_eq!(a.node, "node-0");

    // A new pod and a policy appear live; a broken manifest is reported, not applied.
    std::fs::write(
        dir.join("manifests/cart-c.yaml"),
        pod("cart-c", "node-1", "10.244.1.6"),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/deny.yaml"),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {action: DENY, rules: [{}]}
",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\nspec: {ports: [{port: banana}]}\n",
    )
    .unwrap();
    eventually("cart-c and the policy to reach ztunnel", || {
        workload_names(&zt.store).len() == 3 && zt.store.snapshot().policies().len() == 1
    })
    .await;
    let problems = controller.admin_page("/debug/problems").await;
    assert!(problems.contains("broken.yaml"), "{problems}");
    assert!(problems.contains("Service shop/bad"), "{problems}");
    let ready = controller.admin_page("/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let connections = controller.admin_page("/debug/connections").await;
    assert!(connections.contains("ztunnel~node-0~test"), "{connections}");

    // The controller goes away: ztunnel keeps its last good state...
    let grpc = controller.grpc;
    let applied_before = zt.status.borrow().applied;
    controller.stop().await;
    eventually("ztunnel to notice the controller is gone", || {
        !zt.status.borrow().connected
    })
    .await;
    assert_eq!(workload_names(&zt.store).len(), 3);
    // ...and an edit made meanwhile arrives once a controller is back on the same port.
    std::fs::remove_file(dir.join("manifests/cart-c.yaml")).unwrap();
    let controller = start_controller(&dir, Some(grpc)).await;
    eventually("ztunnel to resync after the restart", || {
        zt.status.borrow().applied > applied_before && workload_names(&zt.store).len() == 2
    })
    .await;
    assert_eq!(workload_names(&zt.store), ["cart-a", "cart-b"]);
    zt.stop.send(true).unwrap();
    controller.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_certificates_only_for_its_own_pods() {
    let dir = setup("certs");
    let controller = start_controller(&dir, None).await;
    let root = dir.join("controller/root-cert.pem");
    eventually("the mesh root to be written", || root.exists()).await;
    // Serving starts after the first translation; the client retries until then.
    let node0 = CaClient::new(
        control_plane(&dir, controller.grpc, "node-0"),
        CaClientConfig {
            retry_initial: Duration::from_millis(50),
            ..CaClientConfig::default()
        },
    );
    let own: Identity = "spiffe://cluster.local/ns/shop/sa/cart-a".parse().unwrap();
    let other: Identity = "spiffe://cluster.local/ns/shop/sa/cart-b".parse().unwrap();
    let mut cert = node0.certificate(&own).await;
    let deadline = tokio::time::Instant::now() + BOUND;
    while matches!(cert, Err(CertError::CaUnreachable { .. }))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cert = node0.certificate(&own).await;
    }
    let cert = cert.expect("node-0 may have cart-a's certificate");
    assert_eq!(cert.identity(), &own);
    let root_pem = std::fs::read(&root).unwrap();
    use rustls_pki_types::pem::PemObject;
    let root_der = rustls_pki_types::CertificateDer::from_pem_slice(&root_pem).unwrap();
    assert_eq!(cert.roots(), &[root_der]);
    match node0.certificate(&other).await {
        Err(e @ CertError::CaDenied { .. }) => {
            assert!(e.to_string().contains("cart-b"), "{e}")
        }
        other => panic!("node-0 must not get cart-b's certificate: {other:?}"),
    }
    controller.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
