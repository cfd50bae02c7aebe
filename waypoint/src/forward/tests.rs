use std::time::Duration;

use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::upstream::{ConnectionPool, PoolLimits};

/// Never asked: the targets below are plain TCP.
struct NoTunnels;

impl hbone::Dialer for NoTunnels {
    fn dial(
        &self,
        key: &PoolKey,
    ) -> BoxFuture<'static, Result<hbone::tls::TlsStream<TcpStream>, hbone::ConnectError>> {
        let addr = key.next_hop;
        Box::pin(async move {
            Err(hbone::ConnectError::Tcp {
                addr,
                source: std::io::Error::other("no tunnels in this test"),
            })
        })
    }
}

/// An endpoint that answers one request per connection and closes it.
async fn closing_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

fn request() -> Request<Body> {
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    Request::get("/").body(body).unwrap()
}

#[tokio::test]
async fn endpoints_and_pools_that_come_and_go_leave_nothing_behind() {
    let upstreams = upstreams();
    // Fifty endpoints, each under a new cluster pool (as after a DestinationRule change
    // or a rollout that gave every pod a new IP).
    for round in 0..50 {
        let target = Target {
            addr: closing_endpoint().await,
            hbone: None,
        };
        let pool = ConnectionPool::new(PoolLimits::default());
        let response = upstreams
            .send(&target, Version::HTTP_11, request(), &pool)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        // The endpoint closed the connection; wait until the client side has seen it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !upstreams.all_http1_closed() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: never closed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (http1, http2, freed) = upstreams.tracked();
        // What the last round left, at most: pruning happens before each new connection.
        assert!(
            http1 <= 1 && http2 == 0 && freed == 0,
            "round {round}: {http1} / {http2} / {freed}"
        );
    }
    // No request ever waited for a connection, so no wake-up was ever registered.
    let (http1, _, freed) = upstreams.tracked();
    assert_eq!(
        (http1, freed),
        (1, 0),
        "only the last round's entries are left"
    );
}

/// A keep-alive endpoint: answers every request on a connection; counts the connections
/// it accepted and those that the client closed.
struct KeepAlive {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

async fn keep_alive_endpoint() -> KeepAlive {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        if tcp
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    KeepAlive {
        addr,
        accepted,
        closed,
    }
}

fn upstreams() -> Upstreams {
    Upstreams::new(
        Pool::new(hbone::PoolConfig::default(), Arc::new(NoTunnels)),
        Identity::new("cluster.local", "shop", "waypoint").unwrap(),
    )
}

async fn get_ok(upstreams: &Upstreams, target: &Target, pool: &Arc<ConnectionPool>) {
    let response = upstreams
        .send(target, Version::HTTP_11, request(), pool)
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}

/// An endpoint that keeps connections alive, and two requests to it under `limits` that
/// went over one connection.
async fn kept_alive(limits: PoolLimits) -> (KeepAlive, Upstreams, Target, Arc<ConnectionPool>) {
    let endpoint = keep_alive_endpoint().await;
    let target = Target {
        addr: endpoint.addr,
        hbone: None,
    };
    let upstreams = upstreams();
    let pool = ConnectionPool::new(limits);
    get_ok(&upstreams, &target, &pool).await;
    get_ok(&upstreams, &target, &pool).await;
    let accepted = endpoint.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(accepted, 1, "two requests, one kept-alive connection");
    (endpoint, upstreams, target, pool)
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_clusters_idle_timeout() {
    use std::sync::atomic::Ordering;
    let (endpoint, upstreams, target, pool) = kept_alive(PoolLimits {
        idle_timeout: Duration::from_millis(200),
        ..PoolLimits::default()
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while endpoint.closed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next request opens a new one.
    get_ok(&upstreams, &target, &pool).await;
    assert_eq!(endpoint.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_is_not_reused_past_the_clusters_max_connection_duration() {
    use std::sync::atomic::Ordering;
    let (endpoint, upstreams, target, pool) = kept_alive(PoolLimits {
        max_connection_duration: Some(Duration::from_millis(300)),
        ..PoolLimits::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    get_ok(&upstreams, &target, &pool).await;
    assert_eq!(
        endpoint.accepted.load(Ordering::SeqCst),
        2,
        "replaced once aged"
    );
}

/// Dials forever: the tunnel never comes up.
struct Hanging;

impl hbone::Dialer for Hanging {
    fn dial(
        &self,
        _key: &PoolKey,
    ) -> BoxFuture<'static, Result<hbone::tls::TlsStream<TcpStream>, hbone::ConnectError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn opening_a_connection_is_bounded_by_the_clusters_connect_timeout() {
    let upstreams = Upstreams::new(
        Pool::new(hbone::PoolConfig::default(), Arc::new(Hanging)),
        Identity::new("cluster.local", "shop", "waypoint").unwrap(),
    );
    let target = Target {
        addr: "127.0.0.1:9".parse().unwrap(),
        hbone: Some(Identity::new("cluster.local", "shop", "reviews").unwrap()),
    };
    let pool = ConnectionPool::new(PoolLimits {
        connect_timeout: Duration::from_millis(150),
        ..PoolLimits::default()
    });
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        upstreams.send(&target, Version::HTTP_11, request(), &pool),
    )
    .await
    .expect("the connect timeout ends the attempt");
    match outcome {
        Err(UpstreamError::Connect { reason, .. }) => {
            assert!(reason.contains("connect timeout"), "{reason}")
        }
        other => panic!("expected a connect failure, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
}
