use std::collections::BTreeMap;

use super::*;

fn workload(uid: &str, ip: &str) -> Workload {
    Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "default".into(),
        service_account: "sa".into(),
        trust_domain: "cluster.local".into(),
        node: "node-1".into(),
        addresses: vec![ip.parse().unwrap()],
        protocol: TunnelProtocol::Hbone,
        workload_name: uid.into(),
        canonical_name: uid.into(),
        canonical_revision: "v1".into(),
        services: BTreeMap::new(),
        healthy: true,
        authorization_policies: Vec::new(),
        identity: "spiffe://cluster.local/ns/default/sa/sa".parse().unwrap(),
    }
}

fn key() -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        hostname: "echo.default.svc.cluster.local".into(),
    }
}

fn backing(mut w: Workload, ports: &[(u16, u16)]) -> Workload {
    w.services.insert(key(), ports.iter().copied().collect());
    w
}

fn service(ports: &[(u16, u16)]) -> Service {
    Service {
        name: "echo".into(),
        namespace: "default".into(),
        hostname: "echo.default.svc.cluster.local".into(),
        vips: vec!["10.96.0.10".parse().unwrap()],
        ports: ports.iter().copied().collect(),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn picked(state: &WorkloadState, dst: &str) -> (String, SocketAddr) {
    match state.resolve(addr(dst)).unwrap() {
        Upstream::Workload {
            workload,
            addr,
            service,
        } => {
            assert!(service.is_some());
            (workload.uid.clone(), addr)
        }
        other => panic!("expected a workload, got {other:?}"),
    }
}

#[test]
fn a_vip_round_robins_over_healthy_endpoints_only() {
    let mut sick = backing(workload("c", "10.244.1.4"), &[]);
    sick.healthy = false;
    let state = WorkloadState::new(
        vec![
            backing(workload("a", "10.244.1.2"), &[]),
            backing(workload("b", "10.244.2.2"), &[]),
            sick,
        ],
        vec![service(&[(80, 8080)])],
    )
    .unwrap();
    let picks: Vec<_> = (0..4).map(|_| picked(&state, "10.96.0.10:80")).collect();
    assert_eq!(
        picks,
        vec![
            ("a".into(), addr("10.244.1.2:8080")),
            ("b".into(), addr("10.244.2.2:8080")),
            ("a".into(), addr("10.244.1.2:8080")),
            ("b".into(), addr("10.244.2.2:8080")),
        ]
    );
}

#[test]
fn target_port_prefers_the_endpoint_map_then_the_service_then_the_same_port() {
    let state = WorkloadState::new(
        vec![backing(workload("a", "10.244.1.2"), &[(80, 9090)])],
        vec![service(&[(80, 8080), (81, 0)])],
    )
    .unwrap();
    assert_eq!(picked(&state, "10.96.0.10:80").1, addr("10.244.1.2:9090"));
    assert_eq!(picked(&state, "10.96.0.10:81").1, addr("10.244.1.2:81"));
    let state = WorkloadState::new(
        vec![backing(workload("a", "10.244.1.2"), &[])],
        vec![service(&[(80, 8080)])],
    )
    .unwrap();
    assert_eq!(picked(&state, "10.96.0.10:80").1, addr("10.244.1.2:8080"));
}

#[test]
fn unknown_port_and_no_endpoints_are_errors_and_other_ips_pass_through() {
    let state = WorkloadState::new(
        vec![workload("a", "10.244.1.2")],
        vec![service(&[(80, 8080)])],
    )
    .unwrap();
    assert_eq!(
        state.resolve(addr("10.96.0.10:81")).unwrap_err(),
        ResolveError::UnknownServicePort {
            service: key(),
            port: 81
        }
    );
    assert_eq!(
        state.resolve(addr("10.96.0.10:80")).unwrap_err(),
        ResolveError::NoHealthyEndpoints { service: key() }
    );
    match state.resolve(addr("10.244.1.2:7000")).unwrap() {
        Upstream::Workload {
            workload,
            addr: a,
            service,
        } => {
            assert_eq!(
                (workload.uid.as_str(), a, service),
                ("a", addr("10.244.1.2:7000"), None)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(state.resolve(addr("192.0.2.1:443")).unwrap(), Upstream::Passthrough(a) if a == addr("192.0.2.1:443"))
    );
}

#[test]
fn duplicates_are_refused() {
    let dup_uid = WorkloadState::new(
        vec![workload("a", "10.0.0.1"), workload("a", "10.0.0.2")],
        vec![],
    );
    assert_eq!(dup_uid.unwrap_err(), StateError::DuplicateUid("a".into()));
    let dup_ip = WorkloadState::new(
        vec![workload("a", "10.0.0.1"), workload("b", "10.0.0.1")],
        vec![],
    );
    assert!(matches!(
        dup_ip.unwrap_err(),
        StateError::DuplicateAddress { .. }
    ));
    let mut other = service(&[]);
    other.name = "other".into();
    other.hostname = "other.default.svc.cluster.local".into();
    let dup_vip = WorkloadState::new(vec![], vec![service(&[]), other]);
    assert!(matches!(
        dup_vip.unwrap_err(),
        StateError::DuplicateVip { .. }
    ));
}

#[test]
fn the_store_swaps_whole_states() {
    let store = StateStore::new(WorkloadState::default());
    let before = store.snapshot();
    store.replace(WorkloadState::new(vec![workload("a", "10.0.0.1")], vec![]).unwrap());
    assert!(before.workload("a").is_none());
    assert!(store.snapshot().workload("a").is_some());
}
