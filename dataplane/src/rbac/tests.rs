use super::*;

const SRC_ID: &str = "spiffe://cluster.local/ns/foo/sa/bar";

type Groups = Vec<Vec<Vec<Match>>>;
type Verdict = Result<(), Denied>;

fn destination() -> Arc<Workload> {
    Arc::new(Workload {
        uid: "prod/server".into(),
        node: "node-1".into(),
        authorization_policies: vec!["prod/selected".into(), "prod/missing".into()],
        ..Workload::pod("server", "prod", "server", "10.1.0.1".parse().unwrap()).unwrap()
    })
}

/// mTLS from `SRC_ID` at 10.0.0.5 to 10.1.0.1:8080.
fn mtls() -> ConnectionInfo {
    ConnectionInfo {
        src_ip: "10.0.0.5".parse().unwrap(),
        src_identity: Some(SRC_ID.parse().unwrap()),
        dst_ip: "10.1.0.1".parse().unwrap(),
        dst_port: 8080,
        dst_workload: destination(),
    }
}

/// The same connection without an identity.
fn plain() -> ConnectionInfo {
    ConnectionInfo {
        src_identity: None,
        ..mtls()
    }
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

fn cidr(s: &str) -> Cidr {
    let (ip, len) = s.split_once('/').unwrap();
    Cidr::new(ip.parse().unwrap(), len.parse().unwrap()).unwrap()
}

fn sa(namespace: &str, service_account: &str) -> ServiceAccountMatch {
    ServiceAccountMatch {
        namespace: namespace.into(),
        service_account: service_account.into(),
    }
}

fn policy(key: &str, scope: Scope, action: Action, groups: Groups) -> Policy {
    let (namespace, name) = key.split_once('/').unwrap();
    Policy {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action,
        groups,
        dry_run: false,
    }
}

/// A policy with exactly one group, one rule, one match.
fn single(m: Match) -> Policy {
    policy(
        "prod/p",
        Scope::Namespace,
        Action::Allow,
        vec![vec![vec![m]]],
    )
}

#[test]
fn every_match_field_and_its_negation() {
    let d = Match::default;
    #[rustfmt::skip]
    let cases: Vec<(&str, Match, ConnectionInfo, bool)> = vec![
        ("namespace", Match { namespaces: vec![exact("foo")], ..d() }, mtls(), true),
        ("other namespace", Match { namespaces: vec![exact("baz")], ..d() }, mtls(), false),
        ("namespace, plaintext", Match { namespaces: vec![StringMatch::Presence], ..d() }, plain(), false),
        ("not namespace", Match { not_namespaces: vec![exact("foo")], ..d() }, mtls(), false),
        ("not other namespace", Match { not_namespaces: vec![exact("baz")], ..d() }, mtls(), true),
        ("not namespace, plaintext", Match { not_namespaces: vec![exact("foo")], ..d() }, plain(), true),
        ("principal", Match { principals: vec![exact("cluster.local/ns/foo/sa/bar")], ..d() }, mtls(), true),
        ("principal with scheme", Match { principals: vec![exact(SRC_ID)], ..d() }, mtls(), false),
        ("principal, plaintext", Match { principals: vec![StringMatch::Presence], ..d() }, plain(), false),
        ("not principal", Match { not_principals: vec![exact("cluster.local/ns/foo/sa/bar")], ..d() }, mtls(), false),
        ("not other principal", Match { not_principals: vec![exact("cluster.local/ns/foo/sa/x")], ..d() }, mtls(), true),
        ("not principal, plaintext", Match { not_principals: vec![StringMatch::Presence], ..d() }, plain(), true),
        ("service account", Match { service_accounts: vec![sa("foo", "bar")], ..d() }, mtls(), true),
        ("service account, other ns", Match { service_accounts: vec![sa("baz", "bar")], ..d() }, mtls(), false),
        ("service account, other name", Match { service_accounts: vec![sa("foo", "baz")], ..d() }, mtls(), false),
        ("service account, plaintext", Match { service_accounts: vec![sa("foo", "bar")], ..d() }, plain(), false),
        ("not service account", Match { not_service_accounts: vec![sa("foo", "bar")], ..d() }, mtls(), false),
        ("not other service account", Match { not_service_accounts: vec![sa("foo", "x")], ..d() }, mtls(), true),
        ("not service account, plaintext", Match { not_service_accounts: vec![sa("foo", "bar")], ..d() }, plain(), true),
        ("source ip", Match { source_ips: vec![cidr("10.0.0.0/24")], ..d() }, mtls(), true),
        ("source ip /32", Match { source_ips: vec![cidr("10.0.0.5/32")], ..d() }, plain(), true),
        ("other source ip", Match { source_ips: vec![cidr("10.0.1.0/24")], ..d() }, mtls(), false),
        ("source ip, other family", Match { source_ips: vec![cidr("::/0")], ..d() }, mtls(), false),
        ("not source ip", Match { not_source_ips: vec![cidr("10.0.0.0/8")], ..d() }, mtls(), false),
        ("not other source ip", Match { not_source_ips: vec![cidr("192.168.0.0/16")], ..d() }, mtls(), true),
        ("destination ip", Match { destination_ips: vec![cidr("10.1.0.1/32")], ..d() }, mtls(), true),
        ("other destination ip", Match { destination_ips: vec![cidr("10.1.0.2/32")], ..d() }, mtls(), false),
        ("not destination ip", Match { not_destination_ips: vec![cidr("10.1.0.0/16")], ..d() }, mtls(), false),
        ("not other destination ip", Match { not_destination_ips: vec![cidr("10.2.0.0/16")], ..d() }, mtls(), true),
        ("destination port", Match { destination_ports: vec![80, 8080], ..d() }, mtls(), true),
        ("other destination port", Match { destination_ports: vec![80], ..d() }, mtls(), false),
        ("not destination port", Match { not_destination_ports: vec![8080], ..d() }, mtls(), false),
        ("not other destination port", Match { not_destination_ports: vec![80], ..d() }, mtls(), true),
        ("fields are AND-ed", Match { namespaces: vec![exact("foo")], destination_ports: vec![80], ..d() }, mtls(), false),
        ("all fields hold", Match { namespaces: vec![exact("foo")], destination_ports: vec![8080], source_ips: vec![cidr("10.0.0.0/8")], ..d() }, mtls(), true),
        ("positive and negative", Match { namespaces: vec![StringMatch::Prefix("f".into())], not_namespaces: vec![exact("foo")], ..d() }, mtls(), false),
        ("empty match matches nothing", d(), mtls(), false),
    ];
    for (name, m, conn, expected) in cases {
        assert_eq!(single(m).matches(&conn), expected, "{name}");
    }
}

#[test]
fn string_match_kinds() {
    let cases = [
        (exact("cluster.local/ns/foo/sa/bar"), true),
        (exact("cluster.local/ns/foo/sa/ba"), false),
        (StringMatch::Prefix("cluster.local/ns/foo/".into()), true),
        (StringMatch::Prefix("cluster.local/ns/bar/".into()), false),
        (StringMatch::Suffix("/sa/bar".into()), true),
        (StringMatch::Suffix("/sa/baz".into()), false),
        (StringMatch::Presence, true),
    ];
    for (m, expected) in cases {
        let principals = vec![m.clone()];
        let p = single(Match {
            principals,
            ..Match::default()
        });
        assert_eq!(p.matches(&mtls()), expected, "{m:?}");
    }
    assert!(!StringMatch::Presence.matches(""));
    assert!(StringMatch::Prefix(String::new()).matches(""));
}

#[test]
fn prefixes() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases = [
        ("0.0.0.0/0", "203.0.113.9", true),
        ("10.0.0.0/8", "10.255.0.1", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.0.0.5/32", "10.0.0.5", true),
        ("10.0.0.5/32", "10.0.0.4", false),
        ("10.0.0.0/24", "::ffff:10.0.0.7", true),
        ("fd00::/64", "fd00::1", true),
        ("fd00::/64", "fd00:0:0:1::1", false),
        ("fd00::1/128", "fd00::1", true),
        ("::/0", "10.0.0.1", false),
    ];
    for (net, addr, expected) in cases {
        assert_eq!(
            cidr(net).contains(ip(addr)),
            expected,
            "{net} contains {addr}"
        );
    }
    assert!(Cidr::new(ip("10.0.0.0"), 33).is_none());
    assert!(Cidr::new(ip("fd00::"), 129).is_none());
    assert_eq!(cidr("fd00::/128").to_string(), "fd00::/128");
}

#[test]
fn parsed_prefixes() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(Cidr::parse("10.0.0.0/8"), Ok(cidr("10.0.0.0/8")));
    assert_eq!(Cidr::parse("10.0.0.5"), Ok(cidr("10.0.0.5/32")));
    assert_eq!(Cidr::parse("fd00::/64"), Ok(cidr("fd00::/64")));
    assert_eq!(Cidr::parse("::ffff:10.0.0.0/104"), Ok(cidr("10.0.0.0/8")));
    assert!(
        Cidr::parse("::ffff:10.0.0.7")
            .unwrap()
            .contains(ip("10.0.0.7"))
    );
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(Cidr::parse("10.0.0.0/x").is_err());
    assert!(Cidr::parse("ten").is_err());
}

