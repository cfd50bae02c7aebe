//! VirtualService HTTP route rules.

use super::*;
use crate::config::VirtualService;

/// A one-route HTTP VirtualService spec with `route_yaml` as the route's
/// extra fields (flow style, without braces).
fn http(route_yaml: &str) -> String {
    format!("hosts: [a]\nhttp:\n- {{{route_yaml}}}")
}

const TO_A: &str = "route: [{destination: {host: a}}]";

#[test]
fn string_matches_hold_exactly_one_matcher() {
    let at = "spec.http[0].match[0].uri";
    assert_invalid::<VirtualService>(
        &http(&format!("match: [{{uri: {{}}}}], {TO_A}")),
        at,
        "exactly one of exact, prefix or regex",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "match: [{{uri: {{exact: /a, prefix: /b}}}}], {TO_A}"
        )),
        at,
        "only one of exact, prefix or regex",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("match: [{{uri: {{prefix: ''}}}}], {TO_A}")),
        &format!("{at}.prefix"),
        "must not be empty",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("match: [{{uri: {{regex: ''}}}}], {TO_A}")),
        &format!("{at}.regex"),
        "must not be empty",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("match: [{{method: {{}}}}], {TO_A}")),
        "spec.http[0].match[0].method",
        "exactly one",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "match: [{{headers: {{x-a: {{exact: a, regex: b}}}}}}], {TO_A}"
        )),
        "spec.http[0].match[0].headers[x-a]",
        "only one of",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "match: [{{headers: {{'bad header': {{exact: a}}}}}}], {TO_A}"
        )),
        "spec.http[0].match[0].headers[bad header]",
        "header name",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "match: [{{queryParams: {{q: {{prefix: a}}}}}}], {TO_A}"
        )),
        "spec.http[0].match[0].queryParams[q].prefix",
        "not supported",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "match: [{{port: 70000, sourceNamespace: Bad_Ns, sourceLabels: {{'a*': b}}}}], {TO_A}"
        )),
        "spec.http[0].match[0].port",
        "not in 1..65535",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("match: [{{sourceNamespace: Bad_Ns}}], {TO_A}")),
        "spec.http[0].match[0].sourceNamespace",
        "DNS-1123 label",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("match: [{{sourceLabels: {{'a*': b}}}}], {TO_A}")),
        "spec.http[0].match[0].sourceLabels[a*]",
        "label key",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("corsPolicy: {{allowOrigins: [{{}}]}}, {TO_A}")),
        "spec.http[0].corsPolicy.allowOrigins[0]",
        "exactly one",
    );
    assert_valid::<VirtualService>(&http(&format!(
        "match: [{{uri: {{exact: ''}}, scheme: {{exact: https}}, authority: {{regex: '.*'}}, \
         headers: {{x-a: {{}}, ':method': {{exact: GET}}}}, withoutHeaders: {{x-b: {{prefix: v}}}}, \
         queryParams: {{q: {{}}, r: {{exact: '1'}}}}}}], {TO_A}"
    )));
}

#[test]
fn route_weights() {
    let two = |a: i32, b: i32| {
        http(&format!(
            "route: [{{destination: {{host: a}}, weight: {a}}}, {{destination: {{host: b}}, weight: {b}}}]"
        ))
    };
    assert_invalid::<VirtualService>(
        &two(60, 30),
        "spec.http[0].route",
        "sum to 100 (they sum to 90)",
    );
    assert_invalid::<VirtualService>(&two(0, 0), "spec.http[0].route", "sum to 100");
    assert_invalid::<VirtualService>(
        &two(150, -50),
        "spec.http[0].route[0].weight",
        "not in 0..100",
    );
    assert_invalid::<VirtualService>(
        &two(150, -50),
        "spec.http[0].route[1].weight",
        "not in 0..100",
    );
    assert_invalid::<VirtualService>(
        &http("route: [{destination: {host: a}, weight: 101}]"),
        "spec.http[0].route[0].weight",
        "not in 0..100",
    );
    assert_valid::<VirtualService>(&two(60, 40));
    assert_valid::<VirtualService>(&two(100, 0));
    assert_valid::<VirtualService>(&http("route: [{destination: {host: a}}]"));
    assert_valid::<VirtualService>(&http("route: [{destination: {host: a}, weight: 30}]"));
    // TCP and TLS routes follow the same rule.
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntcp: [{route: [{destination: {host: a}, weight: 50}, {destination: {host: b}, weight: 49}]}]",
        "spec.tcp[0].route",
        "sum to 100",
    );
    assert_valid::<VirtualService>(
        "hosts: [a]\ntcp: [{route: [{destination: {host: a}, weight: 50}, {destination: {host: b}, weight: 50}]}]",
    );
}

