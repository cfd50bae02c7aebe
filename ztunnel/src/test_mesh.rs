//! The small mesh the access-log and metrics unit tests describe connections in.

use std::net::SocketAddr;

use hbone::Identity;

use crate::access_log::ConnectionLog;
use crate::proxy::PodInfo;
use crate::state::{Service, ServiceKey, TunnelProtocol, Workload, WorkloadState};

pub const CLIENT: &str = "spiffe://cluster.local/ns/mesh/sa/client";
pub const SERVER: &str = "spiffe://cluster.local/ns/mesh/sa/server";

pub fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A pod of the `mesh` namespace in cluster `east`, owned by `owner`, canonical service
/// `sa` at revision `v1`.
pub fn workload(name: &str, owner: &str, sa: &str, ip: &str, protocol: TunnelProtocol) -> Workload {
    Workload {
        uid: format!("east//Pod/mesh/{name}"),
        protocol,
        workload_name: owner.into(),
        canonical_name: sa.into(),
        ..Workload::pod(name, "mesh", sa, ip.parse().unwrap()).unwrap()
    }
}

fn service(name: &str, vip: &str, ports: &[(u16, u16)]) -> Service {
    Service {
        name: name.into(),
        namespace: "mesh".into(),
        hostname: format!("{name}.mesh.svc.cluster.local"),
        vips: vec![vip.parse().unwrap()],
        ports: ports.iter().copied().collect(),
        waypoint: None,
    }
}

/// `client-0` (10.244.0.20) and `server-0` (10.244.1.5, the endpoint of `echo` at
/// 10.96.0.10:80, its only port), both HBONE; `legacy-0` (10.244.0.30)
/// outside the mesh, with no cluster in its uid; the service `empty` (10.96.0.11) with
/// no endpoint.
pub fn state() -> WorkloadState {
    let mut server = workload(
        "server-0",
        "server-deploy",
        "server",
        "10.244.1.5",
        TunnelProtocol::Hbone,
    );
    let key = ServiceKey::parse("mesh/echo.mesh.svc.cluster.local").unwrap();
    server.services.insert(key, [(80, 8080)].into());
    let mut legacy = workload(
        "legacy-0",
        "legacy",
        "legacy",
        "10.244.0.30",
        TunnelProtocol::None,
    );
    legacy.uid = "legacy-0".into();
    let client = workload(
        "client-0",
        "client-deploy",
        "client",
        "10.244.0.20",
        TunnelProtocol::Hbone,
    );
    WorkloadState::new(
        vec![client, server, legacy],
        vec![
            service("echo", "10.96.0.10", &[(80, 8080)]),
            service("empty", "10.96.0.11", &[(80, 8080)]),
        ],
    )
    .unwrap()
}

pub fn pod(name: &str, sa: &str) -> PodInfo {
    PodInfo {
        uid: format!("k8s-{name}"),
        name: name.into(),
        namespace: "mesh".into(),
        service_account: sa.into(),
    }
}

/// client-0's tunnel (from 10.244.0.20:51000, mutual TLS) to server-0's app on 8080, as
/// the inbound HBONE proxy first describes it.
pub fn inbound_from_client(state: &WorkloadState) -> ConnectionLog {
    ConnectionLog::inbound(
        state,
        &pod("server-0", "server"),
        &id(SERVER),
        addr("10.244.0.20:51000"),
        Some(&id(CLIENT)),
        Some("10.244.1.5:8080".into()),
    )
}
