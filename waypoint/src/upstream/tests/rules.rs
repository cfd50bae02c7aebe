//! Compiling, host resolution, lookup and merging, subsets and the policy merge.

use std::time::Duration;

use super::{arc, compiled, endpoint, try_compile};
use crate::upstream::{DestinationRules, Host, LbPolicy, OutlierConfig, PoolLimits};

/// Hosts read as VirtualService destinations are, so a route's destination always
/// finds its rule (Istio itself expands only names without a dot).
#[test]
fn hosts_resolve_as_route_destinations() {
    let cases = [
        (
            "reviews",
            Host::Exact("reviews.bookinfo.svc.cluster.local".into()),
        ),
        (
            "reviews.other",
            Host::Exact("reviews.other.svc.cluster.local".into()),
        ),
        (
            "reviews.other.svc",
            Host::Exact("reviews.other.svc.cluster.local".into()),
        ),
        ("api.example.com", Host::Exact("api.example.com".into())),
        (
            "Reviews.Prod.svc.cluster.local",
            Host::Exact("reviews.prod.svc.cluster.local".into()),
        ),
        ("*.example.com", Host::Wildcard(".example.com".into())),
        ("*", Host::Wildcard(String::new())),
    ];
    for (host, want) in cases {
        let rule = compiled(&format!(
            "host: \"{host}\"\ntrafficPolicy:\n  loadBalancer:\n    simple: RANDOM"
        ));
        assert_eq!(rule.host(), &want, "host {host}");
    }
}

#[test]
fn lookup_prefers_exact_then_most_specific_wildcard() {
    let rules = DestinationRules::new(vec![
        arc("ns", "all", "host: \"*\"\nsubsets:\n- name: all"),
        arc("ns", "wide", "host: \"*.com\"\nsubsets:\n- name: wide"),
        arc(
            "ns",
            "narrow",
            "host: \"*.example.com\"\nsubsets:\n- name: narrow",
        ),
        arc(
            "ns",
            "exact",
            "host: api.example.com\nsubsets:\n- name: exact",
        ),
        arc("ns", "short", "host: reviews\nsubsets:\n- name: short"),
    ]);
    let cases = [
        ("api.example.com", Some("exact")),
        ("API.Example.com", Some("exact")),
        ("web.example.com", Some("narrow")),
        ("a.b.example.com", Some("narrow")),
        ("example.com", Some("wide")),
        ("foo.org", Some("all")),
        ("reviews.ns.svc.cluster.local", Some("short")),
    ];
    for (host, want) in cases {
        let got = rules.lookup(host).map(|r| r.name());
        assert_eq!(got, want, "lookup {host}");
    }
    let no_catch_all =
        DestinationRules::new(vec![arc("ns", "exact", "host: a.b\nsubsets:\n- name: x")]);
    assert!(no_catch_all.lookup("c.d").is_none());
}

#[test]
fn rules_for_one_host_merge_in_namespace_name_order() {
    let second = arc(
        "ns",
        "b-second",
        "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    simple: ROUND_ROBIN\nsubsets:\n\
         - name: v1\n  labels: {version: other}\n- name: v2\n  labels: {version: v2}",
    );
    let first = arc(
        "ns",
        "a-first",
        "host: reviews.ns.svc.cluster.local\nsubsets:\n- name: v1\n  labels: {version: v1}",
    );
    let selected = arc(
        "ns",
        "0-selector",
        "host: reviews\nworkloadSelector:\n  matchLabels: {app: x}\nexportTo: [\".\"]\n\
         trafficPolicy:\n  loadBalancer:\n    simple: RANDOM\nsubsets:\n- name: v3",
    );
    let rules = DestinationRules::new(vec![second, selected, first]);
    assert_eq!(rules.len(), 1);
    let rule = rules
        .lookup("reviews.ns.svc.cluster.local")
        .expect("merged rule");
    assert_eq!(rule.name(), "a-first");
    let names: Vec<_> = rule.subsets().iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        ["v1", "v2"],
        "duplicate v1 from the later rule is dropped"
    );
    assert_eq!(rule.subset("v1").unwrap().labels()["version"], "v1");
    // a-first has no top-level policy, so b-second's is used.
    let policy = rule.traffic_policy(None, 9080).unwrap();
    assert_eq!(policy.load_balancer, LbPolicy::RoundRobin);
}

#[test]
fn subsets_match_by_labels() {
    let rule = compiled(
        "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n\
         - name: v1-blue\n  labels: {version: v1, color: blue}\n- name: any",
    );
    let cases = [
        ("v1", &[("version", "v1")][..], true),
        ("v1", &[("version", "v1"), ("app", "reviews")][..], true),
        ("v1", &[("version", "v2")][..], false),
        ("v1", &[][..], false),
        ("v1-blue", &[("version", "v1")][..], false),
        ("v1-blue", &[("version", "v1"), ("color", "blue")][..], true),
        ("any", &[][..], true),
    ];
    for (subset, labels, want) in cases {
        let ep = endpoint(0, labels);
        let got = rule
            .subset(subset)
            .expect("subset")
            .matches(&ep.workload.labels);
        assert_eq!(got, want, "subset {subset} labels {labels:?}");
    }
    assert!(rule.subset("v9").is_none());
}

