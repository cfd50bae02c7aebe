use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use hbone::Identity;
use hbone::testing::TestCa;
use hbone::tls::WorkloadCertificate;

use super::testing::request;
use super::*;
use crate::cert::{CertError, CertificateStatus, LocalCa};
use crate::pods::{PodRegistry, PodStatus};
use crate::proxy::{PodInfo, ProxyInputs};
use crate::rbac::{Match, Policy};
use crate::state::{Service, ServiceKey, Workload, WorkloadState};
use crate::xds::XdsTypeStatus;

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

const WEB: &str = "spiffe://cluster.local/ns/prod/sa/web";
const DB: &str = "spiffe://cluster.local/ns/prod/sa/db";
const CACHE: &str = "spiffe://cluster.local/ns/prod/sa/cache";
const OLD: &str = "spiffe://cluster.local/ns/prod/sa/old";

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn web_key() -> ServiceKey {
    ServiceKey::parse("prod/web.prod.svc.cluster.local").unwrap()
}

fn workload(name: &str, sa: &str, ip: &str) -> Workload {
    Workload {
        uid: format!("cluster//Pod/prod/{name}"),
        ..Workload::pod(name, "prod", sa, ip.parse().unwrap()).unwrap()
    }
}

fn policy(namespace: &str, name: &str, scope: Scope, action: Action, groups: usize) -> Policy {
    Policy {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action,
        groups: vec![vec![vec![Match::default()]]; groups],
        dry_run: false,
    }
}

/// web-1 (HBONE, healthy) and web-2 (plain TCP, unhealthy) behind `web`; db-1 alone; two
/// policies.
fn populated_state() -> WorkloadState {
    let ports: crate::state::PortMap = [(80, 8080)].into();
    let mut web1 = workload("web-1", "web", "10.244.0.5");
    web1.services.insert(web_key(), ports.clone());
    web1.authorization_policies = vec!["prod/web-only".into()];
    let mut web2 = workload("web-2", "web", "10.244.0.6");
    web2.services.insert(web_key(), ports.clone());
    web2.protocol = TunnelProtocol::None;
    web2.healthy = false;
    let db = workload("db-1", "db", "10.244.0.7");
    let web = Service {
        name: "web".into(),
        namespace: "prod".into(),
        hostname: "web.prod.svc.cluster.local".into(),
        vips: vec!["10.96.0.10".parse().unwrap()],
        ports,
        waypoint: None,
    };
    WorkloadState::with_policies(
        vec![web2, db, web1],
        vec![web],
        vec![
            policy(
                "prod",
                "web-only",
                Scope::WorkloadSelector,
                Action::Allow,
                2,
            ),
            policy("istio-system", "deny-bad", Scope::Global, Action::Deny, 1),
        ],
    )
    .unwrap()
}

/// A local CA that refuses `DB` (as a CA would refuse a pod not on this node) and also
/// reports a request in flight and an expired certificate.
struct Certs {
    ca: LocalCa,
    expired: Arc<WorkloadCertificate>,
}

const REFUSAL: &str = "node-0 runs no pod with identity db";

impl CertificateSource for Certs {
    fn certificate(
        &self,
        identity: &Identity,
    ) -> BoxFuture<'_, Result<Arc<WorkloadCertificate>, CertError>> {
        if identity == &id(DB) {
            let identity = identity.clone();
            return Box::pin(async move {
                Err(CertError::CaDenied {
                    identity,
                    address: "https://ca.test:15012".into(),
                    reason: REFUSAL.into(),
                })
            });
        }
        self.ca.certificate(identity)
    }

    fn certificates(&self) -> Vec<CertificateStatus> {
        let mut all = self.ca.certificates();
        all.push(CertificateStatus {
            identity: id(DB),
            state: CertificateState::Failed {
                error: REFUSAL.into(),
                at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            },
        });
        all.push(CertificateStatus {
            identity: id(CACHE),
            state: CertificateState::Pending,
        });
        all.push(CertificateStatus {
            identity: id(OLD),
            state: CertificateState::held(&self.expired, Some("CA unreachable".into())),
        });
        all
    }
}

