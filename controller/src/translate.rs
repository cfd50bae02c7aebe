//! Translation: the objects in the [`Store`] -> the resources ztunnel consumes over xDS
//! (`istio.workload.Address` and `istio.security.Authorization`).
//!
//! A pure function of the store and the mesh options, so every rule is testable with
//! literal manifests (`tests/golden/`). It follows Istio's ambient controller: one
//! workload per pod with an IP, one service per Kubernetes Service, and the L4 subset of
//! each AuthorizationPolicy that ztunnel enforces. What cannot be expressed at L4 is
//! translated fail-safe and reported in [`Translation::problems`].

use std::collections::BTreeMap;

use api::security::Authorization;
use api::workload::{Address, address};
use k8s_openapi::api::core::v1::Namespace;

use crate::manifest::ConfigError;
use crate::resource::{Kind, Resource};
use crate::store::Store;

mod authorization;
mod labels;
mod render;
mod service;
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
    /// Warnings found while translating; the objects concerned are still translated
    /// (fail-safe) or, when ztunnel cannot enforce them at all, left out.
    pub problems: Vec<ConfigError>,
}

/// Translates everything in `store`. Deterministic: the same store gives the same output.
pub fn translate(store: &Store, options: &MeshOptions) -> Translation {
    let mut out = Translation::default();

    let policies = authorization::translate_all(store, options, &mut out.problems);
    let services = service::collect(store, options);
    let namespaces: BTreeMap<&str, &Namespace> = store
        .of_kind(Kind::Namespace)
        .filter_map(|p| match p.resource.as_ref() {
            Resource::Namespace(ns) => Some((p.key.name.as_str(), ns.as_ref())),
            _ => None,
        })
        .collect();

    let context = workload::Context {
        options,
        namespaces: &namespaces,
        services: &services,
        policies: &policies,
    };
    for parsed in store.of_kind(Kind::Pod) {
        if let Resource::Pod(pod) = parsed.resource.as_ref()
            && let Some(w) = workload::translate(pod, &context)
        {
            out.addresses.insert(
                w.uid.clone(),
                Address {
                    r#type: Some(address::Type::Workload(w)),
                },
            );
        }
    }
    for info in services {
        out.addresses.insert(
            info.resource_name(),
            Address {
                r#type: Some(address::Type::Service(info.service)),
            },
        );
    }
    for policy in policies {
        let a = policy.authorization;
        out.authorizations
            .insert(format!("{}/{}", a.namespace, a.name), a);
    }
    out
}

#[cfg(test)]
mod tests;
