//! The checks of a [`DestinationRule`], after Istio's validation webhook.

use std::collections::BTreeSet;

use super::super::FieldError;
use super::super::validate::{
    Errors, check_export_to, check_labels, check_metadata, dns1123_label, duration, percentage,
    port_number, wildcard_host,
};
use super::*;

impl DestinationRule {
    /// Checks: metadata; host required and a valid (wildcard) DNS name;
    /// traffic policies (see below) at the top, per port and per subset;
    /// subset names non-empty DNS labels and unique, subset labels valid;
    /// workload selector labels; `exportTo` (own namespace only with a
    /// workload selector).
    ///
    /// Traffic policy: not empty; `loadBalancer` has `simple` xor
    /// `consistentHash`, a hash has exactly one key, a cookie a name;
    /// connection pool limits non-negative; outlier detection percentages
    /// 0..=100; durations parse; MUTUAL TLS has a certificate and key (or a
    /// credential name, which excludes file paths); port-level settings
    /// have a valid, unique port.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Errors::default();
        check_metadata(&self.metadata, &mut errs);
        let spec = &self.spec;
        if spec.host.is_empty() {
            errs.add("spec.host", "required");
        } else {
            errs.check("spec.host", wildcard_host(&spec.host));
        }
        if let Some(policy) = &spec.traffic_policy {
            check_traffic_policy(&mut errs, "spec.trafficPolicy", policy);
        }
        let mut names = BTreeSet::new();
        for (i, subset) in spec.subsets.iter().enumerate() {
            let path = format!("spec.subsets[{i}]");
            if subset.name.is_empty() {
                errs.add(format!("{path}.name"), "required");
            } else if !names.insert(subset.name.as_str()) {
                errs.add(
                    format!("{path}.name"),
                    format!("duplicate subset name {:?}", subset.name),
                );
            } else {
                errs.check(format!("{path}.name"), dns1123_label(&subset.name));
            }
            check_labels(&mut errs, &format!("{path}.labels"), &subset.labels);
            if let Some(policy) = &subset.traffic_policy {
                check_traffic_policy(&mut errs, &format!("{path}.trafficPolicy"), policy);
            }
        }
        if let Some(selector) = &spec.workload_selector {
            selector.check(&mut errs, "spec.workloadSelector");
        }
        check_export_to(
            &mut errs,
            "spec.exportTo",
            &spec.export_to,
            self.metadata.namespace.as_deref(),
            spec.workload_selector.is_some(),
        );
        errs.into_vec()
    }
}

fn check_traffic_policy(errs: &mut Errors, path: &str, p: &TrafficPolicy) {
    if p.is_empty() {
        errs.add(path, "must set at least one field");
    }
    check_common(
        errs,
        path,
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
    );
    let mut ports = BTreeSet::new();
    for (i, port_policy) in p.port_level_settings.iter().enumerate() {
        let at = format!("{path}.portLevelSettings[{i}]");
        match &port_policy.port {
            None => errs.add(format!("{at}.port"), "required"),
            Some(port) => {
                port.check(errs, &format!("{at}.port"));
                if !ports.insert(port.number) {
                    errs.add(
                        format!("{at}.port"),
                        format!("duplicate port {}", port.number),
                    );
                }
            }
        }
        check_common(
            errs,
            &at,
            port_policy.load_balancer.as_ref(),
            port_policy.connection_pool.as_ref(),
            port_policy.outlier_detection.as_ref(),
            port_policy.tls.as_ref(),
        );
    }
    if let Some(tunnel) = &p.tunnel {
        let at = format!("{path}.tunnel");
        if !tunnel.protocol.is_empty() && tunnel.protocol != "CONNECT" && tunnel.protocol != "POST"
        {
            errs.add(format!("{at}.protocol"), "must be CONNECT or POST");
        }
        errs.check(
            format!("{at}.targetHost"),
            wildcard_host(&tunnel.target_host),
        );
        errs.check(format!("{at}.targetPort"), port_number(tunnel.target_port));
    }
}

fn check_common(
    errs: &mut Errors,
    path: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        check_load_balancer(errs, &format!("{path}.loadBalancer"), lb);
    }
    if let Some(pool) = pool {
        check_connection_pool(errs, &format!("{path}.connectionPool"), pool);
    }
    if let Some(outlier) = outlier {
        check_outlier_detection(errs, &format!("{path}.outlierDetection"), outlier);
    }
    if let Some(tls) = tls {
        check_tls(errs, &format!("{path}.tls"), tls);
    }
}

