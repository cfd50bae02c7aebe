//! The kinds of object the controller reads, and how each is identified.

use std::fmt;
use std::sync::Arc;

use api::config::{
    AuthorizationPolicy, DestinationRule, Gateway, PeerAuthentication, RequestAuthentication,
    VirtualService,
};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub mod intern;
pub mod pod;

pub use pod::{ContainerRecord, Labels, Owner, PodRecord, PortRecord};

/// A kind of object we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    ServiceAccount,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    VirtualService,
    DestinationRule,
    Gateway,
}

/// API group (empty for the core group), kind and the versions we accept.
const TYPES: &[(&str, Kind, &[&str])] = &[
    ("", Kind::Namespace, &["v1"]),
    ("", Kind::Pod, &["v1"]),
    ("", Kind::Service, &["v1"]),
    ("", Kind::ServiceAccount, &["v1"]),
    (
        "security.istio.io",
        Kind::PeerAuthentication,
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        Kind::AuthorizationPolicy,
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        Kind::RequestAuthentication,
        &["v1", "v1beta1"],
    ),
    (
        "networking.istio.io",
        Kind::VirtualService,
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        Kind::DestinationRule,
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "gateway.networking.k8s.io",
        Kind::Gateway,
        &["v1", "v1beta1"],
    ),
];

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
    ];

    /// Resolves `apiVersion` + `kind`; the error says what is supported.
    pub fn from_type(api_version: &str, kind: &str) -> Result<Kind, String> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some((_, found, versions)) = TYPES
            .iter()
            .find(|(g, k, _)| *g == group && k.name() == kind)
        else {
            let known: Vec<String> = TYPES
                .iter()
                .map(|(g, k, _)| match *g {
                    "" => k.name().to_owned(),
                    g => format!("{}.{g}", k.name()),
                })
                .collect();
            return Err(format!(
                "unknown kind {kind} in {api_version}; supported: {}",
                known.join(", ")
            ));
        };
        if !versions.contains(&version) {
            return Err(format!(
                "{kind} is not served at {api_version}; use one of: {}",
                versions
                    .iter()
                    .map(|v| if group.is_empty() {
                        (*v).to_owned()
                    } else {
                        format!("{group}/{v}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(*found)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
        }
    }

    /// Namespaces are cluster-scoped; everything else lives in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

/// Identifies an object: kind, namespace (for namespaced kinds) and name. Every map of
/// objects (each file's, the store, the translator's cache) keys on it: its strings are
/// shared, so a copy allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: Option<Arc<str>>,
    pub name: Arc<str>,
}

impl ResourceKey {
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        ResourceKey {
            kind,
            // Namespaces repeat: one copy of each.
            namespace: namespace.map(pod::shared_name),
            name: Arc::from(name),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.name(), self.name),
            None => write!(f, "{} {}", self.kind.name(), self.name),
        }
    }
}

/// A typed object, boxed so the enum stays small whatever the kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Box<Namespace>),
    /// Reduced to what the mesh reads: see [`PodRecord`].
    Pod(Box<PodRecord>),
    Service(Box<Service>),
    ServiceAccount(Box<ServiceAccount>),
    PeerAuthentication(Box<PeerAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    RequestAuthentication(Box<RequestAuthentication>),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Pod(_) => Kind::Pod,
            Resource::Service(_) => Kind::Service,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Gateway(_) => Kind::Gateway,
        }
    }

    /// The metadata of the kinds kept whole; a pod keeps only the fields of
    /// [`PodRecord`] (see [`Resource::namespace`] and [`Resource::labels`]).
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        Some(match self {
            Resource::Namespace(o) => &o.metadata,
            Resource::Pod(_) => return None,
            Resource::Service(o) => &o.metadata,
            Resource::ServiceAccount(o) => &o.metadata,
            Resource::PeerAuthentication(o) => &o.metadata,
            Resource::AuthorizationPolicy(o) => &o.metadata,
            Resource::RequestAuthentication(o) => &o.metadata,
            Resource::VirtualService(o) => &o.metadata,
            Resource::DestinationRule(o) => &o.metadata,
            Resource::Gateway(o) => &o.metadata,
        })
    }

    /// `metadata.namespace`, if the object has one.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Resource::Pod(pod) => Some(&pod.namespace)
                .filter(|ns| !ns.is_empty())
                .map(|ns| &**ns),
            other => other.metadata().and_then(|m| m.namespace.as_deref()),
        }
    }

    /// `metadata.labels`, if the object has any.
    pub fn labels(&self) -> Option<&Labels> {
        match self {
            Resource::Pod(pod) => Some(&pod.labels),
            other => other.metadata().and_then(|m| m.labels.as_ref()),
        }
    }

    /// Fills in the namespace of an object whose manifest left it out.
    pub fn default_namespace(&mut self, namespace: &str) {
        let meta = match self {
            Resource::Pod(pod) => {
                if pod.namespace.is_empty() {
                    pod.namespace = pod::shared_name(namespace);
                }
                return;
            }
            Resource::Namespace(o) => &mut o.metadata,
            Resource::Service(o) => &mut o.metadata,
            Resource::ServiceAccount(o) => &mut o.metadata,
            Resource::PeerAuthentication(o) => &mut o.metadata,
            Resource::AuthorizationPolicy(o) => &mut o.metadata,
            Resource::RequestAuthentication(o) => &mut o.metadata,
            Resource::VirtualService(o) => &mut o.metadata,
            Resource::DestinationRule(o) => &mut o.metadata,
            Resource::Gateway(o) => &mut o.metadata,
        };
        meta.namespace.get_or_insert_with(|| namespace.to_owned());
    }
}
