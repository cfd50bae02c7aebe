//! Waypoint opt-in: label precedence, opt-out, `istio.io/waypoint-for`, and labels that
//! cannot be honoured.

use super::*;
use crate::translate::waypoint::{
    AllowedNamespaces, Scope, Traffic, TrafficType, UseWaypoint, deciding, gateway_problems,
};

fn named(name: &str) -> UseWaypoint {
    UseWaypoint::Named {
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> labels::Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_label_reads_name_namespace_and_opt_out() {
    let table: &[(&[(&str, &str)], UseWaypoint)] = &[
        (&[], UseWaypoint::Unset),
        (&[("istio.io/use-waypoint", "none")], UseWaypoint::OptOut),
        (&[("istio.io/use-waypoint", "wp")], named("wp")),
        (
            &[
                ("istio.io/use-waypoint", "wp"),
                ("istio.io/use-waypoint-namespace", "infra"),
            ],
            UseWaypoint::Named {
                namespace: "infra".into(),
                name: "wp".into(),
            },
        ),
        // The namespace label alone says nothing.
        (
            &[("istio.io/use-waypoint-namespace", "infra")],
            UseWaypoint::Unset,
        ),
        // Only `none` opts out (as Istio): anything else is a waypoint's name.
        (&[("istio.io/use-waypoint", "None")], named("None")),
    ];
    for (pairs, want) in table {
        assert_eq!(&UseWaypoint::of(&labels(pairs), "shop"), want, "{pairs:?}");
    }
}

#[test]
fn the_most_specific_set_label_decides() {
    let (unset, out) = (UseWaypoint::Unset, UseWaypoint::OptOut);
    let (pod, sa, ns) = (named("pod"), named("sa"), named("ns"));
    // Workload traffic: Pod, then ServiceAccount, then Namespace.
    type Row<'a> = ([&'a UseWaypoint; 3], Option<(Scope, &'a UseWaypoint)>);
    let table: &[Row<'_>] = &[
        ([&unset, &unset, &unset], None),
        ([&unset, &unset, &ns], Some((Scope::Namespace, &ns))),
        ([&unset, &sa, &ns], Some((Scope::ServiceAccount, &sa))),
        ([&pod, &sa, &ns], Some((Scope::Pod, &pod))),
        ([&pod, &unset, &ns], Some((Scope::Pod, &pod))),
        ([&out, &sa, &ns], Some((Scope::Pod, &out))),
        ([&unset, &out, &ns], Some((Scope::ServiceAccount, &out))),
        ([&unset, &unset, &out], Some((Scope::Namespace, &out))),
    ];
    for ([p, s, n], want) in table {
        let got = deciding(&[
            (Scope::Pod, p),
            (Scope::ServiceAccount, s),
            (Scope::Namespace, n),
        ]);
        assert_eq!(
            got, *want,
            "pod {p:?}, service account {s:?}, namespace {n:?}"
        );
    }
    // Service traffic: Service, then Namespace.
    let svc = named("svc");
    assert_eq!(
        deciding(&[(Scope::Service, &svc), (Scope::Namespace, &ns)]),
        Some((Scope::Service, &svc))
    );
    assert_eq!(
        deciding(&[(Scope::Service, &unset), (Scope::Namespace, &ns)]),
        Some((Scope::Namespace, &ns))
    );
}

#[test]
fn waypoint_for_says_which_traffic_is_taken() {
    let table: &[(Option<&str>, Option<TrafficType>, bool, bool)] = &[
        (None, Some(TrafficType::Service), true, false),
        (Some("service"), Some(TrafficType::Service), true, false),
        (Some("workload"), Some(TrafficType::Workload), false, true),
        (Some("all"), Some(TrafficType::All), true, true),
        (Some("none"), Some(TrafficType::None), false, false),
        (Some("All"), None, false, false),
        (Some("pods"), None, false, false),
    ];
    for (value, want, service, workload) in table {
        let got = TrafficType::parse(*value).ok();
        assert_eq!(got, *want, "{value:?}");
        if let Some(t) = got {
            assert_eq!(t.takes(Traffic::Service), *service, "{value:?}");
            assert_eq!(t.takes(Traffic::Workload), *workload, "{value:?}");
        }
    }
}

const MESH: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, NS_LABEL}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: shop, labels: {SA_LABEL}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop, labels: {istio.io/waypoint-for: FOR}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: wp, namespace: shop}
spec: {clusterIP: 10.96.0.9, ports: [{port: 15008}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {SVC_LABEL}}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, POD_LABEL}}
spec: {nodeName: n, serviceAccountName: app, containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: wp-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: wp}}
spec: {nodeName: n, containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.2}
";

