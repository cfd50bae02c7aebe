//! Pods -> `istio.workload.Workload`: identity, addresses, enrollment, telemetry names,
//! health, the services each pod backs and the selector policies that apply to it
//! (including those its PeerAuthentications became).

use std::collections::BTreeMap;
use std::net::IpAddr;

use api::workload::{
    NetworkMode, PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};
use k8s_openapi::api::core::v1::Namespace;

use super::MeshOptions;
use super::authorization::TranslatedPolicy;
use super::labels::{self, Labels};
use super::peer_authentication::PeerAuthentications;
use super::service::{ServiceIndex, ip_bytes, services_of};
use super::waypoint::{Scope, Traffic, UseWaypoint, Waypoints};
use crate::resource::{Owner, PodRecord};

/// What every pod's translation looks up.
#[derive(Debug)]
pub struct Context<'a> {
    pub options: &'a MeshOptions,
    pub namespaces: &'a BTreeMap<&'a str, &'a Namespace>,
    pub services: &'a ServiceIndex,
    pub policies: &'a [TranslatedPolicy],
    pub peer_authentications: &'a PeerAuthentications<'a>,
    pub waypoints: &'a Waypoints,
    /// The labels of each ServiceAccount, by (namespace, name).
    pub service_accounts: &'a BTreeMap<(&'a str, &'a str), &'a Labels>,
}

/// The workload for `pod`; `None` while it has no IP, or once it has terminated.
pub fn translate(pod: &PodRecord, cx: &Context<'_>) -> Option<Workload> {
    if matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let pod_ip: IpAddr = pod.pod_ip.as_deref()?.parse().ok()?;
    let mut ips = vec![pod_ip];
    for ip in &pod.pod_ips {
        if let Ok(ip) = ip.parse::<IpAddr>()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }

    let name = pod.name.clone();
    let namespace = pod.namespace.to_string();
    let empty = Labels::new();
    let pod_labels = &*pod.labels;
    let namespace_labels = cx
        .namespaces
        .get(namespace.as_str())
        .and_then(|ns| ns.metadata.labels.as_ref())
        .unwrap_or(&empty);
    let host_network = pod.host_network;
    let (workload_name, workload_type) = workload_name_and_type(pod);

    let services = services_of(cx.services, &namespace, pod_labels, pod)
        .into_iter()
        .map(|(key, ports)| (key, PortList { ports }))
        .collect();
    let mut authorization_policies: Vec<String> = cx
        .policies
        .iter()
        .filter(|p| p.selects(&namespace, pod_labels, &cx.options.root_namespace))
        .map(TranslatedPolicy::resource_name)
        .chain(cx.peer_authentications.policy_keys(&namespace, pod_labels))
        .collect();
    authorization_policies.sort();
    let service_account = pod
        .service_account
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_owned();
    let waypoint = waypoint(
        cx,
        pod_labels,
        namespace_labels,
        &namespace,
        &service_account,
    );

    Some(Workload {
        uid: format!("{}//Pod/{namespace}/{name}", cx.options.cluster_id),
        addresses: ips.into_iter().map(ip_bytes).collect(),
        tunnel_protocol: if labels::enrolled(pod_labels, namespace_labels, host_network) {
            TunnelProtocol::Hbone
        } else {
            TunnelProtocol::None
        } as i32,
        trust_domain: cx.options.trust_domain.clone(),
        service_account,
        waypoint,
        node: pod.node_name.as_deref().unwrap_or_default().to_owned(),
        canonical_name: labels::canonical_name(pod_labels, &workload_name),
        canonical_revision: labels::canonical_revision(pod_labels),
        workload_type: workload_type as i32,
        workload_name,
        services,
        authorization_policies,
        status: health(pod) as i32,
        cluster_id: cx.options.cluster_id.clone(),
        network_mode: if host_network {
            NetworkMode::HostNetwork
        } else {
            NetworkMode::Standard
        } as i32,
        // Our extension (field 100): the waypoint's subsets and sourceLabels need them.
        labels: pod_labels.clone(),
        name,
        namespace,
        ..Workload::default()
    })
}

/// The waypoint for traffic addressed to this workload: the label on the pod, else on
/// its ServiceAccount, else on its namespace (see [`super::waypoint`]); never for a
/// waypoint's own pods.
fn waypoint(
    cx: &Context<'_>,
    pod_labels: &Labels,
    namespace_labels: &Labels,
    namespace: &str,
    service_account: &str,
) -> Option<api::workload::GatewayAddress> {
    if cx.waypoints.is_instance(namespace, pod_labels) {
        return None;
    }
    let empty = Labels::new();
    let account_labels = cx
        .service_accounts
        .get(&(namespace, service_account))
        .copied()
        .unwrap_or(&empty);
    let pod = UseWaypoint::of(pod_labels, namespace);
    let account = UseWaypoint::of(account_labels, namespace);
    let ns = UseWaypoint::of(namespace_labels, namespace);
    cx.waypoints.pick(
        &[
            (Scope::Pod, &pod),
            (Scope::ServiceAccount, &account),
            (Scope::Namespace, &ns),
        ],
        Traffic::Workload,
        namespace,
        namespace_labels,
    )
}

/// Unhealthy when Kubernetes says the pod is not ready, or not yet (or no longer)
/// running. Hand-written manifests often carry only `status.podIP`: that is healthy.
pub fn health(pod: &PodRecord) -> WorkloadStatus {
    let not_ready = pod.ready == Some(false);
    let not_running = pod.phase.as_deref().is_some_and(|p| p != "Running");
    if not_ready || not_running {
        WorkloadStatus::Unhealthy
    } else {
        WorkloadStatus::Healthy
    }
}

/// The workload a pod belongs to, for telemetry (`destination_workload`): its
/// Deployment, Job or CronJob when the owner chain says so, else the pod itself.
pub fn workload_name_and_type(pod: &PodRecord) -> (String, WorkloadType) {
    let pod_name = pod.name.clone();
    let Some(owner) = &pod.owner else {
        return (pod_name, WorkloadType::Pod);
    };
    match owner.kind.as_str() {
        "ReplicaSet" => match deployment_name(pod, owner) {
            Some(deployment) => (deployment, WorkloadType::Deployment),
            None => (pod_name, WorkloadType::Pod),
        },
        "Job" => match cronjob_name(&owner.name) {
            Some(cronjob) => (cronjob.to_owned(), WorkloadType::Cronjob),
            None => (owner.name.clone(), WorkloadType::Job),
        },
        _ => (pod_name, WorkloadType::Pod),
    }
}

/// A Deployment names its ReplicaSets `{deployment}-{pod-template-hash}`; a ReplicaSet
/// without that shape is not a Deployment's.
fn deployment_name(pod: &PodRecord, owner: &Owner) -> Option<String> {
    let hash = pod.labels.get("pod-template-hash")?;
    let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!hash.is_empty() && !name.is_empty()).then(|| name.to_owned())
}

/// A CronJob names its Jobs `{cronjob}-{scheduled time in minutes}` (8 to 10 digits).
pub fn cronjob_name(job: &str) -> Option<&str> {
    let (name, stamp) = job.rsplit_once('-')?;
    let digits = (8..=10).contains(&stamp.len()) && stamp.bytes().all(|b| b.is_ascii_digit());
    (digits && !name.is_empty()).then_some(name)
}
