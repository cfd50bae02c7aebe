//! The compiled form of a DestinationRule and the traffic policy merge.

use std::collections::BTreeMap;

use super::settings::{LbPolicy, OutlierConfig, PoolLimits};
use crate::context::Labels;

/// The host a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A fully qualified name, lower case.
    Exact(String),
    /// `*` or `*SUFFIX` (`*.example.com`): the suffix (here `.example.com`; empty for
    /// `*`), lower case. Matches every host ending with the suffix.
    Wildcard(String),
}

impl Host {
    /// Whether the (lower-case) `host` is covered.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(name) => name == host,
            Host::Wildcard(suffix) => host.ends_with(suffix.as_str()),
        }
    }

    /// Specificity of a wildcard: the length of its suffix (exact hosts: their length).
    pub(crate) fn suffix_len(&self) -> usize {
        match self {
            Host::Exact(name) | Host::Wildcard(name) => name.len(),
        }
    }
}

/// The policy fields a layer (top level, port level, subset) may set. `None` means the
/// layer leaves the field to the layer below.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fields {
    pub(crate) load_balancer: Option<LbPolicy>,
    pub(crate) connection_pool: Option<PoolLimits>,
    pub(crate) outlier_detection: Option<OutlierConfig>,
}

/// A `trafficPolicy`: its own fields and its `portLevelSettings` by port.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Layer {
    pub(crate) base: Fields,
    pub(crate) ports: BTreeMap<u16, Fields>,
}

impl Layer {
    /// The fields for `port`, and whether a port-level entry supplied them. A port-level
    /// entry replaces the layer's fields wholesale: what it leaves unset falls back to
    /// the defaults, not to the layer's top-level value (Istio's documented rule).
    fn for_port(&self, port: u16) -> (Fields, bool) {
        match self.ports.get(&port) {
            Some(fields) => (fields.clone(), true),
            None => (self.base.clone(), false),
        }
    }
}

/// The effective policy of one cluster (host, subset, port), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrafficPolicy {
    /// Load balancing (default [`LbPolicy::LeastRequest`]).
    pub load_balancer: LbPolicy,
    /// Connection pool limits (default: unlimited, see [`PoolLimits`]).
    pub connection_pool: PoolLimits,
    /// Outlier detection; `None` when no layer enables it.
    pub outlier_detection: Option<OutlierConfig>,
}

/// `subsets[]`: a named group of the host's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub(crate) name: String,
    pub(crate) labels: Labels,
    pub(crate) policy: Option<Layer>,
}

impl Subset {
    /// The subset's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels an endpoint must carry.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Whether an endpoint with `labels` belongs to the subset: it carries every label
    /// of the subset with the same value (a subset without labels has every endpoint).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

/// A DestinationRule ready to evaluate. Build with [`super::compile`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledDestinationRule {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) host: Host,
    pub(crate) policy: Option<Layer>,
    pub(crate) subsets: Vec<Subset>,
    pub(crate) export_to: Vec<String>,
    pub(crate) workload_selector: Option<Labels>,
}

impl CompiledDestinationRule {
    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name` (of the first rule, when several were merged).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The subsets, in order.
    pub fn subsets(&self) -> &[Subset] {
        &self.subsets
    }

    /// The subset called `name`.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// `workloadSelector.matchLabels`, when the rule has a selector.
    pub fn workload_selector(&self) -> Option<&Labels> {
        self.workload_selector.as_ref()
    }

    /// Whether `exportTo` makes the rule visible to `namespace` (no `exportTo`, `*`, `.`
    /// for the rule's own namespace, or the name itself).
    pub fn is_exported_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || e == namespace || (e == "." && self.namespace == namespace))
    }

    /// The effective traffic policy for `port` of `subset` (`None`: the whole host).
    /// `None` when `subset` names no subset of this rule.
    ///
    /// Istio's merge (`MergeSubsetTrafficPolicy`): the top-level policy is resolved for
    /// the port (a matching `portLevelSettings` entry replaces `loadBalancer`,
    /// `connectionPool` and `outlierDetection` wholesale, unset ones becoming defaults);
    /// the subset's policy is resolved for the port the same way; then each field the
    /// subset sets (or all three, if the subset has a port-level entry for the port)
    /// replaces the top-level one. Fields are replaced whole, never merged inside.
    pub fn traffic_policy(&self, subset: Option<&str>, port: u16) -> Option<TrafficPolicy> {
        let top = self
            .policy
            .as_ref()
            .map(|l| l.for_port(port).0)
            .unwrap_or_default();
        let subset_layer = match subset {
            None => None,
            Some(name) => self.subset(name)?.policy.as_ref(),
        };
        let merged = match subset_layer {
            None => top,
            Some(layer) => {
                let (own, port_level) = layer.for_port(port);
                fn pick<T>(mine: Option<T>, theirs: Option<T>, port_level: bool) -> Option<T> {
                    if mine.is_some() || port_level {
                        mine
                    } else {
                        theirs
                    }
                }
                Fields {
                    load_balancer: pick(own.load_balancer, top.load_balancer, port_level),
                    connection_pool: pick(own.connection_pool, top.connection_pool, port_level),
                    outlier_detection: pick(
                        own.outlier_detection,
                        top.outlier_detection,
                        port_level,
                    ),
                }
            }
        };
        Some(TrafficPolicy {
            load_balancer: merged.load_balancer.unwrap_or_default(),
            connection_pool: merged.connection_pool.unwrap_or_default(),
            outlier_detection: merged.outlier_detection,
        })
    }

    /// Merges a later rule for the same host into this one (istiod's rule): its subsets
    /// whose names are new are appended; its top-level policy and `exportTo` are used only
    /// when this rule has none.
    pub(crate) fn absorb(&mut self, other: &CompiledDestinationRule) {
        for subset in &other.subsets {
            if self.subset(&subset.name).is_none() {
                self.subsets.push(subset.clone());
            }
        }
        if self.policy.is_none() {
            self.policy.clone_from(&other.policy);
        }
        if self.export_to.is_empty() {
            self.export_to.clone_from(&other.export_to);
        }
    }
}
