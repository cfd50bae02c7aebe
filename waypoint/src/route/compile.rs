//! [`compile`]: typed VirtualService -> [`CompiledVirtualService`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::config::VirtualService;
use api::config::networking::{MatchValue, StringMatch};
use api::config::parse_duration;
use api::config::virtual_service::{self as vs, HttpMatchRequest, HttpRoute};

use super::action::{Action, Forward, MirrorTarget, Route, WeightedDestination};
use super::cors::Cors;
use super::fault::Fault;
use super::headers::HeaderOps;
use super::matching::{HeaderKey, RequestMatch, StringMatcher, full_match_regex};
use super::redirect::{DirectResponse, Redirect};
use super::retry::RetryPolicy;
use super::rewrite::Rewrite;
use super::table::{CompiledVirtualService, HostPattern, Rule};
use crate::context::fqdn;
use crate::problem::Problem;

/// What compiling needs besides the VirtualService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileContext {
    /// The cluster's DNS suffix (`cluster.local`).
    pub domain_suffix: String,
}

impl Default for CompileContext {
    fn default() -> Self {
        CompileContext {
            domain_suffix: "cluster.local".to_owned(),
        }
    }
}

/// Problems found while compiling one VirtualService.
#[derive(Debug)]
pub(super) struct Problems {
    namespace: String,
    name: String,
    list: Vec<Problem>,
}

impl Problems {
    /// Records a problem at `field`; returns `None` so callers can `return p.add(..)`.
    pub(super) fn add<T>(&mut self, field: impl Into<String>, msg: impl Into<String>) -> Option<T> {
        let problem = Problem::new("VirtualService", &self.namespace, &self.name, field, msg);
        self.list.push(problem);
        None
    }
}

/// Compiles `vs` after checking it with `VirtualService::validate` (whose errors are
/// reported as problems too). Every problem names `VirtualService ns/name` and the field.
///
/// A VirtualService bound only to gateways (non-empty `gateways` without `mesh`)
/// compiles to one that applies to nothing ([`CompiledVirtualService::applies_to_mesh`]
/// false). `tcp`, `tls` and `delegate` rules are skipped with a warning in
/// [`CompiledVirtualService::warnings`].
pub fn compile(
    vs: &VirtualService,
    cx: &CompileContext,
) -> Result<CompiledVirtualService, Vec<Problem>> {
    let mut p = Problems {
        namespace: vs
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: vs.metadata.name.clone().unwrap_or_default(),
        list: Vec::new(),
    };
    for e in vs.validate() {
        p.add::<()>(e.field, e.message);
    }
    if !p.list.is_empty() {
        return Err(p.list);
    }
    let spec = &vs.spec;
    let mesh = |gateways: &[String]| gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    let applies_to_mesh = mesh(&spec.gateways);
    let hosts = spec
        .hosts
        .iter()
        .flat_map(|h| host_patterns(h, &p.namespace, &cx.domain_suffix))
        .collect();
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    let (ns, name) = (p.namespace.clone(), p.name.clone());
    let warn = |field: String, msg: &str| Problem::new("VirtualService", &ns, &name, field, msg);
    for (i, http) in spec.http.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        if http.delegate.is_some() {
            warnings.push(warn(
                format!("{path}.delegate"),
                "delegation is not supported by the waypoint; the rule is skipped",
            ));
            continue;
        }
        let mut matches = Vec::new();
        for (j, m) in http.matches.iter().enumerate() {
            let compiled = request_match(m, &mut p, &format!("{path}.match[{j}]"));
            if let Some(compiled) = compiled.filter(|_| mesh(&m.gateways)) {
                matches.push(compiled);
            }
        }
        let route = route(http, &mut p, &path, cx);
        let applies = http.matches.is_empty() || !matches.is_empty();
        if let Some(mut route) = route.filter(|_| applies && applies_to_mesh) {
            route.log_name = if route.name.is_empty() {
                format!("{}/{}#{}", p.namespace, p.name, rules.len()).into()
            } else {
                route.name.as_str().into()
            };
            rules.push(Rule { matches, route });
        }
    }
    for (kind, present) in [("tcp", !spec.tcp.is_empty()), ("tls", !spec.tls.is_empty())] {
        if present && applies_to_mesh {
            warnings.push(warn(
                format!("spec.{kind}"),
                "only HTTP routes are applied by the waypoint; these are ignored",
            ));
        }
    }
    if !p.list.is_empty() {
        return Err(p.list);
    }
    Ok(CompiledVirtualService {
        namespace: p.namespace,
        name: p.name,
        hosts,
        rules,
        applies_to_mesh,
        warnings,
    })
}

