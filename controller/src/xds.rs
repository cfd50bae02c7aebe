//! The delta ADS server that ztunnels (and waypoints) subscribe to.
//!
//! The translator publishes immutable [`Snapshot`]s on a watch channel; [`XdsServer`] serves
//! them over `DeltaAggregatedResources`, sending each proxy only what differs from what it
//! holds. Versions are content hashes, so a proxy reconnecting after a controller restart
//! with `initial_resource_versions` gets only real changes. NACKs are logged and recorded in
//! [`ProxyStatus`]; the proxy keeps its previous config and the next change brings it the
//! then-current versions.

mod server;
mod snapshot;
mod status;
mod stream;
mod subscription;

pub use server::{SERVED_TYPE_URLS, XdsServer};
pub use snapshot::{
    Diff, Entry, Held, Resources, Scope, Snapshot, SnapshotBuilder, Version, content_version, diff,
    diff_since,
};
pub use status::{Nack, ProxyStatus, TypeStatus};

#[cfg(test)]
mod tests;
