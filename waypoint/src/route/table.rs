//! [`RouteTable`]: compiled VirtualServices indexed by host, and request lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;

use super::action::Route;
use super::matching::{MatchInput, PathMatch, RequestMatch};
use crate::context::{Destination, Source};
use crate::problem::Problem;

/// A VirtualService ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledVirtualService {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The hosts, expanded.
    pub hosts: Vec<HostPattern>,
    /// The HTTP rules that apply to the mesh, in order.
    pub rules: Vec<Rule>,
    /// Whether it applies to the mesh (and so to the waypoint): `gateways` empty or
    /// holding `mesh`. When false `rules` is empty.
    pub applies_to_mesh: bool,
    /// What was not applied (`tcp`, `tls`, `delegate`), for reporting.
    pub warnings: Vec<Problem>,
}

impl CompiledVirtualService {
    /// Whether it applies to the mesh; see the field.
    pub fn applies_to_mesh(&self) -> bool {
        self.applies_to_mesh
    }

    /// The first rule matching the request.
    fn route<'a>(&'a self, input: &MatchInput<'_>) -> Option<Matched<'a>> {
        self.rules.iter().enumerate().find_map(|(i, rule)| {
            let (match_index, path) = if rule.matches.is_empty() {
                let root = usize::from(input.parts.uri.path().starts_with('/'));
                (None, PathMatch::Prefix(root))
            } else {
                rule.matches
                    .iter()
                    .enumerate()
                    .find_map(|(j, m)| Some((Some(j), m.evaluate(input)?)))?
            };
            Some(Matched {
                virtual_service: self,
                rule_index: i,
                match_index,
                route: &rule.route,
                path,
            })
        })
    }
}

/// A compiled VirtualService host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A DNS name, lowercase.
    Exact(String),
    /// `*.example.com`: any name ending in `suffix` (`.example.com`).
    Wildcard {
        /// The suffix, starting with `.`.
        suffix: String,
    },
    /// An IP literal: matches workload traffic to that IP.
    Ip(IpAddr),
}

/// One `http[]` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its match entries that apply to the mesh; empty: it matches every request.
    pub matches: Vec<RequestMatch>,
    /// What to do.
    pub route: Route,
}

/// The rule a request matched.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The VirtualService.
    pub virtual_service: &'a CompiledVirtualService,
    /// Index into its (mesh) `rules`.
    pub rule_index: usize,
    /// Which match entry matched; `None` for a rule without match entries.
    pub match_index: Option<usize>,
    /// The route.
    pub route: &'a Route,
    /// How the path matched (for prefix rewrites).
    pub path: PathMatch,
}

/// VirtualServices by host.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    exact: HashMap<String, Arc<CompiledVirtualService>>,
    /// Longest suffix first, then `(namespace, name)`.
    wildcards: Vec<(String, Arc<CompiledVirtualService>)>,
    ips: HashMap<IpAddr, Arc<CompiledVirtualService>>,
}

impl RouteTable {
    /// Indexes VirtualServices that apply to the mesh. When several claim one host, the
    /// first in `(namespace, name)` order owns it.
    pub fn new(mut services: Vec<Arc<CompiledVirtualService>>) -> RouteTable {
        services.retain(|vs| vs.applies_to_mesh);
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut table = RouteTable::default();
        for vs in &services {
            for host in &vs.hosts {
                match host {
                    HostPattern::Exact(h) => {
                        table.exact.entry(h.clone()).or_insert_with(|| vs.clone());
                    }
                    HostPattern::Ip(ip) => {
                        table.ips.entry(*ip).or_insert_with(|| vs.clone());
                    }
                    HostPattern::Wildcard { suffix } => {
                        table.wildcards.push((suffix.clone(), vs.clone()));
                    }
                }
            }
        }
        // Stable: equal lengths keep (namespace, name) order.
        table
            .wildcards
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// The VirtualService that owns the destination's host, if any.
    pub fn virtual_service(&self, dest: &Destination) -> Option<&CompiledVirtualService> {
        let Some(service) = &dest.service else {
            return self.ips.get(&dest.target.ip()).map(|vs| &**vs);
        };
        // Service hostnames are lower case already; copied only when one is not.
        let host = &service.hostname;
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.as_str().into()
        };
        let host = host.trim_end_matches('.');
        if let Some(vs) = self.exact.get(host) {
            return Some(vs);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, vs)| &**vs)
    }

    /// The route for a request: the first matching rule of the VirtualService owning the
    /// destination's host. `None`: no rule matched (or no VirtualService owns the host);
    /// the request goes to the destination itself.
    pub fn route(&self, dest: &Destination, req: &Parts, src: &Source) -> Option<Matched<'_>> {
        let vs = self.virtual_service(dest)?;
        vs.route(&MatchInput::new(dest, req, src))
    }
}
