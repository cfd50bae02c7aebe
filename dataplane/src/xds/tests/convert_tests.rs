use std::collections::BTreeMap;

use api::prost_types::Any;
use api::security::string_match::MatchType;

use super::*;
use crate::rbac::{self, Cidr, StringMatch};
use crate::state::{ServiceKey, TunnelProtocol};
use crate::xds::convert::{AddressResource, ConvertError};

fn pb_addr(bytes: &[u8], length: u32) -> sec::Address {
    sec::Address {
        address: bytes.to_vec(),
        length,
    }
}

fn sm(m: MatchType) -> sec::StringMatch {
    sec::StringMatch {
        match_type: Some(m),
    }
}

#[test]
fn a_workload_converts_with_defaults_and_identity() {
    let mut pb = pb_workload("prod/server-1", vec![vec![10, 0, 0, 1], ip_v6_bytes()]);
    pb.trust_domain = String::new();
    pb.node = "node-1".into();
    pb.status = wl::WorkloadStatus::Unhealthy as i32;
    pb.authorization_policies = vec!["prod/allow-web".into()];
    pb.services.insert(
        "prod/web.prod.svc.cluster.local".into(),
        wl::PortList {
            ports: vec![wl::Port {
                service_port: 80,
                target_port: 9090,
            }],
        },
    );
    let w = convert::workload("prod/server-1", pb).unwrap();
    assert_eq!(w.addresses, vec![ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(
        w.identity.to_string(),
        "spiffe://cluster.local/ns/prod/sa/server"
    );
    assert_eq!((w.protocol, w.healthy), (TunnelProtocol::Hbone, false));
    assert_eq!(
        (w.canonical_name.as_str(), w.canonical_revision.as_str()),
        ("prod/server-1", "latest")
    );
    assert_eq!(w.node, "node-1");
    assert_eq!(w.authorization_policies, ["prod/allow-web"]);
    let key = ServiceKey::parse("prod/web.prod.svc.cluster.local").unwrap();
    assert_eq!(
        w.services,
        BTreeMap::from([(key, BTreeMap::from([(80, 9090)]))])
    );

    let s = convert::service("prod/web", pb_service("web", [10, 96, 0, 1])).unwrap();
    assert_eq!(
        (s.vips, s.ports),
        (vec![ip("10.96.0.1")], BTreeMap::from([(80, 8080)]))
    );
}

#[test]
fn malformed_addresses_name_the_resource_and_field() {
    let bad = |f: fn(&mut wl::Workload)| {
        let mut pb = pb_workload("w", vec![vec![10, 0, 0, 1]]);
        f(&mut pb);
        convert::workload("prod/w", pb).unwrap_err().to_string()
    };
    type Mutation = fn(&mut wl::Workload);
    let cases: [(&str, Mutation); 7] = [
        ("addresses[1]: 5 bytes", |w| {
            w.addresses.push(vec![1, 2, 3, 4, 5])
        }),
        ("uid: is empty", |w| w.uid.clear()),
        ("tunnel_protocol: unknown value 7", |w| {
            w.tunnel_protocol = 7
        }),
        ("status: unknown value 9", |w| w.status = 9),
        ("trust_domain/namespace/service_account", |w| {
            w.namespace.clear()
        }),
        ("services[\"nohost\"]: the key is not", |w| {
            w.services.insert("nohost".into(), wl::PortList::default());
        }),
        ("services[\"prod/a\"].ports[0]: service port 0", |w| {
            let ports = vec![wl::Port {
                service_port: 0,
                target_port: 1,
            }];
            w.services.insert("prod/a".into(), wl::PortList { ports });
        }),
    ];
    for (expected, mutate) in cases {
        let message = bad(mutate);
        assert!(message.starts_with("Address \"prod/w\": "), "{message}");
        assert!(
            message.contains(expected),
            "{message} should contain {expected}"
        );
    }
    // The same port twice (TCP and UDP in Kubernetes) is one port; different targets for
    // it are ambiguous.
    let mut svc = pb_service("web", [10, 96, 0, 1]);
    let first = svc.ports[0];
    svc.ports.push(first);
    let service = convert::service("prod/web", svc.clone()).unwrap();
    assert_eq!(
        service.ports.get(&(first.service_port as u16)),
        Some(&(first.target_port as u16))
    );
    svc.ports.push(wl::Port {
        service_port: first.service_port,
        target_port: first.target_port + 1,
    });
    let message = convert::service("prod/web", svc).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "ports[2]: service port {} appears twice, with target ports {} and {}",
            first.service_port,
            first.target_port,
            first.target_port + 1
        )),
        "{message}"
    );

    let garbage = Any {
        type_url: api::ADDRESS_TYPE_URL.into(),
        value: vec![0xff; 3],
    };
    assert!(matches!(
        convert::address("g", Some(&garbage)),
        Err(ConvertError::Decode { .. })
    ));
    let policy_any = Any::from_msg(&sec::Authorization::default()).unwrap();
    assert!(matches!(
        convert::address("p", Some(&policy_any)),
        Err(ConvertError::WrongType { .. })
    ));
    assert_eq!(
        convert::address("x", None),
        Err(ConvertError::NoBody {
            kind: "Address",
            name: "x".into()
        })
    );
    assert_eq!(
        convert::address("", None),
        Err(ConvertError::Unnamed { kind: "Address" })
    );
    let empty = Any::from_msg(&wl::Address { r#type: None }).unwrap();
    assert!(
        convert::address("e", Some(&empty))
            .unwrap_err()
            .to_string()
            .contains("type: neither")
    );
}

#[test]
fn an_authorization_converts_every_match_field() {
    let sa = |ns: &str, name: &str| sec::ServiceAccountMatch {
        namespace: ns.into(),
        service_account: name.into(),
    };
    let m = sec::Match {
        namespaces: vec![sm(MatchType::Exact("a".into()))],
        not_namespaces: vec![sm(MatchType::Prefix("b".into()))],
        principals: vec![sm(MatchType::Suffix("/sa/c".into()))],
        not_principals: vec![sm(MatchType::Presence(()))],
        service_accounts: vec![sa("ns", "x")],
        not_service_accounts: vec![sa("ns", "y")],
        source_ips: vec![pb_addr(&[10, 0, 0, 0], 8)],
        not_source_ips: vec![pb_addr(&[10, 1, 0, 0], 16)],
        destination_ips: vec![pb_addr(&[10, 2, 0, 1], 32)],
        not_destination_ips: vec![pb_addr(&ip_v6_bytes(), 64)],
        destination_ports: vec![80],
        not_destination_ports: vec![443],
    };
    let p = convert::policy("prod/p", pb_policy(vec![m])).unwrap();
    assert_eq!(
        (p.key(), p.scope, p.action),
        (
            "prod/p".into(),
            rbac::Scope::WorkloadSelector,
            rbac::Action::Deny
        )
    );
    let cidr = |s: &str, len| Cidr::new(ip(s), len).unwrap();
    let sa = |ns: &str, name: &str| rbac::ServiceAccountMatch {
        namespace: ns.into(),
        service_account: name.into(),
    };
    let expected = rbac::Match {
        namespaces: vec![StringMatch::Exact("a".into())],
        not_namespaces: vec![StringMatch::Prefix("b".into())],
        principals: vec![StringMatch::Suffix("/sa/c".into())],
        not_principals: vec![StringMatch::Presence],
        service_accounts: vec![sa("ns", "x")],
        not_service_accounts: vec![sa("ns", "y")],
        source_ips: vec![cidr("10.0.0.0", 8)],
        not_source_ips: vec![cidr("10.1.0.0", 16)],
        destination_ips: vec![cidr("10.2.0.1", 32)],
        not_destination_ips: vec![cidr("fd00::1", 64)],
        destination_ports: vec![80],
        not_destination_ports: vec![443],
    };
    assert_eq!(p.groups, vec![vec![vec![expected]]]);
}

#[test]
fn malformed_authorizations_name_the_resource_and_field() {
    let with = |m: sec::Match| convert::policy("prod/p", pb_policy(vec![sec::Match::default(), m]));
    let cases = [
        (
            sec::Match {
                principals: vec![sec::StringMatch { match_type: None }],
                ..Default::default()
            },
            "matches[1].principals[0]: no exact",
        ),
        (
            sec::Match {
                source_ips: vec![pb_addr(&[10, 0, 0, 0], 33)],
                ..Default::default()
            },
            "matches[1].source_ips[0]: prefix length 33",
        ),
        (
            sec::Match {
                not_destination_ips: vec![pb_addr(&[1, 2, 3], 8)],
                ..Default::default()
            },
            "not_destination_ips[0]: 3 bytes",
        ),
        (
            sec::Match {
                destination_ports: vec![70000],
                ..Default::default()
            },
            "destination_ports[0]: 70000 is not a port",
        ),
        (
            sec::Match {
                service_accounts: vec![sec::ServiceAccountMatch::default()],
                ..Default::default()
            },
            "service_accounts[0]: namespace and serviceAccount",
        ),
    ];
    for (m, expected) in cases {
        let message = with(m).unwrap_err().to_string();
        assert!(
            message.starts_with("Authorization \"prod/p\": groups[0].rules[0]."),
            "{message}"
        );
        assert!(
            message.contains(expected),
            "{message} should contain {expected}"
        );
    }
    let mut unknown = pb_policy(vec![]);
    unknown.action = 5;
    let message = convert::policy("prod/p", unknown).unwrap_err().to_string();
    assert_eq!(message, "Authorization \"prod/p\": action: unknown value 5");
}

#[test]
fn an_address_is_a_workload_or_a_service() {
    let any = address_any(wl::address::Type::Workload(pb_workload("a", vec![])));
    assert!(
        matches!(convert::address("a", Some(&any)), Ok(AddressResource::Workload(w)) if w.uid == "a")
    );
    let any = address_any(wl::address::Type::Service(pb_service(
        "web",
        [10, 96, 0, 1],
    )));
    assert!(
        matches!(convert::address("prod/web", Some(&any)), Ok(AddressResource::Service(s)) if s.name == "web")
    );
}

#[test]
fn waypoints_and_labels_convert_and_bad_waypoints_name_the_field() {
    use crate::state::{Waypoint, WaypointAddress};
    let hostname = |port| wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Hostname(
            wl::NamespacedHostname {
                namespace: "prod".into(),
                hostname: "waypoint.prod.svc.cluster.local".into(),
            },
        )),
        hbone_mtls_port: port,
    };
    let mut pb = pb_workload("prod/server-1", vec![vec![10, 0, 0, 1]]);
    pb.waypoint = Some(hostname(15008));
    pb.labels.insert("version".into(), "v2".into());
    let w = convert::workload("prod/server-1", pb).unwrap();
    assert_eq!(
        w.waypoint,
        Some(Waypoint {
            address: WaypointAddress::Service(
                ServiceKey::parse("prod/waypoint.prod.svc.cluster.local").unwrap()
            ),
            hbone_port: 15008,
        })
    );
    assert_eq!(*w.labels, BTreeMap::from([("version".into(), "v2".into())]));

    let mut s = pb_service("web", [10, 96, 0, 1]);
    s.waypoint = Some(wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Address(
            wl::NetworkAddress {
                network: String::new(),
                address: vec![10, 244, 0, 9],
            },
        )),
        hbone_mtls_port: 15008,
    });
    let s = convert::service("prod/web", s).unwrap();
    assert_eq!(
        s.waypoint.map(|w| w.address),
        Some(WaypointAddress::Ip(ip("10.244.0.9")))
    );

    let mut bad = pb_service("web", [10, 96, 0, 1]);
    bad.waypoint = Some(hostname(0));
    assert_eq!(
        convert::service("prod/web", bad).unwrap_err().to_string(),
        "Address \"prod/web\": waypoint.hbone_mtls_port: 0 is not a port"
    );
}