struct Fixture {
    admin: AdminState,
    xds: watch::Sender<XdsStatus>,
    /// The ZDS loop's side; kept so the view stays the registry's.
    _registry: PodRegistry,
    web_cert: Arc<WorkloadCertificate>,
}

async fn fixture() -> Fixture {
    let store = Arc::new(StateStore::new(populated_state()));
    let ca = TestCa::new();
    let now = SystemTime::now();
    let expired = ca.issue_with(
        &id(OLD),
        hbone::testing::IssueOptions {
            not_before: now - Duration::from_secs(7200),
            not_after: now - Duration::from_secs(3600),
        },
    );
    let certs: Arc<dyn CertificateSource> = Arc::new(Certs {
        ca: LocalCa::new(ca),
        expired,
    });
    let web_cert = certs.certificate(&id(WEB)).await.unwrap();
    let mut registry = PodRegistry::new(ProxyInputs {
        state: store.clone(),
        certs: certs.clone(),
        trust_domain: "cluster.local".into(),
        pool: hbone::PoolConfig::default(),
        metrics: Default::default(),
        connections: hbone::drain::Tracker::new(),
        limits: Default::default(),
    });
    // db-1's proxies cannot start: its identity has no certificate. Nothing is listened
    // on before the certificate is there, so this needs no privileges.
    let db = PodInfo {
        uid: "k8s-uid-db-1".into(),
        name: "db-1".into(),
        namespace: "prod".into(),
        service_account: "db".into(),
    };
    let netns = inpod::Netns::current().unwrap();
    let err = registry.add(db, netns).await.unwrap_err();
    assert!(err.to_string().contains(REFUSAL), "{err}");
    // A running pod as the registry records it (starting real proxies would listen on
    // this namespace's 15001/15006/15008).
    registry.view().insert(
        "k8s-uid-web-1",
        PodStatus {
            info: PodInfo {
                uid: "k8s-uid-web-1".into(),
                name: "web-1".into(),
                namespace: "prod".into(),
                service_account: "web".into(),
            },
            netns: "net:[4026532999]".into(),
            state: PodState::Running {
                identity: id(WEB),
                listeners: vec![
                    "0.0.0.0:15001".parse().unwrap(),
                    "0.0.0.0:15006".parse().unwrap(),
                    "0.0.0.0:15008".parse().unwrap(),
                ],
            },
            since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        },
    );
    let readiness = Readiness::new();
    let (snapshots, rx) = watch::channel(0u64);
    readiness.require_zds_snapshot(rx);
    drop(snapshots);
    let (xds, rx) = watch::channel(XdsStatus::default());
    Fixture {
        admin: AdminState {
            state: store,
            certs,
            pods: registry.view(),
            xds: Some(rx),
            readiness,
            shutdown: Shutdown::new(),
            log_filter: None,
        },
        xds,
        _registry: registry,
        web_cert,
    }
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|item| item[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list:#}"))
}

#[tokio::test]
async fn config_dump_shows_state_certificates_pods_xds_and_readiness() {
    let f = fixture().await;
    f.xds.send_modify(|s| {
        s.connected = true;
        s.applied = 3;
        s.rejected = 1;
        s.last_rejection = Some("policy prod/x: bad port".into());
        s.types.insert(
            api::ADDRESS_TYPE_URL.into(),
            XdsTypeStatus {
                applied: 2,
                last_applied_nonce: "n-2".into(),
                last_applied_version: "v7".into(),
                ..XdsTypeStatus::default()
            },
        );
        s.types.insert(
            api::AUTHORIZATION_TYPE_URL.into(),
            XdsTypeStatus {
                applied: 1,
                rejected: 1,
                last_applied_nonce: "n-1".into(),
                last_rejected_nonce: Some("n-3".into()),
                last_rejection: Some("policy prod/x: bad port".into()),
                ..XdsTypeStatus::default()
            },
        );
    });
    let dump = config_dump(&f.admin);

    let workloads = &dump["workloads"];
    assert_eq!(workloads.as_array().unwrap().len(), 3, "{workloads:#}");
    let uids: Vec<&str> = workloads
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        [
            "cluster//Pod/prod/db-1",
            "cluster//Pod/prod/web-1",
            "cluster//Pod/prod/web-2"
        ],
        "sorted by uid"
    );
    let web1 = find(workloads, "name", "web-1");
    assert_eq!(
        web1,
        &json!({
            "uid": "cluster//Pod/prod/web-1",
            "name": "web-1",
            "namespace": "prod",
            "addresses": ["10.244.0.5"],
            "node": "node-0",
            "serviceAccount": "web",
            "trustDomain": "cluster.local",
            "identity": WEB,
            "protocol": "HBONE",
            "status": "Healthy",
            "workloadName": "web-1",
            "canonicalName": "web-1",
            "canonicalRevision": "v1",
            "services": {"prod/web.prod.svc.cluster.local": {"80": 8080}},
            "authorizationPolicies": ["prod/web-only"],
        })
    );
    let web2 = find(workloads, "name", "web-2");
    assert_eq!(
        (web2["protocol"].as_str(), web2["status"].as_str()),
        (Some("TCP"), Some("Unhealthy"))
    );

    assert_eq!(
        dump["services"],
        json!([{
            "name": "web",
            "namespace": "prod",
            "hostname": "web.prod.svc.cluster.local",
            "vips": ["10.96.0.10"],
            "ports": {"80": 8080},
            "endpoints": 2,
            "healthyEndpoints": 1,
        }])
    );
    assert_eq!(
        dump["policies"],
        json!([
            {"name": "deny-bad", "namespace": "istio-system", "scope": "GLOBAL", "action": "DENY", "dryRun": false, "groups": 1},
            {"name": "web-only", "namespace": "prod", "scope": "WORKLOAD_SELECTOR", "action": "ALLOW", "dryRun": false, "groups": 2},
        ])
    );

    let certs = &dump["certificates"];
    assert_eq!(certs.as_array().unwrap().len(), 4, "{certs:#}");
    let web = find(certs, "identity", WEB);
    assert_eq!(web["state"], "available");
    assert_eq!(web["notBefore"], rfc3339(f.web_cert.not_before()));
    assert_eq!(web["notAfter"], rfc3339(f.web_cert.not_after()));
    let left = web["secondsToExpiry"].as_i64().unwrap();
    assert!(left > 3600 && left <= 24 * 3600 + 60, "{web}");
    assert_eq!(web["renewalError"], Value::Null);
    let db = find(certs, "identity", DB);
    assert_eq!(
        (&db["state"], &db["error"], &db["failedAt"]),
        (
            &json!("failed"),
            &json!(REFUSAL),
            &json!("2023-11-14T22:13:20Z")
        )
    );
    assert_eq!(find(certs, "identity", CACHE)["state"], "pending");
    let old = find(certs, "identity", OLD);
    assert_eq!(old["state"], "expired");
    assert_eq!(old["renewalError"], "CA unreachable");
    assert!(old["secondsToExpiry"].as_i64().unwrap() < 0, "{old}");

    let pods = &dump["pods"];
    assert_eq!(pods.as_array().unwrap().len(), 2, "{pods:#}");
    let db = find(pods, "uid", "k8s-uid-db-1");
    assert_eq!(db["state"], "failed");
    assert_eq!(db["name"], "db-1");
    assert!(db["error"].as_str().unwrap().contains(REFUSAL), "{db}");
    assert!(db["netns"].as_str().unwrap().starts_with("net:["), "{db}");
    let web = find(pods, "uid", "k8s-uid-web-1");
    assert_eq!(
        web,
        &json!({
            "uid": "k8s-uid-web-1",
            "name": "web-1",
            "namespace": "prod",
            "serviceAccount": "web",
            "netns": "net:[4026532999]",
            "since": "2023-11-14T22:13:20Z",
            "state": "running",
            "identity": WEB,
            "listenersUp": 3,
            "listeners": ["0.0.0.0:15001", "0.0.0.0:15006", "0.0.0.0:15008"],
        })
    );

    let xds = &dump["xds"];
    assert_eq!(
        (
            &xds["connected"],
            &xds["synced"],
            &xds["applied"],
            &xds["rejected"]
        ),
        (&json!(true), &json!(false), &json!(3), &json!(1))
    );
    assert_eq!(
        xds["types"]["Address"],
        json!({
            "typeUrl": api::ADDRESS_TYPE_URL,
            "applied": 2,
            "rejected": 0,
            "resources": 0,
            "lastAppliedNonce": "n-2",
            "lastAppliedVersion": "v7",
            "lastRejectedNonce": null,
            "lastRejection": null,
        })
    );
    let authz = &xds["types"]["Authorization"];
    assert_eq!(
        (&authz["rejected"], &authz["lastRejectedNonce"]),
        (&json!(1), &json!("n-3"))
    );

    assert_eq!(
        dump["readiness"],
        json!({"ready": false, "waitingFor": ["waiting for the node agent's snapshot"]})
    );

    // Without xDS there is no xds section.
    let standalone = AdminState {
        xds: None,
        ..f.admin.clone()
    };
    assert!(config_dump(&standalone).get("xds").is_none());
}

