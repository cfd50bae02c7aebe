//! AuthorizationPolicy -> Authorization: scopes, actions, rule shape, L7 fail-safe.

use api::security::{Action, Authorization, Match, Scope};

use super::*;

fn policy(namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: p, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

fn only_policy(t: &Translation) -> Option<&Authorization> {
    assert!(t.authorizations.len() <= 1, "{:?}", t.authorizations.keys());
    t.authorizations.values().next()
}

fn fields(t: &Translation) -> Vec<&str> {
    t.problems
        .iter()
        .map(|p| p.field.as_deref().unwrap_or(""))
        .collect()
}

#[test]
fn scope_follows_namespace_and_selector() {
    let table = [
        ("istio-system", "{}", Scope::Global),
        (
            "istio-system",
            "{selector: {matchLabels: {app: a}}}",
            Scope::WorkloadSelector,
        ),
        ("shop", "{}", Scope::Namespace),
        (
            "shop",
            "{selector: {matchLabels: {app: a}}}",
            Scope::WorkloadSelector,
        ),
    ];
    for (namespace, spec, want) in table {
        let t = translated(&policy(namespace, spec));
        let a = only_policy(&t).expect("translated");
        assert_eq!(a.scope, want as i32, "{namespace} {spec}");
        assert_eq!((a.name.as_str(), a.namespace.as_str()), ("p", namespace));
        assert!(t.problems.is_empty(), "{:?}", t.problems);
    }
}

#[test]
fn allow_deny_and_audit_reach_ztunnel() {
    let table = [
        ("{}", Some(Action::Allow), None),
        ("{action: ALLOW}", Some(Action::Allow), None),
        ("{action: DENY}", Some(Action::Deny), None),
        // Our extension of the workload API: ztunnel logs what it matches.
        ("{action: AUDIT}", Some(Action::Audit), None),
        (
            "{action: CUSTOM, provider: {name: ext}, rules: [{}]}",
            None,
            Some("CUSTOM"),
        ),
        // Bound to a waypoint: the waypoint enforces it, silently not ztunnel.
        (
            "{targetRefs: [{kind: Service, group: '', name: web}], rules: [{to: [{operation: {paths: [/a]}}]}]}",
            None,
            None,
        ),
        (
            "{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: wp}}",
            None,
            None,
        ),
    ];
    for (spec, want, problem) in table {
        let t = translated(&policy("shop", spec));
        assert_eq!(
            only_policy(&t).map(|a| a.action),
            want.map(|a| a as i32),
            "{spec}"
        );
        match problem {
            None => assert!(t.problems.is_empty(), "{spec}: {:?}", t.problems),
            Some(word) => {
                assert_eq!(fields(&t), ["spec.action"], "{spec}");
                assert!(t.problems[0].message.contains(word), "{:?}", t.problems);
                assert!(t.problems[0].message.contains("targetRefs"));
            }
        }
    }
}

#[test]
fn each_rule_is_a_group_of_to_from_and_when_clauses() {
    let spec = "{rules: [
        {},
        {from: [{source: {namespaces: [a]}}, {source: {principals: [x], notIpBlocks: [10.0.0.0/8]}}],
         to: [{operation: {ports: ['80'], notPorts: ['81']}}],
         when: [{key: destination.port, values: ['8080']}, {key: source.namespace, notValues: [b]}]}
    ]}";
    let t = translated(&policy("shop", spec));
    let a = only_policy(&t).expect("translated");
    assert_eq!(a.groups.len(), 2);
    // `rules: [{}]`: an empty rule matches everything.
    assert!(a.groups[0].rules.is_empty());
    let clauses: Vec<&[Match]> = a.groups[1].rules.iter().map(|r| &r.matches[..]).collect();
    assert_eq!(clauses.len(), 4, "to, from and one per condition");
    assert_eq!(clauses[0].len(), 1);
    assert_eq!(clauses[0][0].destination_ports, [80]);
    assert_eq!(clauses[0][0].not_destination_ports, [81]);
    assert_eq!(clauses[1].len(), 2, "from entries are ORed in one clause");
    assert_eq!(clauses[1][0].namespaces.len(), 1);
    assert_eq!(clauses[1][1].principals.len(), 1);
    assert_eq!(clauses[1][1].not_source_ips.len(), 1);
    assert_eq!(clauses[2][0].destination_ports, [8080]);
    assert_eq!(clauses[3][0].not_namespaces.len(), 1);
    assert!(clauses[3][0].namespaces.is_empty());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
}

#[test]
fn a_policy_without_rules_matches_nothing() {
    for action in ["ALLOW", "DENY"] {
        let t = translated(&policy("shop", &format!("{{action: {action}}}")));
        assert!(only_policy(&t).expect("translated").groups.is_empty());
    }
}

/// (action, rule, groups left, clauses in the kept group, problem fields)
type L7Case = (
    &'static str,
    &'static str,
    usize,
    Option<usize>,
    &'static [&'static str],
);

