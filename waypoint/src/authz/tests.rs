//! AuthorizationPolicy tests, written from YAML.

mod fields;
mod order;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::Identity;
use serde_json::json;

use super::*;
use crate::context::{Destination, ServiceName, Source};
use crate::jwt::AuthInfo;

/// The waypoint under test: Gateway `ns1/waypoint`.
fn binding() -> Binding {
    Binding::new("ns1", "waypoint")
}

/// Compiles one AuthorizationPolicy document.
fn compiled(yaml: &str) -> Arc<CompiledPolicy> {
    let p: api::config::AuthorizationPolicy = serde_yaml_ng::from_str(yaml).expect("YAML");
    Arc::new(compile(&p, &CompileContext::default()).expect("compiles"))
}

/// A policy named `name` attached to the waypoint's Gateway; `body` holds the spec
/// fields after `targetRefs` (indented two spaces).
fn policy(name: &str, body: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: ns1
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: waypoint
{body}"
    )
}

/// A request and its context; tests change what they need.
struct Req {
    method: &'static str,
    uri: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    source: Source,
    dest: Destination,
    auth: Option<AuthInfo>,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            method: "GET",
            uri: "/api/v1/items?page=2",
            headers: vec![("host", "Reviews.ns1.svc.cluster.local:9080")],
            source: Source {
                identity: Some(Identity::new("cluster.local", "client-ns", "client").unwrap()),
                ip: Some("10.0.0.5".parse().unwrap()),
                workload: None,
            },
            dest: Destination {
                service: Some(ServiceName {
                    hostname: "reviews.ns1.svc.cluster.local".into(),
                    name: "reviews".into(),
                    namespace: "ns1".into(),
                }),
                target: "10.96.0.10:9080".parse::<SocketAddr>().unwrap(),
            },
            auth: None,
        }
    }
}

impl Req {
    fn evaluate(&self, policies: &Policies) -> Verdict {
        let mut builder = http::Request::builder().method(self.method).uri(self.uri);
        for (k, v) in &self.headers {
            builder = builder.header(*k, *v);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let req = Request {
            parts: &parts,
            source: &self.source,
            destination: &self.dest,
            auth: self.auth.as_ref(),
        };
        policies.evaluate(&binding(), &req)
    }
}

/// A verified token from `https://issuer.example` for `alice`.
fn alice() -> AuthInfo {
    AuthInfo {
        issuer: "https://issuer.example".into(),
        subject: "alice".into(),
        principal: "https://issuer.example/alice".into(),
        audiences: vec!["reviews".into(), "ratings".into()],
        presenter: Some("web-app".into()),
        claims: json!({
            "iss": "https://issuer.example",
            "sub": "alice",
            "groups": ["admins", "dev"],
            "team": "blue",
            "org": {"unit": "eng", "level": 3},
        }),
    }
}

#[test]
fn path_templates() {
    let cases = [
        ("/a/{*}/c", "/a/b/c", true),
        ("/a/{*}/c", "/a//c", false),
        ("/a/{*}/c", "/a/b/x/c", false),
        ("/a/{**}", "/a/b", true),
        ("/a/{**}", "/a/b/c/d", true),
        ("/a/{**}", "/a", false),
        ("/a/{**}/z", "/a/b/c/z", true),
        ("/a/{**}/z", "/a/z", false),
        ("/{*}/x/{**}", "/v1/x/y", true),
        ("/{*}/x/{**}", "/v1/y/y", false),
        ("/exact", "/exact", true),
        ("/exact", "/exact/", false),
        ("/pre*", "/prefix/more", true),
        ("*.css", "/static/site.css", true),
        ("*", "/anything", true),
    ];
    for (pattern, path, want) in cases {
        let m = PathMatch::parse(pattern).unwrap();
        assert_eq!(m.matches(path), want, "{pattern} vs {path}");
    }
    for bad in ["/a/{**}/{*}", "/a/{**}/{**}", "/a/b{*}", "a/{*}"] {
        assert!(PathMatch::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn cidrs_and_hosts() {
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(
        Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap())
    );
    let h = HostMatch::parse("Reviews.NS1.svc.cluster.local");
    assert!(h.matches("reviews.ns1.svc.cluster.local:9080"));
    assert!(h.matches("reviews.ns1.svc.cluster.local"));
    assert!(!HostMatch::parse("reviews:8080").matches("reviews:9080"));
    assert!(HostMatch::parse("*.ns1.svc.cluster.local").matches("a.ns1.svc.cluster.local:80"));
    assert!(HostMatch::parse("[::1]").matches("[::1]:80"));
}

#[test]
fn compile_problems_name_the_field() {
    let bad = |body: &str| {
        let p: api::config::AuthorizationPolicy =
            serde_yaml_ng::from_str(&policy("bad", body)).unwrap();
        compile(&p, &CompileContext::default()).unwrap_err()
    };
    let problems = bad("  rules:\n  - to:\n    - operation:\n        paths: [\"/a/{**}/{*}\"]\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].object, "AuthorizationPolicy ns1/bad");
    assert_eq!(problems[0].field, "spec.rules[0].to[0].operation");
    let problems = bad("  rules:\n  - when:\n    - key: request.unknown\n      values: [x]\n");
    assert_eq!(
        problems[0].field, "spec.rules[0].when[0].key",
        "{problems:?}"
    );
    let problems = bad("  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/99\"]\n");
    assert!(
        problems[0]
            .field
            .starts_with("spec.rules[0].from[0].source"),
        "{problems:?}"
    );
}

#[test]
fn unsupported_condition_fails_safe() {
    let key = "experimental.envoy.filters.network.mysql_proxy[db.table]";
    let body = |action: &str| {
        format!("  action: {action}\n  rules:\n  - when:\n    - key: {key}\n      values: [x]\n")
    };
    let deny = compiled(&policy("deny", &body("DENY")));
    assert_eq!(deny.warnings().len(), 1);
    let verdict = Req::default().evaluate(&Policies::new(vec![deny]));
    assert!(
        !verdict.is_allowed(),
        "DENY with an unsupported key must deny"
    );
    let allow = compiled(&policy("allow", &body("ALLOW")));
    assert_eq!(allow.warnings().len(), 1);
    let verdict = Req::default().evaluate(&Policies::new(vec![allow]));
    assert!(
        !verdict.is_allowed(),
        "ALLOW with an unsupported key must not allow"
    );
}