#[tokio::test]
async fn serves_the_dump_an_index_and_404s_and_quits_on_post_only() {
    let f = fixture().await;
    let shutdown = f.admin.shutdown.clone();
    let mut stopped = shutdown.receiver();
    let listener = bind("127.0.0.1:0".parse().unwrap(), "admin").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, f.admin.clone()));

    let index = request(addr, "GET", "/").await;
    assert_eq!(index.status, 200, "{index:?}");
    let index: Value = serde_json::from_str(&index.body).unwrap();
    for path in ["/", "/config_dump", "/logging", "/quitquitquit"] {
        assert!(index.get(path).is_some(), "{path} missing from {index:#}");
    }

    let dump = request(addr, "GET", "/config_dump").await;
    assert_eq!(dump.status, 200, "{dump:?}");
    assert!(dump.head.contains("application/json"), "{}", dump.head);
    let dump: Value = serde_json::from_str(&dump.body).unwrap();
    assert_eq!(dump, config_dump(&f.admin));
    assert_eq!(dump["workloads"].as_array().unwrap().len(), 3);

    let missing = request(addr, "GET", "/stats").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.body.trim(), "no endpoint /stats; GET / lists them");
    assert_eq!(request(addr, "POST", "/config_dump").await.status, 405);

    let get = request(addr, "GET", "/quitquitquit").await;
    assert_eq!(get.status, 405, "{get:?}");
    assert!(
        get.head.to_ascii_lowercase().contains("allow: post"),
        "{}",
        get.head
    );
    assert!(!shutdown.is_triggered(), "GET must not stop ztunnel");

    let quit = request(addr, "POST", "/quitquitquit").await;
    assert_eq!((quit.status, quit.body.trim()), (200, "OK"), "{quit:?}");
    tokio::time::timeout(BOUND, stopped.wait_for(|s| *s))
        .await
        .expect("the shutdown channel turns true")
        .unwrap();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("the admin server stops on shutdown")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the admin listener is closed"
    );
}

