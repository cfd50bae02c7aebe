//! Translation: the objects in the [`Store`] -> the resources ztunnel consumes over xDS
//! (`istio.workload.Address` and `istio.security.Authorization`), and those waypoints
//! add (`mesh.waypoint.v1.L7Resource`, see [`l7`]).
//!
//! A pure function of the store and the mesh options, so every rule is testable with
//! literal manifests (`tests/golden/`). It follows Istio's ambient controller: one
//! workload per pod with an IP, one service per Kubernetes Service, and the L4 subset of
//! each AuthorizationPolicy that ztunnel enforces; PeerAuthentications become DENY
//! policies on plaintext (see [`peer_authentication`]). What cannot be expressed at L4
//! is translated fail-safe and reported in [`Translation::problems`].

use std::collections::BTreeMap;

use api::security::Authorization;
use api::waypoint::L7Resource;
use api::workload::{Address, Workload, address};
use k8s_openapi::api::core::v1::Namespace;

use crate::manifest::{ConfigError, Parsed};
use crate::resource::{Kind, PodRecord, Resource};
use crate::store::Store;

mod authorization;
pub mod l7;
pub mod labels;
pub mod peer_authentication;
mod render;
mod service;
pub mod waypoint;
mod workload;

pub use render::render;

/// Mesh-wide settings that shape the translation (Istio's MeshConfig subset we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    /// Trust domain of every workload identity.
    pub trust_domain: String,
    /// Policies here without a selector apply mesh-wide; with one, in every namespace.
    pub root_namespace: String,
    /// Names this cluster in workload uids (`{cluster_id}//Pod/ns/name`).
    pub cluster_id: String,
    /// Service hostnames are `NAME.NAMESPACE.svc.{domain_suffix}`.
    pub domain_suffix: String,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_id: "Kubernetes".into(),
            domain_suffix: "cluster.local".into(),
        }
    }
}

/// Every resource ztunnel is sent, keyed by xDS resource name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// Workloads (key: uid) and services (key: `namespace/hostname`).
    pub addresses: BTreeMap<String, Address>,
    /// L4 policies, key `namespace/name`.
    pub authorizations: BTreeMap<String, Authorization>,
    /// What waypoints apply (see [`l7`]), key `KIND/namespace/name`.
    pub l7: BTreeMap<String, L7Resource>,
    /// Warnings found while translating; the objects concerned are still translated
    /// (fail-safe) or, when ztunnel cannot enforce them at all, left out.
    pub problems: Vec<ConfigError>,
}

/// Translates everything in `store`. Deterministic: the same store gives the same output.
pub fn translate(store: &Store, options: &MeshOptions) -> Translation {
    let cx = Context::new(store, options);
    let mut out = Translation::default();
    let mut pod_problems = Vec::new();
    for parsed in store.of_kind(Kind::Pod) {
        let Resource::Pod(pod) = parsed.resource.as_ref() else {
            continue;
        };
        pod_problems.extend(cx.pod_problems(parsed, pod));
        if let Some(w) = cx.workload(pod) {
            out.addresses.insert(
                w.uid.clone(),
                Address {
                    r#type: Some(address::Type::Workload(w)),
                },
            );
        }
    }
    out.addresses.extend(cx.services());
    out.authorizations.extend(cx.authorizations());
    out.l7.extend(cx.l7().iter().cloned());
    out.problems = cx.problems;
    out.problems.extend(pod_problems);
    out
}

/// Everything the translation of one pod reads besides the pod: the namespaces, the
/// service accounts, the waypoints, the services (indexed by selector) and the
/// translated policies, plus the services' and policies' own resources. Built once per version of the store, so that callers that
/// keep earlier results (the pipeline) can translate only the pods that changed.
#[derive(Debug)]
pub struct Context<'s> {
    options: &'s MeshOptions,
    namespaces: BTreeMap<&'s str, &'s Namespace>,
    service_accounts: BTreeMap<(&'s str, &'s str), &'s labels::Labels>,
    waypoints: waypoint::Waypoints,
    services: service::ServiceIndex,
    policies: Vec<authorization::TranslatedPolicy>,
    peer_authentications: peer_authentication::PeerAuthentications<'s>,
    l7: Vec<(String, L7Resource)>,
    problems: Vec<ConfigError>,
}

