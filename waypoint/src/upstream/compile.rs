//! DestinationRule -> [`CompiledDestinationRule`].

use std::collections::BTreeMap;
use std::time::Duration;

use api::config::DestinationRule;
use api::config::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings,
    OutlierDetection, SimpleLb, TrafficPolicy as ApiPolicy,
};
use api::config::parse_duration;

use super::CompileContext;
use super::rule::{CompiledDestinationRule, Fields, Host, Layer, Subset};
use super::settings::{
    ConsistentHash, CookieKey, DEFAULT_MAGLEV_SIZE, DEFAULT_RING_SIZE, HashKey, HashTable,
    LbPolicy, MAX_RING_SIZE,
};
use crate::problem::Problem;

mod limits;

const KIND: &str = "DestinationRule";

/// Compiles a DestinationRule. Runs the rule's `validate()` first; every field error, and
/// every setting the waypoint cannot honour (TLS origination, `tunnel`, `proxyProtocol`,
/// a Maglev table size that is not prime, ...), is returned as a [`Problem`] naming
/// `DestinationRule NAMESPACE/NAME` and the field path. A rule without a namespace is in
/// `default`.
pub fn compile(
    dr: &DestinationRule,
    cx: &CompileContext,
) -> Result<CompiledDestinationRule, Vec<Problem>> {
    let namespace = dr.metadata.namespace.as_deref().unwrap_or("default");
    let name = dr.metadata.name.as_deref().unwrap_or("");
    let mut c = Compiler {
        namespace,
        name,
        problems: Vec::new(),
    };
    for e in dr.validate() {
        c.problem(e.field, e.message);
    }
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let spec = &dr.spec;
    let policy = spec
        .traffic_policy
        .as_ref()
        .map(|p| c.layer("spec.trafficPolicy", p));
    let subsets = spec
        .subsets
        .iter()
        .enumerate()
        .map(|(i, s)| Subset {
            name: s.name.clone(),
            labels: s.labels.clone(),
            policy: s
                .traffic_policy
                .as_ref()
                .map(|p| c.layer(&format!("spec.subsets[{i}].trafficPolicy"), p)),
        })
        .collect();
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(CompiledDestinationRule {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        host: resolve_host(&spec.host, namespace, &cx.domain_suffix),
        policy,
        subsets,
        export_to: spec.export_to.clone(),
        workload_selector: spec
            .workload_selector
            .as_ref()
            .map(|s| s.match_labels.clone()),
    })
}

/// Wildcards stay as written; other hosts are read as VirtualService destinations are
/// ([`crate::context::fqdn`]: `reviews`, `reviews.ns` and `reviews.ns.svc` all name
/// `reviews.ns.svc.<suffix>`), so a route's destination always finds its rule.
fn resolve_host(host: &str, namespace: &str, suffix: &str) -> Host {
    let host = host.to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('*') {
        return Host::Wildcard(rest.to_owned());
    }
    Host::Exact(crate::context::fqdn(&host, namespace, suffix))
}

struct Compiler<'a> {
    namespace: &'a str,
    name: &'a str,
    problems: Vec<Problem>,
}

