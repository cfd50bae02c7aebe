//! PeerAuthentication -> the static STRICT policy, converted port-level DENY policies and
//! the keys each workload lists.

use api::security::string_match::MatchType;
use api::security::{Action, Group, Match, Rules, Scope, StringMatch};

use super::*;

const STATIC: &str = "istio-system/istio_converted_static_strict";
const CONVERTED: &str = "shop/converted_peer_authentication_w";

/// Pod `shop/a` (app: a, what the workload-level policies select) and `shop/b` (app: b).
const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: b}}
status: {podIP: 10.0.0.2}
";

/// A PeerAuthentication `namespace/name` with `spec`.
fn pa(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

/// The same, created at `created` (RFC 3339).
fn pa_created(namespace: &str, name: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: '{created}'}}\n\
         spec: {spec}\n"
    )
}

fn with_pods(policies: &[String]) -> Translation {
    translated(&format!("{PODS}{}", policies.concat()))
}

fn listed<'a>(t: &'a Translation, pod: &str) -> &'a [String] {
    &workload(t, "shop", pod)
        .expect("workload")
        .authorization_policies
}

fn plaintext() -> Match {
    Match {
        not_principals: vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        ..Match::default()
    }
}

fn clause(m: Match) -> Rules {
    Rules { matches: vec![m] }
}

/// Deny plaintext to `port`.
fn strict_port(port: u32) -> Group {
    Group {
        rules: vec![clause(Match {
            destination_ports: vec![port],
            ..plaintext()
        })],
    }
}

/// Not to `port` (ANDed with plaintext in the same group).
fn except(port: u32) -> Rules {
    clause(Match {
        not_destination_ports: vec![port],
        ..Match::default()
    })
}

/// The policies other than the AuthorizationPolicies' (there are none here).
fn peer_policies(t: &Translation) -> Vec<&str> {
    t.authorizations.keys().map(String::as_str).collect()
}

const MESH_STRICT: (&str, &str, &str) = ("istio-system", "default", "{mtls: {mode: STRICT}}");
const NS_STRICT: (&str, &str, &str) = ("shop", "default", "{mtls: {mode: STRICT}}");
const NS_PERMISSIVE: (&str, &str, &str) = ("shop", "default", "{mtls: {mode: PERMISSIVE}}");
const NS_UNSET: (&str, &str, &str) = ("shop", "default", "{mtls: {}}");

struct Case {
    what: &'static str,
    /// (namespace, name, spec); workload-level ones are named `w` and select app=a.
    policies: Vec<(&'static str, &'static str, &'static str)>,
    /// What pod `shop/a` lists.
    listed: &'static [&'static str],
    /// The groups of `shop/converted_peer_authentication_w`, if published.
    converted: Option<Vec<Group>>,
    /// Fields of the problems reported.
    problems: &'static [&'static str],
}

fn workload_pa(spec: &'static str) -> (&'static str, &'static str, &'static str) {
    ("shop", "w", spec)
}