#[tokio::test]
async fn an_open_idle_connection_does_not_hold_up_shutdown() {
    let listener = bind("127.0.0.1:0".parse().unwrap(), "admin").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f = fixture().await;
    let shutdown = f.admin.shutdown.clone();
    let server = tokio::spawn(serve(listener, f.admin));
    // A keep-alive client that asked once and stays connected.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut idle, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(
        BOUND,
        tokio::io::AsyncReadExt::read_exact(&mut idle, &mut first),
    )
    .await
    .expect("an answer")
    .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    shutdown.trigger();
    tokio::time::timeout(DRAIN + BOUND, server)
        .await
        .expect("the admin server stops with a connection open")
        .unwrap();
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = bind(addr, "admin").await.unwrap_err();
    assert!(
        err.contains(&addr.to_string()) && err.contains("admin endpoint"),
        "{err}"
    );
}

#[test]
fn timestamps_are_rfc3339_utc() {
    let at = |secs: i64| {
        let t = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        rfc3339(t)
    };
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
    assert_eq!(at(951_868_800), "2000-03-01T00:00:00Z");
    assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    assert_eq!(at(-1), "1969-12-31T23:59:59Z");
    // Sub-second parts are cut, not rounded.
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999)),
        "2023-11-14T22:13:20Z"
    );
}

