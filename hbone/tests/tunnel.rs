//! End-to-end tunnels: client tunnel -> server tunnel -> upstream, on loopback.

mod common;

use std::net::SocketAddr;

use common::*;
use hbone::{Authority, Baggage, ConnectRequest, Forwarded, TraceParent};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const BULK: usize = 256 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

/// Deterministic, non-repeating-per-chunk bytes: a random block rotated by chunk index.
struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    fn new(seed: u64) -> Self {
        let mut x = seed | 1;
        let block = (0..CHUNK + 256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Pattern { block }
    }

    fn chunk(&self, i: usize) -> &[u8] {
        let off = (i * 31) % 256;
        &self.block[off..off + CHUNK]
    }
}

async fn send_pattern<W: AsyncWrite + Unpin>(w: &mut W, seed: u64) -> [u8; 32] {
    let pattern = Pattern::new(seed);
    let mut hash = Sha256::new();
    for i in 0..BULK / CHUNK {
        let chunk = pattern.chunk(i);
        hash.update(chunk);
        w.write_all(chunk).await.unwrap();
    }
    w.shutdown().await.unwrap();
    hash.finalize().into()
}

async fn hash_all<R: AsyncRead + Unpin>(r: &mut R) -> (usize, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (total, hash.finalize().into());
        }
        total += n;
        hash.update(&buf[..n]);
    }
}

/// Upstream that streams its own 256 MiB while hashing what it receives.
async fn bulk_upstream() -> (
    SocketAddr,
    tokio::task::JoinHandle<((usize, [u8; 32]), [u8; 32])>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = tcp.into_split();
        let sender = tokio::spawn(async move { send_pattern(&mut w, 2).await });
        let received = hash_all(&mut r).await;
        (received, sender.await.unwrap())
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_256mib_both_directions_at_once_arrives_intact() {
    let f = fixture().await;
    let (upstream, upstream_task) = bulk_upstream().await;
    *f.server.recorder.decision.lock().unwrap() = hbone::Decision::Connect(upstream);

    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let stream = conn.connect(&ConnectRequest::new(upstream)).await.unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let sender = tokio::spawn(async move { send_pattern(&mut w, 1).await });
    let (client_got_len, client_got_hash) = hash_all(&mut r).await;
    let client_sent_hash = sender.await.unwrap();
    let ((server_got_len, server_got_hash), server_sent_hash) = upstream_task.await.unwrap();

    assert_eq!(server_got_len, BULK);
    assert_eq!(client_got_len, BULK);
    assert_eq!(
        server_got_hash, client_sent_hash,
        "client -> server bytes differ"
    );
    assert_eq!(
        client_got_hash, server_sent_hash,
        "server -> client bytes differ"
    );
    assert_ne!(
        client_sent_hash, server_sent_hash,
        "the two directions must carry different data"
    );
}

#[tokio::test]
async fn half_close_still_delivers_the_reply() {
    let f = fixture().await;
    // Upstream reads the request to EOF, then answers and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        tcp.read_to_end(&mut req).await.unwrap();
        tcp.write_all(format!("got {} bytes", req.len()).as_bytes())
            .await
            .unwrap();
        tcp.shutdown().await.unwrap();
    });
    *f.server.recorder.decision.lock().unwrap() = hbone::Decision::Connect(upstream);
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let mut stream = conn.connect(&ConnectRequest::new(upstream)).await.unwrap();
    let reply = round_trip(&mut stream, &[0u8; 5000]).await;
    assert_eq!(reply, b"got 5000 bytes");
}

