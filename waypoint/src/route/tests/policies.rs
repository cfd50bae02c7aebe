//! Fault injection, retries, CORS.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn only_route(http: &str) -> Route {
    let vs = compiled(&format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: reviews, namespace: bookinfo}}\n\
         spec:\n  hosts: [reviews]\n  http:\n{http}"
    ));
    vs.rules.into_iter().next().expect("one rule").route
}

#[test]
fn fault_percentages_and_codes() {
    let route = only_route(
        r#"
  - route: [{destination: {host: reviews}}]
    fault:
      delay: {fixedDelay: 1.5s, percentage: {value: 10}}
      abort: {httpStatus: 418, percentage: {value: 50.5}}
"#,
    );
    let fault = route.fault.expect("fault");
    let mut rng = StdRng::seed_from_u64(11);
    let (mut delayed, mut aborted) = (0u32, 0u32);
    for _ in 0..20_000 {
        let d = fault.decide(&mut rng);
        if let Some(delay) = d.delay {
            assert_eq!(delay, Duration::from_millis(1500));
            delayed += 1;
        }
        if let Some(abort) = d.abort {
            assert_eq!(abort, Abort::Http(418));
            aborted += 1;
        }
    }
    // Expected 2000 (sd ~42) and 10100 (sd ~71).
    assert!((1800..=2200).contains(&delayed), "delayed {delayed}");
    assert!((9750..=10450).contains(&aborted), "aborted {aborted}");
}

