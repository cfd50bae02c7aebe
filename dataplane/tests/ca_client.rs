//! Tier 2 (in-process): the controller's CA served over TLS on loopback with its own
//! serving certificate, and ztunnel's `CaClient` talking to it through `ControlPlane`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use controller::auth::NodeTokens;
use controller::ca::{CaService, IdentityAuthorizer, MeshCa, SpiffeId, StaticAuthorizer};
use dataplane::ca_client::{CaClient, CaClientConfig};
use dataplane::cert::{CertError, CertificateSource, CertificateState, CertificateStatus};
use dataplane::control_plane::{ControlPlane, ControlPlaneConfig, DEFAULT_SERVER_NAME};
use hbone::Identity;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

const ECHO: &str = "spiffe://cluster.local/ns/default/sa/echo";
const DB: &str = "spiffe://cluster.local/ns/data/sa/db";
const TOKENS: [(&str, &str); 2] = [
    ("node-0", "node-0-token-0123456789"),
    ("node-1", "node-1-token-0123456789"),
];

/// Counts decisions, so tests can tell how many requests reached the CA.
struct CountingAuthorizer {
    inner: StaticAuthorizer,
    calls: AtomicUsize,
}

impl IdentityAuthorizer for CountingAuthorizer {
    fn node_may_sign(&self, node: &str, identity: &SpiffeId) -> bool {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.node_may_sign(node, identity)
    }
}

