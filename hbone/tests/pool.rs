//! The connection pool: sharing, limits, one handshake per key, idle release, eviction.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::future::BoxFuture;
use hbone::tls::{ClientTls, TlsStream};
use hbone::{
    ConnectError, ConnectRequest, Dialer, H2Settings, Pool, PoolConfig, PoolKey, TlsDialer,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// Wraps a dialer to count dials and the most in flight at once.
struct CountingDialer {
    inner: TlsDialer,
    delay: Duration,
    dials: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl CountingDialer {
    fn new(tls: ClientTls, delay: Duration) -> Arc<Self> {
        Arc::new(CountingDialer {
            inner: TlsDialer::new(tls),
            delay,
            dials: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        })
    }
}

impl Dialer for CountingDialer {
    fn dial(
        &self,
        key: &PoolKey,
    ) -> BoxFuture<'static, Result<TlsStream<TcpStream>, ConnectError>> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let inner = self.inner.dial(key);
        let (delay, in_flight) = (self.delay, self.in_flight.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let result = inner.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

fn key_for(addr: std::net::SocketAddr) -> PoolKey {
    PoolKey::new(client_id(), vec![server_id()], addr, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_share_a_handful_of_connections() {
    let f = fixture().await;
    let dialer = CountingDialer::new(f.client_tls.clone(), Duration::ZERO);
    let pool = Pool::new(PoolConfig::default(), dialer.clone());
    let key = key_for(f.server.addr);
    const STREAMS: usize = 1000;
    let all_open = Arc::new(Barrier::new(STREAMS));
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (pool, key, all_open) = (pool.clone(), key.clone(), all_open.clone());
        let echo = f.echo;
        tasks.push(tokio::spawn(async move {
            let mut stream = pool
                .connect(&key, &ConnectRequest::new(echo))
                .await
                .unwrap();
            // Hold every stream open until all 1,000 exist, so they are truly concurrent.
            all_open.wait().await;
            let msg = format!("stream {i}");
            assert_eq!(
                round_trip(&mut stream, msg.as_bytes()).await,
                msg.as_bytes()
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 1,000 concurrent streams at 100 per connection need exactly 10 connections.
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 10);
    assert_eq!(pool.stats().handshakes, 10);
    assert_eq!(pool.stats().connections, 10);
    let server_side: std::collections::HashSet<_> = f
        .server
        .recorder
        .seen()
        .iter()
        .map(|r| r.peer_addr)
        .collect();
    assert_eq!(
        server_side.len(),
        10,
        "server saw {} TLS connections",
        server_side.len()
    );
    assert_eq!(f.server.recorder.seen().len(), STREAMS);
}

#[tokio::test]
async fn sequential_streams_reuse_one_connection() {
    let f = fixture().await;
    let pool = Pool::new(
        PoolConfig::default(),
        Arc::new(TlsDialer::new(f.client_tls.clone())),
    );
    let key = key_for(f.server.addr);
    for i in 0..20 {
        let mut s = pool
            .connect(&key, &ConnectRequest::new(f.echo))
            .await
            .unwrap();
        let msg = format!("{i}");
        assert_eq!(round_trip(&mut s, msg.as_bytes()).await, msg.as_bytes());
    }
    assert_eq!(pool.stats().handshakes, 1);
}

#[tokio::test]
async fn different_keys_get_different_connections() {
    let f = fixture().await;
    let pool = Pool::new(
        PoolConfig::default(),
        Arc::new(TlsDialer::new(f.client_tls.clone())),
    );
    let a = key_for(f.server.addr);
    let b = PoolKey::new(
        client_id(),
        vec![server_id(), id("default", "alt")],
        f.server.addr,
        None,
    );
    let _s1 = pool
        .connect(&a, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    let _s2 = pool
        .connect(&b, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    assert_eq!(pool.stats().handshakes, 2);
    // Order and duplicates of expected identities do not change the key.
    let b2 = PoolKey::new(
        client_id(),
        vec![id("default", "alt"), server_id(), server_id()],
        f.server.addr,
        None,
    );
    assert_eq!(b, b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_handshake_in_flight_per_key() {
    let f = fixture().await;
    let dialer = CountingDialer::new(f.client_tls.clone(), Duration::from_millis(100));
    let pool = Pool::new(PoolConfig::default(), dialer.clone());
    let key = key_for(f.server.addr);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (pool, key, echo) = (pool.clone(), key.clone(), f.echo);
            tokio::spawn(async move {
                let mut s = pool
                    .connect(&key, &ConnectRequest::new(echo))
                    .await
                    .unwrap();
                assert_eq!(round_trip(&mut s, b"x").await, b"x");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(dialer.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_behind_a_failed_handshake_fail_fast() {
    let ca = hbone::testing::TestCa::new();
    let tls = ClientTls::new(ca.issue(&client_id())).unwrap();
    let dialer = CountingDialer::new(tls, Duration::from_millis(50));
    let pool = Pool::new(PoolConfig::default(), dialer.clone());
    let dead = closed_port().await;
    let key = key_for(dead);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (pool, key) = (pool.clone(), key.clone());
            tokio::spawn(async move {
                pool.connect(&key, &ConnectRequest::new(dead))
                    .await
                    .unwrap_err()
            })
        })
        .collect();
    for t in tasks {
        let err = t.await.unwrap();
        assert!(err.to_string().contains("TCP connect"), "{err}");
    }
    assert_eq!(
        dialer.dials.load(Ordering::SeqCst),
        1,
        "waiters must share the failure"
    );
    assert_eq!(
        pool.stats().keys,
        0,
        "a failed destination must not leave state behind"
    );
    // A later attempt dials again rather than replaying an old failure.
    assert!(
        pool.connect(&key, &ConnectRequest::new(dead))
            .await
            .is_err()
    );
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 2);
    assert_eq!(pool.stats().keys, 0);
}

#[tokio::test]
async fn idle_connections_are_released() {
    let f = fixture().await;
    let config = PoolConfig {
        idle_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let pool = Pool::new(config, Arc::new(TlsDialer::new(f.client_tls.clone())));
    let key = key_for(f.server.addr);
    let mut s = pool
        .connect(&key, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    // Busy connections are not released, however long they live.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.stats().connections, 1);
    assert_eq!(round_trip(&mut s, b"busy").await, b"busy");
    drop(s);
    eventually("idle connection released", Duration::from_secs(5), || {
        pool.stats().connections == 0
    })
    .await;
    assert_eq!(pool.stats().keys, 0);
    // The next stream opens a fresh connection.
    let mut s = pool
        .connect(&key, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut s, b"again").await, b"again");
    assert_eq!(pool.stats().handshakes, 2);
}

#[tokio::test]
async fn dead_connections_are_evicted_and_replaced() {
    let f = fixture().await;
    let relay = freezable_relay(f.server.addr).await;
    let settings = H2Settings {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let config = PoolConfig {
        h2: settings,
        ..Default::default()
    };
    let pool = Pool::new(config, Arc::new(TlsDialer::new(f.client_tls.clone())));
    let key = key_for(relay.addr);
    let mut s = pool
        .connect(&key, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    assert_eq!(pool.stats().connections, 1);

    // The peer stops answering (PINGs included) but its socket stays open.
    relay.frozen.store(true, Ordering::SeqCst);
    eventually(
        "unresponsive connection evicted by keepalive",
        Duration::from_secs(5),
        || pool.stats().connections == 0,
    )
    .await;
    relay.frozen.store(false, Ordering::SeqCst);

    let mut s2 = pool
        .connect(&key, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut s2, b"fresh").await, b"fresh");
    assert_eq!(pool.stats().handshakes, 2);
}

#[tokio::test]
async fn goaway_moves_new_streams_to_a_new_connection() {
    let f = fixture().await;
    let pool = Pool::new(
        PoolConfig::default(),
        Arc::new(TlsDialer::new(f.client_tls.clone())),
    );
    let key = key_for(f.server.addr);
    let mut first = pool
        .connect(&key, &ConnectRequest::new(f.echo))
        .await
        .unwrap();
    first.write_all(b"1").await.unwrap();
    // Drain the server: GOAWAY on the open connection, listener closed.
    f.server.shutdown.send(true).unwrap();
    eventually("listener closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(f.server.addr).is_err()
    })
    .await;
    // The in-flight stream finishes; a new one cannot reuse the draining connection.
    assert_eq!(round_trip(&mut first, b"2").await, b"12");
    let err = pool
        .connect(&key, &ConnectRequest::new(f.echo))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("TCP connect"),
        "expected a fresh dial, got {err}"
    );
}
