//! The checks of a [`VirtualService`]'s HTTP routes.

use std::collections::BTreeMap;

use super::super::networking::{MatchUse, StringMatch};
use super::super::parse_duration;
use super::super::validate::{
    Errors, check_labels, check_non_empty_entries, dns1123_label, dns1123_subdomain, duration,
    header_name, header_value, percentage, port_number,
};
use super::validate::{check_destination, check_gateways, check_source_namespace, check_weights};
use super::*;

/// Envoy retry conditions Istio accepts in `retryOn` (besides status codes).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names accepted by `fault.abort.grpcStatus`, at the index of their code.
const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a gRPC status name as `fault.abort.grpcStatus` spells it
/// (`UNAVAILABLE` -> 14); `None` for anything else (exact, upper-case names only).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUS
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// Methods accepted in `corsPolicy.allowMethods`.
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Largest `directResponse` body Istio accepts.
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;

pub(super) fn check_http_route(
    errs: &mut Errors,
    path: &str,
    route: &HttpRoute,
    in_delegate: bool,
) {
    for (i, m) in route.matches.iter().enumerate() {
        check_http_match(errs, &format!("{path}.match[{i}]"), m);
    }
    let actions: Vec<&str> = [
        (!route.route.is_empty(), "route"),
        (route.redirect.is_some(), "redirect"),
        (route.direct_response.is_some(), "directResponse"),
        (route.delegate.is_some(), "delegate"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    match actions.len() {
        0 => errs.add(
            path,
            "one of route, redirect, directResponse or delegate is required",
        ),
        1 => {}
        _ => errs.add(
            path,
            format!(
                "only one of route, redirect, directResponse or delegate may be set (found {})",
                actions.join(", ")
            ),
        ),
    }
    let answers_itself = route.redirect.is_some() || route.direct_response.is_some();
    if route.rewrite.is_some() && answers_itself {
        errs.add(
            format!("{path}.rewrite"),
            "cannot be combined with redirect or directResponse",
        );
    }
    if route.fault.is_some() && answers_itself {
        errs.add(
            format!("{path}.fault"),
            "cannot be combined with redirect or directResponse",
        );
    }
    if let Some(delegate) = &route.delegate {
        if in_delegate {
            errs.add(
                format!("{path}.delegate"),
                "a delegate VirtualService cannot delegate again",
            );
        }
        if delegate.name.is_empty() {
            errs.add(format!("{path}.delegate.name"), "required");
        } else {
            errs.check(
                format!("{path}.delegate.name"),
                dns1123_subdomain(&delegate.name),
            );
        }
        if !delegate.namespace.is_empty() {
            errs.check(
                format!("{path}.delegate.namespace"),
                dns1123_label(&delegate.namespace),
            );
        }
    }
    for (i, r) in route.route.iter().enumerate() {
        let at = format!("{path}.route[{i}]");
        check_destination(errs, &format!("{at}.destination"), r.destination.as_ref());
        if let Some(headers) = &r.headers {
            check_headers(errs, &format!("{at}.headers"), headers);
        }
    }
    let weights: Vec<i32> = route.route.iter().map(|r| r.weight).collect();
    check_weights(errs, &format!("{path}.route"), &weights);
    if let Some(redirect) = &route.redirect {
        check_redirect(errs, &format!("{path}.redirect"), redirect);
    }
    if let Some(direct) = &route.direct_response {
        check_direct_response(errs, &format!("{path}.directResponse"), direct);
    }
    if let Some(rewrite) = &route.rewrite {
        check_rewrite(errs, &format!("{path}.rewrite"), rewrite);
    }
    if let Some(timeout) = &route.timeout {
        errs.check(format!("{path}.timeout"), duration(timeout));
    }
    if let Some(retries) = &route.retries {
        check_retries(errs, &format!("{path}.retries"), retries);
    }
    if let Some(fault) = &route.fault {
        check_fault(errs, &format!("{path}.fault"), fault);
    }
    check_mirrors(errs, path, route);
    if let Some(cors) = &route.cors_policy {
        check_cors(errs, &format!("{path}.corsPolicy"), cors);
    }
    if let Some(headers) = &route.headers {
        check_headers(errs, &format!("{path}.headers"), headers);
    }
}

fn check_http_match(errs: &mut Errors, path: &str, m: &HttpMatchRequest) {
    for (name, matcher) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(matcher) = matcher {
            matcher.check(errs, &format!("{path}.{name}"), MatchUse::Value);
        }
    }
    check_match_map(
        errs,
        &format!("{path}.headers"),
        &m.headers,
        MatchUse::Presence,
        true,
    );
    check_match_map(
        errs,
        &format!("{path}.withoutHeaders"),
        &m.without_headers,
        MatchUse::Presence,
        true,
    );
    check_match_map(
        errs,
        &format!("{path}.queryParams"),
        &m.query_params,
        MatchUse::PresenceNoPrefix,
        false,
    );
    if m.port != 0 {
        errs.check(format!("{path}.port"), port_number(m.port));
    }
    check_labels(errs, &format!("{path}.sourceLabels"), &m.source_labels);
    check_gateways(errs, &format!("{path}.gateways"), &m.gateways);
    check_source_namespace(errs, path, &m.source_namespace);
}

fn check_match_map(
    errs: &mut Errors,
    path: &str,
    map: &BTreeMap<String, StringMatch>,
    usage: MatchUse,
    header_names: bool,
) {
    for (name, matcher) in map {
        let at = format!("{path}[{name}]");
        if header_names {
            // Pseudo-headers (`:method`, `:path`, ...) may be matched too.
            errs.check(
                at.clone(),
                header_name(name.strip_prefix(':').unwrap_or(name)),
            );
        } else if name.is_empty() {
            errs.add(at.clone(), "name must not be empty");
        }
        matcher.check(errs, &at, usage);
    }
}

fn check_redirect(errs: &mut Errors, path: &str, r: &HttpRedirect) {
    if r.uri.is_empty()
        && r.authority.is_empty()
        && r.scheme.is_empty()
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        errs.add(
            path,
            "at least one of uri, authority, scheme, port or derivePort is required",
        );
    }
    if r.port.is_some() && r.derive_port.is_some() {
        errs.add(path, "only one of port or derivePort may be set");
    }
    if let Some(port) = r.port {
        errs.check(format!("{path}.port"), port_number(port));
    }
    if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
        errs.add(format!("{path}.scheme"), "must be \"http\" or \"https\"");
    }
    if r.redirect_code != 0 && !(300..=399).contains(&r.redirect_code) {
        errs.add(
            format!("{path}.redirectCode"),
            format!("{} is not a redirect status (300..399)", r.redirect_code),
        );
    }
}

