//! Weighted destinations, mirrors, rewrite, redirect, direct response, header ops.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

/// The first matching route for `path` (plus headers) in a `reviews` table.
fn first<'a>(t: &'a RouteTable, parts: &Parts) -> Matched<'a> {
    t.route(
        &svc("reviews.bookinfo.svc.cluster.local", 9080),
        parts,
        &Source::default(),
    )
    .expect("a rule matches")
}

#[test]
fn weighted_pick_follows_weights() {
    let t = reviews(
        r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
    - {destination: {host: reviews, subset: v3}, weight: 0}
"#,
    );
    let parts = req("GET", "/", &[]);
    let route = first(&t, &parts).route;
    let mut rng = StdRng::seed_from_u64(7);
    let mut counts = BTreeMap::new();
    for _ in 0..20_000 {
        let d = route.pick(&mut rng).expect("forward");
        *counts.entry(d.subset.clone().unwrap()).or_insert(0u32) += 1;
    }
    let v2 = counts.get("v2").copied().unwrap_or(0);
    // Expected 2000, standard deviation ~42: +-200 is ~5 sigma.
    assert!((1800..=2200).contains(&v2), "v2 picked {v2} times");
    assert_eq!(counts.get("v1").copied().unwrap_or(0) + v2, 20_000);
    assert!(!counts.contains_key("v3"));
}

#[test]
fn single_destination_without_weight_gets_everything() {
    let t = reviews("  - route: [{destination: {host: ratings.other, port: {number: 8080}}}]\n");
    let parts = req("GET", "/", &[]);
    let route = first(&t, &parts).route;
    let d = route.pick(&mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.weight),
        ("ratings.other.svc.cluster.local", Some(8080), 100)
    );
}

#[test]
fn mirrors_sampled_by_percentage() {
    let t = reviews(
        r#"
  - route: [{destination: {host: reviews}}]
    mirrors:
    - {destination: {host: shadow}, percentage: {value: 25}}
    - {destination: {host: always}}
"#,
    );
    let parts = req("GET", "/", &[]);
    let route = first(&t, &parts).route;
    let mut rng = StdRng::seed_from_u64(3);
    let (mut shadow, mut always) = (0u32, 0u32);
    for _ in 0..20_000 {
        for m in route.mirrored(&mut rng) {
            match m.host.as_str() {
                "shadow.bookinfo.svc.cluster.local" => shadow += 1,
                "always.bookinfo.svc.cluster.local" => always += 1,
                other => panic!("unexpected mirror {other}"),
            }
        }
    }
    assert_eq!(always, 20_000);
    // Expected 5000, sd ~61.
    assert!((4700..=5300).contains(&shadow), "shadow {shadow}");

    let t = reviews(
        "  - route: [{destination: {host: reviews}}]\n    mirror: {host: old}\n    mirrorPercent: 0\n",
    );
    let route = first(&t, &parts).route;
    assert_eq!(route.mirrors[0].percentage, 0.0);
    assert_eq!(route.mirrored(&mut rng).count(), 0);
}

fn rewritten(http: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let t = reviews(http);
    let mut parts = req("GET", uri, headers);
    let m = first(&t, &parts);
    m.route
        .rewrite
        .as_ref()
        .expect("rewrite")
        .apply(&m, &mut parts)
        .unwrap();
    parts
}

#[test]
fn rewrite_prefix_regex_authority() {
    let prefix = "  - match: [{uri: {prefix: /old/}}]\n    rewrite: {uri: /new/}\n    route: [{destination: {host: reviews}}]\n";
    assert_eq!(rewritten(prefix, "/old/a/b?q=1", &[]).uri, "/new/a/b?q=1");
    let exact = "  - match: [{uri: {exact: /login}}]\n    rewrite: {uri: /auth/login}\n    route: [{destination: {host: reviews}}]\n";
    assert_eq!(rewritten(exact, "/login", &[]).uri, "/auth/login");
    let no_match = "  - rewrite: {uri: /v2/}\n    route: [{destination: {host: reviews}}]\n";
    assert_eq!(rewritten(no_match, "/items", &[]).uri, "/v2/items");
    let regex = r#"
  - rewrite: {uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: '\2/instance/\1'}}
    route: [{destination: {host: reviews}}]
