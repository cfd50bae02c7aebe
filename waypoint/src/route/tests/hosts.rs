//! Host selection: exact vs wildcard vs short names, ties, gateways, workload IPs.

use super::*;

fn vs(ns: &str, name: &str, hosts: &str, extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  hosts: {hosts}\n{extra}  http:\n  - name: {ns}/{name}\n    \
         route: [{{destination: {{host: reviews}}}}]\n"
    )
}

fn owner(t: &RouteTable, dest: &Destination) -> Option<String> {
    t.route(dest, &req("GET", "/", &[]), &Source::default())
        .map(|m| m.route.name.clone())
}

#[test]
fn exact_beats_wildcard_longest_wildcard_first() {
    let t = table(&[
        &vs("a", "wide", "['*.svc.cluster.local']", ""),
        &vs("a", "narrow", "['*.bookinfo.svc.cluster.local']", ""),
        &vs("z", "exact", "[reviews.bookinfo.svc.cluster.local]", ""),
    ]);
    let cases = [
        ("reviews.bookinfo.svc.cluster.local", Some("z/exact")),
        ("ratings.bookinfo.svc.cluster.local", Some("a/narrow")),
        ("ratings.other.svc.cluster.local", Some("a/wide")),
        ("example.com", None),
    ];
    for (host, want) in cases {
        assert_eq!(owner(&t, &svc(host, 80)).as_deref(), want, "{host}");
    }
}

#[test]
fn short_names_expand_in_the_vs_namespace() {
    let t = table(&[
        &vs("bookinfo", "short", "[reviews]", ""),
        &vs("other", "dotted", "[ratings.bookinfo]", ""),
        &vs("other", "svc", "[details.bookinfo.svc]", ""),
    ]);
    let cases = [
        ("reviews.bookinfo.svc.cluster.local", Some("bookinfo/short")),
        ("reviews.other.svc.cluster.local", None),
        ("ratings.bookinfo.svc.cluster.local", Some("other/dotted")),
        ("ratings.other.svc.cluster.local", None),
        ("details.bookinfo.svc.cluster.local", Some("other/svc")),
    ];
    for (host, want) in cases {
        assert_eq!(owner(&t, &svc(host, 80)).as_deref(), want, "{host}");
    }
    let dest = &compiled(&vs("bookinfo", "x", "[a]", "")).rules[0].route;
    let Action::Forward(f) = &dest.action else {
        panic!("forward")
    };
    assert_eq!(f.destinations[0].host, "reviews.bookinfo.svc.cluster.local");
}

#[test]
fn one_virtual_service_per_host_by_namespace_then_name() {
    let t = table(&[
        &vs("b", "a", "[reviews.bookinfo.svc.cluster.local]", ""),
        &vs("a", "z", "[reviews.bookinfo.svc.cluster.local]", ""),
        &vs("a", "y", "['*.cluster.local']", ""),
        &vs("a", "x", "['*.cluster.local']", ""),
    ]);
    assert_eq!(
        owner(&t, &svc("reviews.bookinfo.svc.cluster.local", 80)).as_deref(),
        Some("a/z")
    );
    assert_eq!(
        owner(&t, &svc("ratings.bookinfo.svc.cluster.local", 80)).as_deref(),
        Some("a/x")
    );
}

#[test]
fn owner_without_matching_rule_does_not_fall_through() {
    let t = table(&[
        &vs("a", "wild", "['*.bookinfo.svc.cluster.local']", ""),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: exact, namespace: bookinfo}\n\
         spec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {exact: /only}}]\n    \
         route: [{destination: {host: reviews}}]\n",
    ]);
    assert_eq!(
        owner(&t, &svc("reviews.bookinfo.svc.cluster.local", 80)),
        None
    );
}

#[test]
fn gateway_only_virtual_service_applies_to_nothing() {
    let gw = compiled(&vs(
        "a",
        "gw",
        "[reviews.bookinfo.svc.cluster.local]",
        "  gateways: [istio-system/ingress]\n",
    ));
    assert!(!gw.applies_to_mesh());
    let both = vs(
        "a",
        "both",
        "[reviews.bookinfo.svc.cluster.local]",
        "  gateways: [istio-system/ingress, mesh]\n",
    );
    let t = RouteTable::new(vec![Arc::new(gw), Arc::new(compiled(&both))]);
    assert_eq!(
        owner(&t, &svc("reviews.bookinfo.svc.cluster.local", 80)).as_deref(),
        Some("a/both")
    );
}

#[test]
fn workload_traffic_matches_ip_hosts() {
    let t = table(&[&vs("a", "ip", "['10.0.0.7']", "")]);
    let to = |ip: [u8; 4]| Destination {
        service: None,
        target: SocketAddr::from((ip, 8080)),
    };
    assert_eq!(owner(&t, &to([10, 0, 0, 7])).as_deref(), Some("a/ip"));
    assert_eq!(owner(&t, &to([10, 0, 0, 8])), None);
}