#[test]
fn destinations() {
    assert_invalid::<VirtualService>(
        &http("route: [{weight: 100}]"),
        "spec.http[0].route[0].destination",
        "required",
    );
    assert_invalid::<VirtualService>(
        &http("route: [{destination: {subset: v1}}]"),
        "spec.http[0].route[0].destination.host",
        "must not be empty",
    );
    assert_invalid::<VirtualService>(
        &http("route: [{destination: {host: '*'}}]"),
        "spec.http[0].route[0].destination.host",
        "not a destination",
    );
    assert_invalid::<VirtualService>(
        &http("route: [{destination: {host: a, subset: V_1}}]"),
        "spec.http[0].route[0].destination.subset",
        "DNS-1123 label",
    );
    assert_invalid::<VirtualService>(
        &http("route: [{destination: {host: a, port: {}}}]"),
        "spec.http[0].route[0].destination.port.number",
        "not in 1..65535",
    );
    assert_invalid::<VirtualService>(
        &http("mirror: {host: ''}, route: [{destination: {host: a}}]"),
        "spec.http[0].mirror.host",
        "must not be empty",
    );
    assert_invalid::<VirtualService>(
        &http(
            "mirror: {host: m}, mirrors: [{destination: {host: n}}], route: [{destination: {host: a}}]",
        ),
        "spec.http[0].mirrors",
        "cannot be combined with mirror",
    );
    assert_invalid::<VirtualService>(
        &http("mirrors: [{percentage: {value: 5}}], route: [{destination: {host: a}}]"),
        "spec.http[0].mirrors[0].destination",
        "required",
    );
    assert_valid::<VirtualService>(&http(
        "route: [{destination: {host: '*.example.com', subset: v1, port: {number: 80}}}]",
    ));
}

#[test]
fn exactly_one_action_per_http_route() {
    let at = "spec.http[0]";
    assert_invalid::<VirtualService>(
        &http("name: nothing"),
        at,
        "one of route, redirect, directResponse or delegate is required",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("redirect: {{uri: /b}}, {TO_A}")),
        at,
        "found route, redirect",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("directResponse: {{status: 503}}, {TO_A}")),
        at,
        "found route, directResponse",
    );
    assert_invalid::<VirtualService>(
        &http("redirect: {uri: /b}, directResponse: {status: 503}"),
        at,
        "found redirect, directResponse",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("delegate: {{name: d}}, {TO_A}")),
        at,
        "found route, delegate",
    );
    assert_invalid::<VirtualService>(
        &http("redirect: {uri: /b}, rewrite: {uri: /c}"),
        "spec.http[0].rewrite",
        "cannot be combined",
    );
    assert_invalid::<VirtualService>(
        &http("directResponse: {status: 503}, fault: {abort: {httpStatus: 500}}"),
        "spec.http[0].fault",
        "cannot be combined",
    );
    assert_valid::<VirtualService>(&http("redirect: {uri: /b}"));
    assert_valid::<VirtualService>(&http("directResponse: {status: 503}"));
    assert_valid::<VirtualService>(&http("delegate: {name: d, namespace: other}"));
}

