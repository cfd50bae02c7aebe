//! Every `from`, `to` and `when` field and its negation: for each, a request that
//! matches and one that does not.

use super::*;

fn src(field: &str) -> String {
    format!("  rules:\n  - from:\n    - source:\n        {field}\n")
}

fn op(field: &str) -> String {
    format!("  rules:\n  - to:\n    - operation:\n        {field}\n")
}

fn when(key: &str, values: &str) -> String {
    format!("  rules:\n  - when:\n    - key: \"{key}\"\n      {values}\n")
}

type Edit = fn(&mut Req);

fn nothing(_: &mut Req) {}
fn plaintext(r: &mut Req) {
    r.source.identity = None;
}
fn other_client(r: &mut Req) {
    r.source.identity = Some(Identity::new("cluster.local", "other-ns", "other").unwrap());
}
fn with_jwt(r: &mut Req) {
    r.auth = Some(alice());
}
fn from_192(r: &mut Req) {
    r.source.ip = Some("192.168.1.1".parse().unwrap());
}
fn post(r: &mut Req) {
    r.method = "POST";
}
fn other_host(r: &mut Req) {
    r.headers = vec![("host", "ratings.ns1.svc.cluster.local:9080")];
}
fn other_path(r: &mut Req) {
    r.uri = "/health";
}
fn other_port(r: &mut Req) {
    r.dest.target = "10.96.0.10:8080".parse().unwrap();
}
fn header_beta(r: &mut Req) {
    r.headers.push(("x-version", "beta-2"));
}
fn header_stable(r: &mut Req) {
    r.headers.push(("x-version", "stable"));
}
fn bob_jwt(r: &mut Req) {
    let mut bob = alice();
    bob.principal = "https://issuer.example/bob".into();
    bob.audiences = vec!["other".into()];
    bob.presenter = None;
    bob.claims = json!({"groups": ["users"], "team": "red", "org": {"unit": "ops"}});
    r.auth = Some(bob);
}

