//! Load balancing and consistent-hash keys.

use std::collections::HashMap;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{compiled, endpoints};
use crate::context::Source;
use crate::upstream::{
    CookieKey, HashKey, HashOutcome, HashTable, LbPolicy, LoadBalancer, Pick, hash_key,
};

fn lb_of(spec: &str) -> LoadBalancer {
    LoadBalancer::new(
        compiled(spec)
            .traffic_policy(None, 80)
            .unwrap()
            .load_balancer,
    )
}

fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn source(ip: Option<&str>) -> Source {
    Source {
        ip: ip.map(|i| i.parse().unwrap()),
        ..Source::default()
    }
}

#[test]
fn round_robin_spreads_evenly_in_order() {
    let lb = lb_of("host: r\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN}");
    let eps = endpoints(3);
    let mut rng = StdRng::seed_from_u64(1);
    let order: Vec<_> = (0..6)
        .map(|_| lb.pick(&eps, None, &mut rng).index().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    let mut counts = [0; 3];
    for _ in 0..300 {
        counts[lb.pick(&eps, None, &mut rng).index().unwrap()] += 1;
    }
    assert_eq!(counts, [100, 100, 100]);
}

#[test]
fn random_is_uniform() {
    let lb = lb_of("host: r\ntrafficPolicy:\n  loadBalancer: {simple: RANDOM}");
    let eps = endpoints(4);
    let mut rng = StdRng::seed_from_u64(7);
    let mut counts = [0u32; 4];
    for _ in 0..40_000 {
        counts[lb.pick(&eps, None, &mut rng).index().unwrap()] += 1;
    }
    // Expected 10000 each, standard deviation about 87: 5% is more than 5 deviations.
    for c in counts {
        assert!((9_500..=10_500).contains(&c), "{counts:?}");
    }
}

#[test]
fn least_request_prefers_idle_endpoints() {
    let lb = lb_of("host: r\ntrafficPolicy:\n  loadBalancer: {simple: LEAST_CONN}");
    assert_eq!(lb.policy(), &LbPolicy::LeastRequest);
    let eps = endpoints(2);
    let mut rng = StdRng::seed_from_u64(3);
    // Five requests in flight on pod-0 (a one-endpoint list always picks it).
    let busy: Vec<Pick> = (0..5).map(|_| lb.pick(&eps[..1], None, &mut rng)).collect();
    assert_eq!(lb.active_requests("pod-0"), 5);
    for _ in 0..100 {
        let pick = lb.pick(&eps, None, &mut rng);
        assert_eq!(
            pick.index(),
            Some(1),
            "the idle endpoint wins every comparison"
        );
    }
    drop(busy);
    assert_eq!(lb.active_requests("pod-0"), 0, "guards release on drop");
    let eps3 = endpoints(3);
    let held: Vec<Pick> = (0..30).map(|_| lb.pick(&eps3, None, &mut rng)).collect();
    let mut counts = [0; 3];
    for p in &held {
        counts[p.index().unwrap()] += 1;
    }
    // Holding every pick, P2C keeps the loads close (random picks would often be off
    // by more than 3).
    assert!(counts.iter().all(|c| (8..=12).contains(c)), "{counts:?}");
}

#[test]
fn passthrough_and_no_endpoints() {
    let mut rng = StdRng::seed_from_u64(0);
    let pass = lb_of("host: r\ntrafficPolicy:\n  loadBalancer: {simple: PASSTHROUGH}");
    assert!(matches!(
        pass.pick(&endpoints(2), None, &mut rng),
        Pick::Passthrough
    ));
    let rr = lb_of("host: r\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN}");
    assert!(matches!(rr.pick(&[], None, &mut rng), Pick::None));
    let hash = LoadBalancer::new(LbPolicy::ConsistentHash(crate::upstream::ConsistentHash {
        key: HashKey::SourceIp,
        table: HashTable::Ring { minimum_size: 64 },
    }));
    assert!(matches!(hash.pick(&[], Some(1), &mut rng), Pick::None));
    assert!(
        hash.pick(&endpoints(3), None, &mut rng).index().is_some(),
        "random hash when missing"
    );
}

#[test]
fn hash_keys_come_from_the_request() {
    let ip = source(Some("10.1.2.3"));
    let header = HashKey::Header(http::HeaderName::from_static("x-user"));
    let query = HashKey::QueryParameter("user".into());
    let key =
        |k: &HashKey, uri: &str, h: &[(&str, &str)], s: &Source| hash_key(k, &request(uri, h), s);
    let alice = key(&header, "/", &[("x-user", "alice")], &ip);
    assert!(matches!(alice, HashOutcome::Key(_)));
    assert_eq!(
        alice,
        key(&header, "/other", &[("x-user", "alice")], &source(None))
    );
    assert_ne!(alice, key(&header, "/", &[("x-user", "bob")], &ip));
    assert_ne!(
        alice,
        key(&header, "/", &[("x-user", "alice"), ("x-user", "bob")], &ip)
    );
    assert_eq!(key(&header, "/", &[], &ip), HashOutcome::Missing);
    let q = key(&query, "/p?a=1&user=bob&user=eve", &[], &ip);
    assert_eq!(q, key(&query, "/x?user=bob", &[], &ip));
    assert_ne!(q, key(&query, "/x?user=eve", &[], &ip));
    assert_eq!(
        key(&query, "/x?username=bob", &[], &ip),
        HashOutcome::Missing
    );
    let src = key(&HashKey::SourceIp, "/", &[], &ip);
    assert_eq!(src, key(&HashKey::SourceIp, "/y", &[("x-user", "z")], &ip));
    assert_ne!(
        src,
        key(&HashKey::SourceIp, "/", &[], &source(Some("10.1.2.4")))
    );
    assert_eq!(
        key(&HashKey::SourceIp, "/", &[], &source(None)),
        HashOutcome::Missing
    );
}

#[test]
fn missing_cookie_is_generated_when_a_ttl_is_set() {
    let lb = compiled(
        "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      \
         httpCookie: {name: user, path: /, ttl: 3600s, attributes: [{name: SameSite, value: Strict}]}",
    )
    .traffic_policy(None, 80)
    .unwrap()
    .load_balancer;
    let LbPolicy::ConsistentHash(ch) = lb else {
        panic!("{lb:?}")
    };
    let ip = source(Some("10.1.2.3"));
    let HashOutcome::NewCookie { key, set_cookie } = hash_key(&ch.key, &request("/", &[]), &ip)
    else {
        panic!("no cookie generated")
    };
    let text = set_cookie.to_str().unwrap();
    let value = text
        .strip_prefix("user=\"")
        .and_then(|r| r.split_once('"'))
        .map(|(v, _)| v)
        .expect(text);
    assert_eq!(value.len(), 16);
    assert_eq!(
        text,
        format!("user=\"{value}\"; Max-Age=3600; Path=/; HttpOnly; SameSite=Strict")
    );
    // The next request carries the cookie and hashes the same.
    let cookie = format!("theme=dark; user={value}");
    assert_eq!(
        hash_key(&ch.key, &request("/", &[("cookie", &cookie)]), &ip),
        HashOutcome::Key(key)
    );
    let quoted = format!("user=\"{value}\"");
    assert_eq!(
        hash_key(&ch.key, &request("/", &[("cookie", &quoted)]), &ip),
        HashOutcome::Key(key)
    );

    let no_ttl = HashKey::Cookie(CookieKey {
        name: "user".into(),
        path: String::new(),
        ttl: None,
        attributes: vec![],
    });
    assert_eq!(
        hash_key(&no_ttl, &request("/", &[]), &ip),
        HashOutcome::Missing
    );
    let session = HashKey::Cookie(CookieKey {
        ttl: Some(Duration::ZERO),
        ..CookieKey {
            name: "s".into(),
            path: String::new(),
            ttl: None,
            attributes: vec![],
        }
    });
    let HashOutcome::NewCookie { set_cookie, .. } = hash_key(&session, &request("/", &[]), &ip)
    else {
        panic!("no session cookie")
    };
    assert!(
        set_cookie.to_str().unwrap().ends_with("\"; HttpOnly"),
        "{set_cookie:?}"
    );
}

/// Which endpoint uid each of `keys` hashes to.
fn assignment(
    lb: &LoadBalancer,
    eps: &[crate::context::Endpoint],
    keys: u64,
) -> HashMap<u64, String> {
    let mut rng = StdRng::seed_from_u64(0);
    let header = HashKey::Header(http::HeaderName::from_static("x-user"));
    (0..keys)
        .map(|k| {
            let parts = request("/", &[("x-user", &format!("user-{k}"))]);
            let hash = hash_key(&header, &parts, &Source::default()).hash();
            let i = lb.pick(eps, hash, &mut rng).index().unwrap();
            (k, eps[i].uid.to_string())
        })
        .collect()
}

#[test]
fn consistent_hash_is_sticky_and_moves_few_keys() {
    let tables = [
        ("ring", "ringHash: {minimumRingSize: 1024}", true),
        ("maglev", "maglev: {tableSize: 65537}", false),
    ];
    for (name, table, exact) in tables {
        let spec = format!(
            "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      \
             httpHeaderName: x-user\n      {table}"
        );
        let eps = endpoints(10);
        let first = assignment(&lb_of(&spec), &eps, 2000);
        // Sticky: again, and on another load balancer (another replica).
        assert_eq!(first, assignment(&lb_of(&spec), &eps, 2000), "{name}");
        let lb = lb_of(&spec);
        assert_eq!(first, assignment(&lb, &eps, 2000), "{name}");
        let per_endpoint = first.values().fold(HashMap::new(), |mut m, uid| {
            *m.entry(uid.clone()).or_insert(0) += 1;
            m
        });
        assert_eq!(per_endpoint.len(), 10, "{name}: every endpoint gets keys");
        // Remove pod-3 (the same state object sees the new list).
        let fewer: Vec<_> = eps.iter().filter(|e| &*e.uid != "pod-3").cloned().collect();
        let after = assignment(&lb, &fewer, 2000);
        let moved = first.iter().filter(|(k, uid)| after[*k] != **uid).count();
        let on_removed = per_endpoint["pod-3"];
        if exact {
            assert_eq!(
                moved, on_removed,
                "{name}: only the removed endpoint's keys move"
            );
        }
        assert!(moved >= on_removed, "{name}");
        assert!(
            moved <= 2000 * 3 / 20,
            "{name}: {moved} of 2000 keys moved, at most ~1/N expected"
        );
    }
}