#[test]
fn traffic_policy_merges_subset_port_and_top_level() {
    let rule = compiled(
        "host: reviews
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool:
    tcp: {maxConnections: 100}
  outlierDetection: {consecutive5xxErrors: 3}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer: {simple: ROUND_ROBIN}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    portLevelSettings:
    - port: {number: 9080}
      connectionPool:
        http: {http2MaxRequests: 5}",
    );
    let pool100 = PoolLimits {
        max_connections: 100,
        ..PoolLimits::default()
    };
    let pool5 = PoolLimits {
        max_requests: 5,
        ..PoolLimits::default()
    };
    let od3 = Some(OutlierConfig {
        consecutive_5xx: Some(3),
        ..OutlierConfig::default()
    });
    let cases = [
        (None, 80, LbPolicy::Random, &pool100, &od3),
        (
            None,
            9080,
            LbPolicy::RoundRobin,
            &PoolLimits::default(),
            &None,
        ),
        (Some("v1"), 80, LbPolicy::LeastRequest, &pool100, &od3),
        (
            Some("v1"),
            9080,
            LbPolicy::LeastRequest,
            &PoolLimits::default(),
            &None,
        ),
        (Some("v2"), 80, LbPolicy::Random, &pool100, &od3),
        (Some("v2"), 9080, LbPolicy::LeastRequest, &pool5, &None),
    ];
    for (subset, port, lb, pool, outlier) in cases {
        let p = rule.traffic_policy(subset, port).expect("known subset");
        assert_eq!(p.load_balancer, lb, "{subset:?}:{port} lb");
        assert_eq!(&p.connection_pool, pool, "{subset:?}:{port} pool");
        assert_eq!(&p.outlier_detection, outlier, "{subset:?}:{port} outlier");
    }
    assert!(rule.traffic_policy(Some("v3"), 80).is_none());
}

#[test]
fn defaults_follow_istio() {
    let od = |spec: &str| {
        compiled(&format!(
            "host: r\ntrafficPolicy:\n  outlierDetection: {spec}"
        ))
        .traffic_policy(None, 80)
        .unwrap()
        .outlier_detection
        .unwrap()
    };
    let d = od("{interval: 1s}");
    assert_eq!((d.consecutive_5xx, d.consecutive_gateway), (Some(5), None));
    assert_eq!((d.max_ejection_percent, d.min_health_percent), (10, 0));
    assert_eq!(d.interval, Duration::from_secs(1));
    assert_eq!(d.base_ejection_time, Duration::from_secs(30));
    let d = od("{consecutiveErrors: 7}");
    assert_eq!((d.consecutive_5xx, d.consecutive_gateway), (None, Some(7)));
    let d = od("{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 0}");
    assert_eq!((d.consecutive_5xx, d.consecutive_gateway), (None, Some(2)));
    assert_eq!(
        d.max_ejection_percent, 10,
        "0 keeps the default, as in Istio"
    );
    let d = od("{baseEjectionTime: 10m}");
    assert_eq!(d.max_ejection_time, Duration::from_secs(600));

    let pool = compiled(
        "host: r\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 0}\n    \
         http: {http2MaxRequests: 0, maxRequestsPerConnection: 1, idleTimeout: 5s}",
    )
    .traffic_policy(None, 80)
    .unwrap()
    .connection_pool;
    assert_eq!(
        (pool.max_connections, pool.max_requests),
        (u32::MAX, u32::MAX)
    );
    assert_eq!(pool.max_requests_per_connection, Some(1));
    assert_eq!(pool.idle_timeout, Duration::from_secs(5));
    let none = compiled("host: r\nsubsets:\n- name: a")
        .traffic_policy(None, 80)
        .unwrap();
    assert_eq!(none.load_balancer, LbPolicy::LeastRequest);
    assert_eq!(none.outlier_detection, None);
}

#[test]
fn problems_name_object_and_field() {
    let cases = [
        (
            "trafficPolicy:\n  loadBalancer: {simple: RANDOM}",
            "spec.host",
        ),
        (
            "host: r\nsubsets:\n- name: v1\n  trafficPolicy:\n    tls: {mode: SIMPLE}",
            "spec.subsets[0].trafficPolicy.tls.mode",
        ),
        (
            "host: r\ntrafficPolicy:\n  tunnel: {targetHost: proxy.example.com, targetPort: 8080}",
            "spec.trafficPolicy.tunnel",
        ),
        (
            "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      useSourceIp: true\n      maglev: {tableSize: 1000}",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        ),
        (
            "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    outlierDetection: {interval: 0s}",
            "spec.trafficPolicy.portLevelSettings[0].outlierDetection.interval",
        ),
        (
            "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpCookie: {name: \"a b\", ttl: 1s}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        ),
        (
            "host: r\nsubsets:\n- name: v1\n- name: v1",
            "spec.subsets[1].name",
        ),
    ];
    for (spec, field) in cases {
        let problems = try_compile("bookinfo", "bad", spec).expect_err(spec);
        assert!(
            problems
                .iter()
                .any(|p| p.object == "DestinationRule bookinfo/bad" && p.field == field),
            "{spec}: want {field}, got {problems:?}"
        );
    }
    assert!(
        try_compile(
            "bookinfo",
            "ok",
            "host: r\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}"
        )
        .is_ok()
    );
}
