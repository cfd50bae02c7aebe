use super::*;

fn workload(uid: &str, ip: &str) -> Workload {
    Workload {
        node: "node-1".into(),
        ..Workload::pod(uid, "default", "sa", ip.parse().unwrap()).unwrap()
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
        waypoint: None,
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

mod waypoints {
    use super::*;

    const WAYPOINT_HOST: &str = "waypoint.default.svc.cluster.local";

    fn waypoint_ref() -> Waypoint {
        Waypoint {
            address: WaypointAddress::Service(ServiceKey {
                namespace: "default".into(),
                hostname: WAYPOINT_HOST.into(),
            }),
            hbone_port: 15008,
        }
    }

    fn waypoint_pod(uid: &str, ip: &str) -> Workload {
        let mut w = workload(uid, ip);
        w.services.insert(
            ServiceKey {
                namespace: "default".into(),
                hostname: WAYPOINT_HOST.into(),
            },
            [(15008, 15008)].into(),
        );
        w
    }

    fn waypoint_service() -> Service {
        Service {
            name: "waypoint".into(),
            namespace: "default".into(),
            hostname: WAYPOINT_HOST.into(),
            vips: vec!["10.96.0.99".parse().unwrap()],
            ports: [(15008, 15008)].into(),
            waypoint: None,
        }
    }

    /// echo (10.96.0.10:80 -> 8080) backed by a (10.244.1.2); a waypoint pod 10.244.9.9.
    fn mesh(service_waypoint: bool, workload_waypoint: bool, waypoint_pods: bool) -> WorkloadState {
        let mut a = backing(workload("a", "10.244.1.2"), &[(80, 8080)]);
        if workload_waypoint {
            a.waypoint = Some(waypoint_ref());
        }
        let mut echo = service(&[(80, 8080)]);
        if service_waypoint {
            echo.waypoint = Some(waypoint_ref());
        }
        let mut workloads = vec![a];
        if waypoint_pods {
            workloads.push(waypoint_pod("wp", "10.244.9.9"));
        }
        WorkloadState::new(workloads, vec![echo, waypoint_service()]).unwrap()
    }

    fn via_waypoint(upstream: Upstream) -> (String, SocketAddr, SocketAddr, Option<String>) {
        match upstream {
            Upstream::Waypoint {
                waypoint,
                addr,
                target,
                service,
            } => (
                waypoint.uid.clone(),
                addr,
                target,
                service.map(|s| s.name.clone()),
            ),
            other => panic!("expected the waypoint, got {other:?}"),
        }
    }

    #[test]
    fn service_traffic_goes_to_the_services_waypoint_with_the_vip_as_target() {
        let state = mesh(true, false, true);
        let got = via_waypoint(state.resolve_from(addr("10.96.0.10:80"), None).unwrap());
        assert_eq!(
            got,
            (
                "wp".into(),
                addr("10.244.9.9:15008"),
                addr("10.96.0.10:80"),
                Some("echo".into())
            )
        );
    }

    #[test]
    fn workload_traffic_goes_to_the_workloads_waypoint_with_the_pod_as_target() {
        let state = mesh(false, true, true);
        let got = via_waypoint(state.resolve_from(addr("10.244.1.2:8080"), None).unwrap());
        assert_eq!(
            got,
            (
                "wp".into(),
                addr("10.244.9.9:15008"),
                addr("10.244.1.2:8080"),
                None
            )
        );
        // Addressed through a service without a waypoint, the chosen endpoint's waypoint
        // still takes it, asked for the endpoint.
        let got = via_waypoint(state.resolve_from(addr("10.96.0.10:80"), None).unwrap());
        assert_eq!(
            got,
            (
                "wp".into(),
                addr("10.244.9.9:15008"),
                addr("10.244.1.2:8080"),
                Some("echo".into())
            )
        );
    }

    #[test]
    fn a_service_waypoint_does_not_take_workload_traffic() {
        let state = mesh(true, false, true);
        match state.resolve_from(addr("10.244.1.2:8080"), None).unwrap() {
            Upstream::Workload { workload, .. } => assert_eq!(workload.uid, "a"),
            other => panic!("expected the workload itself, got {other:?}"),
        }
    }

    #[test]
    fn the_waypoints_own_traffic_is_not_sent_back_to_it() {
        let state = mesh(true, true, true);
        let wp = state.workload("wp").unwrap().clone();
        match state
            .resolve_from(addr("10.96.0.10:80"), Some(&wp))
            .unwrap()
        {
            Upstream::Workload {
                workload, addr: a, ..
            } => {
                assert_eq!((workload.uid.as_str(), a), ("a", addr("10.244.1.2:8080")));
            }
            other => panic!("expected the endpoint, got {other:?}"),
        }
    }

    #[test]
    fn without_a_waypoint_pod_traffic_fails_instead_of_bypassing_it() {
        let state = mesh(true, false, false);
        let err = state.resolve_from(addr("10.96.0.10:80"), None).unwrap_err();
        assert!(
            matches!(&err, ResolveError::WaypointUnavailable { reason, .. } if reason == "no healthy waypoint pod"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "waypoint default/waypoint.default.svc.cluster.local:15008 for 10.96.0.10:80 is \
             unavailable: no healthy waypoint pod"
        );
    }

    #[test]
    fn plain_resolve_ignores_waypoints() {
        let state = mesh(true, true, true);
        assert!(matches!(
            state.resolve(addr("10.96.0.10:80")).unwrap(),
            Upstream::Workload { .. }
        ));
    }
}