#[test]
fn redirects_and_direct_responses() {
    let r = "spec.http[0].redirect";
    assert_invalid::<VirtualService>(&http("redirect: {}"), r, "at least one of uri, authority");
    assert_invalid::<VirtualService>(
        &http("redirect: {port: 8443, derivePort: FROM_REQUEST_PORT}"),
        r,
        "only one of port or derivePort",
    );
    assert_invalid::<VirtualService>(
        &http("redirect: {uri: /b, redirectCode: 200}"),
        &format!("{r}.redirectCode"),
        "300..399",
    );
    assert_invalid::<VirtualService>(
        &http("redirect: {scheme: ftp}"),
        &format!("{r}.scheme"),
        "http",
    );
    assert_invalid::<VirtualService>(
        &http("redirect: {port: 0}"),
        &format!("{r}.port"),
        "not in 1..65535",
    );
    assert_valid::<VirtualService>(&http(
        "redirect: {scheme: https, port: 8443, redirectCode: 302}",
    ));

    let d = "spec.http[0].directResponse";
    assert_invalid::<VirtualService>(
        &http("directResponse: {status: 700}"),
        &format!("{d}.status"),
        "not in 200..599",
    );
    assert_invalid::<VirtualService>(
        &http("directResponse: {body: {string: x}}"),
        &format!("{d}.status"),
        "not in 200..599",
    );
    assert_invalid::<VirtualService>(
        &http("directResponse: {status: 200, body: {string: a, bytes: YQ==}}"),
        &format!("{d}.body"),
        "only one of string or bytes",
    );
    assert_invalid::<VirtualService>(
        &http("directResponse: {status: 200, body: {}}"),
        &format!("{d}.body"),
        "one of string or bytes",
    );
    assert_invalid::<VirtualService>(
        &http("directResponse: {status: 200, body: {bytes: 'not base64!'}}"),
        &format!("{d}.body.bytes"),
        "base64",
    );
    let huge = "x".repeat(1024 * 1024 + 1);
    assert_invalid::<VirtualService>(
        &http(&format!(
            "directResponse: {{status: 200, body: {{string: {huge}}}}}"
        )),
        &format!("{d}.body"),
        "1 MiB",
    );
    assert_valid::<VirtualService>(&http(
        "directResponse: {status: 200, body: {bytes: aGVsbG8=}}",
    ));
    assert_valid::<VirtualService>(&http("directResponse: {status: 599, body: {string: ''}}"));
}

#[test]
fn rewrites() {
    let at = "spec.http[0].rewrite";
    assert_invalid::<VirtualService>(
        &http(&format!("rewrite: {{}}, {TO_A}")),
        at,
        "at least one of uri, authority or uriRegexRewrite",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}, {TO_A}"
        )),
        at,
        "only one of uri or uriRegexRewrite",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "rewrite: {{uriRegexRewrite: {{rewrite: b}}}}, {TO_A}"
        )),
        &format!("{at}.uriRegexRewrite.match"),
        "required",
    );
    assert_valid::<VirtualService>(&http(&format!(
        "rewrite: {{authority: new.example.com}}, {TO_A}"
    )));
}

#[test]
fn durations_and_retries() {
    assert_invalid::<VirtualService>(
        &http(&format!("timeout: 10 s, {TO_A}")),
        "spec.http[0].timeout",
        "invalid duration",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("retries: {{attempts: -1}}, {TO_A}")),
        "spec.http[0].retries.attempts",
        "must not be negative",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "retries: {{attempts: 2, perTryTimeout: 1x}}, {TO_A}"
        )),
        "spec.http[0].retries.perTryTimeout",
        "invalid duration",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("retries: {{attempts: 2, backoff: fast}}, {TO_A}")),
        "spec.http[0].retries.backoff",
        "invalid duration",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "retries: {{attempts: 2, retryOn: '5xx,bogus'}}, {TO_A}"
        )),
        "spec.http[0].retries.retryOn",
        "\"bogus\"",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "retries: {{attempts: 2, retryOn: '5xx,700'}}, {TO_A}"
        )),
        "spec.http[0].retries.retryOn",
        "\"700\"",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("corsPolicy: {{maxAge: 1.5s}}, {TO_A}")),
        "spec.http[0].corsPolicy.maxAge",
        "whole seconds",
    );
    assert_valid::<VirtualService>(&http(&format!(
        "timeout: 1h2m3.5s, retries: {{attempts: 0, perTryTimeout: 100ms, retryOn: '5xx, reset,503', \
         retryIgnorePreviousHosts: true, backoff: 25ms}}, corsPolicy: {{maxAge: 60s}}, {TO_A}"
    )));
}

