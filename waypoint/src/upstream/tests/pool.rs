//! Connection pool admission.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::compiled;
use crate::upstream::{ConnectionPool, Limit, Overflow, PoolLimits};

fn pool_of(spec: &str) -> Arc<ConnectionPool> {
    ConnectionPool::new(
        compiled(spec)
            .traffic_policy(None, 80)
            .unwrap()
            .connection_pool,
    )
}

#[test]
fn each_limit_overflows_and_permits_release_on_drop() {
    let pool = pool_of(
        "host: r\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 2}\n    \
         http: {http2MaxRequests: 3, http1MaxPendingRequests: 1, maxRetries: 1}",
    );
    type Try = fn(&Arc<ConnectionPool>) -> Result<(), Overflow>;
    let cases: [(Limit, u32, Try); 4] = [
        (Limit::Connections, 2, |p| p.try_connection().map(drop)),
        (Limit::Requests, 3, |p| p.try_request().map(drop)),
        (Limit::PendingRequests, 1, |p| p.try_pending().map(drop)),
        (Limit::Retries, 1, |p| p.try_retry().map(drop)),
    ];
    for (limit, max, _) in &cases {
        // Hold `max` permits of this kind, then one more overflows.
        let mut held = Vec::new();
        for _ in 0..*max {
            held.push(match limit {
                Limit::Connections => {
                    Box::new(pool.try_connection().unwrap()) as Box<dyn std::fmt::Debug>
                }
                Limit::Requests => Box::new(pool.try_request().unwrap()),
                Limit::PendingRequests => Box::new(pool.try_pending().unwrap()),
                Limit::Retries => Box::new(pool.try_retry().unwrap()),
            });
        }
        assert_eq!(pool.in_use(*limit), *max);
        let over = match limit {
            Limit::Connections => pool.try_connection().map(drop),
            Limit::Requests => pool.try_request().map(drop),
            Limit::PendingRequests => pool.try_pending().map(drop),
            Limit::Retries => pool.try_retry().map(drop),
        };
        assert_eq!(
            over,
            Err(Overflow {
                limit: *limit,
                max: *max
            })
        );
        held.pop();
        assert_eq!(pool.in_use(*limit), max - 1, "{limit:?} released on drop");
        drop(held);
        assert_eq!(pool.in_use(*limit), 0);
    }
    // A permit that is only taken and dropped never accumulates.
    for (limit, _, try_one) in cases {
        for _ in 0..10 {
            try_one(&pool).unwrap();
        }
        assert_eq!(pool.in_use(limit), 0);
    }
    assert_eq!(Overflow::RESPONSE_FLAG, "UO");
}

#[test]
fn unset_limits_are_effectively_unlimited() {
    let pool = ConnectionPool::new(PoolLimits::default());
    let held: Vec<_> = (0..5000).map(|_| pool.try_request().unwrap()).collect();
    let retries: Vec<_> = (0..5000).map(|_| pool.try_retry().unwrap()).collect();
    assert_eq!(pool.in_use(Limit::Requests), 5000);
    assert_eq!(held.len() + retries.len(), 10_000);
}

#[test]
fn max_requests_per_connection_retires_the_connection() {
    let pool = pool_of(
        "host: r\ntrafficPolicy:\n  connectionPool:\n    http: {maxRequestsPerConnection: 2}",
    );
    let mut conn = pool.try_connection().unwrap();
    assert!(!conn.is_exhausted());
    assert!(
        conn.start_request(),
        "one request carried, one more allowed"
    );
    assert!(!conn.start_request(), "second request is the last");
    assert!(conn.is_exhausted());
    assert_eq!(conn.requests(), 2);
}

