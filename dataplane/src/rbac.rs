//! L4 authorization with Istio's `AuthorizationPolicy` semantics, on the model of the
//! `istio.security.Authorization` xDS resource: which policies apply to a destination
//! workload ([`PolicyStore::applicable`]) and whether a connection may reach it
//! ([`PolicyStore::authorize`]).
//!
//! Order of evaluation, as in Istio: a matching DENY policy denies; when no ALLOW policy
//! applies the connection is allowed; otherwise some ALLOW policy must match.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use hbone::Identity;

use crate::state::{StateError, Workload};

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every workload in the mesh (Istio: root-namespace policies without a selector).
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Only workloads that list the policy in their `authorization_policies`.
    WorkloadSelector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// A matching connection is logged as audited; allow and deny are unaffected.
    Audit,
}

/// One policy. The nesting is Istio's: the policy matches when any group matches, a
/// group when all its rules match (a group without rules matches everything), and a rule
/// when any of its matches matches (a rule without matches matches everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    pub groups: Vec<Vec<Vec<Match>>>,
    /// Evaluated and logged, never enforced (`istio.io/dry-run`).
    pub dry_run: bool,
}

/// Conditions on a connection. Values within a field are alternatives; every non-empty
/// field must hold; a `not_*` field holds when none of its values match. A match with no
/// field set at all matches nothing, as upstream ztunnel treats it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    /// Against the peer identity without `spiffe://`, i.e. `td/ns/NS/sa/SA`.
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub service_accounts: Vec<ServiceAccountMatch>,
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    pub source_ips: Vec<Cidr>,
    pub not_source_ips: Vec<Cidr>,
    pub destination_ips: Vec<Cidr>,
    pub not_destination_ips: Vec<Cidr>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

/// A string pattern: exact, prefix, suffix, or any non-empty value; from xDS, or parsed
/// from Istio's `*` wildcard syntax ([`StringMatch::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    /// The value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The value ends with this.
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

/// A service account in a namespace, whatever the trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountMatch {
    pub namespace: String,
    pub service_account: String,
}

/// An IP prefix. The connection's address is compared in canonical form, so an
/// IPv4-mapped IPv6 source still matches an IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// What policy sees of one connection to a workload.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub src_ip: IpAddr,
    /// The verified peer identity; `None` for plaintext, which therefore has no principal
    /// and no namespace (positive matches on them fail, `not_*` ones hold).
    pub src_identity: Option<Identity>,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub dst_workload: Arc<Workload>,
}

/// A connection refused by policy, naming the policy (or policies) responsible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {policy}")]
pub struct Denied {
    /// `namespace/name`; for [`DenyReason::NoAllowPolicyMatched`], every applicable ALLOW
    /// policy, comma-separated.
    pub policy: String,
    pub reason: DenyReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    DenyPolicyMatched,
    NoAllowPolicyMatched,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::DenyPolicyMatched => "matched DENY policy",
            DenyReason::NoAllowPolicyMatched => "matched none of the ALLOW policies",
        })
    }
}

impl Policy {
    /// `namespace/name`: the xDS resource name and what workloads list.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn matches(&self, conn: &ConnectionInfo) -> bool {
        let peer = Peer::of(conn);
        self.matches_peer(conn, &peer)
    }

    fn matches_peer(&self, conn: &ConnectionInfo, peer: &Peer<'_>) -> bool {
        self.groups.iter().any(|group| {
            group
                .iter()
                .all(|rule| rule.is_empty() || rule.iter().any(|m| m.matches_peer(conn, peer)))
        })
    }
}

/// The peer's identity, pre-rendered once per connection.
struct Peer<'a> {
    identity: Option<&'a Identity>,
    principal: Option<String>,
}