#[test]
fn wildcard_patterns() {
    assert_eq!(StringMatch::parse("*"), StringMatch::Presence);
    assert_eq!(StringMatch::parse("a*"), StringMatch::Prefix("a".into()));
    assert_eq!(StringMatch::parse("*a"), StringMatch::Suffix("a".into()));
    assert_eq!(StringMatch::parse("a"), StringMatch::Exact("a".into()));
    assert_eq!(
        StringMatch::parse_lowercase("A*"),
        StringMatch::Prefix("a".into())
    );
}

#[test]
fn groups_are_or_rules_and_matches_or() {
    let ns = |s: &str| Match {
        namespaces: vec![exact(s)],
        ..Match::default()
    };
    let port = |p: u16| Match {
        destination_ports: vec![p],
        ..Match::default()
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Groups, ConnectionInfo, bool)> = vec![
        ("rules AND", vec![vec![vec![ns("foo")], vec![port(80)]]], mtls(), false),
        ("rules AND, all hold", vec![vec![vec![ns("foo")], vec![port(8080)]]], mtls(), true),
        ("matches OR", vec![vec![vec![ns("baz"), port(8080)]]], mtls(), true),
        ("groups OR", vec![vec![vec![ns("baz")]], vec![vec![port(8080)]]], mtls(), true),
        ("no group holds", vec![vec![vec![ns("baz")]], vec![vec![port(80)]]], mtls(), false),
        ("group without rules", vec![vec![]], plain(), true),
        ("rule without matches", vec![vec![vec![]]], plain(), true),
        ("rule with only an empty match", vec![vec![vec![Match::default()]]], mtls(), false),
        ("no groups", vec![], mtls(), false),
    ];
    for (name, groups, conn, expected) in cases {
        let p = policy("prod/p", Scope::Namespace, Action::Allow, groups);
        assert_eq!(p.matches(&conn), expected, "{name}");
    }
}

