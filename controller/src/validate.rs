//! Semantic checks on a typed object, beyond what its schema enforces. Each problem names
//! the offending field by its path in the manifest.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::resource::{PodRecord, Resource};

mod names;

pub use api::config::{dns1123_label, dns1123_subdomain, label_key, label_value};
pub use names::port_name;

/// One problem in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every problem in `resource` (empty: valid).
pub fn resource(resource: &Resource) -> Vec<Problem> {
    let mut out = Vec::new();
    match resource {
        Resource::Namespace(ns) => namespace(ns, &mut out),
        Resource::Pod(pod) => self::pod(pod, &mut out),
        Resource::Service(svc) => service(svc, &mut out),
        Resource::ServiceAccount(sa) => service_account(sa, &mut out),
        // The Istio types check their metadata themselves.
        Resource::PeerAuthentication(o) => return istio(o.validate()),
        Resource::AuthorizationPolicy(o) => return istio(o.validate()),
        Resource::RequestAuthentication(o) => return istio(o.validate()),
        Resource::VirtualService(o) => return istio(o.validate()),
        Resource::DestinationRule(o) => return istio(o.validate()),
        Resource::Gateway(o) => {
            let mut out = istio(o.validate());
            // A waypoint's listener and `istio.io/waypoint-for` (translate/waypoint.rs).
            out.extend(
                crate::translate::waypoint::gateway_problems(o)
                    .into_iter()
                    .map(|(field, message)| Problem::new(field, message)),
            );
            return out;
        }
    }
    metadata(resource, &mut out);
    out
}

fn istio(errors: Vec<api::config::FieldError>) -> Vec<Problem> {
    errors
        .into_iter()
        .map(|e| Problem::new(e.field, e.message))
        .collect()
}

fn metadata(resource: &Resource, out: &mut Vec<Problem>) {
    if let Some(ns) = resource.namespace()
        && let Err(e) = dns1123_label(ns)
    {
        out.push(Problem::new("metadata.namespace", e));
    }
    labels(
        resource.labels().into_iter().flatten(),
        "metadata.labels",
        out,
    );
}

/// Checks label keys and values (also used for selectors).
fn labels<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
    field: &str,
    out: &mut Vec<Problem>,
) {
    for (k, v) in pairs {
        if let Err(e) = label_key(k) {
            out.push(Problem::new(
                format!("{field}.{k}"),
                format!("invalid key: {e}"),
            ));
        }
        if let Err(e) = label_value(v) {
            out.push(Problem::new(
                format!("{field}.{k}"),
                format!("invalid value {v:?}: {e}"),
            ));
        }
    }
}

fn name(meta: &ObjectMeta, label: bool, out: &mut Vec<Problem>) {
    if let Some(name) = &meta.name {
        object_name(name, label, out);
    }
}

fn object_name(name: &str, label: bool, out: &mut Vec<Problem>) {
    let checked = if label {
        dns1123_label(name)
    } else {
        dns1123_subdomain(name)
    };
    if let Err(e) = checked {
        out.push(Problem::new("metadata.name", e));
    }
}

fn namespace(ns: &Namespace, out: &mut Vec<Problem>) {
    name(&ns.metadata, true, out);
}

fn service_account(sa: &ServiceAccount, out: &mut Vec<Problem>) {
    name(&sa.metadata, false, out);
}

fn pod(pod: &PodRecord, out: &mut Vec<Problem>) {
    object_name(&pod.name, false, out);
    if let Some(sa) = &pod.service_account
        && let Err(e) = dns1123_subdomain(sa)
    {
        out.push(Problem::new("spec.serviceAccountName", e));
    }
    if let Some(ip) = &pod.pod_ip
        && ip.parse::<IpAddr>().is_err()
    {
        out.push(Problem::new(
            "status.podIP",
            format!("{ip:?} is not an IP address"),
        ));
    }
    for (i, ip) in pod.pod_ips.iter().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            out.push(Problem::new(
                format!("status.podIPs[{i}].ip"),
                format!("{ip:?} is not an IP address"),
            ));
        }
    }
}

fn service(svc: &Service, out: &mut Vec<Problem>) {
    name(&svc.metadata, true, out);
    let Some(spec) = &svc.spec else { return };
    if let Some(ip) = &spec.cluster_ip
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<IpAddr>().is_err()
    {
        out.push(Problem::new(
            "spec.clusterIP",
            format!("{ip:?} is not an IP address (or \"None\" for a headless service)"),
        ));
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if ip != "None" && ip.parse::<IpAddr>().is_err() {
            out.push(Problem::new(
                format!("spec.clusterIPs[{i}]"),
                format!("{ip:?} is not an IP address"),
            ));
        }
    }
    labels(spec.selector.iter().flatten(), "spec.selector", out);
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        if !(1..=65535).contains(&p.port) {
            out.push(Problem::new(
                field("port"),
                format!("{} is not a port (1-65535)", p.port),
            ));
        }
        // As the API server: one port number per protocol (TCP and UDP may share).
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !numbers.insert((p.port, protocol)) {
            out.push(Problem::new(
                field("port"),
                format!("{} is already used by another {protocol} port", p.port),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                out.push(Problem::new(
                    field("targetPort"),
                    format!("{n} is not a port (1-65535)"),
                ));
            }
            Some(IntOrString::String(s)) => {
                if let Err(e) = port_name(s) {
                    out.push(Problem::new(field("targetPort"), format!("{s:?}: {e}")));
                }
            }
            _ => {}
        }
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            out.push(Problem::new(
                field("protocol"),
                format!("{proto:?}: must be TCP, UDP or SCTP"),
            ));
        }
        match &p.name {
            None if ports.len() > 1 => {
                out.push(Problem::new(
                    field("name"),
                    "required when a service has more than one port",
                ));
            }
            Some(n) => {
                if let Err(e) = port_name(n) {
                    out.push(Problem::new(field("name"), format!("{n:?}: {e}")));
                }
                if !seen.insert(n.as_str()) {
                    out.push(Problem::new(
                        field("name"),
                        format!("{n:?} is used by another port"),
                    ));
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
