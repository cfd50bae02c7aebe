//! The delta ADS stream: subscribe, apply, ACK/NACK, and reconnect with backoff.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use api::rpc;
use api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::xds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use super::resources::Resources;
use super::{TYPE_URLS, XdsConfig, XdsStatus, short_type};
use crate::control_plane::ControlPlane;
use crate::state::StateStore;

/// The first response carries the whole mesh; tonic's 4 MiB default is too small for a
/// large cluster.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Why a stream ended. Each is followed by a reconnect; the state in force stays.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("cannot authenticate to the controller: {}", .0.message())]
    Token(Box<tonic::Status>),
    #[error("cannot open the xDS stream ({}): {}; is the controller reachable?", .0.code(), .0.message())]
    Open(Box<tonic::Status>),
    #[error("the xDS stream failed ({}): {}", .0.code(), .0.message())]
    Stream(Box<tonic::Status>),
    #[error("the controller closed the xDS stream")]
    Closed,
}

/// One more resource type on the same stream, for a proxy that needs more than the
/// workload API (the waypoint's L7 config). Applying is all-or-nothing, as for the
/// built-in types: an `Err` is NACKed and what was held stays.
pub trait ExtraType: Send + std::fmt::Debug {
    fn type_url(&self) -> &'static str;
    /// `name -> version` held, for `initial_resource_versions` on a reconnect.
    fn versions(&self) -> BTreeMap<String, String>;
    /// How many resources are held.
    fn count(&self) -> usize;
    /// Applies one response; `(updated, removed)`.
    fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Result<(usize, usize), String>;
}

/// Keeps the [`StateStore`] in step with the controller until shutdown.
#[derive(Debug)]
pub struct XdsClient {
    control_plane: ControlPlane,
    config: XdsConfig,
    store: Arc<StateStore>,
    resources: Resources,
    extra: Vec<Box<dyn ExtraType>>,
    /// Types with an accepted response since start; all of them means synced.
    synced_types: HashSet<String>,
    status: watch::Sender<XdsStatus>,
}

impl XdsClient {
    pub fn new(control_plane: ControlPlane, config: XdsConfig, store: Arc<StateStore>) -> Self {
        XdsClient {
            control_plane,
            config,
            store,
            resources: Resources::default(),
            extra: Vec::new(),
            synced_types: HashSet::new(),
            status: watch::Sender::new(XdsStatus::default()),
        }
    }

    /// Also subscribes to `extra`'s type; the first sync then waits for it too.
    pub fn with_extra(mut self, extra: Box<dyn ExtraType>) -> Self {
        self.extra.push(extra);
        self
    }