impl<'a> Peer<'a> {
    fn of(conn: &'a ConnectionInfo) -> Self {
        let identity = conn.src_identity.as_ref();
        Peer {
            identity,
            principal: identity.map(|id| {
                format!(
                    "{}/ns/{}/sa/{}",
                    id.trust_domain(),
                    id.namespace(),
                    id.service_account()
                )
            }),
        }
    }
}

impl Match {
    fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    fn matches_peer(&self, conn: &ConnectionInfo, peer: &Peer<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let namespace = peer.identity.map(Identity::namespace);
        let principal = peer.principal.as_deref();
        holds(&self.namespaces, &self.not_namespaces, |m| {
            namespace.is_some_and(|ns| m.matches(ns))
        }) && holds(&self.principals, &self.not_principals, |m| {
            principal.is_some_and(|p| m.matches(p))
        }) && holds(&self.service_accounts, &self.not_service_accounts, |m| {
            peer.identity.is_some_and(|id| m.matches(id))
        }) && holds(&self.source_ips, &self.not_source_ips, |c| {
            c.contains(conn.src_ip)
        }) && holds(&self.destination_ips, &self.not_destination_ips, |c| {
            c.contains(conn.dst_ip)
        }) && holds(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == conn.dst_port
        })
    }
}

/// One field and its `not_` form: any positive value matches (or none is given) and no
/// negative value matches.
fn holds<T>(positive: &[T], negative: &[T], matches: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&matches)) && !negative.iter().any(&matches)
}

