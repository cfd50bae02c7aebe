//! Typed Istio and Gateway API custom resources, as the controller reads them
//! from YAML manifests.
//!
//! | resource | group | versions |
//! | --- | --- | --- |
//! | [`PeerAuthentication`] | `security.istio.io` | `v1`, `v1beta1` |
//! | [`AuthorizationPolicy`] | `security.istio.io` | `v1`, `v1beta1` |
//! | [`RequestAuthentication`] | `security.istio.io` | `v1`, `v1beta1` |
//! | [`VirtualService`] | `networking.istio.io` | `v1`, `v1beta1`, `v1alpha3` |
//! | [`DestinationRule`] | `networking.istio.io` | `v1`, `v1beta1`, `v1alpha3` |
//! | [`Gateway`] | `gateway.networking.k8s.io` | `v1`, `v1beta1` |
//!
//! Every resource is `{ metadata, spec }`. `apiVersion` and `kind` belong to
//! the caller (check them with [`Resource::accepts_api_version`] and
//! [`Resource::KIND`]); when present in the document they are accepted and
//! ignored, as is `status`. Any other top-level key, and any unknown field
//! anywhere inside `spec`, is a deserialization error: a typo in a security
//! policy must not silently widen or narrow it.
//!
//! Deserializing checks shapes and types only. [`Resource::validate`] (also
//! an inherent `validate()` on each resource) then applies the semantic rules
//! Istio's admission webhook and the Gateway API CRD schemas apply, and
//! reports every problem as a [`FieldError`] with a path such as
//! `spec.rules[0].from[0].source.principals[1]`.
//!
//! Durations are kept as the strings the user wrote; [`parse_duration`]
//! reads them (Go / protobuf style: `1h2m3.5s`, `100ms`, `1.5s`).
//!
//! Nested types live in the per-resource modules
//! ([`authorization_policy::Rule`], [`virtual_service::HttpRoute`], ...).

pub mod authorization_policy;
pub mod destination_rule;
pub mod duration;
pub mod gateway;
pub mod networking;
pub mod peer_authentication;
pub mod request_authentication;
mod resource;
pub mod selector;
mod serde_util;
mod validate;
pub mod virtual_service;

pub use authorization_policy::{AuthorizationPolicy, AuthorizationPolicySpec};
pub use destination_rule::{DestinationRule, DestinationRuleSpec};
pub use duration::parse_duration;
pub use gateway::{Gateway, GatewaySpec};
pub use peer_authentication::{PeerAuthentication, PeerAuthenticationSpec};
pub use request_authentication::{RequestAuthentication, RequestAuthenticationSpec};
pub use resource::Resource;
pub use validate::{FieldError, dns1123_label, dns1123_subdomain, label_key, label_value};
pub use virtual_service::{VirtualService, VirtualServiceSpec};

/// The Kubernetes object metadata every resource carries (re-exported from
/// `k8s-openapi`).
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[cfg(test)]
mod tests;
