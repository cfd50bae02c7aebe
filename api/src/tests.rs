//! Wire-level checks: round trips, upstream field numbers pinned to exact
//! bytes, gRPC routing paths, and decoding of garbage.

use std::{
    collections::BTreeMap,
    pin::Pin,
    task::{Context, Poll},
};

use prost::{Message, Name};
use prost_types::{Any, Struct, Value, value::Kind};
use tonic::{Request, Response, Status, Streaming};

use crate::{ca, core, rpc, security, workload, xds, zds};

fn enc<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

fn full_workload() -> workload::Workload {
    workload::Workload {
        uid: "Kubernetes//Pod/default/client-7d9f".into(),
        name: "client-7d9f".into(),
        namespace: "default".into(),
        addresses: vec![
            vec![10, 0, 0, 7],
            std::net::Ipv6Addr::LOCALHOST.octets().to_vec(),
        ],
        hostname: String::new(),
        network: "net-a".into(),
        tunnel_protocol: workload::TunnelProtocol::Hbone as i32,
        trust_domain: "cluster.local".into(),
        service_account: "client".into(),
        waypoint: Some(workload::GatewayAddress {
            destination: Some(workload::gateway_address::Destination::Hostname(
                workload::NamespacedHostname {
                    namespace: "default".into(),
                    hostname: "waypoint.default.svc.cluster.local".into(),
                },
            )),
            hbone_mtls_port: 15008,
        }),
        network_gateway: Some(workload::GatewayAddress {
            destination: Some(workload::gateway_address::Destination::Address(
                workload::NetworkAddress {
                    network: "net-b".into(),
                    address: vec![192, 0, 2, 1],
                },
            )),
            hbone_mtls_port: 15008,
        }),
        node: "node-1".into(),
        canonical_name: "client".into(),
        canonical_revision: "v1".into(),
        workload_type: workload::WorkloadType::Pod as i32,
        workload_name: "client".into(),
        native_tunnel: false,
        application_tunnel: Some(workload::ApplicationTunnel {
            protocol: workload::application_tunnel::Protocol::Proxy as i32,
            port: 15088,
        }),
        services: BTreeMap::from([(
            "default/echo.default.svc.cluster.local".to_string(),
            workload::PortList {
                ports: vec![workload::Port {
                    service_port: 80,
                    target_port: 8080,
                }],
            },
        )]),
        authorization_policies: vec!["default/allow-client".into()],
        status: workload::WorkloadStatus::Healthy as i32,
        cluster_id: "Kubernetes".into(),
        locality: Some(workload::Locality {
            region: "r1".into(),
            zone: "z1".into(),
            subzone: "s1".into(),
        }),
        network_mode: workload::NetworkMode::Standard as i32,
        extensions: vec![workload::Extension {
            name: "ext".into(),
            config: Some(Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![1, 2],
            }),
        }],
        capacity: Some(3),
        labels: [("app".to_owned(), "client".to_owned())].into(),
    }
}

fn full_service() -> workload::Service {
    workload::Service {
        name: "echo".into(),
        namespace: "default".into(),
        hostname: "echo.default.svc.cluster.local".into(),
        addresses: vec![workload::NetworkAddress {
            network: String::new(),
            address: vec![10, 96, 0, 10],
        }],
        ports: vec![workload::Port {
            service_port: 80,
            target_port: 8080,
        }],
        subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/echo".into()],
        waypoint: None,
        load_balancing: Some(workload::LoadBalancing {
            routing_preference: vec![
                workload::load_balancing::Scope::Network as i32,
                workload::load_balancing::Scope::Zone as i32,
            ],
            mode: workload::load_balancing::Mode::Failover as i32,
            health_policy: workload::load_balancing::HealthPolicy::AllowAll as i32,
            dns_connect_strategy: workload::load_balancing::DnsConnectStrategy::FirstHealthyRace
                as i32,
        }),
        ip_families: workload::IpFamilies::Ipv4Only as i32,
        extensions: vec![],
        canonical: true,
    }
}

