//! Gateway (Gateway API).

use super::*;
use crate::config::Gateway;

const WAYPOINT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: default
  labels:
    istio.io/waypoint-for: service
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
    allowedRoutes:
      namespaces:
        from: Same
"#;

const INGRESS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: ingress
  namespace: istio-ingress
spec:
  gatewayClassName: istio
  addresses:
  - type: IPAddress
    value: 10.0.0.10
  - type: Hostname
    value: ingress.example.com
  - value: "2001:db8::10"
  listeners:
  - name: http
    hostname: "*.example.com"
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels:
            shared-gateway-access: "true"
  - name: https
    hostname: "*.example.com"
    port: 443
    protocol: HTTPS
    tls:
      mode: Terminate
      certificateRefs:
      - name: example-com-cert
  - name: tcp
    port: 5432
    protocol: TCP
"#;

#[test]
fn gateways_parse_and_round_trip() {
    let waypoint: Gateway = parse(WAYPOINT);
    assert_eq!(waypoint.spec.gateway_class_name, "istio-waypoint");
    let mesh = &waypoint.spec.listeners[0];
    assert_eq!(
        (mesh.name.as_str(), mesh.port, mesh.protocol.as_str()),
        ("mesh", 15008, "HBONE")
    );
    assert_eq!(
        mesh.allowed_routes.as_ref().unwrap()["namespaces"]["from"],
        "Same"
    );
    assert!(waypoint.validate().is_empty(), "{:#?}", waypoint.validate());
    round_trip(&waypoint);

    let ingress: Gateway = parse(INGRESS);
    assert_eq!(
        ingress.spec.addresses[1].address_type.as_deref(),
        Some("Hostname")
    );
    assert_eq!(
        ingress.spec.listeners[1].tls.as_ref().unwrap()["certificateRefs"][0]["name"],
        "example-com-cert"
    );
    assert_eq!(
        ingress.spec.listeners[0].hostname.as_deref(),
        Some("*.example.com")
    );
    assert!(ingress.validate().is_empty(), "{:#?}", ingress.validate());
    round_trip(&ingress);
}

#[test]
fn gateway_rejects_unknown_fields() {
    assert_unknown_field::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, portt: 80, protocol: HTTP}]",
        "portt",
    );
    assert_unknown_field::<Gateway>("gatewayClass: istio", "gatewayClass");
    assert_unknown_field::<Gateway>(
        "gatewayClassName: istio\naddresses: [{kind: IPAddress, value: 1.2.3.4}]",
        "kind",
    );
}

const ONE_LISTENER: &str = "listeners: [{name: a, port: 80, protocol: HTTP}]";

#[test]
fn gateway_class_and_listeners_are_required() {
    assert_invalid::<Gateway>(ONE_LISTENER, "spec.gatewayClassName", "required");
    assert_invalid::<Gateway>(
        "gatewayClassName: istio",
        "spec.listeners",
        "between 1 and 64",
    );
    let many: Vec<String> = (0..65)
        .map(|i| format!("{{name: l{i}, port: {}, protocol: TCP}}", 1000 + i))
        .collect();
    assert_invalid::<Gateway>(
        &format!("gatewayClassName: istio\nlisteners: [{}]", many.join(", ")),
        "spec.listeners",
        "between 1 and 64",
    );
    assert_valid::<Gateway>(&format!("gatewayClassName: istio\n{ONE_LISTENER}"));
}

#[test]
fn listener_names_are_unique() {
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]",
        "spec.listeners[1].name",
        "duplicate listener name",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{port: 80, protocol: HTTP}]",
        "spec.listeners[0].name",
        "required",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: Mesh_1, port: 80, protocol: HTTP}]",
        "spec.listeners[0].name",
        "DNS-1123",
    );
    assert_valid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP}, {name: b.c, port: 81, protocol: HTTP}]",
    );
}

#[test]
fn listener_ports_protocols_and_hostnames() {
    for port in ["0", "65536", "-1"] {
        assert_invalid::<Gateway>(
            &format!(
                "gatewayClassName: istio\nlisteners: [{{name: a, port: {port}, protocol: HTTP}}]"
            ),
            "spec.listeners[0].port",
            "not in 1..65535",
        );
    }
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80}]",
        "spec.listeners[0].protocol",
        "required",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP, hostname: 10.0.0.1}]",
        "spec.listeners[0].hostname",
        "IP address",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP, hostname: 'Bad_Host'}]",
        "spec.listeners[0].hostname",
        "not a hostname",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 5432, protocol: TCP, hostname: db.example.com}]",
        "spec.listeners[0].hostname",
        "not allowed for protocol TCP",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 443, protocol: HTTPS}]",
        "spec.listeners[0].tls",
        "required for protocol HTTPS",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP, tls: {mode: Terminate}}]",
        "spec.listeners[0].tls",
        "not allowed for protocol HTTP",
    );
    assert_invalid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP}, {name: b, port: 80, protocol: HTTP}]",
        "spec.listeners[1]",
        "same port, protocol and hostname",
    );
    assert_valid::<Gateway>(
        "gatewayClassName: istio\nlisteners: [{name: a, port: 80, protocol: HTTP, hostname: a.example.com}, \
         {name: b, port: 80, protocol: HTTP, hostname: b.example.com}, \
         {name: c, port: 443, protocol: TLS, tls: {mode: Passthrough}}]",
    );
}

#[test]
fn gateway_addresses() {
    assert_invalid::<Gateway>(
        &format!("gatewayClassName: istio\n{ONE_LISTENER}\naddresses: [{{value: not-an-ip}}]"),
        "spec.addresses[0].value",
        "not an IP address",
    );
    assert_invalid::<Gateway>(
        &format!("gatewayClassName: istio\n{ONE_LISTENER}\naddresses: [{{type: Hostname}}]"),
        "spec.addresses[0].value",
        "required",
    );
    assert_valid::<Gateway>(&format!(
        "gatewayClassName: istio\n{ONE_LISTENER}\naddresses: [{{type: Hostname, value: gw.example.com}}, {{type: IPAddress, value: '::1'}}]"
    ));
}
