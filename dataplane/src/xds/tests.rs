use std::net::IpAddr;

use api::prost_types::Any;
use api::security as sec;
use api::workload as wl;
use api::xds::{DeltaDiscoveryResponse, Resource};

use super::convert;

mod convert_tests;
mod resources_tests;

fn pb_workload(uid: &str, addresses: Vec<Vec<u8>>) -> wl::Workload {
    wl::Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "prod".into(),
        service_account: "server".into(),
        addresses,
        tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
        ..wl::Workload::default()
    }
}

fn pb_service(name: &str, vip: [u8; 4]) -> wl::Service {
    wl::Service {
        name: name.into(),
        namespace: "prod".into(),
        hostname: format!("{name}.prod.svc.cluster.local"),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
        }],
        ports: vec![wl::Port {
            service_port: 80,
            target_port: 8080,
        }],
        ..wl::Service::default()
    }
}

fn address_any(t: wl::address::Type) -> Any {
    Any::from_msg(&wl::Address { r#type: Some(t) }).unwrap()
}

fn resource(name: &str, version: &str, body: Any) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(body),
        ..Resource::default()
    }
}

fn workload_resource(w: wl::Workload, version: &str) -> Resource {
    let uid = w.uid.clone();
    resource(&uid, version, address_any(wl::address::Type::Workload(w)))
}

fn response(type_url: &str, resources: Vec<Resource>, removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: "n".into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..DeltaDiscoveryResponse::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ip_v6_bytes() -> Vec<u8> {
    "fd00::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec()
}

fn pb_policy(matches: Vec<sec::Match>) -> sec::Authorization {
    sec::Authorization {
        name: "p".into(),
        namespace: "prod".into(),
        scope: sec::Scope::WorkloadSelector as i32,
        action: sec::Action::Deny as i32,
        groups: vec![sec::Group {
            rules: vec![sec::Rules { matches }],
        }],
        dry_run: false,
    }
}

#[test]
fn the_node_carries_the_ztunnel_id_and_node_name() {
    let node = super::NodeInfo {
        node_name: "node-1".into(),
        ztunnel_id: "ztunnel~node-1".into(),
    }
    .to_node();
    assert_eq!(node.id, "ztunnel~node-1");
    let metadata = node.metadata.unwrap();
    assert_eq!(
        metadata.fields["NODE_NAME"].kind,
        Some(api::prost_types::value::Kind::StringValue("node-1".into()))
    );
}