#[test]
fn concurrent_admission_never_exceeds_the_limit() {
    let pool =
        pool_of("host: r\ntrafficPolicy:\n  connectionPool:\n    http: {http2MaxRequests: 3}");
    let peak = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (pool, peak) = (pool.clone(), peak.clone());
            std::thread::spawn(move || {
                let mut admitted = 0;
                for _ in 0..2000 {
                    if let Ok(permit) = pool.try_request() {
                        admitted += 1;
                        peak.fetch_max(pool.in_use(Limit::Requests), Ordering::Relaxed);
                        drop(permit);
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted > 0);
    assert!(peak.load(Ordering::Relaxed) <= 3);
    assert_eq!(pool.in_use(Limit::Requests), 0);
}

#[test]
fn clusters_share_state_until_the_policy_changes() {
    use crate::upstream::{ClusterKey, Clusters};
    let rule = compiled(
        "host: r\ntrafficPolicy:\n  connectionPool:\n    http: {http2MaxRequests: 1}\n\
         subsets:\n- name: v1\n  trafficPolicy:\n    connectionPool:\n      http: {http2MaxRequests: 2}",
    );
    let now = std::time::Instant::now();
    let clusters = Clusters::new();
    let key = |subset: Option<&str>| ClusterKey {
        host: "r.bookinfo.svc.cluster.local".into(),
        subset: subset.map(Into::into),
        port: 80,
    };
    let top = rule.traffic_policy(None, 80).unwrap();
    let a = clusters.get(&key(None), &top, now);
    let _held = a.pool.try_request().unwrap();
    let b = clusters.get(&key(None), &top, now);
    assert!(Arc::ptr_eq(&a, &b));
    assert!(
        b.pool.try_request().is_err(),
        "the limit is shared by the cluster"
    );
    let v1 = clusters.get(
        &key(Some("v1")),
        &rule.traffic_policy(Some("v1"), 80).unwrap(),
        now,
    );
    assert!(
        v1.pool.try_request().is_ok(),
        "another cluster has its own counters"
    );
    assert_eq!(clusters.len(), 2);
    let changed = rule.traffic_policy(Some("v1"), 80).unwrap();
    let c = clusters.get(&key(None), &changed, now);
    assert!(!Arc::ptr_eq(&a, &c), "a changed policy starts fresh state");
    assert_eq!(c.pool.limits().max_requests, 2);
    clusters.retain(|k| k.subset.is_some());
    assert_eq!(clusters.len(), 1);
}

#[test]
fn clusters_of_services_and_workloads_that_left_the_state_are_dropped() {
    use dataplane::state::{Service, Workload, WorkloadState};

    use crate::upstream::{ClusterKey, Clusters, TrafficPolicy};

    let service = |name: &str| Service {
        name: name.into(),
        namespace: "shop".into(),
        hostname: format!("{name}.shop.svc.cluster.local"),
        vips: vec![],
        ports: [(80, 8080)].into_iter().collect(),
        waypoint: None,
    };
    let pod = Workload::pod("cart-1", "shop", "cart", "10.244.0.7".parse().unwrap()).unwrap();
    let key = |host: &str, subset: Option<&str>| ClusterKey {
        host: host.into(),
        subset: subset.map(str::to_owned),
        port: 80,
    };
    let clusters = Clusters::new();
    let now = std::time::Instant::now();
    let policy = TrafficPolicy::default();
    for k in [
        key("reviews.shop.svc.cluster.local", None),
        key("reviews.shop.svc.cluster.local", Some("v1")),
        key("ratings.shop.svc.cluster.local", None),
        key("10.244.0.7", None),
        key("10.244.0.8", None),
    ] {
        let _ = clusters.get(&k, &policy, now);
    }
    let before = WorkloadState::new(
        vec![pod.clone()],
        vec![service("reviews"), service("ratings")],
    )
    .unwrap();
    clusters.retain_known(&before);
    assert_eq!(
        clusters.len(),
        4,
        "only the unknown workload's cluster goes"
    );
    let after = WorkloadState::new(vec![], vec![service("reviews")]).unwrap();
    clusters.retain_known(&after);
    assert_eq!(clusters.len(), 2, "reviews and its subset stay");
}
