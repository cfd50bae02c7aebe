//! Tier 2 (in-process, loopback, no privileges): the whole ztunnel process
//! (`ztunnel::app::main`, as the binary runs it) with its admin endpoint and readiness on
//! ephemeral ports — standalone on a state file, and against the real controller with a
//! fake node agent on the ZDS socket. Readiness must say what it waits for until the
//! controller's first xDS responses and the agent's snapshot are in; `/quitquitquit` must
//! stop the process cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use controller::ca::MeshCa;
use controller::serve::{Listeners, RunConfig, serve};
use controller::translate::MeshOptions;
use inpod::zds::{ZdsConnection, ZdsListener};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

struct Reply {
    status: u16,
    body: String,
}

/// One HTTP/1.1 request with `connection: close`; `None` if nothing listens (yet).
async fn try_request(addr: SocketAddr, method: &str, path: &str) -> Option<Reply> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(BOUND, s.read_to_string(&mut out))
        .await
        .expect("an answer within the bound")
        .ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some(Reply { status, body })
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    try_request(addr, method, path)
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {path} on {addr}"))
}

/// Polls until `check` yields a value; panics naming `what` (and the last value seen)
/// after [`BOUND`].
async fn eventually<T, F>(what: &str, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Readiness as `(status, body)` once the endpoint answers.
async fn readiness(addr: SocketAddr) -> (u16, String) {
    let reply = eventually("the readiness endpoint to answer", || async {
        try_request(addr, "GET", "/healthz/ready")
            .await
            .ok_or_else(|| "no answer".to_owned())
    })
    .await;
    (reply.status, reply.body.trim().to_owned())
}

async fn config_dump(admin: SocketAddr) -> Value {
    let reply = request(admin, "GET", "/config_dump").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("config_dump is JSON")
}

/// A loopback address nothing listens on right now (for the process to bind itself).
fn free_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ztunnel-admin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs ztunnel's `main` with `args` on a blocking thread, as the binary does.
fn start_ztunnel(args: Vec<String>) -> JoinHandle<ExitCode> {
    tokio::task::spawn_blocking(move || ztunnel::app::main(args))
}

/// `POST /quitquitquit`, then the process must end successfully.
async fn quit(admin: SocketAddr, ztunnel: JoinHandle<ExitCode>) {
    let get = request(admin, "GET", "/quitquitquit").await;
    assert_eq!(get.status, 405, "GET does not stop ztunnel: {}", get.body);
    let quit = request(admin, "POST", "/quitquitquit").await;
    assert_eq!((quit.status, quit.body.trim()), (200, "OK"));
    let code = tokio::time::timeout(BOUND, ztunnel)
        .await
        .expect("ztunnel stops after /quitquitquit")
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(
        try_request(admin, "GET", "/").await.is_none(),
        "the admin endpoint is closed"
    );
}

const STATE: &str = "
workloads:
  - uid: cluster//Pod/prod/web-1
    name: web-1
    namespace: prod
    serviceAccount: web
    node: node-0
    addresses: [10.244.0.5]
    tunnelProtocol: HBONE
    services:
      prod/web.prod.svc.cluster.local: {80: 8080}
services:
  - name: web
    namespace: prod
    hostname: web.prod.svc.cluster.local
    vips: [10.96.0.10]
    ports: {80: 8080}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_ztunnel_is_ready_with_its_state_file_and_quits_on_request() {
    let dir = temp_dir("standalone");
    std::fs::write(dir.join("state.yaml"), STATE).unwrap();
    ztunnel::cert::LocalCa::write_dir(&hbone::testing::TestCa::new(), &dir.join("ca")).unwrap();
    let agent = ZdsListener::bind(dir.join("zds.sock")).unwrap();
    let (admin, ready, metrics) = (free_address(), free_address(), free_address());
    let args: Vec<String> = [
        "--state-file",
        path(&dir.join("state.yaml")),
        "--ca-dir",
        path(&dir.join("ca")),
        "--zds-socket",
        path(&dir.join("zds.sock")),
        "--admin-address",
        &admin.to_string(),
        "--readiness-address",
        &ready.to_string(),
        "--metrics-address",
        &metrics.to_string(),
    ]
    .map(str::to_owned)
    .into();
    let ztunnel = start_ztunnel(args);

    // The state file is loaded at start; the pods to serve come from the node agent.
    assert_eq!(
        readiness(ready).await,
        (
            503,
            "not ready: waiting for the node agent's snapshot".to_owned()
        )
    );
    let conn = agent_connection(&agent).await;
    send_empty_snapshot(conn).await;
    assert_eq!(readiness(ready).await, (200, "ready".to_owned()));
    let dump = config_dump(admin).await;
    let workloads = dump["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1, "{dump:#}");
    assert_eq!(workloads[0]["uid"], "cluster//Pod/prod/web-1");
    assert_eq!(workloads[0]["addresses"], serde_json::json!(["10.244.0.5"]));
    assert_eq!(dump["services"][0]["endpoints"], 1);
    assert_eq!(dump["pods"], serde_json::json!([]));
    assert_eq!(dump["readiness"]["ready"], true);
    assert!(dump.get("xds").is_none(), "no xDS without a controller");

    // Metrics on both paths; no xDS gauges without a controller, no pods yet.
    let page = request(metrics, "GET", "/metrics").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        request(metrics, "GET", "/stats/prometheus").await.body,
        page.body
    );
    assert!(
        page.body.contains("ztunnel_pods{state=\"running\"} 0\n"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("ztunnel_active_connections{direction=\"outbound\"} 0\n"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("ztunnel_xds_"), "{}", page.body);
    assert!(page.body.ends_with("# EOF\n"), "{}", page.body);

    // The process's own log filter (the one `runtime::init_logging` installed).
    let level = request(admin, "GET", "/logging").await;
    assert_eq!(level.status, 200, "{}", level.body);
    assert!(
        level.body.starts_with("current log level is "),
        "{}",
        level.body
    );
    let set = request(admin, "POST", "/logging?level=warn,access=info").await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert!(set.body.contains("access=info"), "{}", set.body);
    assert_eq!(
        request(admin, "POST", "/logging?level=%5B").await.status,
        400
    );
    assert_eq!(
        request(admin, "POST", "/logging?reset").await.body,
        level.body
    );

    quit(admin, ztunnel).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_already_in_use_stops_ztunnel_at_start() {
    for flag in [
        "--readiness-address",
        "--metrics-address",
        "--admin-address",
    ] {
        assert_eq!(
            start_with_taken(flag).await,
            ExitCode::FAILURE,
            "{flag} on a taken port"
        );
    }
}

/// Starts ztunnel with `flag`'s port already taken; returns its exit code.
async fn start_with_taken(flag: &str) -> ExitCode {
    let dir = temp_dir(&format!("taken{flag}"));
    std::fs::write(dir.join("state.yaml"), STATE).unwrap();
    ztunnel::cert::LocalCa::write_dir(&hbone::testing::TestCa::new(), &dir.join("ca")).unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut args: Vec<String> = [
        "--state-file",
        path(&dir.join("state.yaml")),
        "--ca-dir",
        path(&dir.join("ca")),
        "--zds-socket",
        path(&dir.join("no-agent.sock")),
    ]
    .map(str::to_owned)
    .into();
    for port in [
        "--admin-address",
        "--readiness-address",
        "--metrics-address",
    ] {
        let address = match port == flag {
            true => taken.local_addr().unwrap(),
            false => free_address(),
        };
        args.extend([port.to_owned(), address.to_string()]);
    }
    let code = tokio::time::timeout(BOUND, start_ztunnel(args))
        .await
        .expect("ztunnel gives up at once")
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    code
}

/// ztunnel's connection to the fake node agent, once it said hello.
async fn agent_connection(agent: &ZdsListener) -> ZdsConnection {
    let mut conn = tokio::time::timeout(BOUND, agent.accept())
        .await
        .expect("ztunnel connects to the node agent")
        .unwrap();
    tokio::time::timeout(BOUND, conn.recv_hello())
        .await
        .expect("hello")
        .unwrap();
    conn
}

/// An empty snapshot (no pods), which ztunnel must acknowledge.
async fn send_empty_snapshot(mut conn: ZdsConnection) {
    conn.send_snapshot_sent().await.unwrap();
    let ack = tokio::time::timeout(BOUND, conn.recv_ack())
        .await
        .expect("ack")
        .unwrap();
    assert_eq!(ack, Ok(()));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TOKENS: &str = "node-0: node-0-token-0123456789\n";
const MANIFESTS: &str = "
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
---
apiVersion: v1
kind: Pod
metadata: {name: cart-a, namespace: shop, labels: {app: cart}}
spec:
  nodeName: node-0
  serviceAccountName: cart
  containers: [{name: app, image: demo-app}]
status: {podIP: 10.244.0.5}
";

/// The controller on an already bound gRPC listener (connections wait in its backlog
/// until it serves).
fn start_controller(dir: &Path, grpc: TcpListener) -> (watch::Sender<bool>, JoinHandle<()>) {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    admin.set_nonblocking(true).unwrap();
    let admin = TcpListener::from_std(admin).unwrap();
    let config = RunConfig {
        manifests: dir.join("manifests"),
        state_dir: dir.join("controller"),
        tokens: dir.join("tokens.yaml"),
        plugged_ca: None,
        listen: grpc.local_addr().unwrap(),
        admin: admin.local_addr().unwrap(),
        mesh: MeshOptions::default(),
        signing: Default::default(),
        server_names: Vec::new(),
        server_ips: Vec::new(),
        debounce: Default::default(),
    };
    let (stop, shutdown) = watch::channel(false);
    let listeners = Listeners { grpc, admin };
    let task = tokio::spawn(async move {
        serve(config, listeners, shutdown)
            .await
            .expect("the controller runs")
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_controller_ready_waits_for_xds_and_the_node_agents_snapshot() {
    let dir = temp_dir("controller");
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/shop.yaml"), MANIFESTS).unwrap();
    std::fs::write(dir.join("tokens.yaml"), TOKENS).unwrap();
    std::fs::write(dir.join("node-0.token"), "node-0-token-0123456789").unwrap();
    // The mesh root exists before the controller runs, as ztunnel needs it at start.
    MeshCa::load_or_create(&dir.join("controller")).unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = ZdsListener::bind(dir.join("zds.sock")).unwrap();
    let (admin, ready, metrics) = (free_address(), free_address(), free_address());
    let args: Vec<String> = [
        "--xds-address",
        &format!("https://{}", grpc.local_addr().unwrap()),
        "--root-cert",
        path(&dir.join("controller/root-cert.pem")),
        "--token-file",
        path(&dir.join("node-0.token")),
        "--node-name",
        "node-0",
        "--zds-socket",
        path(&dir.join("zds.sock")),
        "--admin-address",
        &admin.to_string(),
        "--readiness-address",
        &ready.to_string(),
        "--metrics-address",
        &metrics.to_string(),
    ]
    .map(str::to_owned)
    .into();
    let ztunnel = start_ztunnel(args);

    // The controller is not serving yet: nothing has arrived.
    assert_eq!(
        readiness(ready).await,
        (
            503,
            "not ready: waiting for the node agent's snapshot; \
             waiting for the first xDS response (Address, Authorization)"
                .to_owned()
        )
    );
    let dump = config_dump(admin).await;
    assert_eq!(dump["xds"]["synced"], false, "{dump:#}");
    assert_eq!(dump["xds"]["types"]["Address"]["applied"], 0, "{dump:#}");
    assert_eq!(dump["readiness"]["ready"], false, "{dump:#}");

    // The controller serves: xDS syncs; the node agent's snapshot is still awaited.
    let (stop_controller, controller) = start_controller(&dir, grpc);
    eventually("the first xDS responses to be applied", || async {
        match readiness(ready).await {
            (503, body) if body == "not ready: waiting for the node agent's snapshot" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let dump = config_dump(admin).await;
    assert_eq!(dump["xds"]["synced"], true, "{dump:#}");
    assert_eq!(dump["xds"]["connected"], true, "{dump:#}");
    for kind in ["Address", "Authorization"] {
        let of_type = &dump["xds"]["types"][kind];
        assert!(of_type["applied"].as_u64().unwrap() >= 1, "{dump:#}");
        assert!(
            !of_type["lastAppliedNonce"].as_str().unwrap().is_empty(),
            "{dump:#}"
        );
    }
    let names: Vec<&str> = dump["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cart-a"], "{dump:#}");

    // The same, as metrics: connected, synced, one workload and one service held.
    let page = request(metrics, "GET", "/metrics").await.body;
    for line in [
        "ztunnel_xds_connected 1\n",
        "ztunnel_xds_synced 1\n",
        "ztunnel_xds_resources{type_url=\"type.googleapis.com/istio.workload.Address\"} 2\n",
        "ztunnel_xds_nacks_total{type_url=\"type.googleapis.com/istio.workload.Address\"} 0\n",
    ] {
        assert!(page.contains(line), "no {line:?} in\n{page}");
    }
    assert!(
        page.contains(
            "ztunnel_xds_acks_total{type_url=\"type.googleapis.com/istio.security.Authorization\"} "
        ),
        "{page}"
    );

    // The node agent: ztunnel connects once synced; an empty snapshot completes it.
    let conn = agent_connection(&agent).await;
    let (status, _) = readiness(ready).await;
    assert_eq!(status, 503, "not ready before the snapshot is sent");
    send_empty_snapshot(conn).await;
    assert_eq!(readiness(ready).await, (200, "ready".to_owned()));
    assert_eq!(config_dump(admin).await["readiness"]["ready"], true);

    quit(admin, ztunnel).await;
    stop_controller.send(true).unwrap();
    tokio::time::timeout(BOUND, controller)
        .await
        .expect("the controller stops")
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