impl StringMatch {
    /// Parses Istio's wildcard syntax: `*` alone (any non-empty value), `prefix*`,
    /// `*suffix`, or exact.
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            StringMatch::Presence
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            StringMatch::Prefix(prefix.to_owned())
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            StringMatch::Suffix(suffix.to_owned())
        } else {
            StringMatch::Exact(pattern.to_owned())
        }
    }

    /// Like [`StringMatch::parse`], lower-casing the pattern (for hosts).
    pub fn parse_lowercase(pattern: &str) -> Self {
        Self::parse(&pattern.to_ascii_lowercase())
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

impl ServiceAccountMatch {
    pub fn matches(&self, identity: &Identity) -> bool {
        identity.namespace() == self.namespace && identity.service_account() == self.service_account
    }
}

impl Cidr {
    /// `None` when the prefix is longer than the address (33+ for IPv4, 129+ for IPv6).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Cidr { addr, prefix_len })
    }

    /// Parses `ip` or `ip/len`. An IPv4-mapped IPv6 block of 96 bits or more is kept as
    /// the IPv4 block it covers (connections are compared in canonical form).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
        };
        Ok(match addr.to_canonical() {
            IpAddr::V4(v4) if addr.is_ipv6() && prefix_len >= 96 => Cidr {
                addr: IpAddr::V4(v4),
                prefix_len: prefix_len - 96,
            },
            _ => Cidr { addr, prefix_len },
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let len = u32::from(self.prefix_len);
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                len == 0 || (u32::from(net) ^ u32::from(ip)) >> (32 - len) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                len == 0 || (u128::from(net) ^ u128::from(ip)) >> (128 - len) == 0
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Every policy, indexed by how it is selected.
#[derive(Debug, Default)]
pub struct PolicyStore {
    by_key: HashMap<String, Arc<Policy>>,
    global: Vec<Arc<Policy>>,
    by_namespace: HashMap<String, Vec<Arc<Policy>>>,
}

impl PolicyStore {
    /// Indexes `policies`, refusing two with the same `namespace/name`.
    pub fn new(policies: Vec<Policy>) -> Result<Self, StateError> {
        let mut store = PolicyStore::default();
        for policy in policies {
            let policy = Arc::new(policy);
            let key = policy.key();
            match policy.scope {
                Scope::Global => store.global.push(policy.clone()),
                Scope::Namespace => store
                    .by_namespace
                    .entry(policy.namespace.clone())
                    .or_default()
                    .push(policy.clone()),
                Scope::WorkloadSelector => {}
            }
            if store.by_key.insert(key.clone(), policy).is_some() {
                return Err(StateError::DuplicatePolicy(key));
            }
        }
        // A fixed order keeps logs and `Denied::policy` stable across rebuilds.
        store.global.sort_by_key(|p| p.key());
        for list in store.by_namespace.values_mut() {
            list.sort_by_key(|p| p.key());
        }
        Ok(store)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The policy named `namespace/name`.
    pub fn get(&self, key: &str) -> Option<&Arc<Policy>> {
        self.by_key.get(key)
    }

    /// Every policy, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_key.values()
    }

    /// The policies that apply to `workload`: global ones, its namespace's, and the
    /// selector-based ones it lists (names of unknown policies are skipped).
    pub fn applicable<'a>(&'a self, workload: &'a Workload) -> impl Iterator<Item = &'a Policy> {
        let namespaced = self.by_namespace.get(&workload.namespace);
        self.global
            .iter()
            .chain(namespaced.into_iter().flatten())
            .chain(
                workload
                    .authorization_policies
                    .iter()
                    .filter_map(|key| self.by_key.get(key)),
            )
            .map(|p| p.as_ref())
    }

    /// Decides a connection to `conn.dst_workload` with Istio's evaluation order, over
    /// the policies that are enforced (not AUDIT, not dry-run).
    pub fn authorize(&self, conn: &ConnectionInfo) -> Result<(), Denied> {
        let enforced = self
            .applicable(&conn.dst_workload)
            .filter(|p| !p.dry_run && p.action != Action::Audit);
        decide(enforced, conn, &Peer::of(conn))
    }

    /// What the policies that enforce nothing make of a connection: the AUDIT policies
    /// it matches, and the verdict the dry-run policies alone would give.
    pub fn observe(&self, conn: &ConnectionInfo) -> Observed {
        let peer = Peer::of(conn);
        let applicable: Vec<&Policy> = self.applicable(&conn.dst_workload).collect();
        let mut audited_by: Vec<String> = applicable
            .iter()
            .filter(|p| p.action == Action::Audit && !p.dry_run && p.matches_peer(conn, &peer))
            .map(|p| p.key())
            .collect();
        audited_by.sort();
        audited_by.dedup();
        let mut dry_run = applicable
            .iter()
            .copied()
            .filter(|p| p.dry_run && p.action != Action::Audit)
            .peekable();
        let dry_run = dry_run
            .peek()
            .is_some()
            .then(|| decide(dry_run, conn, &peer));
        Observed {
            audited_by,
            dry_run,
        }
    }
}

/// What [`PolicyStore::observe`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `namespace/name` of each AUDIT policy the connection matches, sorted.
    pub audited_by: Vec<String>,
    /// The verdict of the dry-run policies alone; `None` when none applies.
    pub dry_run: Option<Result<(), Denied>>,
}

/// Istio's evaluation order over `policies` (ALLOW and DENY ones): a matching DENY
/// denies; with no ALLOW policy the connection is allowed; else some ALLOW must match.
fn decide<'a>(
    policies: impl Iterator<Item = &'a Policy>,
    conn: &ConnectionInfo,
    peer: &Peer<'_>,
) -> Result<(), Denied> {
    let mut allows = Vec::new();
    for policy in policies {
        match policy.action {
            Action::Deny if policy.matches_peer(conn, peer) => {
                return Err(Denied {
                    policy: policy.key(),
                    reason: DenyReason::DenyPolicyMatched,
                });
            }
            Action::Deny | Action::Audit => {}
            Action::Allow => allows.push(policy),
        }
    }
    if allows.is_empty() || allows.iter().any(|p| p.matches_peer(conn, peer)) {
        return Ok(());
    }
    let mut names: Vec<String> = allows.iter().map(|p| p.key()).collect();
    names.sort();
    names.dedup();
    Err(Denied {
        policy: names.join(", "),
        reason: DenyReason::NoAllowPolicyMatched,
    })
}

#[cfg(test)]
mod tests;
