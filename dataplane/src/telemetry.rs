//! Istio's standard metric labels, shared by ztunnel's TCP metrics and the waypoint's
//! request metrics (which add `response_code` and `grpc_response_status` to them), so
//! that dashboards and alerts written for Istio read both.

use prometheus_client::encoding::EncodeLabelSet;

use crate::state::Workload;

/// Any label value the proxy does not know.
pub const UNKNOWN: &str = "unknown";

/// Istio's standard labels of a connection or request, in Istio's order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

/// `v`, or [`UNKNOWN`] when missing or empty.
pub fn value(v: Option<&str>) -> String {
    v.filter(|v| !v.is_empty()).unwrap_or(UNKNOWN).to_owned()
}

/// What the standard labels say of one side's workload (each `unknown` without one).
/// Both proxies report `*_app` and `*_version` as the canonical service and revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadLabels {
    pub workload: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub namespace: String,
    pub cluster: String,
}

impl WorkloadLabels {
    pub fn of(workload: Option<&Workload>) -> Self {
        let field = |f: fn(&Workload) -> &str| value(workload.map(f));
        WorkloadLabels {
            workload: field(|w| &w.workload_name),
            canonical_service: field(|w| &w.canonical_name),
            canonical_revision: field(|w| &w.canonical_revision),
            namespace: field(|w| &w.namespace),
            cluster: value(workload.and_then(cluster_id)),
        }
    }
}

/// The cluster a workload belongs to, from its uid (`CLUSTER//KIND/NAMESPACE/NAME`, as
/// the workload API forms it); `None` when the uid has another form.
pub fn cluster_id(workload: &Workload) -> Option<&str> {
    workload
        .uid
        .split_once("//")
        .map(|(cluster, _)| cluster)
        .filter(|c| !c.is_empty())
}
