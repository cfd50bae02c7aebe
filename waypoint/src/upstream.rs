//! DestinationRule: subsets, load balancing, connection pool, outlier detection.
//!
//! [`compile`] turns a validated [`api::config::DestinationRule`] into a
//! [`CompiledDestinationRule`]: hosts resolved to FQDNs, durations parsed, Istio's defaults
//! filled in, and the settings the waypoint cannot honour reported as
//! [`Problem`](crate::problem::Problem)s.
//! [`DestinationRules`] indexes the compiled rules by host and merges several rules for one
//! host the way istiod does. For each request the proxy then:
//!
//! 1. looks the rule up by the routed host ([`DestinationRules::lookup`]), picks the
//!    endpoints of the routed subset ([`Subset::matches`]) and computes the effective
//!    [`TrafficPolicy`] for (subset, port) ([`CompiledDestinationRule::traffic_policy`]);
//! 2. gets the per-cluster runtime state ([`Clusters::get`]): a [`LoadBalancer`], a
//!    [`ConnectionPool`] and an [`OutlierDetector`];
//! 3. takes a [`RequestPermit`] (overflow: 503 with response flag `UO`), drops ejected
//!    endpoints ([`OutlierDetector::filter`]), computes the hash input for consistent
//!    hashing ([`hash_key`]) and picks an endpoint ([`LoadBalancer::pick`]);
//! 4. records the outcome ([`OutlierDetector::record`]).
//!
//! Everything here is synchronous and does no I/O: time comes in as [`std::time::Instant`]
//! and randomness as a [`rand::Rng`], so the state machines are testable without sleeps.
//! The runtime state is shared across tokio tasks through atomics and short
//! `std::sync::Mutex` sections (never held across an `.await`).
//!
//! # Several rules for one host
//!
//! istiod merges DestinationRules for the same (resolved) host that have no workload
//! selector: rules are taken oldest first (`creationTimestamp`, then namespace/name); the
//! subsets of later rules are appended unless a subset of that name already exists; the
//! top-level `trafficPolicy` and `exportTo` come from the first rule that sets them. The
//! waypoint does not keep `creationTimestamp`, so [`DestinationRules::new`] orders by
//! namespace, then name, and otherwise merges the same way. An exact host rule always
//! wins over a wildcard one (they are not merged), and among wildcards the longest
//! (most specific) suffix wins.
//!
//! Rules with a `workloadSelector` are left out by [`DestinationRules::new`]: in Istio a
//! selector scopes a rule to the selected client proxies (sidecars, gateways), while a
//! waypoint serves every client of a service. `exportTo` is kept
//! ([`CompiledDestinationRule::is_exported_to`]); the caller passes only the rules visible
//! to the waypoint.

mod cluster;
mod compile;
mod hash;
mod lb;
mod outlier;
mod pool;
mod rule;
mod settings;
mod table;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

pub use cluster::{Cluster, ClusterKey, Clusters};
pub use compile::compile;
pub use hash::{HashOutcome, hash_key};
pub use lb::{ActiveRequest, LoadBalancer, Pick};
pub use outlier::{Outcome, OutlierDetector};
pub use pool::{
    ConnectionPermit, ConnectionPool, Limit, Overflow, PendingPermit, RequestPermit, RetryPermit,
};
pub use rule::{CompiledDestinationRule, Host, Subset, TrafficPolicy};
pub use settings::{
    ConsistentHash, CookieKey, HashKey, HashTable, LbPolicy, OutlierConfig, PoolLimits,
    TcpKeepalive, UpstreamProtocol,
};

/// What compiling needs besides the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileContext {
    /// The cluster's DNS suffix (`cluster.local`): short hosts such as `reviews` become
    /// `reviews.<rule namespace>.svc.<domain_suffix>`.
    pub domain_suffix: String,
}

impl Default for CompileContext {
    fn default() -> Self {
        CompileContext {
            domain_suffix: "cluster.local".to_owned(),
        }
    }
}

/// The DestinationRules in force, indexed by host. See the module docs for how several
/// rules for one host are merged.
#[derive(Debug, Clone, Default)]
pub struct DestinationRules {
    exact: HashMap<String, Arc<CompiledDestinationRule>>,
    /// Wildcard rules, most specific (longest suffix) first.
    wildcards: Vec<Arc<CompiledDestinationRule>>,
}

impl DestinationRules {
    /// Indexes `rules`, leaving out rules with a workload selector and merging rules for
    /// the same host (ordered by namespace, then name).
    pub fn new(rules: Vec<Arc<CompiledDestinationRule>>) -> Self {
        let mut rules: Vec<_> = rules
            .into_iter()
            .filter(|r| r.workload_selector().is_none())
            .collect();
        rules.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        let mut by_host: Vec<(Host, Vec<Arc<CompiledDestinationRule>>)> = Vec::new();
        for rule in rules {
            match by_host.iter_mut().find(|(h, _)| h == rule.host()) {
                Some((_, group)) => group.push(rule),
                None => by_host.push((rule.host().clone(), vec![rule])),
            }
        }
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (host, group) in by_host {
            let merged = merge_group(group);
            match host {
                Host::Exact(name) => {
                    exact.insert(name, merged);
                }
                Host::Wildcard(_) => wildcards.push(merged),
            }
        }
        wildcards.sort_by_key(|r| std::cmp::Reverse(r.host().suffix_len()));
        DestinationRules { exact, wildcards }
    }

    /// The rule for `host_fqdn` (case-insensitive): the exact-host rule if there is one,
    /// else the most specific wildcard rule matching it.
    pub fn lookup(&self, host_fqdn: &str) -> Option<&CompiledDestinationRule> {
        let lowered;
        let host = if host_fqdn.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host_fqdn.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host_fqdn
        };
        if let Some(rule) = self.exact.get(host) {
            return Some(rule);
        }
        self.wildcards
            .iter()
            .find(|r| r.host().matches(host))
            .map(|r| &**r)
    }

    /// Number of (merged) rules.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Merges rules for one host, already in precedence order.
fn merge_group(mut group: Vec<Arc<CompiledDestinationRule>>) -> Arc<CompiledDestinationRule> {
    if group.len() == 1 {
        return group.remove(0);
    }
    let mut merged = (*group[0]).clone();
    for other in &group[1..] {
        merged.absorb(other);
    }
    Arc::new(merged)
}