/// The patterns one VirtualService host stands for (see the module docs).
fn host_patterns(host: &str, ns: &str, suffix: &str) -> Vec<HostPattern> {
    let host = host.to_ascii_lowercase();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![HostPattern::Ip(ip)];
    }
    if let Some(rest) = host.strip_prefix('*') {
        return vec![HostPattern::Wildcard {
            suffix: rest.to_owned(),
        }];
    }
    let expanded = fqdn(&host, ns, suffix);
    if expanded == host || !host.contains('.') {
        vec![HostPattern::Exact(expanded)]
    } else {
        vec![HostPattern::Exact(host), HostPattern::Exact(expanded)]
    }
}

/// Compiles a `StringMatch`; `{}` is presence.
pub(super) fn string_matcher(
    m: &StringMatch,
    p: &mut Problems,
    path: &str,
) -> Option<StringMatcher> {
    Some(match m.value() {
        Some(MatchValue::Exact(e)) => StringMatcher::Exact(e.to_owned()),
        Some(MatchValue::Prefix(pre)) => StringMatcher::Prefix(pre.to_owned()),
        Some(MatchValue::Regex(r)) => match full_match_regex(r) {
            Ok(re) => StringMatcher::Regex(re),
            Err(e) => return p.add(format!("{path}.regex"), e),
        },
        None => StringMatcher::Present,
    })
}

fn request_match(m: &HttpMatchRequest, p: &mut Problems, path: &str) -> Option<RequestMatch> {
    let mut ok = true;
    let mut one = |m: &Option<StringMatch>, field: &str, p: &mut Problems| {
        let m = m.as_ref()?;
        let out = string_matcher(m, p, &format!("{path}.{field}"));
        ok &= out.is_some();
        out
    };
    let uri = one(&m.uri, "uri", p);
    let scheme = one(&m.scheme, "scheme", p);
    let method = one(&m.method, "method", p);
    let authority = one(&m.authority, "authority", p);
    let mut map = |field: &str, entries: &std::collections::BTreeMap<String, StringMatch>| {
        let mut out = Vec::new();
        for (name, sm) in entries {
            let at = format!("{path}.{field}[{name}]");
            match (HeaderKey::parse(name), string_matcher(sm, p, &at)) {
                (Ok(key), Some(matcher)) => out.push((key, matcher)),
                (Err(e), _) => ok = p.add::<bool>(at, e).is_some(),
                (_, None) => ok = false,
            }
        }
        out
    };
    let headers = map("headers", &m.headers);
    let without_headers = map("withoutHeaders", &m.without_headers);
    let mut query_params = Vec::new();
    for (name, sm) in &m.query_params {
        match string_matcher(sm, p, &format!("{path}.queryParams[{name}]")) {
            Some(matcher) => query_params.push((name.clone(), matcher)),
            None => ok = false,
        }
    }
    let port = match u16::try_from(m.port) {
        Ok(0) => None,
        Ok(port) => Some(port),
        Err(_) => return p.add(format!("{path}.port"), "not a port number"),
    };
    ok.then(|| RequestMatch {
        name: m.name.clone(),
        uri,
        ignore_uri_case: m.ignore_uri_case,
        scheme,
        method,
        authority,
        headers,
        without_headers,
        query_params,
        port,
        source_labels: m.source_labels.clone(),
        source_namespace: (!m.source_namespace.is_empty()).then(|| m.source_namespace.clone()),
    })
}