fn check_load_balancer(errs: &mut Errors, path: &str, lb: &LoadBalancerSettings) {
    match (&lb.simple, &lb.consistent_hash) {
        (Some(_), Some(_)) => errs.add(path, "only one of simple or consistentHash may be set"),
        (None, None)
            if lb.locality_lb_setting.is_none()
                && lb.warmup.is_none()
                && lb.warmup_duration_secs.is_none() =>
        {
            errs.add(path, "one of simple or consistentHash is required")
        }
        _ => {}
    }
    if let Some(warmup) = &lb.warmup_duration_secs {
        errs.check(format!("{path}.warmupDurationSecs"), duration(warmup));
    }
    let Some(hash) = &lb.consistent_hash else {
        return;
    };
    let at = format!("{path}.consistentHash");
    let keys = [
        hash.http_header_name.is_some(),
        hash.http_cookie.is_some(),
        hash.use_source_ip.is_some(),
        hash.http_query_parameter_name.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if keys != 1 {
        errs.add(
            &*at,
            "exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
        );
    }
    if hash.http_header_name.as_deref() == Some("") {
        errs.add(format!("{at}.httpHeaderName"), "must not be empty");
    }
    if hash.http_query_parameter_name.as_deref() == Some("") {
        errs.add(format!("{at}.httpQueryParameterName"), "must not be empty");
    }
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        errs.add(&*at, "only one of ringHash or maglev may be set");
    }
    if let Some(cookie) = &hash.http_cookie {
        if cookie.name.is_empty() {
            errs.add(format!("{at}.httpCookie.name"), "required");
        }
        if let Some(ttl) = &cookie.ttl {
            errs.check(format!("{at}.httpCookie.ttl"), duration(ttl));
        }
    }
}

fn non_negative(errs: &mut Errors, path: String, value: Option<i32>) {
    if value.is_some_and(|v| v < 0) {
        errs.add(path, "must not be negative");
    }
}

fn optional_duration(errs: &mut Errors, path: String, value: Option<&String>) {
    if let Some(d) = value {
        errs.check(path, duration(d));
    }
}

fn check_connection_pool(errs: &mut Errors, path: &str, pool: &ConnectionPoolSettings) {
    if pool.tcp.is_none() && pool.http.is_none() {
        errs.add(path, "one of tcp or http is required");
    }
    if let Some(tcp) = &pool.tcp {
        let at = format!("{path}.tcp");
        non_negative(errs, format!("{at}.maxConnections"), tcp.max_connections);
        optional_duration(
            errs,
            format!("{at}.connectTimeout"),
            tcp.connect_timeout.as_ref(),
        );
        optional_duration(
            errs,
            format!("{at}.maxConnectionDuration"),
            tcp.max_connection_duration.as_ref(),
        );
        optional_duration(errs, format!("{at}.idleTimeout"), tcp.idle_timeout.as_ref());
        if let Some(ka) = &tcp.tcp_keepalive {
            optional_duration(errs, format!("{at}.tcpKeepalive.time"), ka.time.as_ref());
            optional_duration(
                errs,
                format!("{at}.tcpKeepalive.interval"),
                ka.interval.as_ref(),
            );
        }
    }
    if let Some(http) = &pool.http {
        let at = format!("{path}.http");
        non_negative(
            errs,
            format!("{at}.http1MaxPendingRequests"),
            http.http1_max_pending_requests,
        );
        non_negative(
            errs,
            format!("{at}.http2MaxRequests"),
            http.http2_max_requests,
        );
        non_negative(
            errs,
            format!("{at}.maxRequestsPerConnection"),
            http.max_requests_per_connection,
        );
        non_negative(errs, format!("{at}.maxRetries"), http.max_retries);
        non_negative(
            errs,
            format!("{at}.maxConcurrentStreams"),
            http.max_concurrent_streams,
        );
        optional_duration(
            errs,
            format!("{at}.idleTimeout"),
            http.idle_timeout.as_ref(),
        );
        if http.use_client_protocol && http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
            errs.add(
                format!("{at}.useClientProtocol"),
                "cannot be true when h2UpgradePolicy is UPGRADE",
            );
        }
    }
}

fn check_outlier_detection(errs: &mut Errors, path: &str, o: &OutlierDetection) {
    non_negative(
        errs,
        format!("{path}.consecutiveErrors"),
        o.consecutive_errors,
    );
    for (name, value) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = value {
            errs.check(format!("{path}.{name}"), percentage(f64::from(v)));
        }
    }
    optional_duration(errs, format!("{path}.interval"), o.interval.as_ref());
    optional_duration(
        errs,
        format!("{path}.baseEjectionTime"),
        o.base_ejection_time.as_ref(),
    );
    if o.consecutive_local_origin_failures.is_some() && !o.split_external_local_origin_errors {
        errs.add(
            format!("{path}.consecutiveLocalOriginFailures"),
            "requires splitExternalLocalOriginErrors: true",
        );
    }
}

fn check_tls(errs: &mut Errors, path: &str, tls: &ClientTlsSettings) {
    let mode = tls.mode;
    let with_credential = !tls.credential_name.is_empty()
        && matches!(mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual));
    if with_credential {
        if !tls.client_certificate.is_empty()
            || !tls.private_key.is_empty()
            || !tls.ca_certificates.is_empty()
            || !tls.ca_crl.is_empty()
        {
            errs.add(
                path,
                "credentialName excludes clientCertificate, privateKey, caCertificates and caCrl",
            );
        }
        return;
    }
    if mode == Some(ClientTlsMode::Mutual) {
        if tls.client_certificate.is_empty() {
            errs.add(
                format!("{path}.clientCertificate"),
                "required for MUTUAL (or set credentialName)",
            );
        }
        if tls.private_key.is_empty() {
            errs.add(
                format!("{path}.privateKey"),
                "required for MUTUAL (or set credentialName)",
            );
        }
    }
}
