//! One delta ADS stream: reads subscriptions and (N)ACKs from the proxy and pushes the
//! difference between what it holds and the newest snapshot.
//!
//! Back-pressure: responses go through a small bounded channel, and a response is computed
//! only once the channel has room. Snapshots that arrive meanwhile only mark types due, so a
//! slow proxy gets one response with the net change, never a backlog.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use api::xds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::snapshot::Snapshot;
use super::status::{Nack, Registration, unix_ms_now};
use super::subscription::Subscription;

/// Responses to one proxy for the types it subscribed to.
pub(super) type Outbound = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// State of one stream; owned by its task.
#[derive(Debug)]
pub(super) struct Connection {
    node: String,
    node_id: Option<String>,
    served_types: &'static [&'static str],
    subscriptions: BTreeMap<String, Subscription>,
    snapshot: Arc<Snapshot>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registration: Registration,
    responses: u64,
}

/// Why the stream loop stopped.
enum End {
    ClientClosed,
    ClientError(Status),
    ClientGone,
    ControllerStopping,
}

impl Connection {
    pub(super) fn new(
        node: String,
        served_types: &'static [&'static str],
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        registration: Registration,
    ) -> Self {
        let snapshot = snapshots.borrow_and_update().clone();
        Connection {
            node,
            node_id: None,
            served_types,
            subscriptions: BTreeMap::new(),
            snapshot,
            snapshots,
            registration,
            responses: 0,
        }
    }

    /// Serves the stream until either side goes away.
    pub(super) async fn run(
        mut self,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        tx: Outbound,
    ) {
        let end = loop {
            let due = self.due_type();
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => self.on_request(request),
                    Some(Err(status)) => break End::ClientError(status),
                    None => break End::ClientClosed,
                },
                changed = self.snapshots.changed() => match changed {
                    Ok(()) => self.snapshot = self.snapshots.borrow_and_update().clone(),
                    Err(_) => break End::ControllerStopping,
                },
                permit = tx.reserve(), if due.is_some() => match (permit, due) {
                    (Ok(permit), Some(type_url)) => {
                        if let Some(response) = self.next_response(&type_url) {
                            let sent = response.resources.len();
                            permit.send(Ok(response));
                            // A full push is megabytes that are garbage once written.
                            crate::memory::after_burst(sent);
                        }
                    }
                    _ => break End::ClientGone,
                },
                () = tx.closed() => break End::ClientGone,
            }
        };
        let node_id = self.node_id.as_deref().unwrap_or_default();
        match end {
            End::ClientClosed => {
                info!(node = %self.node, node_id, "xDS stream closed by the proxy")
            }
            End::ClientGone => info!(node = %self.node, node_id, "xDS proxy disconnected"),
            End::ClientError(status) => {
                info!(
                    node = %self.node, node_id, code = ?status.code(),
                    "xDS stream ended: {}", status.message()
                );
                // A request that failed to decode leaves the proxy connected: say why.
                let _ = tx.try_send(Err(status));
            }
            End::ControllerStopping => {
                info!(node = %self.node, node_id, "closing xDS stream: the controller is stopping");
                // Best effort: tell the proxy to reconnect (to another replica) rather than
                // leaving it to notice a reset; a full queue means it is not listening anyway.
                let _ = tx.try_send(Err(Status::unavailable(
                    "the controller is shutting down; reconnect",
                )));
            }
        }
    }

    /// The first subscribed type (in URL order) that may have something to send.
    fn due_type(&self) -> Option<String> {
        self.subscriptions
            .iter()
            .find(|(type_url, sub)| sub.is_due(&self.snapshot.resources(type_url)))
            .map(|(type_url, _)| type_url.clone())
    }

    fn on_request(&mut self, request: DeltaDiscoveryRequest) {
        if self.node_id.is_none()
            && let Some(node) = &request.node
        {
            self.node_id = Some(node.id.clone());
            self.registration.update(|s| s.node_id = node.id.clone());
            info!(
                node = %self.node, node_id = %node.id, connection = self.registration.id(),
                "xDS stream started"
            );
        }
        let type_url = request.type_url.as_str();
        if !self.served_types.contains(&type_url) {
            warn!(
                node = %self.node, node_id = self.node_id.as_deref().unwrap_or_default(), type_url,
                "ignoring a request for a type this controller does not serve"
            );
            return;
        }
        if !request.response_nonce.is_empty() {
            self.on_ack(&request);
        }
        let sub = match self.subscriptions.entry(type_url.to_owned()) {
            Entry::Occupied(existing) => {
                let sub = existing.into_mut();
                sub.update(&request);
                sub
            }
            Entry::Vacant(vacant) => {
                debug!(node = %self.node, type_url, initial = request.initial_resource_versions.len(), "new subscription");
                vacant.insert(Subscription::new(&request))
            }
        };
        let (wildcard, names, held) = (sub.is_wildcard(), sub.subscribed_names(), sub.held());
        self.registration.update_type(type_url, |t| {
            t.wildcard = wildcard;
            t.subscribed_names = names;
            t.resources_held = held;
        });
    }

    /// Records an ACK or NACK of the latest response; older nonces were superseded by a
    /// response the proxy has yet to answer, so they say nothing about its current state.
    fn on_ack(&mut self, request: &DeltaDiscoveryRequest) {
        let type_url = request.type_url.as_str();
        let nonce = request.response_nonce.as_str();
        let node_id = self.node_id.as_deref().unwrap_or_default();
        let latest = self
            .registration
            .update_type(type_url, |t| t.last_sent_nonce.as_deref() == Some(nonce));
        if !latest {
            debug!(node = %self.node, node_id, type_url, nonce, "ignoring a stale nonce");
            return;
        }
        match &request.error_detail {
            Some(error) => {
                warn!(
                    node = %self.node, node_id, type_url, nonce,
                    code = error.code, "proxy rejected (NACKed) xDS config and keeps its previous one: {}", error.message
                );
                let nack = Nack {
                    nonce: nonce.to_owned(),
                    message: error.message.clone(),
                    at_unix_ms: unix_ms_now(),
                };
                self.registration
                    .update_type(type_url, |t| t.last_nack = Some(nack));
            }
            None => {
                debug!(node = %self.node, node_id, type_url, nonce, "ACK");
                self.registration
                    .update_type(type_url, |t| t.last_acked_nonce = Some(nonce.to_owned()));
            }
        }
    }

    /// The response bringing the proxy to the current snapshot for `type_url`, if any.
    fn next_response(&mut self, type_url: &str) -> Option<DeltaDiscoveryResponse> {
        let current = self.snapshot.resources(type_url);
        let sub = self.subscriptions.get_mut(type_url)?;
        let update = sub.next_update(&current)?;
        let held = sub.held();
        self.responses += 1;
        let nonce = format!("{}-{}", self.registration.id(), self.responses);
        let (sent, removed) = (update.changed.len(), update.removed.len());
        let resources = update
            .changed
            .into_iter()
            .map(|(name, entry)| Resource {
                name: name.to_string(),
                version: entry.version.to_string(),
                resource: Some(entry.to_any()),
                ..Default::default()
            })
            .collect();
        debug!(node = %self.node, type_url, nonce, sent, removed, version = self.snapshot.version(), "xDS push");
        self.registration.update_type(type_url, |t| {
            t.resources_sent += sent as u64;
            t.removals_sent += removed as u64;
            t.responses_sent += 1;
            t.resources_held = held;
            t.last_sent_nonce = Some(nonce.clone());
        });
        Some(DeltaDiscoveryResponse {
            system_version_info: self.snapshot.version().to_owned(),
            resources,
            type_url: type_url.to_owned(),
            removed_resources: update.removed.iter().map(|n| n.to_string()).collect(),
            nonce,
            ..Default::default()
        })
    }
}
