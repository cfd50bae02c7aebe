//! The checks of a [`VirtualService`] (after Istio's validation webhook):
//! top level, TCP / TLS routes, and the destination and weight rules shared
//! with HTTP routes (which are in `validate_http.rs`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::super::FieldError;
use super::super::validate::{
    Errors, check_export_to, check_labels, check_metadata, dns1123_label, gateway_name, ip_or_cidr,
    port_number, wildcard_host,
};
use super::validate_http::check_http_route;
use super::*;

impl VirtualService {
    /// Checks: metadata; at least one host (a VirtualService without hosts
    /// must be a delegate: HTTP routes only, no gateways); hosts are DNS names
    /// (first label may be a wildcard) or IPs, `*` not with the mesh gateway;
    /// gateway names; at least one route; `exportTo`.
    ///
    /// HTTP routes: matches' string matchers hold exactly one of
    /// exact / prefix / regex (prefix and regex non-empty; `{}` allowed for
    /// headers and query parameters, prefix not for query parameters),
    /// header names, ports, source labels / namespace, gateways; exactly one
    /// of route / redirect / directResponse / delegate; destinations have a
    /// host, weights are 0..=100 and with several destinations sum to 100;
    /// redirect (3xx code, http(s) scheme, port xor derivePort),
    /// directResponse (status 200..=599, one body of at most 1 MiB, valid
    /// base64), rewrite, timeout, retries (attempts >= 0, known `retryOn`
    /// conditions), fault (delay with fixedDelay; abort with one of an HTTP
    /// status 200..=599 or gRPC status name), percentages 0..=100, mirrors,
    /// CORS (methods, header names, whole-second maxAge) and header
    /// operations. TCP and TLS routes: matches (subnets, ports, SNI hosts),
    /// at least one destination, the same weight rules.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Errors::default();
        check_metadata(&self.metadata, &mut errs);
        let spec = &self.spec;
        let delegate = spec.hosts.is_empty();
        if delegate
            && (spec.http.is_empty()
                || !spec.gateways.is_empty()
                || !spec.tcp.is_empty()
                || !spec.tls.is_empty())
        {
            errs.add(
                "spec.hosts",
                "at least one host is required (only a delegate VirtualService, \
                 with http routes only and no gateways, may omit hosts)",
            );
        }
        let applies_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
        for (i, host) in spec.hosts.iter().enumerate() {
            let at = format!("spec.hosts[{i}]");
            if host == "*" && applies_to_mesh {
                errs.add(
                    at,
                    "\"*\" is not allowed for a VirtualService bound to the mesh gateway",
                );
            } else if host.parse::<IpAddr>().is_err() {
                errs.check(at, wildcard_host(host));
            }
        }
        check_gateways(&mut errs, "spec.gateways", &spec.gateways);
        if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
            errs.add(
                "spec",
                "at least one of http, tcp or tls routes is required",
            );
        }
        check_export_to(
            &mut errs,
            "spec.exportTo",
            &spec.export_to,
            self.metadata.namespace.as_deref(),
            false,
        );
        for (i, route) in spec.http.iter().enumerate() {
            check_http_route(&mut errs, &format!("spec.http[{i}]"), route, delegate);
        }
        for (i, route) in spec.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            for (j, m) in route.matches.iter().enumerate() {
                let at = format!("{path}.match[{j}]");
                check_l4_match(
                    &mut errs,
                    &at,
                    &m.destination_subnets,
                    m.port,
                    &m.source_labels,
                    &m.gateways,
                    &m.source_namespace,
                );
            }
            check_route_destinations(&mut errs, &format!("{path}.route"), &route.route);
        }
        for (i, route) in spec.tls.iter().enumerate() {
            let path = format!("spec.tls[{i}]");
            if route.matches.is_empty() {
                errs.add(format!("{path}.match"), "at least one match is required");
            }
            for (j, m) in route.matches.iter().enumerate() {
                let at = format!("{path}.match[{j}]");
                if m.sni_hosts.is_empty() {
                    errs.add(
                        format!("{at}.sniHosts"),
                        "at least one SNI host is required",
                    );
                }
                for (k, sni) in m.sni_hosts.iter().enumerate() {
                    errs.check(format!("{at}.sniHosts[{k}]"), wildcard_host(sni));
                }
                check_l4_match(
                    &mut errs,
                    &at,
                    &m.destination_subnets,
                    m.port,
                    &m.source_labels,
                    &m.gateways,
                    &m.source_namespace,
                );
            }
            check_route_destinations(&mut errs, &format!("{path}.route"), &route.route);
        }
        errs.into_vec()
    }
}

pub(super) fn check_gateways(errs: &mut Errors, path: &str, gateways: &[String]) {
    for (i, gateway) in gateways.iter().enumerate() {
        errs.check(format!("{path}[{i}]"), gateway_name(gateway));
    }
}

pub(super) fn check_source_namespace(errs: &mut Errors, path: &str, ns: &str) {
    if !ns.is_empty() {
        errs.check(format!("{path}.sourceNamespace"), dns1123_label(ns));
    }
}

fn check_l4_match(
    errs: &mut Errors,
    path: &str,
    destination_subnets: &[String],
    port: u32,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: &str,
) {
    for (i, subnet) in destination_subnets.iter().enumerate() {
        errs.check(
            format!("{path}.destinationSubnets[{i}]"),
            ip_or_cidr(subnet),
        );
    }
    if port != 0 {
        errs.check(format!("{path}.port"), port_number(port));
    }
    check_labels(errs, &format!("{path}.sourceLabels"), source_labels);
    check_gateways(errs, &format!("{path}.gateways"), gateways);
    check_source_namespace(errs, path, source_namespace);
}

pub(super) fn check_destination(errs: &mut Errors, path: &str, destination: Option<&Destination>) {
    let Some(d) = destination else {
        errs.add(path, "required");
        return;
    };
    if d.host == "*" {
        errs.add(format!("{path}.host"), "\"*\" is not a destination");
    } else {
        errs.check(format!("{path}.host"), wildcard_host(&d.host));
    }
    if !d.subset.is_empty() {
        errs.check(format!("{path}.subset"), dns1123_label(&d.subset));
    }
    if let Some(port) = &d.port {
        port.check(errs, &format!("{path}.port"));
    }
}

/// Each weight is 0..=100; with more than one destination they sum to 100.
pub(super) fn check_weights(errs: &mut Errors, path: &str, weights: &[i32]) {
    for (i, weight) in weights.iter().enumerate() {
        if !(0..=100).contains(weight) {
            errs.add(
                format!("{path}[{i}].weight"),
                format!("{weight} is not in 0..100"),
            );
        }
    }
    let sum: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if weights.len() > 1 && sum != 100 {
        errs.add(
            path,
            format!("weights of several destinations must sum to 100 (they sum to {sum})"),
        );
    }
}

fn check_route_destinations(errs: &mut Errors, path: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        errs.add(path, "at least one destination is required");
    }
    for (i, r) in route.iter().enumerate() {
        check_destination(
            errs,
            &format!("{path}[{i}].destination"),
            r.destination.as_ref(),
        );
    }
    let weights: Vec<i32> = route.iter().map(|r| r.weight).collect();
    check_weights(errs, path, &weights);
}
