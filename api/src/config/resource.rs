//! The [`Resource`] trait and the `resource!` macro that declares each
//! resource struct (`{ metadata, spec }`) with its group, kind and versions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::FieldError;

/// What the controller needs to know about every custom resource type.
pub trait Resource: Serialize + DeserializeOwned {
    /// API group, e.g. `security.istio.io`.
    const GROUP: &'static str;
    /// Kind, e.g. `AuthorizationPolicy`.
    const KIND: &'static str;
    /// Accepted versions of [`Self::GROUP`], newest first.
    const VERSIONS: &'static [&'static str];

    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;

    /// Every semantic problem in the object; empty when it is valid.
    fn validate(&self) -> Vec<FieldError>;

    /// Whether `apiVersion` (`group/version`) names this resource's group and
    /// one of its accepted versions.
    fn accepts_api_version(api_version: &str) -> bool {
        api_version.split_once('/').is_some_and(|(group, version)| {
            group == Self::GROUP && Self::VERSIONS.contains(&version)
        })
    }
}

/// The document shape accepted when deserializing a resource: `metadata` and
/// `spec`, plus `apiVersion`, `kind` and `status`, which are the caller's
/// business and are skipped. Anything else at the top level is rejected.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "S: Deserialize<'de> + Default")
)]
pub(crate) struct Manifest<S> {
    #[serde(default)]
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: S,
    #[serde(default, rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(default, rename = "kind")]
    _kind: Option<IgnoredAny>,
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

/// Declares a resource struct, its `GROUP` / `KIND` / `VERSIONS` consts, its
/// `Deserialize` (through [`Manifest`]) and its [`Resource`] impl. The
/// resource's module provides the inherent `validate(&self)`.
macro_rules! resource {
    (
        $(#[$attr:meta])*
        $name:ident($spec:ty),
        group = $group:literal,
        kind = $kind:literal,
        versions = [$($version:literal),+ $(,)?] $(,)?
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
        pub struct $name {
            /// Standard Kubernetes object metadata (`name`, `namespace`, labels, ...).
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            /// The resource's specification.
            pub spec: $spec,
        }

        impl $name {
            /// API group.
            pub const GROUP: &'static str = $group;
            /// Kind.
            pub const KIND: &'static str = $kind;
            /// Accepted versions of [`Self::GROUP`], newest first.
            pub const VERSIONS: &'static [&'static str] = &[$($version),+];
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let manifest = $crate::config::resource::Manifest::<$spec>::deserialize(d)?;
                Ok(Self {
                    metadata: manifest.metadata,
                    spec: manifest.spec,
                })
            }
        }

        impl $crate::config::Resource for $name {
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSIONS: &'static [&'static str] = &[$($version),+];

            fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn validate(&self) -> Vec<$crate::config::FieldError> {
                $name::validate(self)
            }
        }
    };
}

pub(crate) use resource;
