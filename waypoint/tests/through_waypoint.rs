//! Tier 2 (in-process): the real controller (manifests, xDS, CA) and the real waypoint
//! process (`waypoint::app::serve`) on loopback, with HTTP backends standing in for the
//! pods of a service and a test client tunnelling to the waypoint over HBONE as a ztunnel
//! would. Proves the pieces agree: the waypoint gets its certificate and its config over
//! xDS, routes by VirtualService and DestinationRule subsets, enforces an L7
//! AuthorizationPolicy, injects faults, and counts requests in Istio's metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use controller::serve::{Listeners as ControllerListeners, RunConfig, serve};
use controller::translate::MeshOptions;
use dataplane::ca_client::{CaClient, CaClientConfig};
use dataplane::cert::CertificateSource;
use dataplane::control_plane::{ControlPlane, ControlPlaneConfig, DEFAULT_SERVER_NAME};
use hbone::tls::ClientTls;
use hbone::{ConnectRequest, Identity, Pool, PoolConfig, PoolKey, TlsDialer};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use waypoint::app::{Listeners, serve as serve_waypoint};
use waypoint::flags::Flags;

const BOUND: Duration = Duration::from_secs(20);
const TOKENS: &str = "node-0: node-0-token-0123456789\n";

/// A mesh with one service behind the waypoint: `reviews` (VIP 10.96.0.30:9080), v1 at
/// 127.0.0.11 and v2 at 127.0.0.12 (loopback addresses the backends listen on), plus the
/// client pod whose identity the test presents.
const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec:
  clusterIP: 10.96.1.1
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: node-0, serviceAccountName: waypoint, containers: [{name: proxy, image: waypoint}]}
status: {podIP: 127.0.0.10}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.30
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: PORT}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {nodeName: node-0, containers: [{name: app, image: reviews}]}
status: {podIP: 127.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: shop, labels: {app: reviews, version: v2}}
spec: {nodeName: node-0, containers: [{name: app, image: reviews}]}
status: {podIP: 127.0.0.12}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node-0, serviceAccountName: client, containers: [{name: app, image: curl}]}
status: {podIP: 127.0.0.20}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /broken}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
    headers: {response: {set: {x-routed-by: waypoint}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;

/// An HTTP/1.1 backend answering `NAME PATH` on `addr`.
async fn backend(addr: SocketAddr, name: &'static str) {
    let listener = TcpListener::bind(addr).await.expect("bind a backend");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let body = format!("{name} {}", req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = server_http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_controller(dir: &Path, manifests: &str) -> (SocketAddr, watch::Sender<bool>) {
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/all.yaml"), manifests).unwrap();
    std::fs::write(dir.join("tokens.yaml"), TOKENS).unwrap();
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    let config = RunConfig {
        manifests: dir.join("manifests"),
        state_dir: dir.join("controller"),
        tokens: dir.join("tokens.yaml"),
        plugged_ca: None,
        listen: grpc,
        admin: admin_listener.local_addr().unwrap(),
        mesh: MeshOptions::default(),
        signing: Default::default(),
        server_names: Vec::new(),
        server_ips: Vec::new(),
        debounce: Default::default(),
    };
    let (stop, shutdown) = watch::channel(false);
    let listeners = ControllerListeners {
        grpc: grpc_listener,
        admin: admin_listener,
    };
    tokio::spawn(async move {
        serve(config, listeners, shutdown)
            .await
            .expect("controller runs")
    });
    (grpc, stop)
}

struct Running {
    hbone: SocketAddr,
    metrics: SocketAddr,
    client: Pool,
    client_identity: Identity,
    waypoint_identity: Identity,
    _stops: Vec<watch::Sender<bool>>,
    _dir: TempDir,
}

async fn start() -> Running {
    let dir = TempDir::new();
    // Backends first: the port goes into the Service's targetPort.
    let probe = TcpListener::bind("127.0.0.11:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    backend(SocketAddr::new("127.0.0.11".parse().unwrap(), port), "v1").await;
    backend(SocketAddr::new("127.0.0.12".parse().unwrap(), port), "v2").await;
    let manifests = MANIFESTS.replace("targetPort: PORT", &format!("targetPort: {port}"));
    let (grpc, controller_stop) = start_controller(dir.path(), &manifests).await;
    let root = dir.path().join("controller/root-cert.pem");
    eventually("the controller's root certificate", || {
        let exists = root.exists();
        async move { exists }
    })
    .await;
    std::fs::write(dir.path().join("token"), "node-0-token-0123456789").unwrap();
    let control_plane = ControlPlaneConfig {
        address: grpc.to_string(),
        server_name: DEFAULT_SERVER_NAME.into(),
        root_cert: root,
        token_file: dir.path().join("token"),
    };
    let args = [
        "--name",
        "waypoint",
        "--namespace",
        "shop",
        "--pod-ip",
        "127.0.0.10",
        "--node-name",
        "node-0",
        "--xds-address",
        &control_plane.address,
        "--root-cert",
        control_plane.root_cert.to_str().unwrap(),
        "--token-file",
        control_plane.token_file.to_str().unwrap(),
    ];
    let flags = Flags::parse(args.iter().map(|s| s.to_string()), |_| None).unwrap();
    let bind = || TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners {
        hbone: TcpListener::bind("127.0.0.10:0").await.unwrap(),
        metrics: bind().await.unwrap(),
        readiness: bind().await.unwrap(),
        admin: bind().await.unwrap(),
    };
    let hbone = listeners.hbone.local_addr().unwrap();
    let metrics = listeners.metrics.local_addr().unwrap();
    let (waypoint_stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        serve_waypoint(flags, listeners, stopped)
            .await
            .expect("waypoint runs")
    });

    // The client pod's certificate, from the same CA, as its ztunnel would get it.
    let ca = CaClient::new(
        ControlPlane::new(&control_plane).unwrap(),
        CaClientConfig::default(),
    );
    let client_identity: Identity = "spiffe://cluster.local/ns/shop/sa/client".parse().unwrap();
    let cert = tokio::time::timeout(BOUND, ca.certificate(&client_identity))
        .await
        .expect("a client certificate in time")
        .expect("a client certificate");
    let client = Pool::new(
        PoolConfig::default(),
        Arc::new(TlsDialer::new(ClientTls::new(cert).unwrap())),
    );
    Running {
        hbone,
        metrics,
        client,
        client_identity,
        waypoint_identity: "spiffe://cluster.local/ns/shop/sa/waypoint"
            .parse()
            .unwrap(),
        _stops: vec![controller_stop, waypoint_stop],
        _dir: dir,
    }
}

impl Running {
    /// One HTTP/1.1 request to `reviews:9080` through the waypoint: status and body.
    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String, http::HeaderMap), String> {
        let key = PoolKey::new(
            self.client_identity.clone(),
            vec![self.waypoint_identity.clone()],
            self.hbone,
            None,
        );
        let vip: SocketAddr = "10.96.0.30:9080".parse().unwrap();
        let tunnel = self
            .client
            .connect(&key, &ConnectRequest::new(vip))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut request = Request::get(path).header("host", "reviews:9080");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            headers,
        ))
    }

    async fn metrics(&self) -> String {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(
            tokio::net::TcpStream::connect(self.metrics).await.unwrap(),
        ))
        .await
        .unwrap();
        tokio::spawn(conn);
        let request = Request::get("/metrics")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let body = sender
            .send_request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_authorized_and_faulted_by_the_waypoint() {
    let mesh = start().await;
    // The waypoint serves once its certificate and xDS config are in.
    eventually("the VirtualService in force", || async {
        matches!(mesh.get("/reviews/1", &[("end-user", "jason")]).await, Ok((200, body, _)) if body == "v2 /reviews/1")
    })
    .await;
    let (status, body, headers) = mesh.get("/reviews/1", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 /reviews/1"));
    assert_eq!(
        headers.get("x-routed-by").map(|v| v.to_str().unwrap()),
        Some("waypoint")
    );
    let (status, body, _) = mesh.get("/admin/users", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let (status, body, _) = mesh.get("/broken", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (418, "fault filter abort"));

    let text = mesh.metrics().await;
    let count = |code: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_code=\"{code}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("403"), 1, "{text}");
    assert_eq!(count("418"), 1, "{text}");
    assert!(count("200") >= 2, "{text}");
    let v1 = text
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"200\"")
                && l.contains("destination_version=\"v1\"")
        })
        .unwrap_or_else(|| panic!("no request counted for v1:\n{text}"));
    assert!(
        v1.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/client\""),
        "{v1}"
    );
    assert!(
        v1.contains("destination_service=\"reviews.shop.svc.cluster.local\""),
        "{v1}"
    );
    assert!(v1.contains("reporter=\"waypoint\""), "{v1}");
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "waypoint-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