/// `(what, rules, edit for a matching request, edit for a request that must not match)`.
fn cases() -> Vec<(&'static str, String, Edit, Edit)> {
    vec![
        (
            "principals exact",
            src("principals: [cluster.local/ns/client-ns/sa/client]"),
            nothing,
            other_client,
        ),
        (
            "principals prefix",
            src("principals: [\"cluster.local/ns/client-ns/*\"]"),
            nothing,
            plaintext,
        ),
        (
            "principals suffix",
            src("principals: [\"*/sa/client\"]"),
            nothing,
            other_client,
        ),
        (
            "principals presence",
            src("principals: [\"*\"]"),
            nothing,
            plaintext,
        ),
        (
            "notPrincipals",
            src("notPrincipals: [cluster.local/ns/other-ns/sa/other]"),
            nothing,
            other_client,
        ),
        (
            "requestPrincipals",
            src("requestPrincipals: [https://issuer.example/alice]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "requestPrincipals any token",
            src("requestPrincipals: [\"*\"]"),
            with_jwt,
            nothing,
        ),
        (
            "notRequestPrincipals",
            src("notRequestPrincipals: [\"*/bob\"]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "namespaces",
            src("namespaces: [client-ns]"),
            nothing,
            other_client,
        ),
        (
            "notNamespaces",
            src("notNamespaces: [other-ns]"),
            plaintext,
            other_client,
        ),
        (
            "serviceAccounts",
            src("serviceAccounts: [client-ns/client]"),
            nothing,
            other_client,
        ),
        (
            "notServiceAccounts",
            src("notServiceAccounts: [other-ns/other]"),
            nothing,
            other_client,
        ),
        (
            "ipBlocks",
            src("ipBlocks: [10.0.0.0/24]"),
            nothing,
            from_192,
        ),
        (
            "notIpBlocks",
            src("notIpBlocks: [192.168.0.0/16]"),
            nothing,
            from_192,
        ),
        (
            "remoteIpBlocks",
            src("remoteIpBlocks: [10.0.0.5]"),
            nothing,
            from_192,
        ),
        (
            "notRemoteIpBlocks",
            src("notRemoteIpBlocks: [192.168.1.1/32]"),
            nothing,
            from_192,
        ),
        (
            "hosts with port ignored",
            op("hosts: [reviews.ns1.svc.cluster.local]"),
            nothing,
            other_host,
        ),
        (
            "hosts with port",
            op("hosts: [\"REVIEWS.ns1.svc.cluster.local:9080\"]"),
            nothing,
            other_host,
        ),
        (
            "hosts wildcard",
            op("hosts: [\"reviews.*\"]"),
            nothing,
            other_host,
        ),
        (
            "notHosts",
            op("notHosts: [\"ratings.*\"]"),
            nothing,
            other_host,
        ),
        ("ports", op("ports: [\"9080\"]"), nothing, other_port),
        ("notPorts", op("notPorts: [\"8080\"]"), nothing, other_port),
        ("methods", op("methods: [GET, HEAD]"), nothing, post),
        ("notMethods", op("notMethods: [POST]"), nothing, post),
        (
            "paths exact (query ignored)",
            op("paths: [/api/v1/items]"),
            nothing,
            other_path,
        ),
        (
            "paths prefix",
            op("paths: [\"/api/*\"]"),
            nothing,
            other_path,
        ),
        (
            "paths suffix",
            op("paths: [\"*/items\"]"),
            nothing,
            other_path,
        ),
        (
            "paths template",
            op("paths: [\"/api/{*}/items\"]"),
            nothing,
            other_path,
        ),
        (
            "paths template many",
            op("paths: [\"/api/{**}\"]"),
            nothing,
            other_path,
        ),
        ("notPaths", op("notPaths: [/health]"), nothing, other_path),
        (
            "request.headers",
            when("request.headers[x-version]", "values: [\"beta*\"]"),
            header_beta,
            header_stable,
        ),
        (
            "request.headers notValues",
            when("request.headers[x-version]", "notValues: [stable]"),
            header_beta,
            header_stable,
        ),
        (
            "source.ip",
            when("source.ip", "values: [10.0.0.0/8]"),
            nothing,
            from_192,
        ),
        (
            "remote.ip",
            when("remote.ip", "notValues: [192.168.0.0/16]"),
            nothing,
            from_192,
        ),
        (
            "source.namespace",
            when("source.namespace", "values: [client-ns]"),
            nothing,
            other_client,
        ),
        (
            "source.principal",
            when("source.principal", "values: [\"*/sa/client\"]"),
            nothing,
            other_client,
        ),
        (
            "destination.ip",
            when("destination.ip", "values: [10.96.0.0/16]"),
            nothing,
            |r| r.dest.target = "10.97.0.1:9080".parse().unwrap(),
        ),
        (
            "destination.port",
            when("destination.port", "values: [\"9080\"]"),
            nothing,
            other_port,
        ),
        (
            "request.auth.principal",
            when(
                "request.auth.principal",
                "values: [https://issuer.example/alice]",
            ),
            with_jwt,
            bob_jwt,
        ),
        (
            "request.auth.audiences",
            when("request.auth.audiences", "values: [ratings]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "request.auth.presenter",
            when("request.auth.presenter", "values: [web-app]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "claims string",
            when("request.auth.claims[team]", "values: [blue]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "claims array element",
            when("request.auth.claims[groups]", "values: [admins]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "claims notValues",
            when("request.auth.claims[groups]", "notValues: [users]"),
            with_jwt,
            bob_jwt,
        ),
        (
            "nested claim",
            when("request.auth.claims[org][unit]", "values: [eng]"),
            with_jwt,
            bob_jwt,
        ),
    ]
}

#[test]
fn every_field_and_its_negation() {
    for (what, rules, matching, missing) in cases() {
        let policies = Policies::new(vec![compiled(&policy("p", &rules))]);
        let mut req = Req::default();
        matching(&mut req);
        assert!(req.evaluate(&policies).is_allowed(), "{what}: should match");
        let mut req = Req::default();
        missing(&mut req);
        assert!(
            !req.evaluate(&policies).is_allowed(),
            "{what}: should not match"
        );
    }
}

#[test]
fn attributes_without_a_string_value() {
    // No SNI reaches the waypoint: `values` never match, `notValues` always hold.
    let sni = |values: &str| {
        let rules = when("connection.sni", values);
        Req::default().evaluate(&Policies::new(vec![compiled(&policy("p", &rules))]))
    };
    assert!(!sni("values: [\"*\"]").is_allowed());
    assert!(sni("notValues: [\"*\"]").is_allowed());
    // Only string and string-array claims are compared: a number claim never matches.
    let rules = when("request.auth.claims[org][level]", "values: [\"3\"]");
    let policies = Policies::new(vec![compiled(&policy("p", &rules))]);
    let mut req = Req::default();
    with_jwt(&mut req);
    assert!(!req.evaluate(&policies).is_allowed());
}

#[test]
fn rule_parts_are_anded_and_entries_ored() {
    let rules = "  rules:
  - from:
    - source:
        namespaces: [nobody]
    - source:
        principals: [\"*/sa/client\"]
    to:
    - operation:
        methods: [GET]
        paths: [/admin]
    - operation:
        methods: [GET]
        paths: [\"/api/*\"]
    when:
    - key: request.headers[x-version]
      values: [beta-2]
";
    let policies = Policies::new(vec![compiled(&policy("p", rules))]);
    let mut req = Req::default();
    header_beta(&mut req);
    assert!(req.evaluate(&policies).is_allowed(), "all parts match");
    assert!(
        !Req::default().evaluate(&policies).is_allowed(),
        "when fails"
    );
    let mut req = Req::default();
    header_beta(&mut req);
    post(&mut req);
    assert!(!req.evaluate(&policies).is_allowed(), "to fails");
    let mut req = Req::default();
    header_beta(&mut req);
    other_client(&mut req);
    assert!(!req.evaluate(&policies).is_allowed(), "from fails");
}

#[test]
fn trust_domain_aliases_expand_principals() {
    let yaml = policy("p", &src("principals: [old.domain/ns/client-ns/sa/client]"));
    let p: api::config::AuthorizationPolicy = serde_yaml_ng::from_str(&yaml).unwrap();
    let cx = CompileContext {
        trust_domain: "cluster.local".into(),
        trust_domain_aliases: vec!["old.domain".into()],
    };
    let with_alias = Policies::new(vec![Arc::new(compile(&p, &cx).unwrap())]);
    assert!(Req::default().evaluate(&with_alias).is_allowed());
    let without = Policies::new(vec![compiled(&yaml)]);
    assert!(!Req::default().evaluate(&without).is_allowed());
}
