//! A delta xDS client for the controller benchmark: it connects as ztunnel does (TLS
//! trusting the mesh root, the node's bearer token, wildcard subscriptions to both Istio
//! types), ACKs every response at once, and hands each response over with the moment it
//! was received.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::xds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use ztunnel::control_plane::{ControlPlane, ControlPlaneConfig, DEFAULT_SERVER_NAME};

/// The types ztunnel subscribes to.
pub const TYPE_URLS: [&str; 2] = [api::ADDRESS_TYPE_URL, api::AUTHORIZATION_TYPE_URL];

/// A response and when it arrived.
#[derive(Debug)]
pub struct Received {
    pub at: Instant,
    pub response: DeltaDiscoveryResponse,
}

/// One delta ADS stream; dropping it closes the stream.
#[derive(Debug)]
pub struct XdsClient {
    responses: mpsc::UnboundedReceiver<Result<Received, tonic::Status>>,
    task: JoinHandle<()>,
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the controller is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `127.0.0.1:PORT` of the xDS/CA port.
    pub address: String,
    /// The mesh root (`root-cert.pem` in the controller's state directory).
    pub root_cert: PathBuf,
    pub token_file: PathBuf,
    pub node: String,
}

impl XdsClient {
    /// Opens the stream and subscribes to both types.
    pub async fn connect(target: &Target) -> Result<XdsClient> {
        let control_plane = ControlPlane::new(&ControlPlaneConfig {
            address: target.address.clone(),
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            root_cert: target.root_cert.clone(),
            token_file: target.token_file.clone(),
        })?;
        let (requests, outbound) = mpsc::channel(16);
        for type_url in TYPE_URLS {
            requests
                .try_send(DeltaDiscoveryRequest {
                    node: Some(api::core::Node {
                        id: format!("ztunnel~bench~{}", target.node),
                        user_agent_name: "controller-bench".into(),
                        ..Default::default()
                    }),
                    type_url: type_url.to_owned(),
                    resource_names_subscribe: vec!["*".to_owned()],
                    ..Default::default()
                })
                .context("queue a subscription")?;
        }
        let request = control_plane.request(ReceiverStream::new(outbound))?;
        let mut client = AggregatedDiscoveryServiceClient::new(control_plane.channel())
            .max_decoding_message_size(usize::MAX);
        let mut stream = client
            .delta_aggregated_resources(request)
            .await
            .context("open the delta xDS stream")?
            .into_inner();
        let (tx, responses) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let next = stream.message().await;
                let at = Instant::now();
                let response = match next {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        let _ = tx.send(Err(tonic::Status::unavailable("stream closed")));
                        return;
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status));
                        return;
                    }
                };
                let ack = DeltaDiscoveryRequest {
                    type_url: response.type_url.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                };
                if requests.send(ack).await.is_err()
                    || tx.send(Ok(Received { at, response })).is_err()
                {
                    return;
                }
            }
        });
        Ok(XdsClient { responses, task })
    }

    /// The next response, within `patience`.
    pub async fn next(&mut self, patience: Duration) -> Result<Received> {
        match tokio::time::timeout(patience, self.responses.recv()).await {
            Err(_) => bail!("no xDS response within {patience:?}"),
            Ok(None) => bail!("the xDS client stopped"),
            Ok(Some(Err(status))) => bail!("xDS stream failed: {status}"),
            Ok(Some(Ok(received))) => Ok(received),
        }
    }

    /// Waits for the first response of every subscribed type; returns how many resources
    /// each brought.
    pub async fn initial(&mut self, patience: Duration) -> Result<BTreeMap<String, usize>> {
        let deadline = Instant::now() + patience;
        let mut counts = BTreeMap::new();
        while counts.len() < TYPE_URLS.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self.next(left).await.context("initial xDS responses")?;
            let r = received.response;
            *counts.entry(r.type_url).or_insert(0) += r.resources.len();
        }
        Ok(counts)
    }

    /// Fails if a response arrives within `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) -> Result<()> {
        match tokio::time::timeout(quiet, self.responses.recv()).await {
            Err(_) => Ok(()),
            Ok(other) => bail!("unexpected xDS response: {other:?}"),
        }
    }
}