#[test]
fn scopes_select_the_applicable_policies() {
    let all = || vec![vec![]];
    let store = PolicyStore::new(vec![
        policy("istio-system/global", Scope::Global, Action::Allow, all()),
        policy("prod/namespace", Scope::Namespace, Action::Allow, all()),
        policy("other/namespace", Scope::Namespace, Action::Allow, all()),
        policy(
            "prod/selected",
            Scope::WorkloadSelector,
            Action::Allow,
            all(),
        ),
        policy(
            "prod/unlisted",
            Scope::WorkloadSelector,
            Action::Allow,
            all(),
        ),
    ])
    .unwrap();
    let dst = destination();
    let mut keys: Vec<String> = store.applicable(&dst).map(Policy::key).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["istio-system/global", "prod/namespace", "prod/selected"]
    );
    assert_eq!(store.len(), 5);
    assert!(store.get("prod/unlisted").is_some());
}

#[test]
fn evaluation_order() {
    let groups = |m: Match| vec![vec![vec![m]]];
    let from = |ns: &str| {
        groups(Match {
            namespaces: vec![exact(ns)],
            ..Match::default()
        })
    };
    let mtls_only = groups(Match {
        not_principals: vec![StringMatch::Presence],
        ..Match::default()
    });
    let deny = |reason, policy: &str| {
        Err(Denied {
            policy: policy.into(),
            reason,
        })
    };
    use Action::{Allow, Deny};
    use DenyReason::{DenyPolicyMatched, NoAllowPolicyMatched};
    use Scope::{Namespace, WorkloadSelector};
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Policy>, ConnectionInfo, Verdict)> = vec![
        ("no policy", vec![], mtls(), Ok(())),
        ("DENY not matching", vec![policy("prod/d", Namespace, Deny, from("baz"))], mtls(), Ok(())),
        ("DENY beats ALLOW", vec![policy("prod/a", Namespace, Allow, from("foo")), policy("prod/d", Namespace, Deny, from("foo"))], mtls(), deny(DenyPolicyMatched, "prod/d")),
        ("ALLOW matching", vec![policy("prod/a", Namespace, Allow, from("foo"))], mtls(), Ok(())),
        ("ALLOW not matching", vec![policy("prod/a", Namespace, Allow, from("baz"))], mtls(), deny(NoAllowPolicyMatched, "prod/a")),
        ("one of two ALLOWs matching", vec![policy("prod/a", Namespace, Allow, from("baz")), policy("prod/b", Namespace, Allow, from("foo"))], mtls(), Ok(())),
        ("ALLOWs name every candidate", vec![policy("prod/b", Namespace, Allow, from("baz")), policy("prod/a", Namespace, Allow, from("baz"))], mtls(), deny(NoAllowPolicyMatched, "prod/a, prod/b")),
        ("ALLOW of another namespace does not apply", vec![policy("other/a", Namespace, Allow, from("baz"))], mtls(), Ok(())),
        ("unlisted selector ALLOW does not apply", vec![policy("prod/unlisted", WorkloadSelector, Allow, from("baz"))], mtls(), Ok(())),
        ("listed selector ALLOW applies", vec![policy("prod/selected", WorkloadSelector, Allow, from("baz"))], mtls(), deny(NoAllowPolicyMatched, "prod/selected")),
        ("ALLOW without groups allows nothing", vec![policy("prod/a", Namespace, Allow, vec![])], mtls(), deny(NoAllowPolicyMatched, "prod/a")),
        ("ALLOW with an empty group allows all", vec![policy("prod/a", Namespace, Allow, vec![vec![]])], plain(), Ok(())),
        ("DENY plaintext", vec![policy("prod/d", Namespace, Deny, mtls_only.clone())], plain(), deny(DenyPolicyMatched, "prod/d")),
        ("DENY plaintext lets mTLS in", vec![policy("prod/d", Namespace, Deny, mtls_only.clone())], mtls(), Ok(())),
        ("plaintext has no namespace", vec![policy("prod/a", Namespace, Allow, from("foo"))], plain(), deny(NoAllowPolicyMatched, "prod/a")),
    ];
    for (name, policies, conn, expected) in cases {
        let store = PolicyStore::new(policies).unwrap();
        assert_eq!(store.authorize(&conn), expected, "{name}");
    }
}

