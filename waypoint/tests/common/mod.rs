//! The tier-2 harness shared by the waypoint's in-process tests: the real controller
//! (manifests, xDS, CA) and the real waypoint process (`waypoint::app::serve`) on loopback,
//! backends standing in for the pods of services, and a client tunnelling to the waypoint
//! over HBONE as a ztunnel would.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use controller::serve::{Listeners as ControllerListeners, RunConfig, serve};
use controller::translate::MeshOptions;
use dataplane::ca_client::{CaClient, CaClientConfig};
use dataplane::cert::CertificateSource;
use dataplane::control_plane::{ControlPlane, ControlPlaneConfig, DEFAULT_SERVER_NAME};
use hbone::tls::ClientTls;
use hbone::{ConnectRequest, H2Stream, Identity, Pool, PoolConfig, PoolKey, TlsDialer};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use waypoint::app::{Listeners, serve as serve_waypoint};
use waypoint::flags::Flags;

pub const BOUND: Duration = Duration::from_secs(20);
const TOKENS: &str = "node-0: node-0-token-0123456789\n";

/// The service every test reaches: `reviews`, whose VIP the manifests give.
pub const REVIEWS: &str = "10.96.0.30:9080";

/// The mesh around the services under test: the `shop` namespace, its waypoint (pod
/// 127.0.0.10) and the client pod (127.0.0.20) whose identity the test presents.
/// The `reviews` Service (VIP [`REVIEWS`], behind the waypoint; its pods listen on
/// `target_port`) and one pod per version (`v1` at 127.0.0.11, `v2` at 127.0.0.12, ...).
pub fn reviews(target_port: u16, versions: &[&str]) -> String {
    let mut out = format!(
        "
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  clusterIP: 10.96.0.30
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: {target_port}}}]
"
    );
    for (i, version) in versions.iter().enumerate() {
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-{version}, namespace: shop, labels: {{app: reviews, version: {version}}}}}
spec: {{nodeName: node-0, containers: [{{name: app, image: reviews}}]}}
status: {{podIP: 127.0.0.{}}}
",
            11 + i
        ));
    }
    out
}

pub const MESH: &str = r#"
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
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node-0, serviceAccountName: client, containers: [{name: app, image: curl}]}
status: {podIP: 127.0.0.20}
"#;

/// Listeners on `ips`, all on one port (a Service has one `targetPort` for its pods).
pub async fn listeners(ips: &[&str]) -> (u16, Vec<TcpListener>) {
    let mut last = None;
    for _ in 0..10 {
        let first = TcpListener::bind((ips[0].parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let port = first.local_addr().unwrap().port();
        let mut bound = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port)).await {
                Ok(l) => bound.push(l),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if bound.len() == ips.len() {
            return (port, bound);
        }
    }
    panic!("no port free on all of {ips:?}: {last:?}");
}

/// The request paths a backend was asked for, in order.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn record(&self, path: &str) {
        self.0.lock().unwrap().push(path.to_owned());
    }

    pub fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 backend answering `NAME PATH`.
pub fn backend(listener: TcpListener, name: &'static str) -> Seen {
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    log.record(req.uri().path());
                    async move {
                        let body = format!("{name} {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = server_http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    seen
}

pub async fn eventually<F: std::future::Future<Output = bool>>(
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

pub struct Running {
    pub hbone: SocketAddr,
    pub metrics: SocketAddr,
    pub client: Pool,
    /// The client pod's certificate, for more clients (more tunnel connections).
    pub client_tls: ClientTls,
    pub client_identity: Identity,
    pub waypoint_identity: Identity,
    _stops: Vec<watch::Sender<bool>>,
    _dir: TempDir,
}

/// The controller serving `manifests`, the waypoint configured by it, and a client with
/// the `client` pod's certificate. The backends the manifests point at are the caller's.
pub async fn start(manifests: &str) -> Running {
    let dir = TempDir::new();
    let (grpc, controller_stop) = start_controller(dir.path(), manifests).await;
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
    let client_tls = ClientTls::new(cert).unwrap();
    let client = Pool::new(
        PoolConfig::default(),
        Arc::new(TlsDialer::new(client_tls.clone())),
    );
    Running {
        hbone,
        metrics,
        client,
        client_tls,
        client_identity,
        waypoint_identity: "spiffe://cluster.local/ns/shop/sa/waypoint"
            .parse()
            .unwrap(),
        _stops: vec![controller_stop, waypoint_stop],
        _dir: dir,
    }
}

impl Running {
    /// An HBONE tunnel to the waypoint for `target` (a service `VIP:port`), on the
    /// client's pooled connection.
    pub async fn tunnel(&self, target: &str) -> Result<H2Stream, String> {
        self.tunnel_via(&self.client, target).await
    }

    /// Another client with the same certificate: its tunnels go over a connection of
    /// their own, as another node's ztunnel's would.
    pub fn another_client(&self) -> Pool {
        Pool::new(
            PoolConfig::default(),
            Arc::new(TlsDialer::new(self.client_tls.clone())),
        )
    }

    /// [`Self::tunnel`] on `client`'s connection.
    pub async fn tunnel_via(&self, client: &Pool, target: &str) -> Result<H2Stream, String> {
        let key = PoolKey::new(
            self.client_identity.clone(),
            vec![self.waypoint_identity.clone()],
            self.hbone,
            None,
        );
        let target: SocketAddr = target.parse().unwrap();
        tokio::time::timeout(BOUND, client.connect(&key, &ConnectRequest::new(target)))
            .await
            .map_err(|_| "no tunnel in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// One HTTP/1.1 request to `reviews:9080` through the waypoint: status and body.
    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String, http::HeaderMap), String> {
        self.get_via(&self.client, path, headers).await
    }

    /// [`Self::get`] through `client`'s connection.
    pub async fn get_via(
        &self,
        client: &Pool,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String, http::HeaderMap), String> {
        let tunnel = self.tunnel_via(client, REVIEWS).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        get_on(&mut sender, path, headers).await
    }

    pub async fn metrics(&self) -> String {
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

/// One HTTP/1.1 request to `reviews:9080` on an open connection: status, body, headers.
pub async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, http::HeaderMap), String> {
    let mut request = Request::get(path).header("host", "reviews:9080");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let exchange = async {
        // A kept-alive connection takes the next request once the last one is over.
        sender.ready().await.map_err(|e| e.to_string())?;
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
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .map_err(|_| format!("no response to {path} in time"))?
}

/// A temporary directory removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
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

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
