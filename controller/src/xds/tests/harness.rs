//! A controller-side xDS server on loopback and a scripted proxy-side client.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::prost_types::Any;
use api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::xds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use api::{core, security, workload};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status, Streaming};

use crate::auth::NodeTokens;
use crate::xds::{ProxyStatus, Snapshot, SnapshotBuilder, XdsServer};

pub const NODE: &str = "node-0";
pub const TOKEN: &str = "node-0-token-0123456789";
pub const ADDRESS: &str = api::ADDRESS_TYPE_URL;
pub const AUTHZ: &str = api::AUTHORIZATION_TYPE_URL;

/// Bound on every wait for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);

/// Bound on a wait for something that should *not* happen. Not a proof, but a server that
/// wrongly answers does so within microseconds on loopback, far below this.
pub const QUIET: Duration = Duration::from_millis(200);

/// Runs `f` or fails the test naming `what` if it takes longer than [`PATIENCE`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A workload address resource; `octet` varies its content.
pub fn address(uid: &str, octet: u8) -> Any {
    let address = workload::Address {
        r#type: Some(workload::address::Type::Workload(workload::Workload {
            uid: uid.to_owned(),
            name: uid.to_owned(),
            namespace: "default".into(),
            addresses: vec![vec![10, 0, 0, octet]],
            ..Default::default()
        })),
    };
    Any::from_msg(&address).expect("encodes")
}

/// An authorization policy resource; `action` varies its content.
pub fn policy(name: &str, action: i32) -> Any {
    let policy = security::Authorization {
        name: name.to_owned(),
        namespace: "default".into(),
        action,
        ..Default::default()
    };
    Any::from_msg(&policy).expect("encodes")
}

/// A snapshot from (type, name, payload) triples.
pub fn snapshot<'a>(items: impl IntoIterator<Item = (&'a str, String, Any)>) -> Snapshot {
    let mut b = Snapshot::builder();
    for (type_url, name, any) in items {
        b.insert(type_url, name, any);
    }
    b.build()
}

/// Like [`snapshot`], sharing unchanged entries with `previous` as the translator would.
pub fn next_snapshot<'a>(
    previous: &Arc<Snapshot>,
    items: impl IntoIterator<Item = (&'a str, String, Any)>,
) -> Snapshot {
    let mut b = SnapshotBuilder::from_previous(previous.clone());
    for (type_url, name, any) in items {
        b.insert(type_url, name, any);
    }
    b.build()
}

pub struct Controller {
    pub addr: SocketAddr,
    pub server: XdsServer,
    publisher: watch::Sender<Arc<Snapshot>>,
}

impl Controller {
    pub async fn start(initial: Snapshot) -> Controller {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let tokens =
            NodeTokens::from_pairs([(NODE.to_owned(), TOKEN.to_owned())]).expect("valid tokens");
        let (publisher, snapshots) = watch::channel(Arc::new(initial));
        let server = XdsServer::new(snapshots, Arc::new(tokens));
        let router = Server::builder().add_service(server.service());
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        Controller {
            addr,
            server,
            publisher,
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.publisher.borrow().clone()
    }

    pub fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        self.publisher.send_replace(snapshot.clone());
        snapshot
    }

    /// Drops the publisher, as a stopping controller does.
    pub fn stop_publishing(self) -> XdsServer {
        self.server
    }

    /// Opens a delta stream with `authorization: Bearer <token>` (no header for `None`).
    pub async fn connect(&self, token: Option<&str>) -> Result<Proxy, Status> {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connects")
            .max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(16);
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("header value");
            request.metadata_mut().insert("authorization", value);
        }
        let responses = bounded("stream open", client.delta_aggregated_resources(request))
            .await?
            .into_inner();
        Ok(Proxy { tx, responses })
    }

    /// Waits until the status list satisfies `check`; returns that list.
    pub async fn status_until(
        &self,
        what: &str,
        check: impl Fn(&[ProxyStatus]) -> bool,
    ) -> Vec<ProxyStatus> {
        bounded(what, async {
            loop {
                let list = self.server.connections();
                if check(&list) {
                    return list;
                }
                // Polling interval of a bounded "eventually", not synchronisation.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// The proxy side of one stream.
pub struct Proxy {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl Proxy {
    pub async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.expect("request stream open");
    }

    /// First request of a type: subscribe to `names` (empty = wildcard), holding `initial`.
    pub async fn subscribe(
        &self,
        type_url: &str,
        names: &[&str],
        initial: &BTreeMap<String, String>,
    ) {
        self.send(DeltaDiscoveryRequest {
            node: Some(core::Node {
                id: format!("ztunnel~10.0.0.1~{NODE}"),
                ..Default::default()
            }),
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            initial_resource_versions: initial.clone().into_iter().collect(),
            ..Default::default()
        })
        .await
    }

    pub async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        bounded("a response", self.responses.message())
            .await
            .expect("stream healthy")
            .expect("stream open")
    }

    /// The stream's end: `Ok(())` for a clean end, else the status it ended with.
    pub async fn end(&mut self) -> Result<(), Status> {
        loop {
            match bounded("the stream's end", self.responses.message()).await? {
                Some(_) => continue,
                None => return Ok(()),
            }
        }
    }

    /// Asserts that no response arrives within [`QUIET`].
    pub async fn assert_quiet(&mut self, why: &str) {
        if let Ok(got) = tokio::time::timeout(QUIET, self.responses.message()).await {
            panic!("expected no response ({why}), got {got:?}");
        }
    }
}

/// Names of the resources in a response.
pub fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

/// Name → version of the resources in a response.
pub fn versions(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}
