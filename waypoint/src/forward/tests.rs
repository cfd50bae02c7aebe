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
    let upstreams = Upstreams::new(
        Pool::new(hbone::PoolConfig::default(), Arc::new(NoTunnels)),
        Identity::new("cluster.local", "shop", "waypoint").unwrap(),
    );
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
            http1 <= 1 && http2 == 0 && freed <= 1,
            "round {round}: {http1} / {http2} / {freed}"
        );
    }
    let (http1, _, freed) = upstreams.tracked();
    assert_eq!(
        (http1, freed),
        (1, 1),
        "only the last round's entries are left"
    );
}
