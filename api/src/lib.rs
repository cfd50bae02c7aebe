//! Wire model shared by every crate of the mesh.
//!
//! Protobuf messages and gRPC stubs generated at build time from our own
//! `.proto` files under `api/proto/` (see the crate README for where the
//! schemas come from). Package names, message/field names and field numbers
//! match upstream Istio and Envoy so we interoperate on the wire.
//!
//! | module | protobuf package | what |
//! | --- | --- | --- |
//! | [`xds`] | `envoy.service.discovery.v3` | (delta) discovery messages, ADS client + server |
//! | [`core`] | `envoy.config.core.v3` | `Node`, `Locality`, ... |
//! | [`rpc`] | `google.rpc` | `Status` (xDS NACK detail) |
//! | [`workload`] | `istio.workload` | `Address`, `Workload`, `Service`, ... |
//! | [`security`] | `istio.security` | `Authorization` (L4 policy) |
//! | [`ca`] | `istio.v1.auth` | certificate signing, client + server |
//! | [`zds`] | `istio.workload.zds` | node agent <-> ztunnel messages |
//! | [`config`] | none (Kubernetes YAML) | Istio / Gateway API custom resources with validation |
//!
//! Well-known types (`google.protobuf.*`) are [`prost_types`], re-exported
//! here (with [`prost`]) so dependants use the exact same versions.

/// The generated code, one nested module per protobuf package.
#[allow(
    clippy::all,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    missing_docs
)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

pub use prost;
pub use prost_types;

/// Envoy discovery v3: `DeltaDiscoveryRequest`/`Response`, `Resource`, ...
///
/// Client: [`xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient`];
/// server: [`xds::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer`].
pub mod xds {
    pub use crate::pb::envoy::service::discovery::v3::*;

    /// gRPC path of the delta ADS stream.
    pub const DELTA_ADS_PATH: &str =
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
    /// gRPC path of the state-of-the-world ADS stream.
    pub const SOTW_ADS_PATH: &str =
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
}

/// Envoy core v3: `Node` (the xDS client's identity) and friends.
pub mod core {
    pub use crate::pb::envoy::config::core::v3::*;
}

/// `google.rpc.Status`, carried in xDS NACKs.
pub mod rpc {
    pub use crate::pb::google::rpc::*;
}

/// Istio workload API: the `istio.workload.Address` xDS resource.
pub mod workload {
    pub use crate::pb::istio::workload::*;

    /// xDS type URL of [`Address`] resources.
    pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
}

/// Istio L4 authorization: the `istio.security.Authorization` xDS resource.
pub mod security {
    pub use crate::pb::istio::security::*;

    /// xDS type URL of [`Authorization`] resources.
    pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";
}

/// Istio CA: `IstioCertificateService/CreateCertificate`.
///
/// Client: [`ca::istio_certificate_service_client::IstioCertificateServiceClient`];
/// server: [`ca::istio_certificate_service_server::IstioCertificateServiceServer`].
pub mod ca {
    pub use crate::pb::istio::v1::auth::*;

    /// gRPC path of the signing call.
    pub const CREATE_CERTIFICATE_PATH: &str =
        "/istio.v1.auth.IstioCertificateService/CreateCertificate";
}

/// ZDS: node agent -> ztunnel workload hand-off messages.
pub mod waypoint {
    pub use crate::pb::mesh::waypoint::v1::*;

    /// xDS type URL of [`L7Resource`] (this mesh's own type; waypoints only).
    pub const L7_RESOURCE_TYPE_URL: &str = "type.googleapis.com/mesh.waypoint.v1.L7Resource";
}

pub mod zds {
    pub use crate::pb::istio::workload::zds::*;
}

pub mod config;

pub use security::AUTHORIZATION_TYPE_URL;
pub use waypoint::L7_RESOURCE_TYPE_URL;
pub use workload::ADDRESS_TYPE_URL;

#[cfg(test)]
mod tests;