fn check_direct_response(errs: &mut Errors, path: &str, d: &HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        errs.add(
            format!("{path}.status"),
            format!("{} is not in 200..599", d.status),
        );
    }
    let Some(body) = &d.body else { return };
    let at = format!("{path}.body");
    let size = match (&body.string, &body.bytes) {
        (Some(_), Some(_)) => {
            errs.add(&*at, "only one of string or bytes may be set");
            0
        }
        (None, None) => {
            errs.add(&*at, "one of string or bytes is required");
            0
        }
        (Some(s), None) => s.len(),
        (None, Some(b)) => {
            if !is_base64(b) {
                errs.add(format!("{at}.bytes"), "is not valid base64");
            }
            b.len() / 4 * 3
        }
    };
    if size > MAX_DIRECT_RESPONSE_BODY {
        errs.add(at, "larger than 1 MiB");
    }
}

/// Standard base64 with padding (how protobuf-JSON writes `bytes`); the
/// URL-safe alphabet is accepted too, as protobuf-JSON readers do.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    body.bytes().all(alphabet)
        && padding <= 2
        && (padding == 0 || s.len().is_multiple_of(4))
        && body.len() % 4 != 1
}

fn check_rewrite(errs: &mut Errors, path: &str, r: &HttpRewrite) {
    if !r.uri.is_empty() && r.uri_regex_rewrite.is_some() {
        errs.add(path, "only one of uri or uriRegexRewrite may be set");
    }
    if r.uri.is_empty() && r.authority.is_empty() && r.uri_regex_rewrite.is_none() {
        errs.add(
            path,
            "at least one of uri, authority or uriRegexRewrite is required",
        );
    }
    if let Some(regex) = &r.uri_regex_rewrite {
        if regex.pattern.is_empty() {
            errs.add(format!("{path}.uriRegexRewrite.match"), "required");
        }
        if regex.rewrite.is_empty() {
            errs.add(format!("{path}.uriRegexRewrite.rewrite"), "required");
        }
    }
}

fn check_retries(errs: &mut Errors, path: &str, r: &HttpRetry) {
    if r.attempts.is_some_and(|a| a < 0) {
        errs.add(format!("{path}.attempts"), "must not be negative");
    }
    if let Some(t) = &r.per_try_timeout {
        errs.check(format!("{path}.perTryTimeout"), duration(t));
    }
    if let Some(t) = &r.backoff {
        errs.check(format!("{path}.backoff"), duration(t));
    }
    if !r.retry_on.is_empty() {
        for policy in r.retry_on.split(',').map(str::trim) {
            let status_code = policy
                .parse::<u32>()
                .is_ok_and(|c| (101..=599).contains(&c));
            if !RETRY_ON.contains(&policy) && !status_code {
                errs.add(
                    format!("{path}.retryOn"),
                    format!("{policy:?} is not a retry condition or status code"),
                );
            }
        }
    }
}

