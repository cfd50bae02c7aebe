//! PeerAuthentication -> `istio.security.Authorization`, as Istio does in ambient mode.
//!
//! ztunnel has no mTLS mode of its own: it always speaks HBONE (mutual TLS) to meshed
//! peers and accepts plaintext from the rest unless a policy denies it. So STRICT is
//! expressed as DENY policies on connections without a peer identity:
//!
//! - while any PeerAuthentication exists, one static policy
//!   (`<root>/istio_converted_static_strict`) denies plaintext; every workload whose
//!   effective mode is STRICT lists it;
//! - a workload-level PeerAuthentication with `portLevelMtls` becomes its own DENY policy
//!   (`<ns>/converted_peer_authentication_<name>`) that makes single ports stricter or
//!   laxer than the rest; a workload lists it (instead of the static policy when it
//!   carries the exceptions of a STRICT default) when its ports differ from its mode.
//!
//! Which policy applies at each level: at most one mesh-level policy (root namespace, no
//! selector), one namespace-level policy (the pod's namespace, no selector) and one
//! workload-level policy (the pod's namespace, a selector matching the pod; never in the
//! root namespace, where a selector is ignored). When several qualify at one level the
//! oldest wins: the earliest `metadata.creationTimestamp`, a policy without one counting
//! as newer than any with one, and then the name (alphabetical) breaks ties, so the
//! choice is deterministic even for hand-written manifests without timestamps.
//!
//! DISABLE is treated as PERMISSIVE everywhere (and reported): ztunnel never turns mutual
//! TLS off, it can only stop requiring it.

use std::collections::BTreeMap;

use api::config::PeerAuthentication;
use api::config::peer_authentication::{MtlsMode, MutualTls};
use api::security::string_match::MatchType;
use api::security::{Action, Authorization, Group, Match, Rules, Scope, StringMatch};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::MeshOptions;
use super::authorization::Reporter;
use super::labels::{Labels, selects};
use crate::manifest::ConfigError;
use crate::resource::{Kind, Resource};
use crate::store::Store;

/// Name of the policy that denies plaintext to every workload under STRICT.
pub const STATIC_STRICT: &str = "istio_converted_static_strict";
/// Prefix of the policy a workload-level PeerAuthentication with ports becomes.
pub const CONVERTED_PREFIX: &str = "converted_peer_authentication_";

/// The selector of a policy without one.
static NO_LABELS: Labels = Labels::new();

/// A mode as ztunnel can enforce it: DISABLE is PERMISSIVE (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Inherit from the parent level.
    Unset,
    /// Plaintext accepted (PERMISSIVE, and DISABLE).
    Permissive,
    /// Plaintext denied.
    Strict,
}

fn mode(mtls: Option<&MutualTls>) -> Mode {
    match mtls.and_then(|m| m.mode) {
        None | Some(MtlsMode::Unset) => Mode::Unset,
        Some(MtlsMode::Permissive | MtlsMode::Disable) => Mode::Permissive,
        Some(MtlsMode::Strict) => Mode::Strict,
    }
}

/// One PeerAuthentication as the rules read it.
#[derive(Debug)]
struct Peer<'s> {
    namespace: &'s str,
    name: &'s str,
    created: Option<&'s Time>,
    /// Empty for namespace- and mesh-level policies.
    selector: &'s Labels,
    mode: Mode,
    /// In ascending port order.
    ports: BTreeMap<u32, Mode>,
}

impl Peer<'_> {
    /// Sorts oldest first: by creation time (none = newest), then by name.
    fn age(&self) -> (bool, Option<&Time>, &str) {
        (self.created.is_none(), self.created, self.name)
    }

    fn has_port(&self, mode: Mode) -> bool {
        self.ports.values().any(|m| *m == mode)
    }

    fn converted_key(&self) -> String {
        format!("{}/{CONVERTED_PREFIX}{}", self.namespace, self.name)
    }
}

/// Every PeerAuthentication, sorted into levels, and the policies they become.
#[derive(Debug, Default)]
pub struct PeerAuthentications<'s> {
    /// `<root>/istio_converted_static_strict`; `None` without any PeerAuthentication.
    static_strict: Option<Authorization>,
    /// The mesh-level policy in force.
    mesh: Option<Peer<'s>>,
    /// The namespace-level policy in force, by namespace (never the root namespace).
    namespaces: BTreeMap<&'s str, Peer<'s>>,
    /// Workload-level policies by namespace, oldest first.
    workloads: BTreeMap<&'s str, Vec<Peer<'s>>>,
    /// The converted workload-level policies.
    converted: Vec<Authorization>,
}