#[test]
fn address_with_workload_round_trips() {
    let addr = workload::Address {
        r#type: Some(workload::address::Type::Workload(full_workload())),
    };
    let bytes = enc(&addr);
    let back = workload::Address::decode(bytes.as_slice()).expect("decode");
    assert_eq!(back, addr);
    match back.r#type {
        Some(workload::address::Type::Workload(w)) => {
            assert_eq!(w.uid, "Kubernetes//Pod/default/client-7d9f");
            assert_eq!(w.addresses[0], vec![10, 0, 0, 7]);
            assert_eq!(
                w.services["default/echo.default.svc.cluster.local"].ports[0].target_port,
                8080
            );
        }
        other => panic!("expected a workload, got {other:?}"),
    }
}

#[test]
fn address_with_service_round_trips() {
    let addr = workload::Address {
        r#type: Some(workload::address::Type::Service(full_service())),
    };
    let back = workload::Address::decode(enc(&addr).as_slice()).expect("decode");
    assert_eq!(back, addr);
    let Some(workload::address::Type::Service(svc)) = back.r#type else {
        panic!("expected a service");
    };
    assert_eq!(svc.hostname, "echo.default.svc.cluster.local");
    assert!(svc.canonical);
}

#[test]
fn any_round_trip_uses_the_xds_type_urls() {
    assert_eq!(workload::Address::type_url(), crate::ADDRESS_TYPE_URL);
    assert_eq!(
        security::Authorization::type_url(),
        crate::AUTHORIZATION_TYPE_URL
    );

    let addr = workload::Address {
        r#type: Some(workload::address::Type::Service(full_service())),
    };
    let any = Any::from_msg(&addr).expect("pack");
    assert_eq!(any.type_url, "type.googleapis.com/istio.workload.Address");
    assert_eq!(any.to_msg::<workload::Address>().expect("unpack"), addr);
    // Unpacking as the wrong type is refused on the type URL.
    assert!(any.to_msg::<security::Authorization>().is_err());
}

