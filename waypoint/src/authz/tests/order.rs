//! Decision order (CUSTOM, DENY, ALLOW), AUDIT, dry-run, and which policies apply.

use super::*;

const GET_ONLY: &str = "  rules:\n  - to:\n    - operation:\n        methods: [GET]\n";
const POST_ONLY: &str = "  rules:\n  - to:\n    - operation:\n        methods: [POST]\n";
const ANY: &str = "  rules:\n  - {}\n";

fn with_action(action: &str, rules: &str) -> String {
    format!("  action: {action}\n{rules}")
}

fn dry(name: &str, body: &str) -> String {
    policy(name, body).replace(
        "  namespace: ns1\n",
        "  namespace: ns1\n  annotations:\n    istio.io/dry-run: \"true\"\n",
    )
}

#[test]
fn decision_order() {
    struct Case {
        name: &'static str,
        policies: Vec<String>,
        want: Result<(), (&'static str, DenyReason)>,
    }
    use DenyReason::*;
    let cases = vec![
        Case {
            name: "no policy allows",
            policies: vec![],
            want: Ok(()),
        },
        Case {
            name: "ALLOW without rules denies",
            policies: vec![policy("allow-nothing", "  action: ALLOW\n")],
            want: Err(("ns1/allow-nothing", NoAllowPolicyMatched)),
        },
        Case {
            name: "ALLOW with an empty rule allows",
            policies: vec![policy("allow-all", ANY)],
            want: Ok(()),
        },
        Case {
            name: "matching ALLOW allows",
            policies: vec![policy("get", GET_ONLY)],
            want: Ok(()),
        },
        Case {
            name: "no ALLOW matches: denied naming every ALLOW",
            policies: vec![policy("post", POST_ONLY), policy("also-post", POST_ONLY)],
            want: Err(("ns1/also-post, ns1/post", NoAllowPolicyMatched)),
        },
        Case {
            name: "one of several ALLOW matches",
            policies: vec![policy("post", POST_ONLY), policy("get", GET_ONLY)],
            want: Ok(()),
        },
        Case {
            name: "DENY beats a matching ALLOW",
            policies: vec![
                policy("get", GET_ONLY),
                policy("deny-get", &with_action("DENY", GET_ONLY)),
            ],
            want: Err(("ns1/deny-get", DenyPolicyMatched)),
        },
        Case {
            name: "DENY not matching leaves the decision to ALLOW",
            policies: vec![policy("deny-post", &with_action("DENY", POST_ONLY))],
            want: Ok(()),
        },
        Case {
            name: "DENY without rules matches nothing",
            policies: vec![policy("deny-nothing", "  action: DENY\n")],
            want: Ok(()),
        },
        Case {
            name: "matching CUSTOM denies (unsupported)",
            policies: vec![
                policy("get", GET_ONLY),
                policy(
                    "ext",
                    &format!("  action: CUSTOM\n  provider:\n    name: opa\n{GET_ONLY}"),
                ),
            ],
            want: Err(("ns1/ext", CustomUnsupported)),
        },
        Case {
            name: "CUSTOM not matching has no effect",
            policies: vec![policy(
                "ext",
                &format!("  action: CUSTOM\n  provider:\n    name: opa\n{POST_ONLY}"),
            )],
            want: Ok(()),
        },
        Case {
            name: "AUDIT never denies",
            policies: vec![policy("audit-post", &with_action("AUDIT", POST_ONLY))],
            want: Ok(()),
        },
        Case {
            name: "dry-run DENY is not enforced",
            policies: vec![dry("dry-deny", &with_action("DENY", ANY))],
            want: Ok(()),
        },
        Case {
            name: "dry-run ALLOW does not make ALLOW policies apply",
            policies: vec![dry("dry-post", POST_ONLY)],
            want: Ok(()),
        },
    ];
    for case in cases {
        let policies = Policies::new(case.policies.iter().map(|p| compiled(p)).collect());
        let got = match Req::default().evaluate(&policies) {
            Verdict::Allowed { .. } => Ok(()),
            Verdict::Denied { policy, reason, .. } => Err((policy, reason)),
        };
        let want = case.want.map_err(|(p, r)| (p.to_owned(), r));
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn audit_reports_matches_only() {
    let policies = Policies::new(vec![
        compiled(&policy("audit-get", &with_action("AUDIT", GET_ONLY))),
        compiled(&policy("audit-post", &with_action("AUDIT", POST_ONLY))),
        compiled(&policy("audit-all", &with_action("AUDIT", ANY))),
        compiled(&policy("deny-get", &with_action("DENY", GET_ONLY))),
    ]);
    let verdict = Req::default().evaluate(&policies);
    assert!(!verdict.is_allowed());
    assert_eq!(verdict.audit(), ["ns1/audit-all", "ns1/audit-get"]);
}

#[test]
fn dry_run_reports_would_be_decision() {
    let would_deny = Policies::new(vec![
        compiled(&dry("dry-deny", &with_action("DENY", GET_ONLY))),
        compiled(&policy("get", GET_ONLY)),
    ]);
    let verdict = Req::default().evaluate(&would_deny);
    assert!(verdict.is_allowed());
    assert_eq!(
        verdict.dry_run(),
        &DryRun::WouldDeny {
            policy: "ns1/dry-deny".into(),
            reason: DenyReason::DenyPolicyMatched
        }
    );
    let would_allow = Policies::new(vec![compiled(&dry("dry-get", GET_ONLY))]);
    assert_eq!(
        Req::default().evaluate(&would_allow).dry_run(),
        &DryRun::WouldAllow
    );
    let no_dry = Policies::new(vec![compiled(&policy("get", GET_ONLY))]);
    assert_eq!(
        Req::default().evaluate(&no_dry).dry_run(),
        &DryRun::NotApplicable
    );
    let dry_allow_denies = Policies::new(vec![compiled(&dry("dry-post", POST_ONLY))]);
    assert_eq!(
        Req::default().evaluate(&dry_allow_denies).dry_run(),
        &DryRun::WouldDeny {
            policy: "ns1/dry-post".into(),
            reason: DenyReason::NoAllowPolicyMatched
        }
    );
}

#[test]
fn binding_decides_which_policies_apply() {
    let deny_all = |namespace: &str, targets: &str| {
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: {namespace}
spec:
{targets}  action: DENY
  rules:
  - {{}}
"
        )
    };
    let gateway = |name: &str| {
        format!(
            "  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: {name}\n"
        )
    };
    let service = |name: &str| {
        format!("  targetRefs:\n  - kind: Service\n    group: \"\"\n    name: {name}\n")
    };
    let class = "  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: GatewayClass\n    name: istio-waypoint\n";
    let cases = [
        (
            "Gateway naming the waypoint",
            deny_all("ns1", &gateway("waypoint")),
            true,
        ),
        (
            "legacy targetRef",
            deny_all(
                "ns1",
                "  targetRef:\n    group: gateway.networking.k8s.io\n    kind: Gateway\n    name: waypoint\n",
            ),
            true,
        ),
        ("another Gateway", deny_all("ns1", &gateway("other")), false),
        (
            "same Gateway name, other namespace",
            deny_all("ns2", &gateway("waypoint")),
            false,
        ),
        (
            "the destination Service",
            deny_all("ns1", &service("reviews")),
            true,
        ),
        (
            "another Service",
            deny_all("ns1", &service("ratings")),
            false,
        ),
        (
            "same Service name, other namespace",
            deny_all("ns2", &service("reviews")),
            false,
        ),
        (
            "GatewayClass from the root namespace",
            deny_all("istio-system", class),
            true,
        ),
        (
            "GatewayClass outside the root namespace",
            deny_all("ns1", class),
            false,
        ),
        (
            "ServiceEntry",
            deny_all(
                "ns1",
                "  targetRefs:\n  - group: networking.istio.io\n    kind: ServiceEntry\n    name: reviews\n",
            ),
            false,
        ),
        (
            "selector (ztunnel / sidecar policy)",
            deny_all("ns1", "  selector:\n    matchLabels:\n      app: reviews\n"),
            false,
        ),
        ("namespace-wide (no targets)", deny_all("ns1", ""), false),
    ];
    for (name, yaml, applies) in cases {
        let policies = Policies::new(vec![compiled(&yaml)]);
        assert_eq!(
            !Req::default().evaluate(&policies).is_allowed(),
            applies,
            "{name}"
        );
    }
    // A Service target never applies to workload-addressed traffic.
    let policies = Policies::new(vec![compiled(&deny_all("ns1", &service("reviews")))]);
    let req = Req {
        dest: Destination {
            service: None,
            ..Req::default().dest
        },
        ..Req::default()
    };
    assert!(req.evaluate(&policies).is_allowed());
}