fn destination(
    d: Option<&vs::Destination>,
    p: &Problems,
    cx: &CompileContext,
) -> (String, Option<Arc<str>>, Option<u16>) {
    let d = d.cloned().unwrap_or_default();
    let port = d.port.and_then(|port| u16::try_from(port.number).ok());
    let subset = (!d.subset.is_empty()).then(|| Arc::from(d.subset));
    (fqdn(&d.host, &p.namespace, &cx.domain_suffix), subset, port)
}

fn route(http: &HttpRoute, p: &mut Problems, path: &str, cx: &CompileContext) -> Option<Route> {
    let action = if let Some(r) = &http.redirect {
        Action::Redirect(Redirect::compile(r, p, &format!("{path}.redirect"))?)
    } else if let Some(d) = &http.direct_response {
        Action::DirectResponse(DirectResponse::compile(
            d,
            p,
            &format!("{path}.directResponse"),
        )?)
    } else {
        let single = http.route.len() == 1;
        let mut destinations = Vec::new();
        for (i, r) in http.route.iter().enumerate() {
            let at = format!("{path}.route[{i}].headers");
            let (host, subset, port) = destination(r.destination.as_ref(), p, cx);
            let headers = r.headers.as_ref();
            destinations.push(WeightedDestination {
                host,
                subset,
                port,
                weight: match u32::try_from(r.weight).unwrap_or(0) {
                    0 if single => 100,
                    w => w,
                },
                request_headers: HeaderOps::compile(
                    headers.and_then(|h| h.request.as_ref()),
                    p,
                    &format!("{at}.request"),
                ),
                response_headers: HeaderOps::compile(
                    headers.and_then(|h| h.response.as_ref()),
                    p,
                    &format!("{at}.response"),
                ),
            });
        }
        if destinations.iter().all(|d| d.weight == 0) {
            return p.add(
                format!("{path}.route"),
                "no destination has a positive weight",
            );
        }
        Action::Forward(Forward { destinations })
    };
    let headers = http.headers.as_ref();
    let request_ops = headers.and_then(|h| h.request.as_ref());
    let authority_header = request_ops.and_then(|ops| ops.set.get(":authority"));
    let rewrite = Rewrite::compile(
        http.rewrite.as_ref(),
        authority_header.map(String::as_str),
        p,
        path,
    );
    let timeout = match http.timeout.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d).filter(|d| *d != Duration::ZERO),
        Some(Err(e)) => return p.add(format!("{path}.timeout"), e),
    };
    let mut mirrors = Vec::new();
    if let Some(m) = &http.mirror {
        let (host, subset, port) = destination(Some(m), p, cx);
        let percentage = http
            .mirror_percentage
            .as_ref()
            .map(|pc| pc.value)
            .or(http.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        mirrors.push(MirrorTarget {
            host,
            subset,
            port,
            percentage,
        });
    }
    for m in &http.mirrors {
        let (host, subset, port) = destination(m.destination.as_ref(), p, cx);
        let percentage = m.percentage.as_ref().map_or(100.0, |pc| pc.value);
        mirrors.push(MirrorTarget {
            host,
            subset,
            port,
            percentage,
        });
    }
    Some(Route {
        name: http.name.clone(),
        log_name: Arc::from(""),
        action,
        rewrite,
        request_headers: HeaderOps::compile(request_ops, p, &format!("{path}.headers.request")),
        response_headers: HeaderOps::compile(
            headers.and_then(|h| h.response.as_ref()),
            p,
            &format!("{path}.headers.response"),
        ),
        timeout,
        retries: RetryPolicy::compile(http.retries.as_ref(), p, &format!("{path}.retries")),
        fault: match &http.fault {
            Some(f) => Some(Fault::compile(f, p, &format!("{path}.fault"))?),
            None => None,
        },
        mirrors,
        cors: match &http.cors_policy {
            Some(c) => Some(Cors::compile(c, p, &format!("{path}.corsPolicy"))?),
            None => None,
        },
    })
}
