//! Match conditions, first-match-wins, no match.

use super::*;

/// Request headers of a test case.
type HeaderList<'a> = &'a [(&'a str, &'a str)];

#[test]
fn uri_matches() {
    let t = reviews(
        r#"
  - name: exact
    match: [{uri: {exact: /api}}]
    route: [{destination: {host: reviews}}]
  - name: prefix
    match: [{uri: {prefix: /static/}}]
    route: [{destination: {host: reviews}}]
  - name: regex
    match: [{uri: {regex: "/v[0-9]+/items"}}]
    route: [{destination: {host: reviews}}]
  - name: nocase
    match: [{uri: {prefix: /Admin}, ignoreUriCase: true}]
    route: [{destination: {host: reviews}}]
"#,
    );
    let cases = [
        ("/api", Some("exact")),
        ("/api?x=1", Some("exact")),
        ("/api/", None),
        ("/static/a.css", Some("prefix")),
        ("/static", None),
        ("/v12/items", Some("regex")),
        // The regex matches only a substring: a full match is required.
        ("/x/v1/items", None),
        ("/v1/items/9", None),
        ("/ADMIN/users", Some("nocase")),
        ("/admin", Some("nocase")),
        ("/adm", None),
    ];
    for (path, want) in cases {
        assert_eq!(
            routed(&t, &req("GET", path, &[])).as_deref(),
            want,
            "path {path}"
        );
    }
}

#[test]
fn scheme_method_authority_port() {
    let t = reviews(
        r#"
  - name: https
    match: [{scheme: {exact: https}}]
    route: [{destination: {host: reviews}}]
  - name: post
    match: [{method: {exact: POST}}]
    route: [{destination: {host: reviews}}]
  - name: authority
    match: [{authority: {regex: "api\\.example\\.com(:[0-9]+)?"}}]
    route: [{destination: {host: reviews}}]
  - name: port
    match: [{port: 9080}]
    route: [{destination: {host: reviews}}]
"#,
    );
    let on = |parts: &Parts, port: u16| {
        let dest = svc("reviews.bookinfo.svc.cluster.local", port);
        t.route(&dest, parts, &src("bookinfo", &[]))
            .map(|m| m.route.name.clone())
    };
    assert_eq!(
        on(&req("GET", "https://reviews/x", &[]), 1).as_deref(),
        Some("https")
    );
    assert_eq!(on(&req("POST", "/x", &[]), 1).as_deref(), Some("post"));
    assert_eq!(
        on(&req("GET", "/x", &[("host", "api.example.com:80")]), 1).as_deref(),
        Some("authority")
    );
    assert_eq!(
        on(&req("GET", "http://api.example.com/x", &[]), 1).as_deref(),
        Some("authority")
    );
    assert_eq!(
        on(&req("GET", "/x", &[("host", "xapi.example.com")]), 1),
        None
    );
    assert_eq!(on(&req("GET", "/x", &[]), 9080).as_deref(), Some("port"));
    assert_eq!(on(&req("GET", "/x", &[]), 9081), None);
}

