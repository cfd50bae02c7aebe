//! Tier 2 (in-process, loopback): the xDS client against a fake delta ADS server served
//! over TLS with a test root, exactly as ztunnel reaches the controller. No privileges.

mod fake_controller;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::prost_types::Any;
use api::security as sec;
use api::workload as wl;
use api::xds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use dataplane::control_plane::{ControlPlane, ControlPlaneConfig, DEFAULT_SERVER_NAME};
use dataplane::rbac::{ConnectionInfo, DenyReason};
use dataplane::state::{StateStore, Upstream, WorkloadState};
use dataplane::xds::{Backoff, NodeInfo, XdsClient, XdsConfig, XdsStatus};
use tokio::sync::watch;

use fake_controller::{Controller, Pki, Session, pki, within};

/// ztunnel's side: the client running against `addr`, and what it feeds.
struct Ztunnel {
    store: Arc<StateStore>,
    status: watch::Receiver<XdsStatus>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl Ztunnel {
    fn start(pki: &Pki, addr: SocketAddr, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ztunnel-xds-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("root.pem"), &pki.root).unwrap();
        std::fs::write(dir.join("token"), "test-token\n").unwrap();
        let control_plane = ControlPlane::new(&ControlPlaneConfig {
            address: format!("https://{addr}"),
            server_name: DEFAULT_SERVER_NAME.into(),
            root_cert: dir.join("root.pem"),
            token_file: dir.join("token"),
        })
        .unwrap();
        let config = XdsConfig {
            node: NodeInfo {
                node_name: "node-1".into(),
                ztunnel_id: "ztunnel~node-1".into(),
            },
            backoff: Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
        };
        let store = Arc::new(StateStore::new(WorkloadState::default()));
        let client = XdsClient::new(control_plane, config, store.clone());
        let status = client.status();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(client.run(rx));
        Ztunnel {
            store,
            status,
            shutdown,
            task,
            dir,
        }
    }

    async fn wait_for(&mut self, what: &str, f: impl Fn(&XdsStatus) -> bool) {
        within(what, self.status.wait_for(|s| f(s))).await.unwrap();
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        within("the client to stop", self.task).await.unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

fn workload(uid: &str, ip: [u8; 4], version: &str) -> Resource {
    let ports = vec![wl::Port {
        service_port: 80,
        target_port: 8080,
    }];
    let key = "prod/web.prod.svc.cluster.local".to_owned();
    let services = [(key, wl::PortList { ports })].into_iter().collect();
    let w = wl::Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "prod".into(),
        service_account: "web".into(),
        addresses: vec![ip.to_vec()],
        tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
        services,
        ..Default::default()
    };
    address(uid, version, wl::address::Type::Workload(w))
}

fn address(name: &str, version: &str, t: wl::address::Type) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(Any::from_msg(&wl::Address { r#type: Some(t) }).unwrap()),
        ..Default::default()
    }
}

fn service() -> Resource {
    let s = wl::Service {
        name: "web".into(),
        namespace: "prod".into(),
        hostname: "web.prod.svc.cluster.local".into(),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: vec![10, 96, 0, 1],
        }],
        ports: vec![wl::Port {
            service_port: 80,
            target_port: 8080,
        }],
        ..Default::default()
    };
    address(
        "prod/web.prod.svc.cluster.local",
        "1",
        wl::address::Type::Service(s),
    )
}

