//! Kubernetes Services -> `istio.workload.Service`, keeping what workloads need to
//! resolve their side of each port (the selector and named target ports).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::net::IpAddr;

use api::workload::{NetworkAddress, Port, Service};
use k8s_openapi::api::core::v1 as core;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::MeshOptions;
use super::labels::{Labels, selects};
use crate::resource::{Kind, PodRecord, Resource};
use crate::store::Store;

/// The pod side of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u32),
    /// A container port name: each pod may map it to a different number.
    Named(String),
}

/// One port of a service, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u32,
    pub target: TargetPort,
    /// `TCP` unless the manifest says otherwise; a named target matches only a
    /// container port of the same protocol, as in Kubernetes.
    pub protocol: String,
}

/// A translated service plus what workloads need to join it.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub service: Service,
    /// Empty: the service selects no pods (its endpoints are managed by hand).
    pub selector: Labels,
    pub ports: Vec<ServicePort>,
}

impl ServiceInfo {
    /// xDS resource name and key in `Workload.services`: `namespace/hostname`.
    pub fn resource_name(&self) -> String {
        format!("{}/{}", self.service.namespace, self.service.hostname)
    }

    /// Whether `pod` (in `namespace`, with `labels`) is an endpoint of this service.
    pub fn selects(&self, namespace: &str, labels: &Labels) -> bool {
        !self.selector.is_empty()
            && self.service.namespace == namespace
            && selects(&self.selector, labels)
    }

    /// The ports `pod` serves for this service; a named target port the pod does not
    /// declare leaves that port out.
    pub fn ports_for(&self, pod: &PodRecord) -> Vec<Port> {
        self.ports
            .iter()
            .filter_map(|p| {
                let target_port = match &p.target {
                    TargetPort::Number(n) => *n,
                    TargetPort::Named(name) => container_port(pod, name, &p.protocol)?,
                };
                Some(Port {
                    service_port: p.port,
                    target_port,
                })
            })
            .collect()
    }
}

/// Every non-ExternalName service in the store, ordered by namespace and name.
pub fn collect(store: &Store, options: &MeshOptions) -> Vec<ServiceInfo> {
    store
        .of_kind(Kind::Service)
        .filter_map(|parsed| match parsed.resource.as_ref() {
            Resource::Service(svc) => translate(svc, options),
            _ => None,
        })
        .collect()
}

/// One service; `None` for ExternalName services (a DNS alias, no VIP to capture).
pub fn translate(svc: &core::Service, options: &MeshOptions) -> Option<ServiceInfo> {
    let default = core::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default);
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let name = svc.metadata.name.clone().unwrap_or_default();
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let port = u32::try_from(p.port).unwrap_or_default();
            let target = match &p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(u32::try_from(*n).unwrap_or(port)),
                Some(IntOrString::String(name)) => TargetPort::Named(name.clone()),
                // The API server defaults a missing targetPort to the port.
                None => TargetPort::Number(port),
            };
            ServicePort {
                port,
                target,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            }
        })
        .collect();
    let service = Service {
        hostname: format!("{name}.{namespace}.svc.{}", options.domain_suffix),
        name,
        namespace,
        addresses: cluster_ips(spec)
            .into_iter()
            .map(|ip| NetworkAddress {
                network: String::new(),
                address: ip_bytes(ip),
            })
            .collect(),
        ports: ports
            .iter()
            .map(|p| Port {
                service_port: p.port,
                // 0: resolved per workload, in `Workload.services`.
                target_port: match p.target {
                    TargetPort::Number(n) => n,
                    TargetPort::Named(_) => 0,
                },
            })
            .collect(),
        ..Service::default()
    };
    Some(ServiceInfo {
        service,
        selector: spec.selector.clone().unwrap_or_default(),
        ports,
    })
}

/// The service's VIPs: `clusterIP` and `clusterIPs`, without `None` (headless) or
/// duplicates, in the order written.
fn cluster_ips(spec: &core::ServiceSpec) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let written = spec
        .cluster_ip
        .iter()
        .chain(spec.cluster_ips.iter().flatten());
    for ip in written.filter_map(|s| s.parse::<IpAddr>().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The number of the container port called `name` with `protocol`, if the pod has one.
pub fn container_port(pod: &PodRecord, name: &str, protocol: &str) -> Option<u32> {
    pod.container_port(name, protocol)
        .and_then(|p| u32::try_from(p.container_port).ok())
}

/// Raw address bytes as the workload API carries them: 4 for IPv4, 16 for IPv6.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Every service, with those that select pods indexed by namespace and the first label
/// of their selector, so a pod's services are found from its own labels instead of by
/// trying every service.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    services: Vec<ServiceInfo>,
    /// Hash of (namespace, label key, label value) -> positions in `services`. A hash
    /// collision only adds a candidate, which the full selector check then drops.
    by_first_label: HashMap<u64, Vec<usize>>,
}

fn label_hash(namespace: &str, key: &str, value: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (namespace, key, value).hash(&mut h);
    h.finish()
}

impl ServiceIndex {
    pub fn new(services: Vec<ServiceInfo>) -> Self {
        let mut by_first_label: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, service) in services.iter().enumerate() {
            // An empty selector selects nothing (endpoints managed by hand).
            if let Some((key, value)) = service.selector.iter().next() {
                let ns = &service.service.namespace;
                by_first_label
                    .entry(label_hash(ns, key, value))
                    .or_default()
                    .push(i);
            }
        }
        ServiceIndex {
            services,
            by_first_label,
        }
    }

    /// Every service, ordered as given.
    pub fn services(&self) -> &[ServiceInfo] {
        &self.services
    }

    /// Every service whose selector matches a pod in `namespace` with `labels`.
    pub fn selecting(&self, namespace: &str, labels: &Labels) -> Vec<&ServiceInfo> {
        let mut out: Vec<&ServiceInfo> = Vec::new();
        for (key, value) in labels {
            let Some(candidates) = self.by_first_label.get(&label_hash(namespace, key, value))
            else {
                continue;
            };
            for &i in candidates {
                let service = &self.services[i];
                if service.selects(namespace, labels)
                    && !out.iter().any(|s| std::ptr::eq(*s, service))
                {
                    out.push(service);
                }
            }
        }
        out
    }
}

/// All ports of every service selecting the pod, keyed `namespace/hostname`.
pub fn services_of(
    services: &ServiceIndex,
    namespace: &str,
    labels: &Labels,
    pod: &PodRecord,
) -> BTreeMap<String, Vec<Port>> {
    services
        .selecting(namespace, labels)
        .into_iter()
        .map(|s| (s.resource_name(), s.ports_for(pod)))
        .collect()
}
