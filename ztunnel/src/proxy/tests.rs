use super::*;
use crate::rbac::{Action, DenyReason, Match, Policy, Scope, StringMatch};

fn pod(uid: &str, ip: &str) -> Workload {
    Workload {
        node: "node-1".into(),
        ..Workload::pod(uid, "prod", "server", ip.parse().unwrap()).unwrap()
    }
}

fn namespace_policy(name: &str, action: Action, m: Match) -> Policy {
    Policy {
        name: name.into(),
        namespace: "prod".into(),
        scope: Scope::Namespace,
        action,
        groups: vec![vec![vec![m]]],
        dry_run: false,
    }
}

/// Pod `a` (10.0.0.1) and pod `b` (10.0.0.2) in `prod`, where plaintext is denied and
/// only namespace `foo` is allowed.
fn state() -> WorkloadState {
    let require_mtls = Match {
        not_principals: vec![StringMatch::Presence],
        ..Match::default()
    };
    let from_foo = Match {
        namespaces: vec![StringMatch::Exact("foo".into())],
        ..Match::default()
    };
    WorkloadState::with_policies(
        vec![pod("a", "10.0.0.1"), pod("b", "10.0.0.2")],
        vec![],
        vec![
            namespace_policy("require-mtls", Action::Deny, require_mtls),
            namespace_policy("from-foo", Action::Allow, from_foo),
        ],
    )
    .unwrap()
}

#[test]
fn inbound_connections_must_target_the_pod_and_pass_its_policies() {
    let foo: Identity = "spiffe://cluster.local/ns/foo/sa/client".parse().unwrap();
    let bar: Identity = "spiffe://cluster.local/ns/bar/sa/client".parse().unwrap();
    let src: IpAddr = "10.0.9.9".parse().unwrap();
    let dst = |s: &str| s.parse::<SocketAddr>().unwrap();
    let denied = |policy: &str, reason| {
        Err(Refusal::Denied(Denied {
            policy: policy.into(),
            reason,
        }))
    };
    let state = state();
    let cases = [
        ("allowed", "a", Some(&foo), "10.0.0.1:8080", Ok(())),
        (
            "another pod's address",
            "a",
            Some(&foo),
            "10.0.0.2:8080",
            Err(Refusal::NotThisPod),
        ),
        (
            "pod not in the state",
            "c",
            Some(&foo),
            "10.0.0.1:8080",
            Err(Refusal::NotThisPod),
        ),
        (
            "plaintext",
            "a",
            None,
            "10.0.0.1:8080",
            denied("prod/require-mtls", DenyReason::DenyPolicyMatched),
        ),
        (
            "mTLS from a namespace not allowed",
            "a",
            Some(&bar),
            "10.0.0.1:8080",
            denied("prod/from-foo", DenyReason::NoAllowPolicyMatched),
        ),
    ];
    for (name, pod_name, identity, to, expected) in cases {
        let pod = PodInfo {
            uid: format!("k8s-uid-of-{pod_name}"),
            name: pod_name.into(),
            namespace: "prod".into(),
            service_account: "server".into(),
        };
        assert_eq!(
            admit(&state, &pod, src, identity, dst(to)),
            expected,
            "{name}"
        );
    }
}