impl Compiler<'_> {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(
            KIND,
            self.namespace,
            self.name,
            field,
            message,
        ));
    }

    fn duration(&mut self, path: String, value: Option<&String>) -> Option<Duration> {
        match parse_duration(value?) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    fn layer(&mut self, path: &str, p: &ApiPolicy) -> Layer {
        if p.tunnel.is_some() {
            self.problem(
                format!("{path}.tunnel"),
                "not supported by the waypoint (it forwards over HBONE only)",
            );
        }
        if p.proxy_protocol.is_some() {
            self.problem(
                format!("{path}.proxyProtocol"),
                "not supported by the waypoint",
            );
        }
        let base = self.fields(
            path,
            p.load_balancer.as_ref(),
            p.connection_pool.as_ref(),
            p.outlier_detection.as_ref(),
            p.tls.as_ref(),
        );
        let mut ports = BTreeMap::new();
        for (i, pl) in p.port_level_settings.iter().enumerate() {
            let at = format!("{path}.portLevelSettings[{i}]");
            let fields = self.fields(
                &at,
                pl.load_balancer.as_ref(),
                pl.connection_pool.as_ref(),
                pl.outlier_detection.as_ref(),
                pl.tls.as_ref(),
            );
            // validate() checked the port is present and in 1..=65535.
            if let Some(port) = pl.port.as_ref().and_then(|p| u16::try_from(p.number).ok()) {
                ports.insert(port, fields);
            }
        }
        Layer { base, ports }
    }

    fn fields(
        &mut self,
        path: &str,
        lb: Option<&LoadBalancerSettings>,
        pool: Option<&ConnectionPoolSettings>,
        outlier: Option<&OutlierDetection>,
        tls: Option<&ClientTlsSettings>,
    ) -> Fields {
        if let Some(mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)) =
            tls.and_then(|t| t.mode)
        {
            self.problem(
                format!("{path}.tls.mode"),
                format!(
                    "{mode:?} (TLS origination) is not supported by the waypoint; \
                     HBONE already carries the traffic over mutual TLS"
                ),
            );
        }
        Fields {
            load_balancer: lb
                .and_then(|lb| self.load_balancer(&format!("{path}.loadBalancer"), lb)),
            connection_pool: pool.map(|p| self.pool(&format!("{path}.connectionPool"), p)),
            outlier_detection: outlier
                .map(|o| self.outlier(&format!("{path}.outlierDetection"), o)),
        }
    }

    /// `None` when the settings only carry what the waypoint ignores (locality, warmup).
    fn load_balancer(&mut self, path: &str, lb: &LoadBalancerSettings) -> Option<LbPolicy> {
        if let Some(simple) = lb.simple {
            return Some(match simple {
                SimpleLb::Unspecified => LbPolicy::default(),
                SimpleLb::LeastConn | SimpleLb::LeastRequest => LbPolicy::LeastRequest,
                SimpleLb::Random => LbPolicy::Random,
                SimpleLb::Passthrough => LbPolicy::Passthrough,
                SimpleLb::RoundRobin => LbPolicy::RoundRobin,
            });
        }
        let hash = lb.consistent_hash.as_ref()?;
        let at = format!("{path}.consistentHash");
        let key = if let Some(header) = &hash.http_header_name {
            match http::HeaderName::from_bytes(header.as_bytes()) {
                Ok(name) => HashKey::Header(name),
                Err(_) => {
                    self.problem(format!("{at}.httpHeaderName"), "not a valid header name");
                    return None;
                }
            }
        } else if let Some(cookie) = &hash.http_cookie {
            let ttl = self.duration(format!("{at}.httpCookie.ttl"), cookie.ttl.as_ref());
            self.cookie_text(&format!("{at}.httpCookie.name"), &cookie.name, true);
            self.cookie_text(&format!("{at}.httpCookie.path"), &cookie.path, false);
            for (i, a) in cookie.attributes.iter().enumerate() {
                self.cookie_text(
                    &format!("{at}.httpCookie.attributes[{i}].name"),
                    &a.name,
                    true,
                );
                self.cookie_text(
                    &format!("{at}.httpCookie.attributes[{i}].value"),
                    &a.value,
                    false,
                );
            }
            HashKey::Cookie(CookieKey {
                name: cookie.name.clone(),
                path: cookie.path.clone(),
                ttl,
                attributes: cookie
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
            })
        } else if let Some(param) = &hash.http_query_parameter_name {
            HashKey::QueryParameter(param.clone())
        } else {
            // validate() guarantees exactly one key; the last one is useSourceIp.
            HashKey::SourceIp
        };
        let table = if let Some(maglev) = &hash.maglev {
            let size = if maglev.table_size == 0 {
                DEFAULT_MAGLEV_SIZE
            } else {
                maglev.table_size
            };
            if !is_prime(size) || size > 5_000_011 {
                self.problem(
                    format!("{at}.maglev.tableSize"),
                    "must be a prime number of at most 5000011",
                );
            }
            HashTable::Maglev { table_size: size }
        } else {
            let (field, size) = match (&hash.ring_hash, hash.minimum_ring_size) {
                (Some(r), _) => ("ringHash.minimumRingSize", r.minimum_ring_size),
                (None, Some(size)) => ("minimumRingSize", size),
                (None, None) => ("", 0),
            };
            if size > MAX_RING_SIZE {
                self.problem(
                    format!("{at}.{field}"),
                    format!("must be at most {MAX_RING_SIZE}"),
                );
            }
            let minimum_size = if size == 0 { DEFAULT_RING_SIZE } else { size };
            HashTable::Ring { minimum_size }
        };
        Some(LbPolicy::ConsistentHash(ConsistentHash { key, table }))
    }

    /// Cookie names and attribute names are HTTP tokens; values and paths are visible
    /// ASCII without `;` (they end up in a `Set-Cookie` header).
    fn cookie_text(&mut self, path: &str, text: &str, token: bool) {
        let ok = text.bytes().all(|b| {
            if token {
                b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
            } else {
                (0x21..0x7f).contains(&b) && b != b';' && b != b'"'
            }
        });
        if !ok {
            let what = if token {
                "an HTTP token"
            } else {
                "visible ASCII without ';' or '\"'"
            };
            self.problem(path, format!("must be {what}"));
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