/// The mesh above with each scope's label set as given (`""`: no label).
fn mesh(ns: &str, sa: &str, svc: &str, pod: &str, waypoint_for: &str) -> Translation {
    let label = |v: &str| match v {
        "" => "x: y".to_owned(),
        v => format!("istio.io/use-waypoint: {v}"),
    };
    translated(
        &MESH
            .replace("NS_LABEL", &label(ns))
            .replace("SA_LABEL", &label(sa))
            .replace("SVC_LABEL", &label(svc))
            .replace("POD_LABEL", &label(pod))
            .replace("FOR", waypoint_for),
    )
}

fn service_waypoint(t: &Translation) -> Option<String> {
    match &t.addresses["shop/web.shop.svc.cluster.local"].r#type {
        Some(address::Type::Service(s)) => s.waypoint.as_ref().map(hostname),
        _ => panic!("not a service"),
    }
}

fn hostname(g: &api::workload::GatewayAddress) -> String {
    use api::workload::gateway_address::Destination;
    assert_eq!(g.hbone_mtls_port, 15008);
    match &g.destination {
        Some(Destination::Hostname(h)) => format!("{}/{}", h.namespace, h.hostname),
        other => panic!("not a hostname: {other:?}"),
    }
}

#[test]
fn services_and_workloads_get_the_waypoint_their_labels_and_its_traffic_type_allow() {
    const WP: &str = "shop/wp.shop.svc.cluster.local";
    // (namespace, service account, service, pod labels, waypoint-for) ->
    // (service's waypoint, workload's waypoint, problems)
    type Row = (
        [&'static str; 5],
        Option<&'static str>,
        Option<&'static str>,
        usize,
    );
    let table: &[Row] = &[
        (["", "", "", "", "all"], None, None, 0),
        (["wp", "", "", "", "all"], Some(WP), Some(WP), 0),
        (["wp", "", "", "", "service"], Some(WP), None, 0),
        (["wp", "", "", "", "workload"], None, Some(WP), 0),
        (["", "wp", "", "", "workload"], None, Some(WP), 0),
        (["", "", "wp", "", "service"], Some(WP), None, 0),
        (["", "", "", "wp", "all"], None, Some(WP), 0),
        // Opt-outs beat wider scopes.
        (["wp", "", "none", "", "all"], None, Some(WP), 0),
        (["wp", "", "", "none", "all"], Some(WP), None, 0),
        (["wp", "none", "", "", "all"], Some(WP), None, 0),
        (["", "wp", "", "none", "all"], None, None, 0),
        // A label that cannot be honoured: reported, no waypoint, no fallback.
        (["wp", "", "missing", "", "all"], None, Some(WP), 1),
        (["wp", "", "", "missing", "all"], Some(WP), None, 1),
        (["wp", "missing", "", "", "all"], Some(WP), None, 1),
        (["missing", "", "", "", "all"], None, None, 1),
        (["", "wp", "", "", "service"], None, None, 1),
        (["", "", "", "wp", "service"], None, None, 1),
        (["", "", "wp", "", "workload"], None, None, 1),
        (["wp", "", "", "", "none"], None, None, 1),
    ];
    for ([ns, sa, svc, pod, waypoint_for], service, workload, problems) in table {
        let row = format!("ns {ns:?} sa {sa:?} svc {svc:?} pod {pod:?} for {waypoint_for}");
        let t = mesh(ns, sa, svc, pod, waypoint_for);
        assert_eq!(service_waypoint(&t).as_deref(), *service, "service: {row}");
        let w = super::workload(&t, "shop", "web-1").expect("workload");
        assert_eq!(
            w.waypoint.as_ref().map(hostname).as_deref(),
            *workload,
            "workload: {row}"
        );
        assert_eq!(t.problems.len(), *problems, "{row}: {:#?}", t.problems);
        for p in &t.problems {
            assert_eq!(
                p.field.as_deref(),
                Some("metadata.labels.istio.io/use-waypoint")
            );
        }
        // The waypoint's own pod and Service never get one.
        let own = super::workload(&t, "shop", "wp-1").expect("waypoint pod");
        assert_eq!(own.waypoint, None, "{row}");
        match &t.addresses["shop/wp.shop.svc.cluster.local"].r#type {
            Some(address::Type::Service(s)) => assert_eq!(s.waypoint, None, "{row}"),
            _ => panic!("not a service"),
        }
    }
}