    /// Every type subscribed to, in subscription order.
    fn type_urls(&self) -> Vec<&'static str> {
        TYPE_URLS
            .into_iter()
            .chain(self.extra.iter().map(|e| e.type_url()))
            .collect()
    }

    /// Progress of the client: first sync (for readiness), applied and refused updates.
    pub fn status(&self) -> watch::Receiver<XdsStatus> {
        self.status.subscribe()
    }

    /// Runs streams back to back until `shutdown` turns true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let backoff = self.config.backoff;
        let mut delay = backoff.initial;
        loop {
            let ended = self.stream(&mut shutdown, &mut delay).await;
            self.status.send_modify(|s| s.connected = false);
            let Err(error) = ended else {
                return;
            };
            warn!(
                controller = self.control_plane.address(),
                %error,
                retry_in_ms = delay.as_millis() as u64,
                "xds stream lost; serving the last good state until it is back"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = runtime::stopped(shutdown.clone()) => return,
            }
            delay = (delay * 2).min(backoff.max);
        }
    }

    /// One stream, from the subscriptions until it fails; `Ok` only on shutdown.
    async fn stream(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        delay: &mut Duration,
    ) -> Result<(), XdsError> {
        let type_urls = self.type_urls();
        let (requests, outbound) = mpsc::channel(type_urls.len() + 2);
        for type_url in type_urls {
            let subscribe = self.subscribe(type_url);
            requests.try_send(subscribe).map_err(|_| XdsError::Closed)?;
        }
        let request = self
            .control_plane
            .request(ReceiverStream::new(outbound))
            .map_err(|e| XdsError::Token(Box::new(e)))?;
        let mut client = AggregatedDiscoveryServiceClient::new(self.control_plane.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut responses = tokio::select! {
            opened = client.delta_aggregated_resources(request) => {
                opened.map_err(|e| XdsError::Open(Box::new(e)))?.into_inner()
            }
            () = runtime::stopped(shutdown.clone()) => return Ok(()),
        };
        self.status.send_modify(|s| s.connected = true);
        info!(controller = self.control_plane.address(), "xds stream open");
        loop {
            let response = tokio::select! {
                next = responses.message() => next
                    .map_err(|e| XdsError::Stream(Box::new(e)))?
                    .ok_or(XdsError::Closed)?,
                () = runtime::stopped(shutdown.clone()) => return Ok(()),
            };
            let reply = self.handle(response, delay);
            tokio::select! {
                sent = requests.send(reply) => sent.map_err(|_| XdsError::Closed)?,
                () = runtime::stopped(shutdown.clone()) => return Ok(()),
            }
        }
    }

    /// The wildcard subscription for `type_url`, with the versions held from a previous
    /// stream so the controller can send only what changed.
    fn subscribe(&self, type_url: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(self.config.node.to_node()),
            type_url: type_url.to_owned(),
            resource_names_subscribe: vec!["*".to_owned()],
            initial_resource_versions: match self.extra(type_url) {
                Some(extra) => extra.versions(),
                None => self.resources.versions(type_url),
            }
            .into_iter()
            .collect(),
            ..DeltaDiscoveryRequest::default()
        }
    }

    /// Applies one response and returns its ACK or NACK.
    fn handle(
        &mut self,
        response: DeltaDiscoveryResponse,
        delay: &mut Duration,
    ) -> DeltaDiscoveryRequest {
        let kind = short_type(&response.type_url);
        let mut reply = DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        };
        let applied = match self.extra_mut(&response.type_url) {
            Some(extra) => extra.apply(&response).map(|(updated, removed)| {
                info!(resource_type = kind, nonce = %response.nonce, updated, removed, held = extra.count(), "xds update applied");
            }),
            None => self.resources.apply(&response).map_err(|e| e.to_string()).map(|applied| {
                let state = applied.state;
                info!(
                    resource_type = kind,
                    nonce = %response.nonce,
                    updated = applied.updated,
                    removed = applied.removed,
                    workloads = state.workloads().count(),
                    services = state.services().count(),
                    policies = state.policies().len(),
                    "xds update applied"
                );
                self.store.replace(state);
            }),
        };
        match applied {
            Ok(()) => {
                let synced = {
                    self.synced_types.insert(response.type_url.clone());
                    let types = self.type_urls();
                    types.iter().all(|t| self.synced_types.contains(*t))
                };
                let held = match self.extra(&response.type_url) {
                    Some(extra) => extra.count(),
                    None => self.resources.count(&response.type_url),
                };
                self.status.send_modify(|s| {
                    s.applied += 1;
                    s.synced |= synced;
                    let of_type = s.types.entry(response.type_url).or_default();
                    of_type.applied += 1;
                    of_type.resources = held;
                    of_type.last_applied_nonce = response.nonce;
                    of_type.last_applied_version = response.system_version_info;
                });
                *delay = self.config.backoff.initial;
            }
            Err(message) => {
                warn!(resource_type = kind, nonce = %response.nonce, error = %message, "xds update rejected (NACK); keeping the previous state");
                self.status.send_modify(|s| {
                    s.rejected += 1;
                    s.last_rejection = Some(message.clone());
                    let of_type = s.types.entry(response.type_url).or_default();
                    of_type.rejected += 1;
                    of_type.last_rejected_nonce = Some(response.nonce);
                    of_type.last_rejection = Some(message.clone());
                });
                reply.error_detail = Some(rpc::Status {
                    code: tonic::Code::InvalidArgument as i32,
                    message,
                    details: Vec::new(),
                });
            }
        }
        reply
    }
}

impl XdsClient {
    fn extra(&self, type_url: &str) -> Option<&dyn ExtraType> {
        self.extra
            .iter()
            .find(|e| e.type_url() == type_url)
            .map(|e| e.as_ref())
    }

    fn extra_mut(&mut self, type_url: &str) -> Option<&mut Box<dyn ExtraType>> {
        self.extra.iter_mut().find(|e| e.type_url() == type_url)
    }
}
