//! How a policy picks what it applies to: a [`WorkloadSelector`] (pod labels)
//! or [`PolicyTargetReference`]s (a Gateway, Service, ...).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{Errors, check_labels, dns1123_label, dns1123_subdomain};

/// `selector:` / `workloadSelector:` — the workloads (pods) a resource
/// applies to, by labels. All labels must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels the workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Keys and values must be valid Kubernetes label syntax (so no `*`).
    pub(crate) fn check(&self, errs: &mut Errors, path: &str) {
        check_labels(errs, &format!("{path}.matchLabels"), &self.match_labels);
    }

    /// Whether the selector actually selects by something.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty()
    }
}

/// `targetRef:` / `targetRefs[]` — a reference to the resource a policy
/// attaches to (Gateway API policy attachment).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target; empty for the core group (`Service`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the target, e.g. `Gateway`, `Service`.
    #[serde(default)]
    pub kind: String,
    /// Name of the target.
    #[serde(default)]
    pub name: String,
    /// Namespace of the target; must be the policy's own when set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// The `(group, kind)` pairs a security policy's `targetRef` may name.
pub(crate) const POLICY_TARGET_KINDS: &[(&str, &str)] = &[
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
];

impl PolicyTargetReference {
    pub(crate) fn check(&self, errs: &mut Errors, path: &str, policy_namespace: Option<&str>) {
        if self.kind.is_empty() {
            errs.add(format!("{path}.kind"), "required");
        } else if !POLICY_TARGET_KINDS.contains(&(self.group.as_str(), self.kind.as_str())) {
            let allowed: Vec<String> = POLICY_TARGET_KINDS
                .iter()
                .map(|(g, k)| {
                    if g.is_empty() {
                        (*k).to_owned()
                    } else {
                        format!("{g}/{k}")
                    }
                })
                .collect();
            errs.add(
                path,
                format!(
                    "unsupported target {:?}/{:?}; must be one of {}",
                    self.group,
                    self.kind,
                    allowed.join(", ")
                ),
            );
        }
        if self.name.is_empty() {
            errs.add(format!("{path}.name"), "required");
        } else {
            errs.check(format!("{path}.name"), dns1123_subdomain(&self.name));
        }
        if !self.namespace.is_empty() {
            if let Err(e) = dns1123_label(&self.namespace) {
                errs.add(format!("{path}.namespace"), e);
            } else if policy_namespace.is_some_and(|ns| ns != self.namespace) {
                errs.add(
                    format!("{path}.namespace"),
                    "cross-namespace references are not supported; must be the policy's namespace",
                );
            }
        }
    }
}

/// `selector`, `targetRef` and `targetRefs` are mutually exclusive; each one
/// present is checked.
pub(crate) fn check_policy_targets(
    errs: &mut Errors,
    namespace: Option<&str>,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set: Vec<&str> = [
        (selector.is_some(), "selector"),
        (target_ref.is_some(), "targetRef"),
        (!target_refs.is_empty(), "targetRefs"),
    ]
    .into_iter()
    .filter_map(|(present, name)| present.then_some(name))
    .collect();
    if set.len() > 1 {
        errs.add(
            "spec",
            format!(
                "only one of selector, targetRef or targetRefs may be set (found {})",
                set.join(", ")
            ),
        );
    }
    if let Some(selector) = selector {
        selector.check(errs, "spec.selector");
    }
    if let Some(target) = target_ref {
        target.check(errs, "spec.targetRef", namespace);
    }
    for (i, target) in target_refs.iter().enumerate() {
        target.check(errs, &format!("spec.targetRefs[{i}]"), namespace);
    }
}
