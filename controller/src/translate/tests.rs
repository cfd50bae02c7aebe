//! Unit tests for translation, table-driven where the domain is a table. Fixtures are
//! literal manifests, parsed and validated exactly as the directory source does.

use std::path::Path;

use api::security::string_match::MatchType;
use api::workload::{Workload, address};

use super::authorization::matches::{ip_prefix, ports, service_accounts, string_matches};
use super::*;
use crate::manifest::parse_file;
use crate::source::SourceEvent;

mod peer_authentication;
mod policies;
mod waypoints;
mod workloads;

/// A store holding every object of `yaml` (which must all be valid).
fn store(yaml: &str) -> Store {
    let contents = parse_file(Path::new("test.yaml"), yaml);
    assert!(contents.errors.is_empty(), "{:#?}", contents.errors);
    let mut store = Store::default();
    for parsed in contents.objects {
        store.apply(SourceEvent::Applied(parsed));
    }
    store
}

fn translated(yaml: &str) -> Translation {
    translate(&store(yaml), &MeshOptions::default())
}

/// The workload of pod `namespace/name`.
fn workload<'a>(t: &'a Translation, namespace: &str, name: &str) -> Option<&'a Workload> {
    match &t
        .addresses
        .get(&format!("Kubernetes//Pod/{namespace}/{name}"))?
        .r#type
    {
        Some(address::Type::Workload(w)) => Some(w),
        _ => None,
    }
}

#[test]
fn string_values_become_presence_prefix_suffix_or_exact() {
    use MatchType::*;
    let table: &[(&str, bool, MatchType)] = &[
        ("*", false, Presence(())),
        ("ns-*", false, Prefix("ns-".into())),
        ("*-prod", false, Suffix("-prod".into())),
        ("default", false, Exact("default".into())),
        ("", false, Exact(String::new())),
        // Principals are compared without their scheme, wildcards included.
        (
            "spiffe://cluster.local/ns/a/sa/b",
            true,
            Exact("cluster.local/ns/a/sa/b".into()),
        ),
        (
            "spiffe://cluster.local/ns/a/*",
            true,
            Prefix("cluster.local/ns/a/".into()),
        ),
        ("spiffe://*", true, Presence(())),
        ("*/sa/admin", true, Suffix("/sa/admin".into())),
        (
            "cluster.local/ns/a/sa/b",
            true,
            Exact("cluster.local/ns/a/sa/b".into()),
        ),
        // Only principals carry a scheme; a namespace is taken as written.
        ("spiffe://x", false, Exact("spiffe://x".into())),
    ];
    for (input, principal, want) in table {
        let got = string_matches(&[input.to_string()], *principal);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].match_type.as_ref(),
            Some(want),
            "{input:?} principal={principal}"
        );
    }
}

/// (written, expected address bytes and prefix length)
type PrefixCase = (&'static str, Option<(&'static [u8], u32)>);

#[test]
fn ip_blocks_become_prefixes_with_full_length_for_plain_ips() {
    let table: &[PrefixCase] = &[
        ("10.1.2.3", Some((&[10, 1, 2, 3], 32))),
        ("10.0.0.0/8", Some((&[10, 0, 0, 0], 8))),
        // Kept as written, not masked (Istio sends it that way too).
        ("10.1.2.3/16", Some((&[10, 1, 2, 3], 16))),
        ("0.0.0.0/0", Some((&[0, 0, 0, 0], 0))),
        (
            "2001:db8::1",
            Some((
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                128,
            )),
        ),
        (
            "2001:db8::/32",
            Some((
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                32,
            )),
        ),
        ("10.0.0.0/33", None),
        ("not-an-ip", None),
    ];
    for (input, want) in table {
        let got = ip_prefix(input).map(|a| (a.address, a.length));
        let want = want.map(|(b, l)| (b.to_vec(), l));
        assert_eq!(got, want, "{input}");
    }
}

#[test]
fn ports_and_service_accounts_parse_as_ztunnel_compares_them() {
    let written: Vec<String> = ["80", "65535", "0", "65536", "http"]
        .map(String::from)
        .to_vec();
    assert_eq!(ports(&written), vec![80, 65535]);

    let accounts = service_accounts(&["other/api".into(), "web".into()], "shop");
    let got: Vec<(&str, &str)> = accounts
        .iter()
        .map(|a| (a.namespace.as_str(), a.service_account.as_str()))
        .collect();
    assert_eq!(got, [("other", "api"), ("shop", "web")]);
}

const MIXED: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: web, image: web}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80}, {name: grpc, port: 90}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {methods: [GET]}}]}]}
";

#[test]
fn translation_is_deterministic() {
    let s = store(MIXED);
    let first = translate(&s, &MeshOptions::default());
    for _ in 0..5 {
        let again = translate(&s, &MeshOptions::default());
        assert_eq!(again, first);
        assert_eq!(
            serde_json::to_string(&render(&again)).unwrap(),
            serde_json::to_string(&render(&first)).unwrap()
        );
    }
}

#[test]
fn render_names_enums_and_writes_ips_as_text() {
    let t = translated(MIXED);
    let v = render(&t);
    let w = &v["addresses"]["Kubernetes//Pod/shop/web-1"]["workload"];
    assert_eq!(w["addresses"], serde_json::json!(["10.0.0.1"]));
    assert_eq!(w["tunnelProtocol"], "HBONE");
    assert_eq!(w["workloadType"], "POD");
    assert_eq!(w["status"], "HEALTHY");
    assert_eq!(
        w["services"]["shop/web.shop.svc.cluster.local"]["ports"],
        serde_json::json!([
            {"servicePort": 80, "targetPort": 80},
            {"servicePort": 90, "targetPort": 90},
        ])
    );
    let s = &v["addresses"]["shop/web.shop.svc.cluster.local"]["service"];
    assert_eq!(s["addresses"][0]["address"], "10.96.0.1");
    let a = &v["authorizations"]["shop/p"];
    assert_eq!(a["scope"], "WORKLOAD_SELECTOR");
    assert_eq!(a["action"], "ALLOW");
    assert_eq!(a["groups"], serde_json::json!([]));
    assert_eq!(v["problems"][0]["file"], "test.yaml");
    assert_eq!(
        v["problems"][0]["field"],
        "spec.rules[0].to[0].operation.methods"
    );
}

#[test]
fn mesh_options_shape_names_and_identities() {
    let options = MeshOptions {
        trust_domain: "example.org".into(),
        root_namespace: "mesh-root".into(),
        cluster_id: "east".into(),
        domain_suffix: "corp.internal".into(),
    };
    let t = translate(&store(MIXED), &options);
    let Some(address::Type::Workload(w)) = &t.addresses["east//Pod/shop/web-1"].r#type else {
        panic!(
            "no workload under the cluster's uid: {:?}",
            t.addresses.keys()
        );
    };
    assert_eq!(w.trust_domain, "example.org");
    assert_eq!(w.cluster_id, "east");
    assert!(
        w.services.contains_key("shop/web.shop.svc.corp.internal"),
        "{:?}",
        w.services
    );
    assert!(t.addresses.contains_key("shop/web.shop.svc.corp.internal"));
}