impl<'s> PeerAuthentications<'s> {
    /// Reads every PeerAuthentication in `store`; DISABLE modes go to `problems`.
    pub fn new(store: &'s Store, options: &MeshOptions, problems: &mut Vec<ConfigError>) -> Self {
        let root = options.root_namespace.as_str();
        let mut out = PeerAuthentications::default();
        for parsed in store.of_kind(Kind::PeerAuthentication) {
            let Resource::PeerAuthentication(pa) = parsed.resource.as_ref() else {
                continue;
            };
            report_disable(pa, &mut Reporter { parsed, problems });
            out.static_strict.get_or_insert_with(|| static_strict(root));
            let peer = Peer {
                namespace: parsed.key.namespace.as_deref().unwrap_or("default"),
                name: &parsed.key.name,
                created: pa.metadata.creation_timestamp.as_ref(),
                selector: pa
                    .spec
                    .selector
                    .as_ref()
                    .map_or(&NO_LABELS, |s| &s.match_labels),
                mode: mode(pa.spec.mtls.as_ref()),
                ports: pa
                    .spec
                    .port_level_mtls
                    .iter()
                    .map(|(port, mtls)| (*port, mode(Some(mtls))))
                    .collect(),
            };
            let older = |chosen: Option<&Peer<'_>>| chosen.is_none_or(|c| peer.age() < c.age());
            match (peer.selector.is_empty(), peer.namespace == root) {
                (true, true) => {
                    if older(out.mesh.as_ref()) {
                        out.mesh = Some(peer);
                    }
                }
                (true, false) => {
                    if older(out.namespaces.get(peer.namespace)) {
                        out.namespaces.insert(peer.namespace, peer);
                    }
                }
                (false, false) => out.workloads.entry(peer.namespace).or_default().push(peer),
                // Istio ignores a selector in the root namespace in ambient mode.
                (false, true) => {}
            }
        }
        for peers in out.workloads.values_mut() {
            peers.sort_by(|a, b| a.age().cmp(&b.age()));
        }
        out.converted = out
            .workloads
            .values()
            .flatten()
            .filter_map(|peer| convert(peer, out.parent_strict(peer.namespace)))
            .collect();
        out
    }

    /// The policies to publish: the static STRICT one and the converted ones.
    pub fn authorizations(&self) -> impl Iterator<Item = &Authorization> {
        self.static_strict.iter().chain(&self.converted)
    }

    /// Whether the namespace- or else mesh-level policy makes `namespace` STRICT. A
    /// namespace-level policy with mode UNSET inherits the mesh's.
    fn parent_strict(&self, namespace: &str) -> bool {
        match self.namespaces.get(namespace).map(|p| p.mode) {
            Some(Mode::Strict) => true,
            Some(Mode::Permissive) => false,
            None | Some(Mode::Unset) => self.mesh.as_ref().is_some_and(|m| m.mode == Mode::Strict),
        }
    }

    /// The PeerAuthentication policies a pod lists in `authorization_policies`.
    pub fn policy_keys(&self, namespace: &str, labels: &Labels) -> Vec<String> {
        let Some(static_strict) = &self.static_strict else {
            return Vec::new();
        };
        let mut strict = self.parent_strict(namespace);
        let workload = self
            .workloads
            .get(namespace)
            .and_then(|peers| peers.iter().find(|p| selects(p.selector, labels)));
        let mut exceptions = false;
        if let Some(w) = workload {
            match w.mode {
                Mode::Strict => {
                    // The converted policy carries the STRICT default with its exceptions.
                    exceptions = w.has_port(Mode::Permissive);
                    strict = !exceptions;
                }
                Mode::Permissive => {
                    exceptions = w.has_port(Mode::Strict);
                    strict = false;
                }
                // Under a STRICT parent the converted policy merges the parent's
                // STRICT default with the PERMISSIVE ports. A DISABLE port counts too
                // (Istio looks for PERMISSIVE only here, so it keeps such a port STRICT
                // although the converted policy it publishes exempts it).
                Mode::Unset if strict => {
                    exceptions = w.has_port(Mode::Permissive);
                    strict = !exceptions;
                }
                Mode::Unset => exceptions = w.has_port(Mode::Strict),
            }
        }
        let mut keys = Vec::new();
        if strict {
            keys.push(format!(
                "{}/{}",
                static_strict.namespace, static_strict.name
            ));
        }
        if let Some(w) = workload.filter(|_| exceptions) {
            keys.push(w.converted_key());
        }
        keys
    }
}

