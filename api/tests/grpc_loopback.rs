//! The generated clients talk to the generated servers over a real HTTP/2
//! connection on loopback: delta ADS (bidi stream) and CreateCertificate.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use api::{
    ca::{
        self,
        istio_certificate_service_client::IstioCertificateServiceClient,
        istio_certificate_service_server::{
            IstioCertificateService, IstioCertificateServiceServer,
        },
    },
    core::Node,
    prost_types::Any,
    workload,
    xds::{
        self,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
};
use futures_util::StreamExt as _;
use tonic::{Request, Response, Status, Streaming, transport::Server};

type BoxStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

struct Mock;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Mock {
    type StreamAggregatedResourcesStream = BoxStream<xds::DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<xds::DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<xds::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta only"))
    }

    /// Answers the first request with one Address resource named after the
    /// requesting node, then waits for the client's ACK and echoes its nonce.
    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<xds::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut inbound = req.into_inner();
        let out = async_stream(move |tx| async move {
            let first = inbound
                .message()
                .await?
                .ok_or_else(|| Status::aborted("no request"))?;
            if first.type_url != api::ADDRESS_TYPE_URL {
                return Err(Status::invalid_argument(first.type_url));
            }
            let node_id = first.node.map(|n| n.id).unwrap_or_default();
            let addr = workload::Address {
                r#type: Some(workload::address::Type::Workload(workload::Workload {
                    uid: format!("uid-for-{node_id}"),
                    addresses: vec![vec![127, 0, 0, 1]],
                    ..Default::default()
                })),
            };
            let resp = xds::DeltaDiscoveryResponse {
                type_url: api::ADDRESS_TYPE_URL.into(),
                nonce: "n1".into(),
                resources: vec![xds::Resource {
                    name: format!("uid-for-{node_id}"),
                    version: "v1".into(),
                    resource: Some(
                        Any::from_msg(&addr).map_err(|e| Status::internal(e.to_string()))?,
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            };
            tx.send(Ok(resp))
                .await
                .map_err(|_| Status::cancelled("client gone"))?;
            let ack = inbound
                .message()
                .await?
                .ok_or_else(|| Status::aborted("no ack"))?;
            let echo = xds::DeltaDiscoveryResponse {
                type_url: api::ADDRESS_TYPE_URL.into(),
                nonce: format!("acked:{}", ack.response_nonce),
                removed_resources: vec!["gone".into()],
                ..Default::default()
            };
            tx.send(Ok(echo))
                .await
                .map_err(|_| Status::cancelled("client gone"))?;
            Ok(())
        });
        Ok(Response::new(out))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for Mock {
    async fn create_certificate(
        &self,
        req: Request<ca::IstioCertificateRequest>,
    ) -> Result<Response<ca::IstioCertificateResponse>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let req = req.into_inner();
        Ok(Response::new(ca::IstioCertificateResponse {
            cert_chain: vec![
                format!("leaf({}, {}s, {auth})", req.csr, req.validity_duration),
                "root".into(),
            ],
            root_cert: None,
        }))
    }
}

/// A channel-backed response stream: `body` runs as a task and sends items;
/// an `Err` it returns is forwarded as the stream's final item.
fn async_stream<T, F, Fut>(body: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let fut = body(tx.clone());
    tokio::spawn(async move {
        if let Err(status) = fut.await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn start_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(Mock))
            .add_service(IstioCertificateServiceServer::new(Mock))
            .serve_with_incoming(incoming),
    );
    addr
}

#[tokio::test]
async fn delta_ads_and_ca_over_loopback() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let addr = start_server().await;
        let url = format!("http://{addr}");

        // Delta ADS: request, receive, ACK by nonce, receive echo.
        let mut ads = AggregatedDiscoveryServiceClient::connect(url.clone())
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(xds::DeltaDiscoveryRequest {
            node: Some(Node {
                id: "ztunnel~node-1".into(),
                ..Default::default()
            }),
            type_url: api::ADDRESS_TYPE_URL.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let outbound = futures_util::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        });
        let mut inbound = ads
            .delta_aggregated_resources(outbound)
            .await
            .unwrap()
            .into_inner();

        let first = inbound.next().await.expect("a response").expect("ok");
        assert_eq!(first.nonce, "n1");
        assert_eq!(first.resources.len(), 1);
        let res = &first.resources[0];
        assert_eq!(res.name, "uid-for-ztunnel~node-1");
        let addr: workload::Address = res.resource.as_ref().unwrap().to_msg().unwrap();
        let Some(workload::address::Type::Workload(w)) = addr.r#type else {
            panic!("expected a workload: {addr:?}");
        };
        assert_eq!(w.uid, "uid-for-ztunnel~node-1");
        assert_eq!(w.addresses, vec![vec![127, 0, 0, 1]]);

        tx.send(xds::DeltaDiscoveryRequest {
            type_url: api::ADDRESS_TYPE_URL.into(),
            response_nonce: first.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let echo = inbound.next().await.expect("a response").expect("ok");
        assert_eq!(echo.nonce, "acked:n1");
        assert_eq!(echo.removed_resources, ["gone"]);
        drop(tx);
        assert!(inbound.next().await.is_none(), "server ends the stream");

        // CA: unary call with a bearer token.
        let mut ca_client = IstioCertificateServiceClient::connect(url).await.unwrap();
        let mut req = Request::new(ca::IstioCertificateRequest {
            csr: "CSR".into(),
            validity_duration: 3600,
            metadata: None,
        });
        req.metadata_mut()
            .insert("authorization", "Bearer tok".parse().unwrap());
        let resp = ca_client
            .create_certificate(req)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.cert_chain, ["leaf(CSR, 3600s, Bearer tok)", "root"]);
    })
    .await
    .expect("loopback exchange finished in time");
}