#[tokio::test]
async fn logging_shows_and_changes_the_filter_at_runtime() {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    // This test's own subscriber, the filter under the handle the endpoint gets; the
    // current-thread runtime keeps the server on this thread, under the same default.
    runtime::scoped_logs_see_every_callsite();
    let (layer, filter) = runtime::LogFilter::new("info").unwrap();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let f = fixture().await;
    let admin = AdminState {
        log_filter: Some(filter.clone()),
        ..f.admin.clone()
    };
    let listener = bind("127.0.0.1:0".parse().unwrap(), "admin").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, admin));
    let body = |r: &crate::admin::testing::Reply| r.body.trim().to_owned();

    let index: Value = serde_json::from_str(&request(addr, "GET", "/").await.body).unwrap();
    assert!(index.get("/logging").is_some(), "{index:#}");

    let get = request(addr, "GET", "/logging").await;
    assert_eq!(
        (get.status, body(&get)),
        (200, "current log level is info".into())
    );
    assert!(!tracing::enabled!(Level::DEBUG));

    let set = request(addr, "POST", "/logging?level=debug").await;
    assert_eq!(
        (set.status, body(&set)),
        (200, "current log level is debug".into())
    );
    assert!(
        tracing::enabled!(Level::DEBUG),
        "debug is on after the POST"
    );
    assert_eq!(filter.current(), "debug");

    // Any RUST_LOG directives, percent-encoded or not.
    for query in ["level=access=debug,warn", "level=access%3Ddebug%2Cwarn"] {
        let set = request(addr, "POST", &format!("/logging?{query}")).await;
        assert_eq!(set.status, 200, "{set:?}");
        assert!(
            set.body.contains("access=debug") && set.body.contains("warn"),
            "{set:?}"
        );
        assert!(tracing::enabled!(target: "access", Level::DEBUG));
        assert!(!tracing::enabled!(Level::INFO), "the rest is at warn");
    }
    let before = filter.current();

    let invalid = request(addr, "POST", "/logging?level=info,%5B%5B%5B").await;
    assert_eq!(invalid.status, 400, "{invalid:?}");
    assert!(invalid.body.contains("invalid log filter"), "{invalid:?}");
    for bad in [
        "/logging",
        "/logging?level=",
        "/logging?lvl=debug",
        "/logging?level=%zz",
    ] {
        let r = request(addr, "POST", bad).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    assert_eq!(filter.current(), before, "refused changes change nothing");

    let reset = request(addr, "POST", "/logging?reset").await;
    assert_eq!(
        (reset.status, body(&reset)),
        (200, "current log level is info".into())
    );
    assert!(!tracing::enabled!(Level::DEBUG) && tracing::enabled!(Level::INFO));

    let put = request(addr, "PUT", "/logging").await;
    assert_eq!(put.status, 405, "{put:?}");
    assert!(
        put.head.to_ascii_lowercase().contains("allow: get, post"),
        "{}",
        put.head
    );

    // A process whose logging was not set up by runtime::init_logging cannot change it.
    let none = logging(None, &Method::GET, None);
    assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);

    f.admin.shutdown.trigger();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("the admin server stops on shutdown")
        .unwrap();
}