#[test]
fn a_waypoint_without_its_service_is_not_used() {
    let yaml = mesh("wp", "", "", "", "all");
    assert!(service_waypoint(&yaml).is_some());
    let without = translated(
        &MESH
            .replace("NS_LABEL", "istio.io/use-waypoint: wp")
            .replace("SA_LABEL", "x: y")
            .replace("SVC_LABEL", "x: y")
            .replace("POD_LABEL", "x: y")
            .replace("FOR", "all")
            .replace(
                "metadata: {name: wp, namespace: shop}\nspec: {clusterIP: 10.96.0.9",
                "metadata: {name: other, namespace: shop}\nspec: {clusterIP: 10.96.0.9",
            ),
    );
    assert_eq!(service_waypoint(&without), None);
    assert_eq!(
        super::workload(&without, "shop", "web-1").unwrap().waypoint,
        None
    );
    assert_eq!(without.problems.len(), 1, "{:#?}", without.problems);
    assert!(
        without.problems[0]
            .message
            .contains("has no Service shop/wp")
    );
}

#[test]
fn waypoint_gateways_need_the_hbone_listener_and_a_known_traffic_type() {
    let gateway = |labels: &str, listeners: &str| {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: wp, namespace: shop, labels: {{{labels}}}}}\n\
             spec: {{gatewayClassName: istio-waypoint, listeners: [{listeners}]}}\n"
        );
        // Parsing validates: a bad waypoint is rejected with its problems, as the
        // directory source and `controller validate` do.
        let contents = parse_file(Path::new("test.yaml"), &yaml);
        if let Some(crate::resource::Resource::Gateway(g)) =
            contents.objects.first().map(|p| p.resource.as_ref())
        {
            assert!(gateway_problems(g).is_empty());
        }
        contents
            .errors
            .into_iter()
            .map(|e| e.field.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let good = "{name: mesh, port: 15008, protocol: HBONE}";
    let table: &[(&str, &str, &[&str])] = &[
        ("x: y", good, &[]),
        ("istio.io/waypoint-for: all", good, &[]),
        (
            "istio.io/waypoint-for: pods",
            good,
            &["metadata.labels.istio.io/waypoint-for"],
        ),
        (
            "x: y",
            "{name: mesh, port: 15009, protocol: HBONE}",
            &["spec.listeners[0].port"],
        ),
        (
            "x: y",
            "{name: mesh, port: 15008, protocol: TCP}",
            &["spec.listeners[0].protocol"],
        ),
        (
            "x: y",
            "{name: http, port: 80, protocol: HTTP}, {name: tunnel, port: 15008, protocol: HBONE}",
            &["spec.listeners[1].name"],
        ),
        (
            "x: y",
            "{name: http, port: 80, protocol: HTTP}",
            &["spec.listeners"],
        ),
        (
            "x: y",
            "{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: Some}}}",
            &["spec.listeners[0].allowedRoutes.namespaces.from"],
        ),
        (
            "x: y",
            "{name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {namespaces: {from: Selector}}}",
            &["spec.listeners[0].allowedRoutes.namespaces.selector"],
        ),
    ];
    for (labels, listeners, want) in table {
        let got = gateway(labels, listeners);
        assert_eq!(got, *want, "{labels} {listeners}");
    }
}

#[test]
fn allowed_routes_select_namespaces() {
    use crate::translate::waypoint::allowed_namespaces;
    let parse = |json: &str| allowed_namespaces(Some(&serde_json::from_str(json).unwrap()));
    assert_eq!(parse("{}"), Ok(AllowedNamespaces::Same));
    assert_eq!(
        parse(r#"{"namespaces":{"from":"All"}}"#),
        Ok(AllowedNamespaces::All)
    );
    let Ok(AllowedNamespaces::Selector(s)) = parse(
        r#"{"namespaces":{"from":"Selector","selector":{"matchLabels":{"team":"shop"},
            "matchExpressions":[{"key":"env","operator":"NotIn","values":["prod"]}]}}}"#,
    ) else {
        panic!("not a selector");
    };
    assert!(s.matches(&labels(&[("team", "shop")])));
    assert!(s.matches(&labels(&[("team", "shop"), ("env", "dev")])));
    assert!(!s.matches(&labels(&[("team", "shop"), ("env", "prod")])));
    assert!(!s.matches(&labels(&[("team", "ops")])));
    assert!(
        parse(r#"{"namespaces":{"from":"Selector","selector":{"matchExpressions":[{"key":"a","operator":"In"}]}}}"#)
            .is_err()
    );
}
