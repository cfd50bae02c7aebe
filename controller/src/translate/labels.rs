//! The label conventions translation reads: ambient enrollment, canonical service
//! names for telemetry, and label selectors.

use std::collections::BTreeMap;

/// `istio.io/dataplane-mode`: `ambient` on a namespace or pod enrolls it; `none` on a
/// pod opts it out of an ambient namespace.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const DATAPLANE_AMBIENT: &str = "ambient";
pub const DATAPLANE_NONE: &str = "none";

/// Where the canonical service name comes from, most specific first.
const CANONICAL_NAME: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
/// Where the canonical revision comes from, most specific first.
const CANONICAL_REVISION: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

pub type Labels = BTreeMap<String, String>;

fn first_of<'a>(labels: &'a Labels, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| labels.get(*k)).map(String::as_str)
}

/// Canonical service name (metrics' `destination_canonical_service`); the workload name
/// when no label says otherwise.
pub fn canonical_name(labels: &Labels, workload_name: &str) -> String {
    first_of(labels, &CANONICAL_NAME)
        .unwrap_or(workload_name)
        .to_owned()
}

/// Canonical revision; `latest` when no label says otherwise.
pub fn canonical_revision(labels: &Labels) -> String {
    first_of(labels, &CANONICAL_REVISION)
        .unwrap_or("latest")
        .to_owned()
}

/// Whether every `selector` label is on the object (an empty selector selects all).
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a pod is captured by ztunnel. Host-network pods share the node's network
/// namespace, so there is nothing to capture them in.
pub fn enrolled(pod_labels: &Labels, namespace_labels: &Labels, host_network: bool) -> bool {
    if host_network {
        return false;
    }
    match pod_labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some(DATAPLANE_NONE) => false,
        Some(DATAPLANE_AMBIENT) => true,
        _ => namespace_labels.get(DATAPLANE_MODE).map(String::as_str) == Some(DATAPLANE_AMBIENT),
    }
}
