//! What both proxies share: the [`state`] of workloads and services (and how a
//! destination resolves), L4 authorization ([`rbac`]), and the clients of the control
//! plane: one TLS channel ([`control_plane`]), delta xDS ([`xds`]) and certificates
//! ([`ca_client`] over the [`cert`] facade); the HBONE [`dialer`] presenting those
//! certificates; the HTTP [`endpoint`] server of their admin, readiness and metrics
//! ports; Istio's metric labels ([`telemetry`]). ztunnel and the waypoint each wire these into their own proxies.

pub mod ca_client;
pub mod cert;
pub mod control_plane;
pub mod dialer;
pub mod endpoint;
pub mod rbac;
pub mod state;
pub mod telemetry;
pub mod xds;