#[test]
fn fault_defaults_and_grpc() {
    let cases = [
        (
            "{abort: {grpcStatus: UNAVAILABLE}}",
            None,
            Some(Abort::Grpc(14)),
        ),
        (
            "{abort: {grpcStatus: DEADLINE_EXCEEDED}}",
            None,
            Some(Abort::Grpc(4)),
        ),
        (
            "{delay: {fixedDelay: 2s}}",
            Some(Duration::from_secs(2)),
            None,
        ),
        ("{delay: {fixedDelay: 2s, percent: 0}}", None, None),
        (
            "{abort: {httpStatus: 503, percentage: {value: 0}}}",
            None,
            None,
        ),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    for (fault, delay, abort) in cases {
        let route = only_route(&format!(
            "  - route: [{{destination: {{host: reviews}}}}]\n    fault: {fault}\n"
        ));
        let f = route.fault.expect("fault");
        for _ in 0..100 {
            assert_eq!(
                f.decide(&mut rng),
                FaultDecision { delay, abort },
                "{fault}"
            );
        }
    }
    let resp = Abort::Grpc(14).response();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(Abort::Http(503).response().status(), 503);
}

fn policy(retries: &str) -> Option<RetryPolicy> {
    only_route(&format!(
        "  - route: [{{destination: {{host: reviews}}}}]\n{retries}"
    ))
    .retries
}

const RESP_500: AttemptOutcome = AttemptOutcome::Response {
    status: 500,
    grpc_status: None,
};

fn resp(status: u16) -> AttemptOutcome {
    AttemptOutcome::Response {
        status,
        grpc_status: None,
    }
}

fn grpc(code: u32) -> AttemptOutcome {
    AttemptOutcome::Response {
        status: 200,
        grpc_status: Some(code),
    }
}

#[test]
fn retry_on_tokens() {
    use AttemptOutcome::{ConnectFailure, PerTryTimeout, RefusedStream, Reset};
    let all = [
        RESP_500,
        resp(502),
        resp(503),
        resp(504),
        resp(409),
        resp(404),
        resp(200),
        ConnectFailure,
        Reset,
        RefusedStream,
        PerTryTimeout,
        grpc(1),
        grpc(4),
        grpc(8),
        grpc(13),
        grpc(14),
        grpc(2),
    ];
    let cases: [(&str, &[AttemptOutcome]); 14] = [
        (
            "5xx",
            &[
                RESP_500,
                resp(502),
                resp(503),
                resp(504),
                ConnectFailure,
                Reset,
                RefusedStream,
                PerTryTimeout,
            ],
        ),
        (
            "gateway-error",
            &[
                resp(502),
                resp(503),
                resp(504),
                ConnectFailure,
                Reset,
                RefusedStream,
                PerTryTimeout,
            ],
        ),
        (
            "reset",
            &[ConnectFailure, Reset, RefusedStream, PerTryTimeout],
        ),
        ("reset-before-request", &[ConnectFailure]),
        ("connect-failure", &[ConnectFailure]),
        ("refused-stream", &[RefusedStream]),
        ("retriable-4xx", &[resp(409)]),
        ("retriable-status-codes,404", &[resp(404)]),
        ("404", &[resp(404)]),
        ("cancelled", &[grpc(1)]),
        ("deadline-exceeded", &[grpc(4)]),
        ("resource-exhausted", &[grpc(8)]),
        ("internal", &[grpc(13)]),
        ("unavailable, envoy-ratelimited", &[grpc(14)]),
    ];
    for (retry_on, yes) in cases {
        let p = policy(&format!(
            "    retries: {{attempts: 3, retryOn: '{retry_on}'}}\n"
        ))
        .expect("enabled");
        assert_eq!(p.attempts, 3);
        for outcome in &all {
            assert_eq!(
                p.should_retry(outcome),
                yes.contains(outcome),
                "{retry_on}: {outcome:?}"
            );
        }
    }
}

#[test]
fn retry_defaults_and_disabling() {
    let default = policy("").expect("default policy");
    assert_eq!(default, RetryPolicy::istio_default());
    assert_eq!(default.attempts, 2);
    for (outcome, want) in [
        (resp(503), true),
        (resp(502), false),
        (AttemptOutcome::ConnectFailure, true),
        (AttemptOutcome::RefusedStream, true),
        (AttemptOutcome::Reset, false),
        (grpc(14), true),
        (grpc(1), true),
        (grpc(4), false),
    ] {
        assert_eq!(default.should_retry(&outcome), want, "{outcome:?}");
    }
    assert_eq!(policy("    retries: {attempts: 0}\n"), None);
    // Without retryOn the default conditions stay; other fields are taken.
    let p =
        policy("    retries: {attempts: 5, perTryTimeout: 2s, retryIgnorePreviousHosts: false}\n")
            .unwrap();
    assert_eq!(p.retry_on, RetryPolicy::istio_default().retry_on);
    assert_eq!(
        (p.attempts, p.per_try_timeout),
        (5, Some(Duration::from_secs(2)))
    );
    assert!(!p.retry_ignore_previous_hosts);
}

fn cors(policy: &str) -> Cors {
    only_route(&format!(
        "  - route: [{{destination: {{host: reviews}}}}]\n    corsPolicy: {policy}\n"
    ))
    .cors
    .expect("cors")
}

fn preflight(origin: &str) -> Parts {
    req(
        "OPTIONS",
        "/",
        &[("origin", origin), ("access-control-request-method", "PUT")],
    )
}

#[test]
fn cors_preflight_allowed_and_denied() {
    let c = cors(
        "{allowOrigins: [{exact: 'https://a.com'}, {regex: 'https://.*\\.b\\.com'}], \
         allowMethods: [GET, PUT], allowHeaders: [x-token], maxAge: 24h, allowCredentials: true}",
    );
    let resp = c
        .preflight(&preflight("https://x.b.com"))
        .expect("answered");
    let h = resp.headers();
    assert_eq!(resp.status(), 200);
    assert_eq!(h["access-control-allow-origin"], "https://x.b.com");
    assert_eq!(h["access-control-allow-methods"], "GET,PUT");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["access-control-allow-credentials"], "true");
    // Denied origins are forwarded (the default); the regex must match fully.
    assert!(c.preflight(&preflight("https://x.b.com.evil")).is_none());
    // Not a preflight without Access-Control-Request-Method.
    assert!(
        c.preflight(&req("OPTIONS", "/", &[("origin", "https://a.com")]))
            .is_none()
    );

    let ignore = cors("{allowOrigins: [{exact: 'https://a.com'}], unmatchedPreflights: IGNORE}");
    let resp = ignore
        .preflight(&preflight("https://z.com"))
        .expect("answered");
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

#[test]
fn cors_simple_requests() {
    let c = cors("{allowOrigin: ['https://a.com'], exposeHeaders: [x-id]}");
    let mut h = http::HeaderMap::new();
    let request = req("GET", "/", &[("origin", "https://a.com")]);
    c.apply_response(request.headers.get("origin"), &mut h);
    assert_eq!(h["access-control-allow-origin"], "https://a.com");
    assert_eq!(h["access-control-expose-headers"], "x-id");
    assert!(!h.contains_key("access-control-allow-credentials"));
    let mut h = http::HeaderMap::new();
    let request = req("GET", "/", &[("origin", "https://b.com")]);
    c.apply_response(request.headers.get("origin"), &mut h);
    assert!(h.is_empty());
    let any = cors("{allowOrigins: [{exact: '*'}]}");
    assert!(any.origin_allowed("https://whatever.example"));
}
