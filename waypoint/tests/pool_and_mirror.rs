//! Tier 2 (in-process): DestinationRule connection-pool limits (overflow is 503 with
//! response flag `UO`, and requests within the limits wait as pending) and VirtualService
//! mirrors (a copy of each request, body included, reaches the mirror's subset with the
//! `-shadow` authority; the client only sees the primary's answer).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{MESH, Running, eventually, listeners};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const MANIFESTS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: 1}
        http: {http1MaxPendingRequests: 1}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100}
  - route: [{destination: {host: reviews, subset: v1}}]
"#;

/// What a backend received: path, authority and body of each request.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP/1.1 backend answering `NAME PATH` after `delay`.
fn slow_backend(listener: TcpListener, name: &'static str, delay: Duration) -> Received {
    let received = Received::default();
    let log = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        log.lock().unwrap().push((path.clone(), host, body));
                        tokio::time::sleep(delay).await;
                        let answer = format!("{name} {path}");
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            answer,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    received
}

async fn start(delay: Duration) -> (Running, Received, Received) {
    let (port, mut bound) = listeners(&["127.0.0.11", "127.0.0.12"]).await;
    let v1 = slow_backend(bound.remove(0), "v1", delay);
    let v2 = slow_backend(bound.remove(0), "v2", Duration::ZERO);
    let manifests = format!("{}{MANIFESTS}", common::reviews(port, &["v1", "v2"]));
    (common::start(&format!("{MESH}{manifests}")).await, v1, v2)
}

/// A POST with `body` on its own tunnel and HTTP connection: status and body.
async fn post(mesh: &Running, path: &str, body: &'static str) -> Result<(u16, String), String> {
    let tunnel = mesh.tunnel(common::REVIEWS).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::post(path)
        .header("host", "reviews:9080")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = tokio::time::timeout(common::BOUND, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_connection_pool_get_503_uo() {
    let (mesh, v1, _) = start(Duration::from_millis(600)).await;
    eventually("the DestinationRule in force", || async {
        matches!(mesh.get("/warm", &[]).await, Ok((200, body, _)) if body == "v1 /warm")
    })
    .await;
    v1.lock().unwrap().clear();
    // One connection (busy for 600 ms per request) and one pending request: of five
    // at once, two are served in turn and three overflow.
    let requests: Vec<_> = (0..5)
        .map(|i| {
            let path = format!("/r{i}");
            let mesh = &mesh;
            async move { mesh.get(&path, &[]).await }
        })
        .collect();
    let answers = futures_util::future::join_all(requests).await;
    let statuses: Vec<u16> = answers
        .iter()
        .map(|a| a.as_ref().map_or(0, |a| a.0))
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let overflowed = answers
        .iter()
        .filter(|a| matches!(a, Ok((503, body, _)) if body.contains("overflow")))
        .count();
    assert_eq!((ok, overflowed), (2, 3), "statuses {statuses:?}");
    assert_eq!(
        v1.lock().unwrap().len(),
        2,
        "the backend saw only the admitted requests"
    );
    let text = mesh.metrics().await;
    let uo: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"503\"")
                && l.contains("response_flags=\"UO\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(uo, 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_a_copy_with_the_body_and_the_shadow_authority() {
    let (mesh, v1, v2) = start(Duration::ZERO).await;
    eventually("the VirtualService in force", || async {
        matches!(post(&mesh, "/mirrored/warm", "warm").await, Ok((200, body)) if body == "v1 /mirrored/warm")
    })
    .await;
    let (status, body) = post(&mesh, "/mirrored/1", "the body").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 /mirrored/1"));
    eventually("the mirrored copy at v2", || async {
        v2.lock()
            .unwrap()
            .iter()
            .any(|(path, _, _)| path == "/mirrored/1")
    })
    .await;
    let copy = v2
        .lock()
        .unwrap()
        .iter()
        .find(|(path, _, _)| path == "/mirrored/1")
        .cloned()
        .unwrap();
    assert_eq!(copy.1, "reviews:9080-shadow");
    assert_eq!(copy.2, "the body");
    assert!(
        v1.lock()
            .unwrap()
            .iter()
            .any(|(path, host, body)| path == "/mirrored/1"
                && host == "reviews:9080"
                && body == "the body"),
        "the primary got the request as sent"
    );
}
