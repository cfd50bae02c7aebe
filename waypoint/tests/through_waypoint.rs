//! Tier 2 (in-process): the real controller (manifests, xDS, CA) and the real waypoint
//! process (`waypoint::app::serve`) on loopback, with HTTP backends standing in for the
//! pods of a service and a test client tunnelling to the waypoint over HBONE as a ztunnel
//! would. Proves the pieces agree: the waypoint gets its certificate and its config over
//! xDS, routes by VirtualService and DestinationRule subsets, enforces an L7
//! AuthorizationPolicy, injects faults, and counts requests in Istio's metrics.

mod common;

use common::{MESH, Running, backend, eventually, listeners};

/// A mesh with one service behind the waypoint: `reviews` (VIP 10.96.0.30:9080), v1 at
/// 127.0.0.11 and v2 at 127.0.0.12 (loopback addresses the backends listen on), in the
/// harness's [`MESH`] (the waypoint and the client pod whose identity the test presents).
const MANIFESTS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /broken}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
    headers: {response: {set: {x-routed-by: waypoint}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;

async fn start() -> Running {
    // Backends first: the port goes into the Service's targetPort.
    let (port, mut bound) = listeners(&["127.0.0.11", "127.0.0.12"]).await;
    backend(bound.remove(0), "v1");
    backend(bound.remove(0), "v2");
    let manifests = format!("{}{MANIFESTS}", common::reviews(port, &["v1", "v2"]));
    common::start(&format!("{MESH}{manifests}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_authorized_and_faulted_by_the_waypoint() {
    let mesh = start().await;
    // The waypoint serves once its certificate and xDS config are in.
    eventually("the VirtualService in force", || async {
        matches!(mesh.get("/reviews/1", &[("end-user", "jason")]).await, Ok((200, body, _)) if body == "v2 /reviews/1")
    })
    .await;
    let (status, body, headers) = mesh.get("/reviews/1", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 /reviews/1"));
    assert_eq!(
        headers.get("x-routed-by").map(|v| v.to_str().unwrap()),
        Some("waypoint")
    );
    let (status, body, _) = mesh.get("/admin/users", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let (status, body, _) = mesh.get("/broken", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (418, "fault filter abort"));

    let text = mesh.metrics().await;
    let count = |code: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_code=\"{code}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("403"), 1, "{text}");
    assert_eq!(count("418"), 1, "{text}");
    assert!(count("200") >= 2, "{text}");
    let v1 = text
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"200\"")
                && l.contains("destination_version=\"v1\"")
        })
        .unwrap_or_else(|| panic!("no request counted for v1:\n{text}"));
    assert!(
        v1.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/client\""),
        "{v1}"
    );
    assert!(
        v1.contains("destination_service=\"reviews.shop.svc.cluster.local\""),
        "{v1}"
    );
    assert!(v1.contains("reporter=\"waypoint\""), "{v1}");
    // The same workload labels ztunnel reports: canonical service and revision, and the
    // cluster of the workload's uid (the client here is no workload of the mesh).
    for label in [
        "destination_app=\"reviews\"",
        "destination_canonical_revision=\"v1\"",
        "destination_cluster=\"Kubernetes\"",
    ] {
        assert!(v1.contains(label), "{label} missing in {v1}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_connections_are_spread_over_the_worker_threads() {
    let mesh = start().await;
    eventually("the waypoint serving", || async {
        matches!(mesh.get("/reviews/1", &[]).await, Ok((200, _, _)))
    })
    .await;
    // A second tunnel connection goes to the other worker (the waypoint runs its default
    // two), which serves it as well as the first serves its own.
    let other = mesh.another_client();
    let (status, body, _) = mesh.get_via(&other, "/reviews/2", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 /reviews/2"));
    let (status, body, _) = mesh.get("/reviews/3", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 /reviews/3"));
    let spread = |metrics: &str| {
        ["0", "1"].iter().all(|w| {
            metrics
                .lines()
                .any(|l| l == format!("waypoint_worker_connections_active{{worker=\"{w}\"}} 1"))
        })
    };
    eventually("one connection on each worker", || async {
        spread(&mesh.metrics().await)
    })
    .await;
    // Both clients' pooled connections are still open: closing one frees its worker.
    drop(other);
    eventually("the second connection closed", || async {
        mesh.metrics()
            .await
            .lines()
            .any(|l| l == "waypoint_worker_connections_active{worker=\"1\"} 0")
    })
    .await;
}