fn check_fault(errs: &mut Errors, path: &str, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        errs.add(path, "at least one of delay or abort is required");
    }
    if let Some(delay) = &f.delay {
        let at = format!("{path}.delay");
        if delay.exponential_delay.is_some() {
            errs.add(format!("{at}.exponentialDelay"), "not supported");
        }
        match &delay.fixed_delay {
            Some(d) => errs.check(format!("{at}.fixedDelay"), duration(d)),
            None => errs.add(format!("{at}.fixedDelay"), "required"),
        }
        if let Some(p) = &delay.percentage {
            p.check(errs, &format!("{at}.percentage"));
        }
        if let Some(p) = delay.percent {
            errs.check(format!("{at}.percent"), percentage(f64::from(p)));
        }
    }
    if let Some(abort) = &f.abort {
        let at = format!("{path}.abort");
        let kinds = [
            abort.http_status.is_some(),
            abort.grpc_status.is_some(),
            abort.http2_error.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        match kinds {
            0 => errs.add(
                &*at,
                "one of httpStatus, grpcStatus or http2Error is required",
            ),
            1 => {}
            _ => errs.add(
                &*at,
                "only one of httpStatus, grpcStatus or http2Error may be set",
            ),
        }
        if let Some(status) = abort.http_status
            && !(200..=599).contains(&status)
        {
            errs.add(
                format!("{at}.httpStatus"),
                format!("{status} is not in 200..599"),
            );
        }
        if let Some(status) = &abort.grpc_status
            && grpc_status_code(status).is_none()
        {
            errs.add(
                format!("{at}.grpcStatus"),
                format!("{status:?} is not a gRPC status name"),
            );
        }
        if abort.http2_error.is_some() {
            errs.add(format!("{at}.http2Error"), "not supported");
        }
        if let Some(p) = &abort.percentage {
            p.check(errs, &format!("{at}.percentage"));
        }
    }
}

fn check_mirrors(errs: &mut Errors, path: &str, route: &HttpRoute) {
    if let Some(mirror) = &route.mirror {
        check_destination(errs, &format!("{path}.mirror"), Some(mirror));
        if !route.mirrors.is_empty() {
            errs.add(format!("{path}.mirrors"), "cannot be combined with mirror");
        }
    }
    if let Some(p) = route.mirror_percent {
        errs.check(format!("{path}.mirrorPercent"), percentage(f64::from(p)));
    }
    if let Some(p) = &route.mirror_percentage {
        p.check(errs, &format!("{path}.mirrorPercentage"));
    }
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let at = format!("{path}.mirrors[{i}]");
        check_destination(
            errs,
            &format!("{at}.destination"),
            mirror.destination.as_ref(),
        );
        if let Some(p) = &mirror.percentage {
            p.check(errs, &format!("{at}.percentage"));
        }
    }
}

fn check_cors(errs: &mut Errors, path: &str, c: &CorsPolicy) {
    check_non_empty_entries(errs, &format!("{path}.allowOrigin"), &c.allow_origin);
    for (i, origin) in c.allow_origins.iter().enumerate() {
        origin.check(errs, &format!("{path}.allowOrigins[{i}]"), MatchUse::Value);
    }
    for (i, method) in c.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&method.as_str()) {
            errs.add(
                format!("{path}.allowMethods[{i}]"),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    for (name, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, header) in list.iter().enumerate() {
            errs.check(format!("{path}.{name}[{i}]"), header_name(header));
        }
    }
    if let Some(max_age) = &c.max_age {
        let at = format!("{path}.maxAge");
        match parse_duration(max_age) {
            Err(e) => errs.add(at, e),
            Ok(d) if d.subsec_nanos() != 0 => errs.add(at, "must be whole seconds"),
            Ok(_) => {}
        }
    }
}

fn check_headers(errs: &mut Errors, path: &str, headers: &Headers) {
    if let Some(ops) = &headers.request {
        check_header_operations(errs, &format!("{path}.request"), ops, true);
    }
    if let Some(ops) = &headers.response {
        check_header_operations(errs, &format!("{path}.response"), ops, false);
    }
}

fn check_header_operations(errs: &mut Errors, path: &str, ops: &HeaderOperations, request: bool) {
    // `:authority` is the only pseudo-header that may be set, on requests.
    let settable = |name: &str| {
        if request && name == ":authority" {
            Ok(())
        } else {
            header_name(name)
        }
    };
    for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let at = format!("{path}.{op}[{name}]");
            errs.check(at.clone(), settable(name));
            errs.check(at, header_value(value));
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        errs.check(format!("{path}.remove[{i}]"), header_name(name));
    }
}
