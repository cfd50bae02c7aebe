//! The fake controller: a delta ADS server over TLS on loopback that hands each stream
//! to the test, which then plays the controller's side message by message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use api::xds::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use api::xds::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use dataplane::control_plane::DEFAULT_SERVER_NAME;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic::{Request, Response, Status, Streaming};

/// Every wait in these tests is bounded by this.
pub const BOUND: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {BOUND:?} waiting for {what}"))
}

/// A root and a serving certificate for the controller's name, as PEM.
pub struct Pki {
    pub root: String,
    cert: String,
    key: String,
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root_params, root_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![DEFAULT_SERVER_NAME.to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        root: root.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// One delta stream as the fake controller sees it.
pub struct Session {
    pub authorization: Option<String>,
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl Session {
    pub async fn request(&mut self) -> DeltaDiscoveryRequest {
        within("a request from the client", self.requests.message())
            .await
            .expect("stream error")
            .expect("the client closed its stream")
    }

    /// The two wildcard subscriptions, by type.
    pub async fn subscriptions(&mut self) -> HashMap<String, DeltaDiscoveryRequest> {
        let mut by_type = HashMap::new();
        for _ in 0..2 {
            let r = self.request().await;
            by_type.insert(r.type_url.clone(), r);
        }
        by_type
    }

    /// Sends a response and returns the client's ACK or NACK for it.
    pub async fn push(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let nonce = response.nonce.clone();
        self.responses.send(Ok(response)).await.unwrap();
        let reply = self.request().await;
        assert_eq!(reply.response_nonce, nonce);
        reply
    }
}

struct FakeAds {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (responses, rx) = mpsc::channel(8);
        let session = Session {
            authorization,
            requests: request.into_inner(),
            responses,
        };
        self.sessions
            .send(session)
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The fake controller: a TLS gRPC server on loopback handing each stream to the test.
pub struct Controller {
    pub addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Session>,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl Controller {
    pub async fn start(pki: &Pki, addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = ServerTlsConfig::new().identity(TlsIdentity::from_pem(&pki.cert, &pki.key));
        let router = Server::builder().tls_config(tls).unwrap().add_service(
            AggregatedDiscoveryServiceServer::new(FakeAds { sessions: tx }),
        );
        let served = tokio::spawn(async move {
            let incoming = TcpIncoming::from(listener);
            let shutdown = async {
                let _ = stopped.await;
            };
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .unwrap();
        });
        Controller {
            addr,
            sessions,
            stop,
            served,
        }
    }

    pub async fn session(&mut self) -> Session {
        within("the client to open a stream", self.sessions.recv())
            .await
            .unwrap()
    }

    /// Stops serving. Streams the test holds must have been dropped first; streams the
    /// client opened since are ended here (dropping the queue), and later ones refused, so
    /// the graceful shutdown has nothing left to wait for.
    pub async fn stop(self) {
        let Controller {
            sessions,
            stop,
            served,
            ..
        } = self;
        drop(sessions);
        let _ = stop.send(());
        within("the fake controller to stop", served).await.unwrap();
    }
}