#[test]
fn l7_attributes_fail_safe() {
    let table: &[L7Case] = &[
        // ALLOW: a rule that needs HTTP can never allow.
        (
            "ALLOW",
            "{to: [{operation: {methods: [GET], ports: ['80']}}]}",
            0,
            None,
            &["spec.rules[0].to[0].operation.methods"],
        ),
        (
            "ALLOW",
            "{from: [{source: {requestPrincipals: ['*'], notRemoteIpBlocks: [1.2.3.4]}}]}",
            0,
            None,
            &[
                "spec.rules[0].from[0].source.requestPrincipals",
                "spec.rules[0].from[0].source.notRemoteIpBlocks",
            ],
        ),
        (
            "ALLOW",
            "{when: [{key: 'request.headers[x-id]', values: [a]}, {key: source.ip, values: [10.0.0.1]}]}",
            0,
            None,
            &["spec.rules[0].when[0]"],
        ),
        // DENY: the L7 part is ignored, so the rule denies more.
        (
            "DENY",
            "{to: [{operation: {paths: [/admin], hosts: [a.com], ports: ['80']}}]}",
            1,
            Some(1),
            &[
                "spec.rules[0].to[0].operation.hosts",
                "spec.rules[0].to[0].operation.paths",
            ],
        ),
        // An entry with only L7 constrains nothing: its whole ORed clause goes.
        (
            "DENY",
            "{to: [{operation: {ports: ['80']}}, {operation: {notMethods: [GET]}}], from: [{source: {namespaces: [x]}}]}",
            1,
            Some(1),
            &["spec.rules[0].to[1].operation.notMethods"],
        ),
        (
            "DENY",
            "{from: [{source: {notRequestPrincipals: ['*']}}]}",
            1,
            Some(0),
            &["spec.rules[0].from[0].source.notRequestPrincipals"],
        ),
        (
            "DENY",
            "{when: [{key: connection.sni, values: [a]}, {key: experimental.envoy.filters.x, values: [b]}]}",
            1,
            Some(0),
            &["spec.rules[0].when[0]", "spec.rules[0].when[1]"],
        ),
    ];
    for (action, rule, groups, clauses, problems) in table {
        let spec = format!(
            "{{action: {action}, rules: [{rule}, {{from: [{{source: {{namespaces: [ok]}}}}]}}]}}"
        );
        let t = translated(&policy("shop", &spec));
        let a = only_policy(&t).expect("still translated");
        // The second, plain L4 rule is always kept.
        assert_eq!(a.groups.len(), groups + 1, "{action} {rule}");
        if let Some(n) = clauses {
            assert_eq!(a.groups[0].rules.len(), *n, "{action} {rule}");
            for clause in &a.groups[0].rules {
                assert!(
                    !clause.matches.contains(&Match::default()),
                    "ztunnel skips empty matches: {action} {rule}"
                );
            }
        }
        assert_eq!(fields(&t), *problems, "{action} {rule}");
        for p in &t.problems {
            assert_eq!(p.object.as_deref(), Some("AuthorizationPolicy shop/p"));
            assert_eq!(p.document, Some(1));
            assert!(p.message.contains("L7"), "{}", p.message);
            assert!(p.message.contains("targetRefs"), "{}", p.message);
            assert!(p.message.contains(action), "{}", p.message);
        }
    }
}

const SELECTION: &str = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web, tier: front}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: other, labels: {app: web}}
status: {podIP: 10.0.0.2}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: front-db, namespace: shop}
spec: {selector: {matchLabels: {app: web, tier: db}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: all-web, namespace: istio-system}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: shop}
spec: {action: CUSTOM, provider: {name: ext}, selector: {matchLabels: {app: web}}, rules: [{}]}
";

#[test]
fn workloads_list_the_selector_policies_that_select_them() {
    let t = translated(SELECTION);
    let policies = |ns, name| {
        workload(&t, ns, name)
            .expect("workload")
            .authorization_policies
            .clone()
    };
    // Own namespace or root namespace, all labels matching; namespace-wide and
    // global policies are found by ztunnel from their scope, never listed; a
    // policy ztunnel is not sent is not referenced.
    assert_eq!(policies("shop", "a"), ["istio-system/all-web", "shop/web"]);
    assert_eq!(policies("other", "b"), ["istio-system/all-web"]);
}

#[test]
fn the_dry_run_annotation_marks_a_policy_dry_run() {
    let with = |annotation: &str| {
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p, namespace: shop{annotation}}}
spec: {{action: DENY, rules: [{{}}]}}
"
        )
    };
    for (annotation, dry_run, problem) in [
        ("", false, false),
        (", annotations: {istio.io/dry-run: 'true'}", true, false),
        (", annotations: {istio.io/dry-run: 'false'}", false, false),
        (", annotations: {istio.io/dry-run: 'yes'}", false, true),
    ] {
        let t = translated(&with(annotation));
        let a = only_policy(&t).expect("translated");
        assert_eq!(a.dry_run, dry_run, "{annotation}");
        assert_eq!(
            fields(&t) == ["metadata.annotations.istio.io/dry-run"],
            problem,
            "{annotation}: {:?}",
            t.problems
        );
    }
}