/// `DISABLE` cannot be honoured: report where it is written.
fn report_disable(pa: &PeerAuthentication, report: &mut Reporter<'_>) {
    let disabled = |m: Option<&MutualTls>| m.and_then(|m| m.mode) == Some(MtlsMode::Disable);
    const WHY: &str = "ambient ztunnel does not disable mutual TLS: DISABLE is treated as \
                       PERMISSIVE (mutual TLS from meshed peers, plaintext from the rest)";
    if disabled(pa.spec.mtls.as_ref()) {
        report.report("spec.mtls.mode".into(), WHY.into());
    }
    for (port, mtls) in &pa.spec.port_level_mtls {
        if disabled(Some(mtls)) {
            report.report(format!("spec.portLevelMtls.{port}.mode"), WHY.into());
        }
    }
}

/// A match for connections without a peer identity: plaintext.
fn plaintext() -> Match {
    Match {
        not_principals: vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        ..Match::default()
    }
}

fn one_rule(m: Match) -> Rules {
    Rules { matches: vec![m] }
}

fn static_strict(root_namespace: &str) -> Authorization {
    Authorization {
        name: STATIC_STRICT.into(),
        namespace: root_namespace.into(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        groups: vec![Group {
            rules: vec![one_rule(plaintext())],
        }],
        dry_run: false,
    }
}

/// The DENY policy of a workload-level PeerAuthentication with port-level modes, given
/// whether its namespace (or else the mesh) is STRICT; `None` when the static STRICT
/// policy or nothing at all already says the same.
///
/// Istio writes the parent conditions in terms of the namespace- and mesh-level
/// policies; they all come down to `parent_strict` (a namespace policy with mode UNSET
/// inherits the mesh's) except one: for a PERMISSIVE port Istio takes any
/// namespace-level policy that is not STRICT, UNSET included, as relaxing. That would
/// leave a workload under a STRICT mesh and an UNSET namespace policy listing a policy
/// that is never published, instead of the static one, so accepting plaintext on every
/// port. Here UNSET inherits there too.
fn convert(peer: &Peer<'_>, parent_strict: bool) -> Option<Authorization> {
    if peer.ports.is_empty() {
        return None;
    }
    let mode = peer.mode;
    // Clauses of one group are ANDed: plaintext AND not one of the exempted ports.
    let mut rules = Vec::new();
    // Groups are ORed: one per port that is stricter than its parent.
    let mut groups = Vec::new();
    if mode == Mode::Strict {
        rules.push(one_rule(plaintext()));
    }
    let mut found_non_strict = false;
    for (&port, &port_mode) in &peer.ports {
        match port_mode {
            Mode::Strict => {
                let covered = mode == Mode::Strict || (mode == Mode::Unset && parent_strict);
                if !covered {
                    groups.push(Group {
                        rules: vec![one_rule(Match {
                            destination_ports: vec![port],
                            ..plaintext()
                        })],
                    });
                }
            }
            Mode::Permissive => {
                let relaxed = mode == Mode::Permissive || (mode == Mode::Unset && !parent_strict);
                if !relaxed {
                    found_non_strict = true;
                    rules.push(one_rule(Match {
                        not_destination_ports: vec![port],
                        ..Match::default()
                    }));
                }
            }
            Mode::Unset => {}
        }
    }
    if mode == Mode::Strict && !found_non_strict {
        return None; // all STRICT: the static policy covers it
    }
    if rules.is_empty() && groups.is_empty() {
        return None;
    }
    if parent_strict && found_non_strict {
        rules.push(one_rule(plaintext()));
    }
    if !rules.is_empty() {
        groups.push(Group { rules });
    }
    Some(Authorization {
        name: format!("{CONVERTED_PREFIX}{}", peer.name),
        namespace: peer.namespace.into(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        groups,
        dry_run: false,
    })
}
