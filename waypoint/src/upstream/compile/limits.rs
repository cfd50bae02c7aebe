//! `connectionPool` and `outlierDetection` -> [`PoolLimits`] and [`OutlierConfig`].

use std::time::Duration;

use api::config::destination_rule::{ConnectionPoolSettings, H2UpgradePolicy, OutlierDetection};
use api::config::parse_duration;

use super::{Compiler, KIND};
use crate::problem::Problem;
use crate::upstream::settings::{OutlierConfig, PoolLimits, TcpKeepalive, UpstreamProtocol};

impl Compiler<'_> {
    pub(super) fn pool(&mut self, path: &str, p: &ConnectionPoolSettings) -> PoolLimits {
        let mut limits = PoolLimits::default();
        // As Istio: only positive values are applied; 0 keeps the default.
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
        if let Some(tcp) = &p.tcp {
            let at = format!("{path}.tcp");
            if let Some(v) = positive(tcp.max_connections) {
                limits.max_connections = v;
            }
            if let Some(d) =
                self.duration(format!("{at}.connectTimeout"), tcp.connect_timeout.as_ref())
            {
                limits.connect_timeout = d;
            }
            if let Some(d) = self.duration(format!("{at}.idleTimeout"), tcp.idle_timeout.as_ref()) {
                limits.tcp_idle_timeout = d;
            }
            limits.max_connection_duration = self
                .duration(
                    format!("{at}.maxConnectionDuration"),
                    tcp.max_connection_duration.as_ref(),
                )
                .filter(|d| !d.is_zero());
            if let Some(ka) = &tcp.tcp_keepalive {
                limits.tcp_keepalive = Some(TcpKeepalive {
                    probes: ka.probes.filter(|p| *p > 0),
                    time: self.duration(format!("{at}.tcpKeepalive.time"), ka.time.as_ref()),
                    interval: self
                        .duration(format!("{at}.tcpKeepalive.interval"), ka.interval.as_ref()),
                });
            }
        }
        if let Some(h) = &p.http {
            let at = format!("{path}.http");
            if let Some(v) = positive(h.http1_max_pending_requests) {
                limits.max_pending_requests = v;
            }
            if let Some(v) = positive(h.http2_max_requests) {
                limits.max_requests = v;
            }
            if let Some(v) = positive(h.max_retries) {
                limits.max_retries = v;
            }
            limits.max_requests_per_connection = positive(h.max_requests_per_connection);
            limits.max_concurrent_streams = positive(h.max_concurrent_streams);
            if let Some(d) = self.duration(format!("{at}.idleTimeout"), h.idle_timeout.as_ref()) {
                limits.idle_timeout = d;
            }
            limits.protocol = match (h.use_client_protocol, h.h2_upgrade_policy) {
                (true, _) => UpstreamProtocol::ClientProtocol,
                (false, Some(H2UpgradePolicy::Upgrade)) => UpstreamProtocol::Upgrade,
                (false, Some(H2UpgradePolicy::DoNotUpgrade)) => UpstreamProtocol::DoNotUpgrade,
                (false, Some(H2UpgradePolicy::Default) | None) => UpstreamProtocol::Default,
            };
        }
        limits
    }

    pub(super) fn outlier(&mut self, path: &str, o: &OutlierDetection) -> OutlierConfig {
        let mut c = OutlierConfig::default();
        let enabled = |v: u32| (v > 0).then_some(v);
        // Istio maps the deprecated field to gateway errors and turns 5xx ejection off;
        // the newer fields, when set, override.
        if let Some(v) = o
            .consecutive_errors
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
        {
            c.consecutive_gateway = Some(v);
            c.consecutive_5xx = None;
        }
        if let Some(v) = o.consecutive_5xx_errors {
            c.consecutive_5xx = enabled(v);
        }
        if let Some(v) = o.consecutive_gateway_errors {
            c.consecutive_gateway = enabled(v);
        }
        c.split_local_origin = o.split_external_local_origin_errors;
        if let Some(v) = o.consecutive_local_origin_failures {
            c.consecutive_local_origin = enabled(v);
        }
        for (field, value, slot) in [
            ("interval", o.interval.as_ref(), &mut c.interval),
            (
                "baseEjectionTime",
                o.base_ejection_time.as_ref(),
                &mut c.base_ejection_time,
            ),
        ] {
            match parse_duration_opt(value) {
                Ok(None) => {}
                Ok(Some(d)) if d.is_zero() => {
                    self.problems.push(Problem::new(
                        KIND,
                        self.namespace,
                        self.name,
                        format!("{path}.{field}"),
                        "must be greater than zero",
                    ));
                }
                Ok(Some(d)) => *slot = d,
                Err(e) => self.problems.push(Problem::new(
                    KIND,
                    self.namespace,
                    self.name,
                    format!("{path}.{field}"),
                    e,
                )),
            }
        }
        c.max_ejection_time = c.base_ejection_time.max(Duration::from_secs(300));
        // As Istio: 0 (the proto default) keeps Envoy's 10%.
        if let Some(v) = o
            .max_ejection_percent
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
        {
            c.max_ejection_percent = v.min(100);
        }
        if let Some(v) = o.min_health_percent.and_then(|v| u32::try_from(v).ok()) {
            c.min_health_percent = v.min(100);
        }
        c
    }
}

fn parse_duration_opt(value: Option<&String>) -> Result<Option<Duration>, String> {
    value.map(|v| parse_duration(v)).transpose()
}
