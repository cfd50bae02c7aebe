//! ztunnel's xDS client: one delta ADS stream to the controller, subscribed (wildcard) to
//! `istio.workload.Address` and `istio.security.Authorization`. Every accepted response
//! rebuilds the whole [`WorkloadState`](crate::state::WorkloadState) and swaps it into the
//! [`StateStore`](crate::state::StateStore); a response that is invalid, or would leave an
//! inconsistent state, is NACKed and the last good state keeps serving. So does a lost
//! stream, which is re-opened with backoff and the versions already held.
//!
//! [`convert`] validates resources into ztunnel's types, [`resources`] holds them per type
//! and name, [`client`] runs the stream.

use std::collections::BTreeMap;
use std::time::Duration;

use api::core::Node;
use api::prost_types::{Struct, Value, value::Kind};

pub mod client;
pub mod convert;
pub mod resources;

pub use client::{ExtraType, XdsClient, XdsError};

/// The types this client subscribes to, in the order it subscribes.
pub const TYPE_URLS: [&str; 2] = [api::ADDRESS_TYPE_URL, api::AUTHORIZATION_TYPE_URL];

/// Who this ztunnel is, as the controller sees it in `DeltaDiscoveryRequest.node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Kubernetes node this ztunnel serves (sent as metadata `NODE_NAME`).
    pub node_name: String,
    /// This ztunnel instance (sent as `Node.id`).
    pub ztunnel_id: String,
}

impl NodeInfo {
    pub fn to_node(&self) -> Node {
        let node_name = Value {
            kind: Some(Kind::StringValue(self.node_name.clone())),
        };
        Node {
            id: self.ztunnel_id.clone(),
            metadata: Some(Struct {
                fields: [("NODE_NAME".to_owned(), node_name)].into(),
            }),
            user_agent_name: "ztunnel".into(),
            ..Node::default()
        }
    }
}

/// Reconnect delays: `initial`, doubling up to `max`; back to `initial` once a response
/// has been accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsConfig {
    pub node: NodeInfo,
    pub backoff: Backoff,
}

/// What the client has done so far, published on a watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdsStatus {
    /// Every subscribed type has had a response accepted: the state reflects the
    /// controller, so readiness may pass. Stays true across reconnects.
    pub synced: bool,
    /// A stream is open right now.
    pub connected: bool,
    /// Responses accepted (ACKed) and refused (NACKed) since start.
    pub applied: u64,
    pub rejected: u64,
    /// Why the last refused response was refused.
    pub last_rejection: Option<String>,
    /// Per subscribed type URL, what its responses did; a type is absent until its first
    /// response arrives.
    pub types: BTreeMap<String, XdsTypeStatus>,
}

impl XdsStatus {
    /// The subscribed types without an accepted response yet (short names, e.g.
    /// `Address`), in subscription order: what the first sync still waits for.
    pub fn awaited_types(&self) -> Vec<&'static str> {
        TYPE_URLS
            .iter()
            .filter(|t| self.types.get(**t).is_none_or(|s| s.applied == 0))
            .map(|t| short_type(t))
            .collect()
    }
}

/// One type's responses since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdsTypeStatus {
    /// Responses accepted (ACKed) and refused (NACKed).
    pub applied: u64,
    pub rejected: u64,
    /// Resources of this type held after the last accepted response.
    pub resources: usize,
    /// The nonce and `system_version_info` of the last accepted response.
    pub last_applied_nonce: String,
    pub last_applied_version: String,
    /// The nonce of the last refused response and why it was refused.
    pub last_rejected_nonce: Option<String>,
    pub last_rejection: Option<String>,
}

/// `Address` for `type.googleapis.com/istio.workload.Address`, for logs and status.
pub fn short_type(type_url: &str) -> &str {
    type_url.rsplit(['/', '.']).next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests;
