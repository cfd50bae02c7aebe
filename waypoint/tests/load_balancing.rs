//! Tier 2 (in-process): DestinationRule load balancing through the real controller and
//! waypoint. Outlier detection ejects an endpoint that keeps answering 503 (it gets no
//! more requests, and clients see only the healthy one's answers); a consistent hash on a
//! header keeps each header value on one endpoint while the values spread over both.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{MESH, backend, eventually, listeners};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A backend that answers every request with 503, counting them.
fn failing_backend(listener: TcpListener) -> Arc<AtomicUsize> {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from("broken")));
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    hits
}

/// The `reviews` DestinationRule with `traffic_policy` (YAML, indented under it).
fn reviews_rule(traffic_policy: &str) -> String {
    format!(
        "
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy:
{traffic_policy}"
    )
}

const OUTLIERS: &str = "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 60s
      maxEjectionPercent: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_is_ejected() {
    let (port, mut bound) = listeners(&["127.0.0.11", "127.0.0.12"]).await;
    let healthy = backend(bound.remove(0), "v1");
    let broken = failing_backend(bound.remove(0));
    let manifests = format!(
        "{MESH}{}{}",
        common::reviews(port, &["v1", "v2"]),
        reviews_rule(OUTLIERS)
    );
    let mesh = common::start(&manifests).await;
    // The DestinationRule is in force once the broken endpoint has been tried and
    // ejected: from then on every answer is the healthy one's (retries cover the 503s
    // before).
    eventually("the broken endpoint ejected", || async {
        let before = broken.load(Ordering::SeqCst);
        // 20 requests: without ejection, one in a million would miss the broken endpoint.
        for i in 0..20 {
            if !matches!(mesh.get(&format!("/warm/{i}"), &[]).await, Ok((200, _, _))) {
                return false;
            }
        }
        before >= 2 && broken.load(Ordering::SeqCst) == before
    })
    .await;
    let ejected_at = broken.load(Ordering::SeqCst);
    for i in 0..40 {
        let (status, body, _) = mesh.get(&format!("/after/{i}"), &[]).await.unwrap();
        assert_eq!((status, body), (200, format!("v1 /after/{i}")));
    }
    assert_eq!(
        broken.load(Ordering::SeqCst),
        ejected_at,
        "an ejected endpoint got requests"
    );
    let after = healthy
        .paths()
        .iter()
        .filter(|p| p.starts_with("/after/"))
        .count();
    assert_eq!(after, 40);
    let metrics = mesh.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\"")),
        "{metrics}"
    );
}

const STICKY: &str = "    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_hash_keeps_each_user_on_one_endpoint() {
    let (port, mut bound) = listeners(&["127.0.0.11", "127.0.0.12"]).await;
    backend(bound.remove(0), "v1");
    backend(bound.remove(0), "v2");
    let manifests = format!(
        "{MESH}{}{}",
        common::reviews(port, &["v1", "v2"]),
        reviews_rule(STICKY)
    );
    let mesh = common::start(&manifests).await;
    let version = |body: &str| body.split(' ').next().unwrap_or_default().to_owned();
    // In force once three users' requests stop moving between endpoints (by chance,
    // without the hash: one in two million).
    eventually("the consistent hash in force", || async {
        for probe in ["probe-a", "probe-b", "probe-c"] {
            let mut seen = BTreeSet::new();
            for _ in 0..8 {
                match mesh.get("/probe", &[("x-user", probe)]).await {
                    Ok((200, body, _)) => seen.insert(version(&body)),
                    _ => return false,
                };
            }
            if seen.len() != 1 {
                return false;
            }
        }
        true
    })
    .await;
    let mut placed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        for _ in 0..5 {
            let (status, body, _) = mesh.get("/r", &[("x-user", &user)]).await.unwrap();
            assert_eq!(status, 200, "{body}");
            placed
                .entry(user.clone())
                .or_default()
                .insert(version(&body));
        }
    }
    for (user, versions) in &placed {
        assert_eq!(versions.len(), 1, "{user} moved between {versions:?}");
    }
    let used: BTreeSet<&String> = placed.values().flatten().collect();
    // 20 users on a hash ring of two endpoints: all on one would be a 1-in-500,000 chance.
    assert_eq!(used.len(), 2, "every user landed on {used:?}");
}