#[tokio::test]
async fn connect_carries_identity_and_headers() {
    let f = fixture().await;
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let baggage = Baggage {
        cluster_id: Some("Kubernetes".into()),
        namespace: Some("default".into()),
        workload_kind: Some("deployment".into()),
        workload_name: Some("client-v1".into()),
        service_name: Some("client".into()),
        service_version: Some("v1".into()),
    };
    let forwarded = Forwarded::new(
        "10.1.2.3:45678".parse().unwrap(),
        Some("echo.default.svc.cluster.local".into()),
    );
    let trace = TraceParent::new_random();
    let req = ConnectRequest::new(f.echo)
        .with_baggage(baggage.clone())
        .with_forwarded(forwarded.clone())
        .with_traceparent(trace);
    let mut stream = conn.connect(&req).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"ping").await, b"ping");

    let seen = f.server.recorder.seen();
    assert_eq!(seen.len(), 1);
    let inbound = &seen[0];
    assert_eq!(inbound.peer_identity, client_id());
    assert_eq!(inbound.authority, Authority::Addr(f.echo));
    assert_eq!(inbound.baggage(), Some(baggage));
    assert_eq!(inbound.forwarded(), Some(forwarded));
    assert_eq!(inbound.traceparent(), Some(trace));
}

#[tokio::test]
async fn hostname_authority_reaches_the_handler() {
    let f = fixture().await;
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let authority: Authority = "echo.default.svc.cluster.local:9080".parse().unwrap();
    let mut stream = conn
        .connect(&ConnectRequest::new(authority.clone()))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut stream, b"hi").await, b"hi");
    let seen = f.server.recorder.seen();
    assert_eq!(seen[0].authority, authority);
    // A traceparent is generated when the caller gave none.
    assert!(seen[0].traceparent().is_some());
}

#[tokio::test]
async fn server_shutdown_lets_open_tunnels_finish() {
    let f = fixture().await;
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let mut stream = conn.connect(&ConnectRequest::new(f.echo)).await.unwrap();
    stream.write_all(b"before").await.unwrap();
    f.server.shutdown.send(true).unwrap();
    // The open tunnel keeps working after GOAWAY...
    assert_eq!(round_trip(&mut stream, b" after").await, b"before after");
    // ...but new tunnels on the draining connection are refused, and the listener is gone.
    assert!(conn.connect(&ConnectRequest::new(f.echo)).await.is_err());
    eventually("listener closed", std::time::Duration::from_secs(5), || {
        std::net::TcpStream::connect(f.server.addr).is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_write_sizes_cross_the_flow_control_window() {
    let f = fixture().await;
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let stream = conn.connect(&ConnectRequest::new(f.echo)).await.unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    // Sizes straddle the 4 MiB stream window and the 1 MiB write chunk.
    let sizes = [
        1usize,
        3,
        100 * 1024,
        7,
        5 * 1024 * 1024,
        2,
        1024 * 1024 + 1,
        9,
    ];
    let expected: Vec<u8> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| std::iter::repeat_n(i as u8 + 1, *n))
        .collect();
    let to_send = expected.clone();
    let writer = tokio::spawn(async move {
        let mut off = 0;
        for n in sizes {
            w.write_all(&to_send[off..off + n]).await.unwrap();
            off += n;
        }
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_relay_with_copy_tunnel_half_closes_and_counts() {
    let f = fixture().await;
    let pool = hbone::Pool::new(
        hbone::PoolConfig::default(),
        std::sync::Arc::new(hbone::TlsDialer::new(f.client_tls.clone())),
    );
    let key = hbone::PoolKey::new(client_id(), vec![server_id()], f.server.addr, None);
    // A client-side proxy: app TCP in, tunnel out.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entry = listener.local_addr().unwrap();
    let echo = f.echo;
    let relay = tokio::spawn(async move {
        let (mut app, _) = listener.accept().await.unwrap();
        let mut tunnel = pool
            .connect(&key, &ConnectRequest::new(echo))
            .await
            .unwrap();
        hbone::copy_tunnel(&mut app, &mut tunnel).await.unwrap()
    });
    let mut app = tokio::net::TcpStream::connect(entry).await.unwrap();
    let payload: Vec<u8> = (0..9 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = app.split();
    let (_, echoed) = tokio::join!(
        async {
            w.write_all(&payload).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    assert!(
        echoed == payload,
        "echo differs ({} vs {} bytes)",
        echoed.len(),
        payload.len()
    );
    let counted = relay.await.unwrap();
    assert_eq!(
        counted,
        hbone::Transferred {
            a_to_b: payload.len() as u64,
            b_to_a: payload.len() as u64
        }
    );
}