"#;
    assert_eq!(
        rewritten(regex, "/service/foo/v1/api?x=y", &[]).uri,
        "/v1/api/instance/foo?x=y"
    );
    let authority =
        "  - rewrite: {authority: new.example.com}\n    route: [{destination: {host: reviews}}]\n";
    let p = rewritten(authority, "/a", &[("host", "old.example.com")]);
    assert_eq!(p.headers["host"], "new.example.com");
    let p = rewritten(authority, "http://old.example.com/a", &[]);
    assert_eq!(p.uri, "http://new.example.com/a");
    // The URI carries the authority: no Host header is added.
    assert!(!p.headers.contains_key("host"));
    let p = rewritten(
        authority,
        "http://old.example.com/a",
        &[("host", "old.example.com")],
    );
    assert_eq!(p.uri.host(), Some("new.example.com"));
    assert_eq!(p.headers["host"], "new.example.com");
    let header = "  - headers: {request: {set: {':authority': h.example}}}\n    route: [{destination: {host: reviews}}]\n";
    assert_eq!(
        rewritten(header, "/a", &[("host", "x")]).headers["host"],
        "h.example"
    );
}

#[test]
fn redirect_location() {
    let cases = [
        (
            "{uri: /v2/login}",
            "http://a.com/login?x=1",
            80,
            "http://a.com/v2/login?x=1",
            301,
        ),
        (
            "{uri: '/v2?y=2', redirectCode: 302}",
            "/login?x=1",
            80,
            "http://h.example:8080/v2?y=2",
            302,
        ),
        ("{authority: b.com}", "/p", 80, "http://b.com/p", 301),
        (
            "{scheme: https}",
            "http://a.com:80/p",
            80,
            "https://a.com/p",
            301,
        ),
        (
            "{scheme: https, port: 8443}",
            "http://a.com:80/p",
            80,
            "https://a.com:8443/p",
            301,
        ),
        (
            "{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}",
            "/p",
            80,
            "https://h.example/p",
            301,
        ),
        (
            "{authority: b.com, derivePort: FROM_REQUEST_PORT}",
            "/p",
            9080,
            "http://b.com:9080/p",
            301,
        ),
    ];
    for (redirect, uri, port, location, code) in cases {
        let t = reviews(&format!("  - redirect: {redirect}\n"));
        let parts = req("GET", uri, &[("host", "h.example:8080")]);
        let m = first(&t, &parts);
        let Action::Redirect(r) = &m.route.action else {
            panic!("redirect")
        };
        let resp = r.response(&parts, port);
        assert_eq!(resp.status().as_u16(), code, "{redirect}");
        assert_eq!(resp.headers()["location"], location, "{redirect}");
    }
}

#[test]
fn direct_response_bodies() {
    let cases = [
        (
            "{status: 503, body: {string: unavailable}}",
            503,
            &b"unavailable"[..],
        ),
        ("{status: 200, body: {bytes: aGk/Pz8=}}", 200, &b"hi???"[..]),
        ("{status: 204}", 204, &b""[..]),
    ];
    for (direct, status, body) in cases {
        let t = reviews(&format!("  - directResponse: {direct}\n"));
        let parts = req("GET", "/", &[]);
        let Action::DirectResponse(d) = &first(&t, &parts).route.action else {
            panic!("direct response")
        };
        let resp = d.response();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.body().as_ref(), body);
    }
}

#[test]
fn header_operations() {
    let t = reviews(
        r#"
  - headers:
      request: {set: {x-set: one}, add: {x-add: two}, remove: [x-gone]}
      response: {set: {x-resp: r}}
    route:
    - destination: {host: reviews}
      headers: {request: {set: {x-dest: d}}}
"#,
    );
    let parts = req("GET", "/", &[]);
    let route = first(&t, &parts).route;
    let mut h = http::HeaderMap::new();
    h.insert("x-set", "old".parse().unwrap());
    h.insert("x-add", "old".parse().unwrap());
    h.insert("x-gone", "old".parse().unwrap());
    route.request_headers.apply(&mut h);
    assert_eq!(h["x-set"], "one");
    let added: Vec<_> = h.get_all("x-add").iter().collect();
    assert_eq!(added, ["old", "two"]);
    assert!(!h.contains_key("x-gone"));
    let d = route.pick(&mut StdRng::seed_from_u64(0)).unwrap();
    d.request_headers.apply(&mut h);
    assert_eq!(h["x-dest"], "d");
    let mut resp = http::HeaderMap::new();
    route.response_headers.apply(&mut resp);
    assert_eq!(resp["x-resp"], "r");
}