#[test]
fn audit_and_dry_run_policies_are_observed_and_never_enforced() {
    let from = |ns: &str| {
        vec![vec![vec![Match {
            namespaces: vec![exact(ns)],
            ..Match::default()
        }]]]
    };
    let dry = |mut p: Policy| {
        p.dry_run = true;
        p
    };
    use Action::{Allow, Audit, Deny};
    use DenyReason::{DenyPolicyMatched, NoAllowPolicyMatched};
    use Scope::Namespace;
    let denied = |reason, policy: &str| {
        Some(Err(Denied {
            policy: policy.into(),
            reason,
        }))
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Policy>, Verdict, Observed)> = vec![
        ("AUDIT matching: audited, allowed", vec![policy("prod/au", Namespace, Audit, from("foo"))], Ok(()),
            Observed { audited_by: vec!["prod/au".into()], dry_run: None }),
        ("AUDIT not matching: nothing", vec![policy("prod/au", Namespace, Audit, from("baz"))], Ok(()), Observed::default()),
        // An AUDIT policy is not an ALLOW one: it does not turn on default deny.
        ("AUDIT beside a matching ALLOW", vec![policy("prod/au", Namespace, Audit, from("baz")), policy("prod/a", Namespace, Allow, from("foo"))], Ok(()), Observed::default()),
        ("dry-run DENY matching: would deny, allowed", vec![dry(policy("prod/d", Namespace, Deny, from("foo")))], Ok(()),
            Observed { audited_by: vec![], dry_run: denied(DenyPolicyMatched, "prod/d") }),
        ("dry-run ALLOW not matching: would deny, allowed", vec![dry(policy("prod/a", Namespace, Allow, from("baz")))], Ok(()),
            Observed { audited_by: vec![], dry_run: denied(NoAllowPolicyMatched, "prod/a") }),
        ("dry-run ALLOW matching: would allow", vec![dry(policy("prod/a", Namespace, Allow, from("foo")))], Ok(()),
            Observed { audited_by: vec![], dry_run: Some(Ok(())) }),
        // Enforced policies decide; dry-run ones are judged on their own.
        ("enforced DENY, dry-run ALLOW matching", vec![policy("prod/d", Namespace, Deny, from("foo")), dry(policy("prod/a", Namespace, Allow, from("foo")))],
            Err(Denied { policy: "prod/d".into(), reason: DenyPolicyMatched }),
            Observed { audited_by: vec![], dry_run: Some(Ok(())) }),
        ("a dry-run AUDIT audits nothing", vec![dry(policy("prod/au", Namespace, Audit, from("foo")))], Ok(()), Observed::default()),
    ];
    for (name, policies, verdict, observed) in cases {
        let store = PolicyStore::new(policies).unwrap();
        assert_eq!(store.authorize(&mtls()), verdict, "{name}: verdict");
        assert_eq!(store.observe(&mtls()), observed, "{name}: observed");
    }
}

#[test]
fn denials_read_well_and_duplicates_are_refused() {
    let denied = Denied {
        policy: "prod/d".into(),
        reason: DenyReason::DenyPolicyMatched,
    };
    assert_eq!(denied.to_string(), "matched DENY policy: prod/d");
    let p = policy("prod/p", Scope::Namespace, Action::Allow, vec![]);
    let err = PolicyStore::new(vec![p.clone(), p]).unwrap_err();
    assert_eq!(err, StateError::DuplicatePolicy("prod/p".into()));
}