impl<'s> Context<'s> {
    pub fn new(store: &'s Store, options: &'s MeshOptions) -> Self {
        let mut problems = Vec::new();
        let policies = authorization::translate_all(store, options, &mut problems);
        let peer_authentications =
            peer_authentication::PeerAuthentications::new(store, options, &mut problems);
        let namespaces: BTreeMap<&str, &Namespace> = store
            .of_kind(Kind::Namespace)
            .filter_map(|p| match p.resource.as_ref() {
                Resource::Namespace(ns) => Some((&*p.key.name, ns.as_ref())),
                _ => None,
            })
            .collect();
        let service_accounts = store
            .of_kind(Kind::ServiceAccount)
            .filter_map(|p| {
                let namespace = p.key.namespace.as_deref()?;
                Some(((namespace, &*p.key.name), p.resource.labels()?))
            })
            .collect();
        let waypoints = waypoint::Waypoints::new(store, options);
        let namespace_labels = |ns: &str| -> labels::Labels {
            namespaces
                .get(ns)
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default()
        };
        waypoint::scope_problems(store, &waypoints, namespace_labels, &mut problems);
        let mut services = service::collect(store, options);
        service_waypoints(store, &waypoints, &namespaces, &mut services, &mut problems);
        let services = service::ServiceIndex::new(services);
        Context {
            options,
            namespaces,
            service_accounts,
            waypoints,
            services,
            policies,
            peer_authentications,
            l7: l7::resources(store),
            problems,
        }
    }

    /// The workload for `pod`: `None` while it has no IP, or once it has terminated.
    /// Its resource name is its `uid`.
    pub fn workload(&self, pod: &PodRecord) -> Option<Workload> {
        workload::translate(
            pod,
            &workload::Context {
                options: self.options,
                namespaces: &self.namespaces,
                services: &self.services,
                policies: &self.policies,
                peer_authentications: &self.peer_authentications,
                waypoints: &self.waypoints,
                service_accounts: &self.service_accounts,
            },
        )
    }

    /// What the pod's own labels ask that cannot be done: an `istio.io/use-waypoint`
    /// naming a waypoint that does not exist or does not take workload traffic. (Labels
    /// on its Namespace and ServiceAccount are reported once, in [`Context::problems`].)
    pub fn pod_problems(&self, parsed: &Parsed, pod: &PodRecord) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let namespace = &*pod.namespace;
        if self.waypoints.is_instance(namespace, &pod.labels) {
            return out;
        }
        let label = waypoint::UseWaypoint::of(&pod.labels, namespace);
        let empty = labels::Labels::new();
        let namespace_labels = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.metadata.labels.as_ref())
            .unwrap_or(&empty);
        if let Err(e) = self.waypoints.resolve(
            &label,
            waypoint::Traffic::Workload,
            namespace,
            namespace_labels,
        ) {
            waypoint::report(parsed, e, &mut out);
        }
        out
    }

    /// Every service's address, with its resource name.
    pub fn services(&self) -> impl Iterator<Item = (String, Address)> + '_ {
        self.services.services().iter().map(|info| {
            let address = Address {
                r#type: Some(address::Type::Service(info.service.clone())),
            };
            (info.resource_name(), address)
        })
    }

    /// Every L4 policy, with its resource name: the AuthorizationPolicies' and those
    /// the PeerAuthentications become.
    pub fn authorizations(&self) -> impl Iterator<Item = (String, Authorization)> + '_ {
        self.policies
            .iter()
            .map(|policy| &policy.authorization)
            .chain(self.peer_authentications.authorizations())
            .map(|a| (format!("{}/{}", a.namespace, a.name), a.clone()))
    }

    /// The objects waypoints apply, with their resource names.
    pub fn l7(&self) -> &[(String, L7Resource)] {
        &self.l7
    }

    /// What could not be translated as written (see [`Translation::problems`]).
    pub fn problems(&self) -> &[ConfigError] {
        &self.problems
    }
}

/// Sets each service's waypoint: the label on the Service, else on its namespace (see
/// [`waypoint`]); never for a waypoint's own Service. A Service label that cannot be
/// honoured is reported.
fn service_waypoints(
    store: &Store,
    waypoints: &waypoint::Waypoints,
    namespaces: &BTreeMap<&str, &Namespace>,
    services: &mut [service::ServiceInfo],
    problems: &mut Vec<ConfigError>,
) {
    use waypoint::{Scope, Traffic, UseWaypoint};
    let empty = labels::Labels::new();
    for info in services {
        let (namespace, name) = (&info.service.namespace, &info.service.name);
        let key = crate::resource::ResourceKey::new(Kind::Service, Some(namespace), name);
        let Some(parsed) = store.parsed(&key) else {
            continue;
        };
        let labels = parsed.resource.labels().unwrap_or(&empty);
        if waypoints.is_own_service(namespace, name, labels) {
            continue;
        }
        let namespace_labels = namespaces
            .get(namespace.as_str())
            .and_then(|ns| ns.metadata.labels.as_ref())
            .unwrap_or(&empty);
        let own = UseWaypoint::of(labels, namespace);
        if let Err(e) = waypoints.resolve(&own, Traffic::Service, namespace, namespace_labels) {
            waypoint::report(parsed, e, problems);
        }
        let ns = UseWaypoint::of(namespace_labels, namespace);
        info.service.waypoint = waypoints.pick(
            &[(Scope::Service, &own), (Scope::Namespace, &ns)],
            Traffic::Service,
            namespace,
            namespace_labels,
        );
    }
}

#[cfg(test)]
mod tests;