/// A CA state directory, token files and the running gRPC server.
struct Harness {
    dir: PathBuf,
    addr: SocketAddr,
    service: CaService,
    authorizer: Arc<CountingAuthorizer>,
    serving: controller::ca::ServingCertificate,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Harness {
    async fn start(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ztunnel-ca-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Arc::new(MeshCa::load_or_create(&dir.join("ca")).unwrap());
        std::fs::write(dir.join("root.pem"), ca.root_pem()).unwrap();
        for (node, token) in TOKENS {
            std::fs::write(dir.join(node), token).unwrap();
        }
        let tokens =
            NodeTokens::from_pairs(TOKENS.map(|(n, t)| (n.to_owned(), t.to_owned()))).unwrap();
        let authorizer = Arc::new(CountingAuthorizer {
            inner: StaticAuthorizer::new()
                .allow("node-0", ECHO.parse().unwrap())
                .allow("node-1", DB.parse().unwrap()),
            calls: AtomicUsize::new(0),
        });
        let serving = ca.serving_certificate(&[DEFAULT_SERVER_NAME], &[]).unwrap();
        let service = CaService::new(ca, tokens, authorizer.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut harness = Harness {
            dir,
            addr: listener.local_addr().unwrap(),
            service,
            authorizer,
            serving,
            server: None,
        };
        harness.serve(listener);
        harness
    }

    fn serve(&mut self, listener: TcpListener) {
        let identity = tonic::transport::Identity::from_pem(
            &self.serving.cert_chain_pem,
            &self.serving.key_pem,
        );
        let router = Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(self.service.clone().into_server());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.server = Some((stop, task));
    }

    async fn stop(&mut self) {
        let (stop, task) = self.server.take().expect("server running");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the CA server stops within 10 s")
            .unwrap();
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn client(&self, token_file: &str, config: CaClientConfig) -> CaClient {
        let control_plane = ControlPlane::new(&ControlPlaneConfig {
            address: self.addr.to_string(),
            server_name: DEFAULT_SERVER_NAME.into(),
            root_cert: self.dir.join("root.pem"),
            token_file: self.dir.join(token_file),
        })
        .unwrap();
        CaClient::new(control_plane, config)
    }

    fn calls(&self) -> usize {
        self.authorizer.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

/// Polls `check` every 50 ms until it yields a value; panics naming `what` after `bound`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    bound: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast_retry(ttl: Duration) -> CaClientConfig {
    CaClientConfig {
        ttl,
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        ..CaClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_its_pods_identity_with_one_request_for_concurrent_callers() {
    let ca = Harness::start("concurrent").await;
    let client = Arc::new(ca.client("node-0", CaClientConfig::default()));
    let echo = id(ECHO);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (client, echo) = (client.clone(), echo.clone());
            tokio::spawn(async move { client.certificate(&echo).await })
        })
        .collect();
    let mut certs = Vec::new();
    for call in calls {
        certs.push(call.await.unwrap().unwrap());
    }
    assert!(
        certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])),
        "one shared certificate"
    );
    assert_eq!(ca.calls(), 1, "concurrent callers share one request");
    let cert = &certs[0];
    assert_eq!(cert.identity(), &echo);
    assert_eq!(
        cert.roots(),
        &[mesh_root(&ca)],
        "the mesh root is the trust anchor"
    );
    let lifetime = cert.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(
        lifetime > Duration::from_secs(23 * 3600),
        "default 24 h: {lifetime:?}"
    );

    // What the admin endpoint shows: the certificate held, with its validity.
    assert_eq!(
        client.certificates(),
        vec![CertificateStatus {
            identity: echo.clone(),
            state: CertificateState::Available {
                not_before: cert.not_before(),
                not_after: cert.not_after(),
                renewal_error: None,
            },
        }]
    );

    // Cached: no new request. Forgotten: the next call asks again.
    assert!(Arc::ptr_eq(&client.certificate(&echo).await.unwrap(), cert));
    assert_eq!(ca.calls(), 1);
    assert_eq!(client.identities(), vec![echo.clone()]);
    assert!(client.forget(&echo));
    assert!(client.identities().is_empty());
    let again = client.certificate(&echo).await.unwrap();
    assert!(!Arc::ptr_eq(&again, cert));
    assert_eq!(ca.calls(), 2);
}

/// The mesh root as DER, read from the file ztunnel trusts.
fn mesh_root(ca: &Harness) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(ca.dir.join("root.pem")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_get_another_nodes_pod_identity_nor_an_unknown_token_any() {
    let ca = Harness::start("denied").await;
    let node0 = ca.client("node-0", CaClientConfig::default());
    let err = node0.certificate(&id(DB)).await.unwrap_err();
    assert!(matches!(err, CertError::CaDenied { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(DB) && text.contains("node-0"), "{text}");
    assert!(node0.identities().is_empty(), "a refusal is not cached");
    let shown = node0.certificates();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].identity, id(DB));
    assert!(
        matches!(&shown[0].state, CertificateState::Failed { error, .. } if *error == text),
        "the refusal is shown: {shown:?}"
    );

    std::fs::write(ca.dir.join("stranger"), "a-token-nobody-knows-0123").unwrap();
    let stranger = ca.client("stranger", CaClientConfig::default());
    let err = stranger.certificate(&id(ECHO)).await.unwrap_err();
    assert!(matches!(err, CertError::CaUnauthenticated { .. }), "{err}");
    assert!(err.to_string().contains(ECHO), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_at_half_life_and_outlive_a_stopped_ca_until_expiry() {
    let mut ca = Harness::start("renew").await;
    let db = id(DB);
    let short = ca.client("node-1", fast_retry(Duration::from_secs(4)));
    let long = ca.client("node-1", fast_retry(Duration::from_secs(3600)));
    let held = long.certificate(&db).await.unwrap();
    let fetched = std::time::Instant::now();
    let first = short.certificate(&db).await.unwrap();

    // Renewed at half-life (~2 s of 4 s), once: a new leaf that lives longer.
    let renewed = eventually("a renewed certificate", Duration::from_secs(15), || async {
        let now = short.certificate(&db).await.unwrap();
        (now.chain()[0] != first.chain()[0]).then_some(now)
    })
    .await;
    let after = fetched.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "renewed too early: {after:?}"
    );
    assert!(renewed.not_after() > first.not_after());
    assert!(
        ca.calls() <= 4,
        "renewal must not loop: {} requests",
        ca.calls()
    );

    // With the CA down, both clients keep serving what they hold.
    ca.stop().await;
    let kept = short.certificate(&db).await.unwrap();
    assert!(Arc::ptr_eq(&long.certificate(&db).await.unwrap(), &held));
    let err = eventually(
        "the short certificate to expire",
        Duration::from_secs(15),
        || async {
            match short.certificate(&db).await {
                Ok(cert) => {
                    assert!(Arc::ptr_eq(&cert, &kept), "no new certificate without a CA");
                    None
                }
                Err(err) => Some(err),
            }
        },
    )
    .await;
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    assert!(err.to_string().contains(DB), "{err}");
    assert!(Arc::ptr_eq(&long.certificate(&db).await.unwrap(), &held));

    // The CA comes back: retries pick it up without any caller's help.
    ca.restart().await;
    let back = eventually(
        "renewal after the CA returns",
        Duration::from_secs(15),
        || async { short.certificate(&db).await.ok() },
    )
    .await;
    assert!(back.not_after() > kept.not_after());
}