#[test]
fn modes_resolve_from_mesh_to_namespace_to_workload() {
    let cases = vec![
        Case {
            what: "no PeerAuthentication",
            policies: vec![],
            listed: &[],
            converted: None,
            problems: &[],
        },
        Case {
            what: "mesh STRICT",
            policies: vec![MESH_STRICT],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
        Case {
            what: "namespace PERMISSIVE overrides mesh STRICT",
            policies: vec![MESH_STRICT, NS_PERMISSIVE],
            listed: &[],
            converted: None,
            problems: &[],
        },
        Case {
            what: "namespace UNSET inherits mesh STRICT",
            policies: vec![MESH_STRICT, NS_UNSET],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
        Case {
            what: "workload STRICT under namespace PERMISSIVE",
            policies: vec![
                NS_PERMISSIVE,
                workload_pa("{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}}"),
            ],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
        Case {
            what: "workload PERMISSIVE under mesh STRICT",
            policies: vec![
                MESH_STRICT,
                workload_pa("{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}}"),
            ],
            listed: &[],
            converted: None,
            problems: &[],
        },
        Case {
            what: "workload UNSET inherits namespace STRICT",
            policies: vec![
                NS_STRICT,
                workload_pa("{selector: {matchLabels: {app: a}}}"),
            ],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
        Case {
            what: "STRICT with a PERMISSIVE port",
            policies: vec![workload_pa(
                "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}, \
                 portLevelMtls: {9090: {mode: PERMISSIVE}}}",
            )],
            listed: &[CONVERTED],
            converted: Some(vec![Group {
                rules: vec![clause(plaintext()), except(9090)],
            }]),
            problems: &[],
        },
        Case {
            what: "STRICT with a PERMISSIVE port under a STRICT namespace (merged twice, as Istio)",
            policies: vec![
                NS_STRICT,
                workload_pa(
                    "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}, \
                     portLevelMtls: {9090: {mode: PERMISSIVE}}}",
                ),
            ],
            listed: &[CONVERTED],
            converted: Some(vec![Group {
                rules: vec![clause(plaintext()), except(9090), clause(plaintext())],
            }]),
            problems: &[],
        },
        Case {
            what: "STRICT with only STRICT ports: the static policy covers it",
            policies: vec![workload_pa(
                "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}, \
                 portLevelMtls: {8080: {mode: STRICT}}}",
            )],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
        Case {
            what: "PERMISSIVE with a STRICT port",
            policies: vec![
                MESH_STRICT,
                workload_pa(
                    "{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}, \
                     portLevelMtls: {8080: {mode: STRICT}, 9090: {mode: PERMISSIVE}}}",
                ),
            ],
            listed: &[CONVERTED],
            converted: Some(vec![strict_port(8080)]),
            problems: &[],
        },
        Case {
            what: "UNSET with STRICT ports under a PERMISSIVE parent: one group per port",
            policies: vec![workload_pa(
                "{selector: {matchLabels: {app: a}}, \
                 portLevelMtls: {9091: {mode: STRICT}, 8080: {mode: STRICT}, 7070: {}}}",
            )],
            listed: &[CONVERTED],
            converted: Some(vec![strict_port(8080), strict_port(9091)]),
            problems: &[],
        },
        Case {
            what: "UNSET with a STRICT port under a STRICT namespace: the parent covers it",
            policies: vec![
                NS_STRICT,
                workload_pa(
                    "{selector: {matchLabels: {app: a}}, portLevelMtls: {8080: {mode: STRICT}}}",
                ),
            ],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
        Case {
            what: "UNSET with a PERMISSIVE port under mesh STRICT: merged, static not listed",
            policies: vec![
                MESH_STRICT,
                workload_pa(
                    "{selector: {matchLabels: {app: a}}, \
                     portLevelMtls: {9090: {mode: PERMISSIVE}}}",
                ),
            ],
            listed: &[CONVERTED],
            converted: Some(vec![Group {
                rules: vec![except(9090), clause(plaintext())],
            }]),
            problems: &[],
        },
        Case {
            // Istio skips the port here (any non-STRICT namespace policy relaxes), so the
            // workload would list a policy never published and accept plaintext anywhere.
            what: "UNSET with a PERMISSIVE port under mesh STRICT and namespace UNSET",
            policies: vec![
                MESH_STRICT,
                NS_UNSET,
                workload_pa(
                    "{selector: {matchLabels: {app: a}}, \
                     portLevelMtls: {9090: {mode: PERMISSIVE}}}",
                ),
            ],
            listed: &[CONVERTED],
            converted: Some(vec![Group {
                rules: vec![except(9090), clause(plaintext())],
            }]),
            problems: &[],
        },
        Case {
            what: "UNSET with a PERMISSIVE port under a PERMISSIVE parent: nothing to do",
            policies: vec![workload_pa(
                "{selector: {matchLabels: {app: a}}, portLevelMtls: {9090: {mode: PERMISSIVE}}}",
            )],
            listed: &[],
            converted: None,
            problems: &[],
        },
        Case {
            what: "DISABLE is PERMISSIVE: workload under mesh STRICT",
            policies: vec![
                MESH_STRICT,
                workload_pa("{selector: {matchLabels: {app: a}}, mtls: {mode: DISABLE}}"),
            ],
            listed: &[],
            converted: None,
            problems: &["spec.mtls.mode"],
        },
        Case {
            what: "DISABLE is PERMISSIVE: a port of a STRICT workload",
            policies: vec![workload_pa(
                "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}, \
                 portLevelMtls: {9090: {mode: DISABLE}}}",
            )],
            listed: &[CONVERTED],
            converted: Some(vec![Group {
                rules: vec![clause(plaintext()), except(9090)],
            }]),
            problems: &["spec.portLevelMtls.9090.mode"],
        },
        Case {
            what: "DISABLE is PERMISSIVE: a port of an UNSET workload under namespace STRICT",
            policies: vec![
                NS_STRICT,
                workload_pa(
                    "{selector: {matchLabels: {app: a}}, portLevelMtls: {9090: {mode: DISABLE}}}",
                ),
            ],
            listed: &[CONVERTED],
            converted: Some(vec![Group {
                rules: vec![except(9090), clause(plaintext())],
            }]),
            problems: &["spec.portLevelMtls.9090.mode"],
        },
        Case {
            what: "DISABLE is PERMISSIVE: a namespace under mesh STRICT",
            policies: vec![MESH_STRICT, ("shop", "default", "{mtls: {mode: DISABLE}}")],
            listed: &[],
            converted: None,
            problems: &["spec.mtls.mode"],
        },
        Case {
            what: "a selector in the root namespace is ignored",
            policies: vec![(
                "istio-system",
                "w",
                "{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}, \
                 portLevelMtls: {8080: {mode: STRICT}}}",
            )],
            listed: &[],
            converted: None,
            problems: &[],
        },
        Case {
            what: "a selector in the root namespace does not override mesh STRICT",
            policies: vec![
                MESH_STRICT,
                (
                    "istio-system",
                    "w",
                    "{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}}",
                ),
            ],
            listed: &[STATIC],
            converted: None,
            problems: &[],
        },
    ];
    for case in cases {
        let docs: Vec<String> = case
            .policies
            .iter()
            .map(|(ns, name, spec)| pa(ns, name, spec))
            .collect();
        let t = with_pods(&docs);
        let what = case.what;
        assert_eq!(listed(&t, "a"), case.listed, "{what}");

        // The static policy exists as soon as any PeerAuthentication does.
        let mut want_keys = Vec::new();
        if !case.policies.is_empty() {
            want_keys.push(STATIC);
        }
        if case.converted.is_some() {
            want_keys.push(CONVERTED);
        }
        want_keys.sort();
        assert_eq!(peer_policies(&t), want_keys, "{what}");
        if let Some(groups) = case.converted {
            let a = &t.authorizations[CONVERTED];
            assert_eq!(
                (a.name.as_str(), a.namespace.as_str()),
                ("converted_peer_authentication_w", "shop"),
                "{what}"
            );
            assert_eq!(a.scope, Scope::WorkloadSelector as i32, "{what}");
            assert_eq!(a.action, Action::Deny as i32, "{what}");
            assert_eq!(a.groups, groups, "{what}");
        }

        let fields: Vec<&str> = t
            .problems
            .iter()
            .map(|p| p.field.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(fields, case.problems, "{what}");
    }
}

#[test]
fn the_static_policy_denies_plaintext_from_the_root_namespace() {
    let t = with_pods(&[pa("shop", "default", "{mtls: {mode: PERMISSIVE}}")]);
    let a = &t.authorizations[STATIC];
    assert_eq!(
        (a.name.as_str(), a.namespace.as_str()),
        ("istio_converted_static_strict", "istio-system")
    );
    assert_eq!(a.scope, Scope::WorkloadSelector as i32);
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!(
        a.groups,
        [Group {
            rules: vec![clause(plaintext())]
        }]
    );

    // It follows the mesh's root namespace, which also decides what is mesh-level.
    let options = MeshOptions {
        root_namespace: "mesh-root".into(),
        ..MeshOptions::default()
    };
    let yaml = format!(
        "{PODS}{}",
        pa("mesh-root", "default", "{mtls: {mode: STRICT}}")
            + &pa("istio-system", "default", "{mtls: {mode: PERMISSIVE}}")
    );
    let t = translate(&store(&yaml), &options);
    assert_eq!(
        peer_policies(&t),
        ["mesh-root/istio_converted_static_strict"]
    );
    assert_eq!(listed(&t, "a"), ["mesh-root/istio_converted_static_strict"]);
}

#[test]
fn only_selected_workloads_follow_a_workload_level_policy() {
    let t = with_pods(&[
        pa("shop", "default", "{mtls: {mode: STRICT}}"),
        pa(
            "shop",
            "w",
            "{selector: {matchLabels: {app: a}}, portLevelMtls: {9090: {mode: PERMISSIVE}}}",
        ),
        // Another namespace's policy never applies here.
        pa(
            "other",
            "w",
            "{selector: {matchLabels: {app: b}}, mtls: {mode: PERMISSIVE}}",
        ),
    ]);
    assert_eq!(listed(&t, "a"), [CONVERTED]);
    assert_eq!(listed(&t, "b"), [STATIC]);
}

#[test]
fn workload_keys_are_listed_sorted_with_authorization_policies() {
    let t = with_pods(&[
        pa("shop", "default", "{mtls: {mode: STRICT}}"),
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: z-last, namespace: shop}\nspec: {selector: {matchLabels: {app: a}}}\n"
            .to_owned(),
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: a-first, namespace: istio-system}\n\
         spec: {selector: {matchLabels: {app: a}}}\n"
            .to_owned(),
    ]);
    assert_eq!(
        listed(&t, "a"),
        ["istio-system/a-first", STATIC, "shop/z-last"]
    );
}

/// A policy as (name, creationTimestamp, spec).
type Dated = (&'static str, Option<&'static str>, &'static str);

#[test]
fn the_oldest_policy_of_a_level_wins() {
    const OLD: &str = "2020-01-01T00:00:00Z";
    const NEW: &str = "2024-06-01T00:00:00Z";
    let strict = "{mtls: {mode: STRICT}}";
    let permissive = "{mtls: {mode: PERMISSIVE}}";
    // (namespace-level policies, whether pod a is STRICT)
    let table: &[(&[Dated], bool)] = &[
        (
            &[("a", Some(NEW), permissive), ("b", Some(OLD), strict)],
            true,
        ),
        (
            &[("a", Some(OLD), permissive), ("b", Some(NEW), strict)],
            false,
        ),
        // No timestamp counts as newer than any.
        (&[("a", None, permissive), ("b", Some(NEW), strict)], true),
        // Same (or no) timestamp: by name.
        (&[("a", None, permissive), ("b", None, strict)], false),
        (
            &[("a", Some(OLD), strict), ("b", Some(OLD), permissive)],
            true,
        ),
    ];
    for (policies, strict) in table {
        let docs: Vec<String> = policies
            .iter()
            .map(|(name, created, spec)| match created {
                Some(at) => pa_created("shop", name, at, spec),
                None => pa("shop", name, spec),
            })
            .collect();
        let t = with_pods(&docs);
        let want: &[&str] = if *strict { &[STATIC] } else { &[] };
        assert_eq!(listed(&t, "a"), want, "{policies:?}");
    }

    // At the mesh level too.
    let t = with_pods(&[
        pa_created("istio-system", "a", NEW, strict),
        pa_created("istio-system", "b", OLD, permissive),
    ]);
    assert!(listed(&t, "a").is_empty());

    // Between workload-level policies: the oldest is the one listed; each is published.
    let port = |mode: &str| {
        format!(
            "{{selector: {{matchLabels: {{app: a}}}}, portLevelMtls: {{8080: {{mode: {mode}}}}}}}"
        )
    };
    let t = with_pods(&[
        pa_created("shop", "w", NEW, &port("STRICT")),
        pa_created("shop", "v", OLD, &port("STRICT")),
    ]);
    assert_eq!(listed(&t, "a"), ["shop/converted_peer_authentication_v"]);
    assert_eq!(
        peer_policies(&t),
        [
            STATIC,
            "shop/converted_peer_authentication_v",
            "shop/converted_peer_authentication_w"
        ]
    );
}

#[test]
fn disable_is_reported_where_it_is_written() {
    let t = with_pods(&[pa(
        "shop",
        "w",
        "{selector: {matchLabels: {app: a}}, mtls: {mode: DISABLE}, \
         portLevelMtls: {8080: {mode: STRICT}, 9090: {mode: DISABLE}}}",
    )]);
    assert_eq!(t.problems.len(), 2, "{:?}", t.problems);
    for (p, field) in t
        .problems
        .iter()
        .zip(["spec.mtls.mode", "spec.portLevelMtls.9090.mode"])
    {
        assert_eq!(p.field.as_deref(), Some(field));
        assert_eq!(p.object.as_deref(), Some("PeerAuthentication shop/w"));
        assert_eq!(p.file, Path::new("test.yaml"));
        assert!(p.message.contains("PERMISSIVE"), "{}", p.message);
        assert!(p.message.contains("does not disable"), "{}", p.message);
    }
    // Treated as PERMISSIVE: only the STRICT port is denied plaintext.
    assert_eq!(listed(&t, "a"), [CONVERTED]);
    assert_eq!(t.authorizations[CONVERTED].groups, [strict_port(8080)]);
}
