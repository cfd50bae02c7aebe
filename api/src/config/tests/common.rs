//! Behaviour shared by every resource: the document shape, metadata,
//! api versions, `FieldError`, and the syntax checks.

use super::*;
use crate::config::validate::{
    gateway_name, ip_or_cidr, label_key, label_value, port_string, wildcard_host,
};
use crate::config::{
    AuthorizationPolicy, DestinationRule, Gateway, PeerAuthentication, RequestAuthentication,
    VirtualService,
};

#[test]
fn field_error_displays_path_and_message() {
    let e = FieldError {
        field: "spec.rules[0].from[0].source.principals[1]".into(),
        message: "must not be empty".into(),
    };
    assert_eq!(
        e.to_string(),
        "spec.rules[0].from[0].source.principals[1]: must not be empty"
    );
}

#[test]
fn groups_kinds_and_versions() {
    assert_eq!(PeerAuthentication::GROUP, "security.istio.io");
    assert_eq!(AuthorizationPolicy::KIND, "AuthorizationPolicy");
    assert_eq!(RequestAuthentication::VERSIONS, &["v1", "v1beta1"]);
    assert_eq!(VirtualService::VERSIONS, &["v1", "v1beta1", "v1alpha3"]);
    assert_eq!(DestinationRule::GROUP, "networking.istio.io");
    assert_eq!(Gateway::GROUP, "gateway.networking.k8s.io");
    assert_eq!(<Gateway as Resource>::KIND, "Gateway");

    assert!(PeerAuthentication::accepts_api_version(
        "security.istio.io/v1"
    ));
    assert!(PeerAuthentication::accepts_api_version(
        "security.istio.io/v1beta1"
    ));
    assert!(!PeerAuthentication::accepts_api_version(
        "security.istio.io/v1alpha1"
    ));
    assert!(!PeerAuthentication::accepts_api_version(
        "networking.istio.io/v1"
    ));
    assert!(!PeerAuthentication::accepts_api_version("v1"));
    assert!(VirtualService::accepts_api_version(
        "networking.istio.io/v1alpha3"
    ));
    assert!(!Gateway::accepts_api_version(
        "gateway.networking.k8s.io/v1alpha2"
    ));
}

#[test]
fn api_version_kind_and_status_are_accepted_other_top_level_keys_are_not() {
    let pa: PeerAuthentication = parse(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: default, namespace: istio-system}\n\
         spec: {mtls: {mode: STRICT}}\nstatus: {conditions: []}\n",
    );
    assert_eq!(pa.metadata.name.as_deref(), Some("default"));
    let err = serde_yaml_ng::from_str::<PeerAuthentication>(
        "metadata: {name: default}\nsepc: {mtls: {mode: STRICT}}\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `sepc`"), "{err}");
}

#[test]
fn missing_spec_is_the_default_spec() {
    let pa: PeerAuthentication = parse("metadata: {name: default, namespace: foo}\n");
    assert_eq!(pa.spec, Default::default());
    assert!(pa.validate().is_empty());
}

#[test]
fn metadata_name_is_required_and_well_formed() {
    let pa: PeerAuthentication = parse("metadata: {namespace: foo}\nspec: {}\n");
    assert_has_error(&pa.validate(), "metadata.name", "required");
    let pa: PeerAuthentication = parse("metadata: {name: Bad_Name}\nspec: {}\n");
    assert_has_error(&pa.validate(), "metadata.name", "DNS-1123 subdomain");
    let pa: PeerAuthentication = parse("metadata: {name: ok, namespace: Not.A.Label}\n");
    assert_has_error(&pa.validate(), "metadata.namespace", "DNS-1123 label");
    let pa: PeerAuthentication = parse("metadata: {name: ok.name-1, namespace: foo}\n");
    assert!(pa.validate().is_empty());
}

#[test]
fn label_syntax() {
    for ok in ["app", "app.kubernetes.io/name", "a_b.c-d", "x/Y9", "A"] {
        assert_eq!(label_key(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "*",
        "-app",
        "app-",
        "/app",
        "app/",
        "Bad_Prefix/app",
        "a/b/c",
        &"k".repeat(64),
    ] {
        assert!(label_key(bad).is_err(), "{bad:?}");
    }
    for ok in ["", "v1", "a.b_c-D", &"v".repeat(63)] {
        assert_eq!(label_value(ok), Ok(()), "{ok}");
    }
    for bad in ["*", "a b", "-v", "v-", &"v".repeat(64)] {
        assert!(label_value(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn host_ip_port_and_gateway_syntax() {
    for ok in [
        "reviews",
        "reviews.prod.svc.cluster.local",
        "*",
        "*.example.com",
        "*foo.example.com",
        "Example.COM",
    ] {
        assert_eq!(wildcard_host(ok), Ok(()), "{ok}");
    }
    for bad in ["", "foo_bar", "a.*.com", "example.com.", "-a.com", "a b"] {
        assert!(wildcard_host(bad).is_err(), "{bad:?}");
    }
    for ok in [
        "10.0.0.1",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "2001:db8::1",
        "2001:db8::/32",
        "10.1.2.3/32",
    ] {
        assert_eq!(ip_or_cidr(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "10.0.0.0/33",
        "2001:db8::/129",
        "10.0.0/8",
        "10.0.0.0/",
        "host",
        "10.0.0.0/+8",
    ] {
        assert!(ip_or_cidr(bad).is_err(), "{bad:?}");
    }
    for ok in ["1", "80", "65535"] {
        assert_eq!(port_string(ok), Ok(()), "{ok}");
    }
    for bad in ["", "0", "65536", "-1", "+80", "http", "8080 ", "000080"] {
        assert!(port_string(bad).is_err(), "{bad:?}");
    }
    for ok in [
        "mesh",
        "my-gateway",
        "istio-system/public",
        "gw.istio-system.svc.cluster.local",
    ] {
        assert_eq!(gateway_name(ok), Ok(()), "{ok}");
    }
    for bad in ["", "a/b/c", "/gw", "ns/", "Mesh_Gateway"] {
        assert!(gateway_name(bad).is_err(), "{bad:?}");
    }
}