#[test]
fn faults_and_percentages() {
    let f = "spec.http[0].fault";
    assert_invalid::<VirtualService>(
        &http(&format!("fault: {{}}, {TO_A}")),
        f,
        "at least one of delay or abort",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{delay: {{percentage: {{value: 1}}}}}}, {TO_A}"
        )),
        &format!("{f}.delay.fixedDelay"),
        "required",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("fault: {{delay: {{fixedDelay: 5}}}}, {TO_A}")),
        &format!("{f}.delay.fixedDelay"),
        "missing unit",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{delay: {{fixedDelay: 1s, exponentialDelay: 1s}}}}, {TO_A}"
        )),
        &format!("{f}.delay.exponentialDelay"),
        "not supported",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 100.5}}}}}}, {TO_A}"
        )),
        &format!("{f}.delay.percentage.value"),
        "0..100",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{delay: {{fixedDelay: 1s, percent: 101}}}}, {TO_A}"
        )),
        &format!("{f}.delay.percent"),
        "0..100",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{abort: {{percentage: {{value: 1}}}}}}, {TO_A}"
        )),
        &format!("{f}.abort"),
        "one of httpStatus, grpcStatus or http2Error is required",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{abort: {{httpStatus: 503, grpcStatus: UNAVAILABLE}}}}, {TO_A}"
        )),
        &format!("{f}.abort"),
        "only one of",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("fault: {{abort: {{httpStatus: 600}}}}, {TO_A}")),
        &format!("{f}.abort.httpStatus"),
        "not in 200..599",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("fault: {{abort: {{httpStatus: 199}}}}, {TO_A}")),
        &format!("{f}.abort.httpStatus"),
        "not in 200..599",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("fault: {{abort: {{grpcStatus: NOPE}}}}, {TO_A}")),
        &format!("{f}.abort.grpcStatus"),
        "gRPC status",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{abort: {{http2Error: REFUSED_STREAM}}}}, {TO_A}"
        )),
        &format!("{f}.abort.http2Error"),
        "not supported",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "fault: {{abort: {{httpStatus: 500, percentage: {{value: -1}}}}}}, {TO_A}"
        )),
        &format!("{f}.abort.percentage.value"),
        "0..100",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "mirror: {{host: m}}, mirrorPercentage: {{value: 101}}, {TO_A}"
        )),
        "spec.http[0].mirrorPercentage.value",
        "0..100",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("mirror: {{host: m}}, mirrorPercent: 150, {TO_A}")),
        "spec.http[0].mirrorPercent",
        "0..100",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "mirrors: [{{destination: {{host: m}}, percentage: {{value: 200}}}}], {TO_A}"
        )),
        "spec.http[0].mirrors[0].percentage.value",
        "0..100",
    );
    assert_valid::<VirtualService>(&http(&format!(
        "fault: {{delay: {{fixedDelay: 7s, percentage: {{value: 0}}}}, abort: {{httpStatus: 200, percentage: {{value: 100}}}}}}, \
         mirror: {{host: m}}, mirrorPercentage: {{value: 0.5}}, {TO_A}"
    )));
}

#[test]
fn cors_and_header_operations() {
    assert_invalid::<VirtualService>(
        &http(&format!(
            "corsPolicy: {{allowMethods: [GET, FETCH]}}, {TO_A}"
        )),
        "spec.http[0].corsPolicy.allowMethods[1]",
        "not a supported HTTP method",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("corsPolicy: {{allowHeaders: ['x y']}}, {TO_A}")),
        "spec.http[0].corsPolicy.allowHeaders[0]",
        "header name",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("corsPolicy: {{allowOrigin: ['']}}, {TO_A}")),
        "spec.http[0].corsPolicy.allowOrigin[0]",
        "must not be empty",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "headers: {{request: {{set: {{'bad header': v}}}}}}, {TO_A}"
        )),
        "spec.http[0].headers.request.set[bad header]",
        "header name",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "headers: {{response: {{add: {{x-a: \"a\\r\\nb\"}}}}}}, {TO_A}"
        )),
        "spec.http[0].headers.response.add[x-a]",
        "CR, LF",
    );
    assert_invalid::<VirtualService>(
        &http(&format!(
            "headers: {{response: {{set: {{':authority': a}}}}}}, {TO_A}"
        )),
        "spec.http[0].headers.response.set[:authority]",
        "header name",
    );
    assert_invalid::<VirtualService>(
        &http(&format!("headers: {{request: {{remove: ['']}}}}, {TO_A}")),
        "spec.http[0].headers.request.remove[0]",
        "header name",
    );
    assert_invalid::<VirtualService>(
        &http("route: [{destination: {host: a}, headers: {request: {set: {'x y': v}}}}]"),
        "spec.http[0].route[0].headers.request.set[x y]",
        "header name",
    );
    assert_valid::<VirtualService>(&http(&format!(
        "corsPolicy: {{allowOrigins: [{{prefix: 'https://'}}], allowMethods: [PATCH, OPTIONS], exposeHeaders: ['*']}}, \
         headers: {{request: {{set: {{':authority': b.example.com}}, remove: [cookie]}}}}, {TO_A}"
    )));
}

#[test]
fn grpc_status_names_have_their_codes() {
    use crate::config::virtual_service::grpc_status_code;
    assert_eq!(grpc_status_code("OK"), Some(0));
    assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
    assert_eq!(grpc_status_code("UNAUTHENTICATED"), Some(16));
    assert_eq!(grpc_status_code("unavailable"), None);
    assert_eq!(grpc_status_code("14"), None);
}
