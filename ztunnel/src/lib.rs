//! ztunnel, the per-node proxy.
//!
//! The node agent hands it each enrolled pod's network namespace over ZDS
//! ([`zds_client`]); for each pod ztunnel listens *inside* the pod ([`socket`]) on the
//! outbound, inbound-plaintext and HBONE ports ([`proxy`]), resolving destinations
//! against one shared [`state`] and presenting certificates from one [`cert`] source.
//! [`memory`] hands freed heap back after traffic; [`access_log`] writes one line per
//! closed connection. [`admin`] serves `config_dump`, `logging` and `quitquitquit` on
//! localhost:15000, [`readiness`] `/healthz/ready` on 15021, [`metrics`] Istio's TCP
//! metrics and ztunnel's gauges on 15020.

pub mod access_log;
/// The shared data-plane pieces, at the paths ztunnel has always used.
pub use dataplane::{ca_client, cert, control_plane, rbac, state, xds};
pub mod admin;
pub mod app;
pub mod config;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod pods;
pub mod proxy;
pub mod readiness;
pub mod socket;
#[cfg(test)]
mod test_mesh;
pub mod zds_client;