/// Each case: a message with exactly one field set, and the exact bytes
/// upstream's schema produces for it (tag = field_number << 3 | wire_type).
#[test]
fn field_numbers_match_upstream_on_the_wire() {
    // istio.workload.Workload
    let w = |f: fn(&mut workload::Workload)| {
        let mut m = workload::Workload::default();
        f(&mut m);
        enc(&m)
    };
    // uid = 20, length-delimited: tag 162 = varint [0xA2, 0x01].
    assert_eq!(w(|m| m.uid = "u".into()), [0xA2, 0x01, 0x01, b'u']);
    assert_eq!(w(|m| m.name = "n".into()), [0x0A, 0x01, b'n']);
    assert_eq!(w(|m| m.namespace = "n".into()), [0x12, 0x01, b'n']);
    assert_eq!(
        w(|m| m.addresses = vec![vec![10, 0, 0, 1]]),
        [0x1A, 0x04, 10, 0, 0, 1]
    );
    assert_eq!(w(|m| m.hostname = "h".into()), [0xAA, 0x01, 0x01, b'h']); // 21
    assert_eq!(w(|m| m.network = "n".into()), [0x22, 0x01, b'n']); // 4
    assert_eq!(
        w(|m| m.tunnel_protocol = workload::TunnelProtocol::Hbone as i32),
        [0x28, 0x01]
    ); // 5
    assert_eq!(w(|m| m.trust_domain = "t".into()), [0x32, 0x01, b't']); // 6
    assert_eq!(w(|m| m.service_account = "s".into()), [0x3A, 0x01, b's']); // 7
    assert_eq!(w(|m| m.node = "x".into()), [0x4A, 0x01, b'x']); // 9
    assert_eq!(
        w(|m| m.workload_type = workload::WorkloadType::Pod as i32),
        [0x60, 0x02]
    ); // 12
    assert_eq!(w(|m| m.native_tunnel = true), [0x70, 0x01]); // 14
    assert_eq!(
        w(|m| m.authorization_policies = vec!["p".into()]),
        [0x82, 0x01, 0x01, b'p']
    ); // 16
    assert_eq!(
        w(|m| m.status = workload::WorkloadStatus::Unhealthy as i32),
        [0x88, 0x01, 0x01]
    ); // 17
    assert_eq!(w(|m| m.cluster_id = "c".into()), [0x92, 0x01, 0x01, b'c']); // 18
    assert_eq!(
        w(|m| m.network_gateway = Some(Default::default())),
        [0x9A, 0x01, 0x00]
    ); // 19
    assert_eq!(
        w(|m| {
            let ports = vec![workload::Port {
                service_port: 1,
                target_port: 0,
            }];
            m.services = BTreeMap::from([("k".to_string(), workload::PortList { ports })]);
        }),
        // 22: map entry {key = 1: "k", value = 2: PortList{ports = 1: [{service_port = 1: 1}]}}
        [
            0xB2, 0x01, 0x09, 0x0A, 0x01, b'k', 0x12, 0x04, 0x0A, 0x02, 0x08, 0x01
        ]
    );
    assert_eq!(
        w(|m| m.application_tunnel = Some(Default::default())),
        [0xBA, 0x01, 0x00]
    ); // 23
    assert_eq!(
        w(|m| m.locality = Some(Default::default())),
        [0xC2, 0x01, 0x00]
    ); // 24
    assert_eq!(
        w(|m| m.network_mode = workload::NetworkMode::HostNetwork as i32),
        [0xC8, 0x01, 0x01] // 25
    );
    // capacity = 27, google.protobuf.UInt32Value{value = 1: 5}
    assert_eq!(w(|m| m.capacity = Some(5)), [0xDA, 0x01, 0x02, 0x08, 0x05]);

    // istio.workload.Address oneof: workload = 1, service = 2.
    let a = workload::Address {
        r#type: Some(workload::address::Type::Workload(Default::default())),
    };
    assert_eq!(enc(&a), [0x0A, 0x00]);
    let a = workload::Address {
        r#type: Some(workload::address::Type::Service(Default::default())),
    };
    assert_eq!(enc(&a), [0x12, 0x00]);

    // istio.workload.Service
    let s = |f: fn(&mut workload::Service)| {
        let mut m = workload::Service::default();
        f(&mut m);
        enc(&m)
    };
    assert_eq!(s(|m| m.hostname = "h".into()), [0x1A, 0x01, b'h']); // 3
    assert_eq!(s(|m| m.waypoint = Some(Default::default())), [0x3A, 0x00]); // 7
    assert_eq!(
        s(|m| m.load_balancing = Some(Default::default())),
        [0x42, 0x00]
    ); // 8
    assert_eq!(
        s(|m| m.ip_families = workload::IpFamilies::Dual as i32),
        [0x48, 0x03]
    ); // 9
    assert_eq!(s(|m| m.canonical = true), [0x58, 0x01]); // 11

    // GatewayAddress{address = 2: NetworkAddress{address = 2}, hbone_mtls_port = 3: 15008}
    // (prost writes fields in tag order, as protoc-generated encoders do.)
    let g = workload::GatewayAddress {
        destination: Some(workload::gateway_address::Destination::Address(
            workload::NetworkAddress {
                network: String::new(),
                address: vec![10, 0, 0, 1],
            },
        )),
        hbone_mtls_port: 15008,
    };
    assert_eq!(
        enc(&g),
        [0x12, 0x06, 0x12, 0x04, 10, 0, 0, 1, 0x18, 0xA0, 0x75]
    );
    // LoadBalancing.dns_connect_strategy = 4
    let lb = workload::LoadBalancing {
        dns_connect_strategy: workload::load_balancing::DnsConnectStrategy::FirstHealthyRace as i32,
        ..Default::default()
    };
    assert_eq!(enc(&lb), [0x20, 0x01]);

    // istio.security
    let auth = security::Authorization {
        action: security::Action::Deny as i32,
        groups: vec![security::Group {
            rules: vec![security::Rules {
                matches: vec![security::Match {
                    service_accounts: vec![security::ServiceAccountMatch::default()],
                    destination_ports: vec![80],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    };
    // action = 4; groups = 5 { rules = 1 { matches = 2 { destination_ports = 9 (packed),
    // service_accounts = 11 } } }
    assert_eq!(
        enc(&auth),
        [
            0x20, 0x01, 0x2A, 0x09, 0x0A, 0x07, 0x12, 0x05, 0x4A, 0x01, 80, 0x5A, 0x00
        ]
    );

    // istio.workload.zds
    let add = zds::WorkloadRequest {
        payload: Some(zds::workload_request::Payload::Add(zds::AddWorkload {
            uid: "u".into(),
            workload_info: Some(zds::WorkloadInfo {
                service_account: "s".into(),
                ..Default::default()
            }),
        })),
    };
    // add = 1 { uid = 1, workload_info = 2 { service_account = 3 } }
    assert_eq!(
        enc(&add),
        [0x0A, 0x08, 0x0A, 0x01, b'u', 0x12, 0x03, 0x1A, 0x01, b's']
    );
    let del = zds::WorkloadRequest {
        payload: Some(zds::workload_request::Payload::Del(zds::DelWorkload {
            uid: "u".into(),
        })),
    };
    // del = 2 { uid = 2 }
    assert_eq!(enc(&del), [0x12, 0x03, 0x12, 0x01, b'u']);
    let keep = zds::WorkloadRequest {
        payload: Some(zds::workload_request::Payload::Keep(zds::KeepWorkload {
            uid: "u".into(),
        })),
    };
    // keep = 5 { uid = 1 }
    assert_eq!(enc(&keep), [0x2A, 0x03, 0x0A, 0x01, b'u']);
    let snap = zds::WorkloadRequest {
        payload: Some(zds::workload_request::Payload::SnapshotSent(
            zds::SnapshotSent {},
        )),
    };
    assert_eq!(enc(&snap), [0x1A, 0x00]);
    let ack = zds::WorkloadResponse {
        payload: Some(zds::workload_response::Payload::Ack(zds::Ack {
            error: "e".into(),
        })),
    };
    assert_eq!(enc(&ack), [0x0A, 0x03, 0x0A, 0x01, b'e']);
    assert_eq!(
        enc(&zds::ZdsHello {
            version: zds::Version::V1 as i32
        }),
        [0x08, 0x01]
    );

    // istio.v1.auth
    let csr = ca::IstioCertificateRequest {
        csr: "c".into(),
        ..Default::default()
    };
    assert_eq!(enc(&csr), [0x0A, 0x01, b'c']);
    let ttl = ca::IstioCertificateRequest {
        validity_duration: 86400,
        ..Default::default()
    };
    assert_eq!(enc(&ttl), [0x18, 0x80, 0xA3, 0x05]); // 3, varint 86400
    let md = ca::IstioCertificateRequest {
        metadata: Some(Struct::default()),
        ..Default::default()
    };
    assert_eq!(enc(&md), [0x22, 0x00]); // 4
    let resp = ca::IstioCertificateResponse {
        cert_chain: vec!["a".into()],
        root_cert: Some(ca::Roots {
            ca_cert: vec!["r".into()],
        }),
    };
    assert_eq!(enc(&resp), [0x0A, 0x01, b'a', 0x12, 0x03, 0x0A, 0x01, b'r']);

    // envoy.service.discovery.v3
    let req = xds::DeltaDiscoveryRequest {
        node: Some(core::Node {
            id: "i".into(),
            ..Default::default()
        }),
        type_url: "t".into(),
        response_nonce: "n".into(),
        error_detail: Some(rpc::Status {
            code: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    // node = 1 { id = 1 }, type_url = 2, response_nonce = 6, error_detail = 7 { code = 1 }
    assert_eq!(
        enc(&req),
        [
            0x0A, 0x03, 0x0A, 0x01, b'i', 0x12, 0x01, b't', 0x32, 0x01, b'n', 0x3A, 0x02, 0x08,
            0x03
        ]
    );
    let req = xds::DeltaDiscoveryRequest {
        initial_resource_versions: BTreeMap::from([("k".into(), "v".into())]),
        ..Default::default()
    };
    assert_eq!(enc(&req), [0x2A, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, b'v']); // 5
    let resp = xds::DeltaDiscoveryResponse {
        resources: vec![xds::Resource {
            version: "1".into(),
            name: "r".into(),
            ..Default::default()
        }],
        type_url: "t".into(),
        nonce: "n".into(),
        removed_resources: vec!["x".into()],
        ..Default::default()
    };
    // resources = 2 { version = 1, name = 3 }, type_url = 4, nonce = 5, removed_resources = 6
    assert_eq!(
        enc(&resp),
        [
            0x12, 0x06, 0x0A, 0x01, b'1', 0x1A, 0x01, b'r', 0x22, 0x01, b't', 0x2A, 0x01, b'n',
            0x32, 0x01, b'x'
        ]
    );
    // envoy.config.core.v3.Node: cluster = 2, metadata = 3, user_agent_name = 6
    let node = core::Node {
        cluster: "c".into(),
        metadata: Some(Struct::default()),
        user_agent_name: "z".into(),
        ..Default::default()
    };
    assert_eq!(enc(&node), [0x12, 0x01, b'c', 0x1A, 0x00, 0x32, 0x01, b'z']);
}

#[test]
fn malformed_bytes_are_errors_not_panics() {
    let cases: &[&[u8]] = &[
        // Truncated length-delimited field (workload = 1, claims 10 bytes).
        &[0x0A, 0x0A, 0x01],
        // Varint that never terminates.
        &[
            0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        // Wire type 7 does not exist.
        &[0x0F],
        // Field number 0 is invalid.
        &[0x02, 0x00],
        // Wrong wire type for a known field (workload as a varint).
        &[0x08, 0x01],
    ];
    for bytes in cases {
        assert!(
            workload::Address::decode(*bytes).is_err(),
            "Address accepted {bytes:02x?}"
        );
    }
    // Invalid UTF-8 in a string field (Workload.name = 1).
    assert!(workload::Workload::decode(&[0x0A, 0x02, 0xC3, 0x28][..]).is_err());
    assert!(zds::WorkloadRequest::decode(&[0x0A, 0x05, 0x0A][..]).is_err());
    assert!(xds::DeltaDiscoveryResponse::decode(&[0x12, 0x7F][..]).is_err());
    assert!(ca::IstioCertificateRequest::decode(&[0x0A, 0x01, 0xFF][..]).is_err());
    assert!(security::Authorization::decode(&[0x2A, 0x02, 0x0A][..]).is_err());

    // Unknown fields, on the other hand, are skipped (forward compatibility).
    let mut bytes = enc(&workload::Workload {
        uid: "u".into(),
        ..Default::default()
    });
    bytes.extend_from_slice(&[0xF8, 0x07, 0x01]); // field 127, varint 1
    assert_eq!(
        workload::Workload::decode(bytes.as_slice()).unwrap().uid,
        "u"
    );
}

// ---- gRPC routing ----

type BoxStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

/// Answers each method with a distinct status code, so a response tells
/// which handler the path was routed to.
struct Tagged;

#[tonic::async_trait]
impl xds::aggregated_discovery_service_server::AggregatedDiscoveryService for Tagged {
    type StreamAggregatedResourcesStream = BoxStream<xds::DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<xds::DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<xds::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::failed_precondition("sotw"))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<xds::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::permission_denied("delta"))
    }
}

#[tonic::async_trait]
impl ca::istio_certificate_service_server::IstioCertificateService for Tagged {
    async fn create_certificate(
        &self,
        _: Request<ca::IstioCertificateRequest>,
    ) -> Result<Response<ca::IstioCertificateResponse>, Status> {
        Err(Status::resource_exhausted("ca"))
    }
}

/// Drives a generated server (a tower service) with a bare HTTP/2-style
/// request for `path`, and returns the gRPC status code it answers with.
fn grpc_code<S>(mut svc: S, path: &str, body: tonic::body::Body) -> i32
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
{
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resp = rt.block_on(async {
        std::future::poll_fn(|cx: &mut Context<'_>| match svc.poll_ready(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Pending,
        })
        .await
        .unwrap();
        svc.call(req).await.unwrap()
    });
    resp.headers()
        .get("grpc-status")
        .expect("trailers-only response carries grpc-status")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn service_paths_match_upstream() {
    use ca::istio_certificate_service_server::{self as ca_srv, IstioCertificateServiceServer};
    use tonic::{Code, server::NamedService};
    use xds::aggregated_discovery_service_server::{
        self as ads_srv, AggregatedDiscoveryServiceServer,
    };

    assert_eq!(
        ads_srv::SERVICE_NAME,
        "envoy.service.discovery.v3.AggregatedDiscoveryService"
    );
    assert_eq!(
        <AggregatedDiscoveryServiceServer<Tagged> as NamedService>::NAME,
        "envoy.service.discovery.v3.AggregatedDiscoveryService"
    );
    assert_eq!(
        ca_srv::SERVICE_NAME,
        "istio.v1.auth.IstioCertificateService"
    );
    assert_eq!(
        xds::DELTA_ADS_PATH,
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
    );
    assert_eq!(
        ca::CREATE_CERTIFICATE_PATH,
        "/istio.v1.auth.IstioCertificateService/CreateCertificate"
    );

    let ads = || AggregatedDiscoveryServiceServer::new(Tagged);
    let empty = tonic::body::Body::empty;
    assert_eq!(
        grpc_code(ads(), xds::DELTA_ADS_PATH, empty()),
        Code::PermissionDenied as i32
    );
    assert_eq!(
        grpc_code(ads(), xds::SOTW_ADS_PATH, empty()),
        Code::FailedPrecondition as i32
    );
    assert_eq!(
        grpc_code(
            ads(),
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/Nope",
            empty()
        ),
        Code::Unimplemented as i32
    );

    let cas = || IstioCertificateServiceServer::new(Tagged);
    // A unary call with no request message is rejected by the routed handler's
    // decoder (Internal: missing message); an unknown path is Unimplemented.
    assert_eq!(
        grpc_code(cas(), ca::CREATE_CERTIFICATE_PATH, empty()),
        Code::Internal as i32
    );
    assert_eq!(
        grpc_code(
            cas(),
            "/istio.v1.auth.IstioCertificateService/createCertificate",
            empty()
        ),
        Code::Unimplemented as i32
    );
}

#[test]
fn struct_metadata_round_trips_in_node_and_csr() {
    let md = Struct {
        fields: [(
            "ISTIO_VERSION".to_string(),
            Value {
                kind: Some(Kind::StringValue("1.0".into())),
            },
        )]
        .into(),
    };
    let node = core::Node {
        id: "ztunnel~10.0.0.1~n~ns".into(),
        metadata: Some(md.clone()),
        ..Default::default()
    };
    assert_eq!(core::Node::decode(enc(&node).as_slice()).unwrap(), node);
    let req = ca::IstioCertificateRequest {
        csr: "pem".into(),
        validity_duration: 60,
        metadata: Some(md),
    };
    assert_eq!(
        ca::IstioCertificateRequest::decode(enc(&req).as_slice()).unwrap(),
        req
    );
}