/// DENY plaintext to namespace `prod` (a "require mTLS" policy).
fn deny_plaintext() -> Resource {
    let presence = sec::StringMatch {
        match_type: Some(sec::string_match::MatchType::Presence(())),
    };
    let policy = sec::Authorization {
        name: "require-mtls".into(),
        namespace: "prod".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        groups: vec![sec::Group {
            rules: vec![sec::Rules {
                matches: vec![sec::Match {
                    not_principals: vec![presence],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: false,
    };
    Resource {
        name: "prod/require-mtls".into(),
        version: "1".into(),
        resource: Some(Any::from_msg(&policy).unwrap()),
        ..Default::default()
    }
}

fn response(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn assert_ack(reply: &DeltaDiscoveryRequest, type_url: &str) {
    assert_eq!(reply.type_url, type_url);
    assert_eq!(reply.error_detail, None, "expected an ACK");
}

/// Subscriptions, then workload `a` + service `web`, then the policy; both ACKed.
async fn initial_sync(session: &mut Session) -> HashMap<String, DeltaDiscoveryRequest> {
    let subscriptions = session.subscriptions().await;
    let addresses = vec![workload("a", [10, 0, 0, 1], "1"), service()];
    let reply = session
        .push(response(api::ADDRESS_TYPE_URL, "n1", addresses, &[]))
        .await;
    assert_ack(&reply, api::ADDRESS_TYPE_URL);
    let reply = session
        .push(response(
            api::AUTHORIZATION_TYPE_URL,
            "n2",
            vec![deny_plaintext()],
            &[],
        ))
        .await;
    assert_ack(&reply, api::AUTHORIZATION_TYPE_URL);
    subscriptions
}

fn plaintext_to(state: &WorkloadState, uid: &str) -> ConnectionInfo {
    let w = state.workload(uid).expect("workload in state").clone();
    ConnectionInfo {
        src_ip: "10.0.9.9".parse().unwrap(),
        src_identity: None,
        dst_ip: w.addresses[0],
        dst_port: 8080,
        dst_workload: w,
    }
}

#[tokio::test]
async fn initial_sync_then_updates_and_removals_apply() {
    let pki = pki();
    let mut controller = Controller::start(&pki, "127.0.0.1:0".parse().unwrap()).await;
    let mut zt = Ztunnel::start(&pki, controller.addr, "sync");
    let mut session = controller.session().await;
    assert_eq!(session.authorization.as_deref(), Some("Bearer test-token"));

    let subscriptions = initial_sync(&mut session).await;
    for type_url in [api::ADDRESS_TYPE_URL, api::AUTHORIZATION_TYPE_URL] {
        let sub = &subscriptions[type_url];
        assert_eq!(
            sub.node.as_ref().map(|n| n.id.as_str()),
            Some("ztunnel~node-1")
        );
        assert_eq!(sub.resource_names_subscribe, ["*"]);
        assert!(sub.initial_resource_versions.is_empty());
    }
    zt.wait_for("the first sync", |s| s.synced && s.applied == 2)
        .await;
    let state = zt.store.snapshot();
    match state.resolve("10.96.0.1:80".parse().unwrap()).unwrap() {
        Upstream::Workload { workload, addr, .. } => {
            assert_eq!(
                (workload.uid.as_str(), addr),
                ("a", "10.0.0.1:8080".parse().unwrap())
            );
        }
        other => panic!("the VIP should reach workload a, got {other:?}"),
    }
    let denied = state.authorize(&plaintext_to(&state, "a")).unwrap_err();
    assert_eq!(
        (denied.policy.as_str(), denied.reason),
        ("prod/require-mtls", DenyReason::DenyPolicyMatched)
    );

    let update = vec![
        workload("a", [10, 0, 0, 2], "2"),
        workload("b", [10, 0, 0, 3], "1"),
    ];
    let reply = session
        .push(response(api::ADDRESS_TYPE_URL, "n3", update, &[]))
        .await;
    assert_ack(&reply, api::ADDRESS_TYPE_URL);
    let state = zt.store.snapshot();
    assert_eq!(
        state.workload("a").unwrap().addresses,
        ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(state.workload("b").is_some());

    let reply = session
        .push(response(api::ADDRESS_TYPE_URL, "n4", vec![], &["b"]))
        .await;
    assert_ack(&reply, api::ADDRESS_TYPE_URL);
    let removal = response(
        api::AUTHORIZATION_TYPE_URL,
        "n5",
        vec![],
        &["prod/require-mtls"],
    );
    assert_ack(&session.push(removal).await, api::AUTHORIZATION_TYPE_URL);
    let state = zt.store.snapshot();
    assert!(state.workload("b").is_none());
    assert!(state.policies().is_empty());
    assert_eq!(state.authorize(&plaintext_to(&state, "a")), Ok(()));

    drop(session);
    zt.stop().await;
    controller.stop().await;
}

#[tokio::test]
async fn an_invalid_response_is_nacked_and_the_last_good_state_stays() {
    let pki = pki();
    let mut controller = Controller::start(&pki, "127.0.0.1:0".parse().unwrap()).await;
    let zt = Ztunnel::start(&pki, controller.addr, "nack");
    let mut session = controller.session().await;
    initial_sync(&mut session).await;

    let mut bad = workload("prod/bad", [10, 0, 0, 7], "1");
    let mut decoded: wl::Address = bad.resource.as_ref().unwrap().to_msg().unwrap();
    if let Some(wl::address::Type::Workload(w)) = &mut decoded.r#type {
        w.addresses = vec![vec![10, 0, 0, 7, 1]];
    }
    bad.resource = Some(Any::from_msg(&decoded).unwrap());
    let mixed = vec![workload("a", [10, 0, 0, 5], "2"), bad];
    let nack = session
        .push(response(api::ADDRESS_TYPE_URL, "n3", mixed, &[]))
        .await;
    let message = nack.error_detail.expect("a NACK").message;
    assert!(
        message.contains("\"prod/bad\": addresses[0]: 5 bytes"),
        "{message}"
    );
    let state = zt.store.snapshot();
    assert_eq!(
        state.workload("a").unwrap().addresses[0].to_string(),
        "10.0.0.1"
    );
    assert!(state.workload("prod/bad").is_none());
    assert!(
        zt.status
            .borrow()
            .last_rejection
            .as_deref()
            .is_some_and(|m| m.contains("prod/bad"))
    );

    let clash = vec![workload("c", [10, 0, 0, 1], "1")];
    let nack = session
        .push(response(api::ADDRESS_TYPE_URL, "n4", clash, &[]))
        .await;
    let message = nack.error_detail.expect("a NACK").message;
    assert!(
        message.contains("10.0.0.1") && message.contains("workload c"),
        "{message}"
    );
    assert!(zt.store.snapshot().workload("c").is_none());
    assert_eq!(zt.status.borrow().rejected, 2);
    {
        let status = zt.status.borrow();
        let address = &status.types[api::ADDRESS_TYPE_URL];
        assert_eq!(address.rejected, 2);
        assert_eq!(address.last_rejected_nonce.as_deref(), Some("n4"));
        assert!(
            address
                .last_rejection
                .as_deref()
                .is_some_and(|m| m.contains("workload c")),
            "{address:?}"
        );
        assert_eq!(status.types[api::AUTHORIZATION_TYPE_URL].rejected, 0);
    }

    let fixed = vec![workload("a", [10, 0, 0, 5], "2")];
    assert_ack(
        &session
            .push(response(api::ADDRESS_TYPE_URL, "n5", fixed, &[]))
            .await,
        api::ADDRESS_TYPE_URL,
    );
    assert_eq!(
        zt.status.borrow().types[api::ADDRESS_TYPE_URL].last_applied_nonce,
        "n5"
    );
    assert_eq!(
        zt.store.snapshot().workload("a").unwrap().addresses[0].to_string(),
        "10.0.0.5"
    );

    drop(session);
    zt.stop().await;
    controller.stop().await;
}

#[tokio::test]
async fn reconnects_after_a_controller_restart_with_the_versions_it_holds() {
    let pki = pki();
    let mut controller = Controller::start(&pki, "127.0.0.1:0".parse().unwrap()).await;
    let addr = controller.addr;
    let mut zt = Ztunnel::start(&pki, addr, "restart");
    let mut session = controller.session().await;
    initial_sync(&mut session).await;
    // A bad resource must not show up among the versions held.
    let bad = vec![workload("bad", [10, 0, 0, 1], "9")];
    assert!(
        session
            .push(response(api::ADDRESS_TYPE_URL, "n3", bad, &[]))
            .await
            .error_detail
            .is_some()
    );

    drop(session);
    controller.stop().await;
    zt.wait_for("the client to notice the stream is gone", |s| !s.connected)
        .await;
    assert!(
        zt.store.snapshot().workload("a").is_some(),
        "the last good state keeps serving"
    );

    let mut controller = Controller::start(&pki, addr).await;
    let mut session = controller.session().await;
    let subscriptions = session.subscriptions().await;
    let held = |type_url: &str| {
        let mut v: Vec<(String, String)> = subscriptions[type_url]
            .initial_resource_versions
            .clone()
            .into_iter()
            .collect();
        v.sort();
        v
    };
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    assert_eq!(
        held(api::ADDRESS_TYPE_URL),
        [pair("a", "1"), pair("prod/web.prod.svc.cluster.local", "1")]
    );
    assert_eq!(
        held(api::AUTHORIZATION_TYPE_URL),
        [pair("prod/require-mtls", "1")]
    );

    let reply = session
        .push(response(api::ADDRESS_TYPE_URL, "m1", vec![], &["a"]))
        .await;
    assert_ack(&reply, api::ADDRESS_TYPE_URL);
    assert!(zt.store.snapshot().workload("a").is_none());
    assert!(zt.status.borrow().synced);

    drop(session);
    zt.stop().await;
    controller.stop().await;
}
