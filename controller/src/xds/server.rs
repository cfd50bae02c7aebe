//! The gRPC face of the xDS server: authenticates each stream and hands it to its own task.

use std::sync::Arc;

use api::xds::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use api::xds::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument as _, info_span, warn};

use super::snapshot::Snapshot;
use super::status::{ProxyStatus, Registry};
use super::stream::Connection;
use crate::auth::NodeTokens;

/// The resource types served; requests for others are logged and ignored.
pub const SERVED_TYPE_URLS: &[&str] = &[
    api::ADDRESS_TYPE_URL,
    api::AUTHORIZATION_TYPE_URL,
    api::L7_RESOURCE_TYPE_URL,
];

/// Responses queued per stream before the stream stops computing new ones: enough to keep
/// the HTTP/2 pipe busy, small enough that snapshot changes coalesce for a slow proxy.
const OUTBOUND_QUEUE: usize = 2;

/// Largest request accepted: about 400,000 `initial_resource_versions` entries.
const MAX_REQUEST_BYTES: usize = 32 << 20;

/// Delta ADS over the snapshots published on a watch channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct XdsServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    tokens: Arc<NodeTokens>,
    registry: Arc<Registry>,
}

impl XdsServer {
    /// Serves whatever snapshot `snapshots` holds; proxies must present a token in `tokens`.
    /// Dropping the snapshot sender ends every stream with `UNAVAILABLE`.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, tokens: Arc<NodeTokens>) -> Self {
        XdsServer {
            inner: Arc::new(Inner {
                snapshots,
                tokens,
                registry: Arc::default(),
            }),
        }
    }

    /// The tonic service, to add to a router. Responses are unlimited in size (a fresh
    /// proxy's full snapshot can exceed tonic's 4 MiB default, so proxies must raise their
    /// decoding limit too); requests are bounded but leave room for a reconnecting proxy's
    /// `initial_resource_versions`.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<XdsServer> {
        AggregatedDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    /// Status of every connected proxy, oldest connection first.
    pub fn connections(&self) -> Vec<ProxyStatus> {
        self.inner.registry.list()
    }
}

type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
type SotwStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(Status::unimplemented(
            "only delta xDS is served: use DeltaAggregatedResources",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let peer = request.remote_addr();
        let node = self
            .inner
            .tokens
            .authenticate(request.metadata())
            .inspect_err(|e| warn!(?peer, "refused an xDS stream: {}", e.message()))?;
        let registration = self.inner.registry.register(node.clone(), peer);
        let span = info_span!("xds", connection = registration.id(), ?peer);
        let connection = Connection::new(
            node,
            SERVED_TYPE_URLS,
            self.inner.snapshots.clone(),
            registration,
        );
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tokio::spawn(connection.run(request.into_inner(), tx).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
