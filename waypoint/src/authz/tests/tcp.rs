//! Opaque TCP through the waypoint: HTTP-only fields never let an ALLOW rule match and
//! are ignored by DENY rules, as Istio evaluates TCP traffic.

use super::*;

fn tcp(policies: &[&str]) -> bool {
    let policies = Policies::new(policies.iter().map(|p| compiled(p)).collect());
    let req = Req::default();
    policies
        .evaluate_tcp(&binding(), &req.source, &req.dest)
        .is_allowed()
}

#[test]
fn http_only_fields_on_tcp() {
    let allow_client = policy(
        "allow-client",
        "  rules:\n  - from: [{source: {principals: [cluster.local/ns/client-ns/sa/client]}}]\n",
    );
    let allow_get = policy(
        "allow-get",
        "  rules:\n  - from: [{source: {principals: [cluster.local/ns/client-ns/sa/client]}}]\n    to: [{operation: {methods: [GET]}}]\n",
    );
    let allow_header = policy(
        "allow-header",
        "  rules:\n  - when: [{key: 'request.headers[x-team]', values: [blue]}]\n",
    );
    let deny_admin = policy(
        "deny-admin",
        "  action: DENY\n  rules:\n  - to: [{operation: {paths: [/admin]}}]\n",
    );
    let deny_other_admin = policy(
        "deny-other-admin",
        "  action: DENY\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/x/sa/other]}}]\n    to: [{operation: {paths: [/admin]}}]\n",
    );
    let deny_port = policy(
        "deny-port",
        "  action: DENY\n  rules:\n  - to: [{operation: {ports: ['9080'], methods: [POST]}}]\n",
    );
    let cases: [(&str, Vec<&str>, bool); 7] = [
        ("no policy", vec![], true),
        ("ALLOW by principal only", vec![&allow_client], true),
        (
            "ALLOW needing a method never matches TCP",
            vec![&allow_get],
            false,
        ),
        (
            "ALLOW on a header never matches TCP",
            vec![&allow_header],
            false,
        ),
        (
            "DENY on a path alone denies TCP",
            vec![&allow_client, &deny_admin],
            false,
        ),
        (
            "DENY for another principal does not",
            vec![&allow_client, &deny_other_admin],
            true,
        ),
        (
            "DENY on port and method: the port decides",
            vec![&allow_client, &deny_port],
            false,
        ),
    ];
    for (what, policies, allowed) in cases {
        assert_eq!(tcp(&policies), allowed, "{what}");
    }
}
