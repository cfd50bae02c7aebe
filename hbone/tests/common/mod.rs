//! Fixtures for the hbone integration tests (tier 2: real sockets on loopback).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hbone::server::DirectConnector;
use hbone::testing::TestCa;
use hbone::tls::{ClientTls, ServerTls, WorkloadCertificate};
use hbone::{ConnectHandler, Decision, Identity, InboundConnect, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

pub fn client_id() -> Identity {
    id("default", "client")
}

pub fn server_id() -> Identity {
    id("default", "server")
}

/// Polls `cond` until true or the bound passes; the bound is a failure, not a wait.
pub async fn eventually(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + bound;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not true within {bound:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Echoes every connection until EOF, then closes its write side.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Decides every CONNECT the same way and records what it saw.
#[derive(Clone)]
pub struct Recorder {
    pub decision: Arc<Mutex<Decision>>,
    pub seen: Arc<Mutex<Vec<InboundConnect>>>,
    pub finished: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn new(decision: Decision) -> Self {
        Recorder {
            decision: Arc::new(Mutex::new(decision)),
            seen: Arc::new(Mutex::new(Vec::new())),
            finished: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn seen(&self) -> Vec<InboundConnect> {
        self.seen.lock().unwrap().clone()
    }
}

impl ConnectHandler for Recorder {
    fn decide(&self, request: &InboundConnect) -> impl Future<Output = Decision> + Send {
        self.seen.lock().unwrap().push(request.clone());
        let decision = self.decision.lock().unwrap().clone();
        async move { decision }
    }

    fn finished(&self, _: &InboundConnect, _: &Result<hbone::Transferred, hbone::CopyError>) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub recorder: Recorder,
    pub shutdown: watch::Sender<bool>,
}

/// Starts an HBONE server on loopback with `cert`.
pub async fn start_server(cert: Arc<WorkloadCertificate>, recorder: Recorder) -> TestServer {
    start_server_with(ServerConfig::new(ServerTls::new(cert).unwrap()), recorder).await
}

pub async fn start_server_with(config: ServerConfig, recorder: Recorder) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    let server = Server::new(config, recorder.clone(), DirectConnector);
    tokio::spawn(server.serve(listener, rx));
    TestServer {
        addr,
        recorder,
        shutdown,
    }
}

/// A CA, a server identity with a running HBONE server that forwards to an echo server,
/// and a client TLS config.
pub struct Fixture {
    pub ca: TestCa,
    pub server: TestServer,
    pub echo: SocketAddr,
    pub client_tls: ClientTls,
}

pub async fn fixture() -> Fixture {
    let ca = TestCa::with_intermediate();
    let echo = echo_server().await;
    let server = start_server(
        ca.issue(&server_id()),
        Recorder::new(Decision::Connect(echo)),
    )
    .await;
    let client_tls = ClientTls::new(ca.issue(&client_id())).unwrap();
    Fixture {
        ca,
        server,
        echo,
        client_tls,
    }
}

/// Dials `addr` and completes mTLS + HTTP/2 as the fixture's client.
pub async fn connection(
    tls: &ClientTls,
    addr: SocketAddr,
    expected: &[Identity],
) -> hbone::Connection {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tls.connect(tcp, expected).await.unwrap();
    let (conn, driver) = hbone::Connection::handshake(stream, &hbone::H2Settings::default())
        .await
        .unwrap();
    tokio::spawn(driver);
    conn
}

/// Sends `msg`, half-closes, and reads everything back.
pub async fn round_trip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &[u8],
) -> Vec<u8> {
    stream.write_all(msg).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    out
}

/// A TCP relay that can be frozen: while frozen it forwards nothing but keeps sockets open,
/// like a peer whose host stopped responding.
pub struct FreezableRelay {
    pub addr: SocketAddr,
    pub frozen: Arc<AtomicBool>,
}

pub async fn freezable_relay(target: SocketAddr) -> FreezableRelay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump_unless_frozen(ri, wo, flag.clone()));
            tokio::spawn(pump_unless_frozen(ro, wi, flag.clone()));
        }
    });
    FreezableRelay { addr, frozen }
}

async fn pump_unless_frozen(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