#[test]
fn headers_and_without_headers() {
    let t = reviews(
        r#"
  - name: jason
    match: [{headers: {end-user: {exact: jason}}, withoutHeaders: {x-canary: {}}}]
    route: [{destination: {host: reviews}}]
  - name: present
    match: [{headers: {x-debug: {}}}]
    route: [{destination: {host: reviews}}]
  - name: prefix-regex
    match: [{headers: {x-a: {prefix: ab}, x-b: {regex: "[0-9]+"}}}]
    route: [{destination: {host: reviews}}]
  - name: not-v2
    match: [{withoutHeaders: {x-version: {exact: v2}}}]
    route: [{destination: {host: reviews}}]
"#,
    );
    let cases: [(HeaderList<'_>, Option<&str>); 8] = [
        (&[("end-user", "jason")], Some("jason")),
        // Absent x-canary is required; its presence skips the rule.
        (&[("end-user", "jason"), ("x-canary", "")], Some("not-v2")),
        (&[("end-user", "Jason"), ("x-version", "v2")], None),
        (&[("x-debug", ""), ("x-version", "v2")], Some("present")),
        (
            &[("x-a", "abc"), ("x-b", "123"), ("x-version", "v2")],
            Some("prefix-regex"),
        ),
        // Full match on the header regex.
        (&[("x-a", "abc"), ("x-b", "12a"), ("x-version", "v2")], None),
        (&[("x-version", "v2")], None),
        (&[("x-version", "v3")], Some("not-v2")),
    ];
    for (headers, want) in cases {
        assert_eq!(
            routed(&t, &req("GET", "/", headers)).as_deref(),
            want,
            "headers {headers:?}"
        );
    }
}

#[test]
fn query_params() {
    let t = reviews(
        r#"
  - name: exact
    match: [{queryParams: {user: {exact: "a b"}}}]
    route: [{destination: {host: reviews}}]
  - name: regex
    match: [{queryParams: {id: {regex: "[0-9]{3}"}}}]
    route: [{destination: {host: reviews}}]
  - name: present
    match: [{queryParams: {debug: {}}}]
    route: [{destination: {host: reviews}}]
"#,
    );
    let cases = [
        ("/?user=a%20b", Some("exact")),
        ("/?x=1&user=a%20b", Some("exact")),
        ("/?user=ab", None),
        // The first occurrence is the one matched; names are decoded too.
        ("/?user=x&user=a%20b", None),
        ("/?us%65r=a%20b&user=x", Some("exact")),
        ("/?id=123", Some("regex")),
        ("/?id=1234", None),
        ("/?debug", Some("present")),
        ("/?debug=", Some("present")),
        ("/?debugx=1", None),
        ("/", None),
    ];
    for (uri, want) in cases {
        assert_eq!(routed(&t, &req("GET", uri, &[])).as_deref(), want, "{uri}");
    }
}

#[test]
fn source_labels_and_namespace() {
    let t = reviews(
        r#"
  - name: labels
    match: [{sourceLabels: {app: productpage, version: v1}}]
    route: [{destination: {host: reviews}}]
  - name: namespace
    match: [{sourceNamespace: frontend}]
    route: [{destination: {host: reviews}}]
"#,
    );
    let r = req("GET", "/", &[]);
    let cases = [
        (
            src(
                "bookinfo",
                &[("app", "productpage"), ("version", "v1"), ("x", "y")],
            ),
            Some("labels"),
        ),
        (src("bookinfo", &[("app", "productpage")]), None),
        (
            src("frontend", &[("app", "productpage")]),
            Some("namespace"),
        ),
        (Source::default(), None),
    ];
    for (from, want) in cases {
        assert_eq!(routed_from(&t, &r, &from).as_deref(), want, "{from:?}");
    }
}

#[test]
fn first_match_wins_and_any_entry_matches() {
    let t = reviews(
        r#"
  - name: first
    match: [{uri: {prefix: /a}}, {headers: {x-first: {exact: "1"}}}]
    route: [{destination: {host: reviews}}]
  - name: second
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews}}]
  - name: catch-all
    route: [{destination: {host: reviews}}]
"#,
    );
    assert_eq!(
        routed(&t, &req("GET", "/ab", &[])).as_deref(),
        Some("first")
    );
    assert_eq!(
        routed(&t, &req("GET", "/b", &[("x-first", "1")])).as_deref(),
        Some("first")
    );
    assert_eq!(
        routed(&t, &req("GET", "/b", &[])).as_deref(),
        Some("catch-all")
    );
    let m = t
        .route(
            &svc("reviews.bookinfo.svc.cluster.local", 80),
            &req("GET", "/b", &[("x-first", "1")]),
            &Source::default(),
        )
        .unwrap();
    assert_eq!((m.rule_index, m.match_index), (0, Some(1)));
}

#[test]
fn no_match_is_none_and_gateway_only_entries_are_skipped() {
    let t = reviews(
        r#"
  - name: gw-only
    match: [{uri: {prefix: /}, gateways: [istio-system/ingress]}]
    route: [{destination: {host: reviews}}]
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews}}]
"#,
    );
    assert_eq!(routed(&t, &req("GET", "/", &[])), None);
    assert_eq!(
        routed(&t, &req("GET", "/api/x", &[])).as_deref(),
        Some("api")
    );
}
