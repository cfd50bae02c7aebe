//! The node agent (the CNI role of Istio's ambient mode).
//!
//! For every pod on its node that is enrolled in the mesh, it installs the traffic
//! capture rules *inside the pod's network namespace* and hands that namespace to
//! ztunnel over ZDS. The pieces, in the order a pod meets them:
//!
//! - [`source`]: a [`PodSource`] yields namespace/pod events (today a pod list file
//!   the lab writes; a Kubernetes watch later); [`store::PodStore`] holds the result.
//! - [`enrollment`]: the pure rule deciding which pods are captured.
//! - [`capture`]: the [`Capture`] trait; [`NftCapture`] applies [`rules`] (nftables)
//!   and [`routing`] (policy routing) in the pod's namespace.
//! - [`zds_server`]: serves ztunnel connections: a snapshot on connect, then add/del.
//! - [`agent`]: the loop that ties them together, in a fixed order per pod.
//! - [`config`]: the `node-agent` command line.

pub mod agent;
pub mod app;
pub mod capture;
pub mod config;
pub mod enrollment;
pub mod routing;
pub mod rules;
pub mod source;
pub mod store;
#[cfg(test)]
mod testing;
pub mod zds_server;

pub use agent::{Agent, AgentConfig};
pub use capture::{Capture, CaptureError, NftCapture};
pub use source::{ChannelSource, PodEvent, PodListFile, PodSource};
pub use zds_server::{ZdsHub, ZdsServer, ZdsServerConfig};

/// Resolves when `shutdown` is set, or when its sender is gone (nobody is left to
/// tell us to stop).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not in a caller's state.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
