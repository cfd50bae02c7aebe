//! Every way a tunnel can be refused: the right typed error or HTTP status, and no panic
//! (the server keeps serving afterwards).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hbone::server::{DirectConnector, ServerError};
use hbone::testing::{IssueOptions, TestCa};
use hbone::tls::{ClientTls, ServerTls, TlsError, VerifyError};
use hbone::{ConnectRequest, Decision, Identity, Server, ServerConfig};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Runs one TLS handshake between `client_tls` and `server_tls`, returning both outcomes.
async fn handshake(
    client_tls: &ClientTls,
    server_tls: &ServerTls,
    expected: &[Identity],
) -> (Result<(), TlsError>, Result<Identity, TlsError>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_tls = server_tls.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match server_tls.accept(tcp).await {
            Ok((mut stream, peer)) => {
                // Complete the client's view of the handshake before closing.
                let _ = stream.write_all(b"x").await;
                let _ = stream.shutdown().await;
                Ok(peer)
            }
            Err(e) => Err(e),
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = match client_tls.connect(tcp, expected).await {
        Ok(mut stream) => {
            // TLS 1.3 clients learn of a rejected certificate only on the first read.
            let mut b = [0u8; 1];
            stream.read(&mut b).await.map(|_| ()).map_err(TlsError::Io)
        }
        Err(e) => Err(e),
    };
    (client, server.await.unwrap())
}

fn tls_pair(ca: &TestCa, client: &Identity, server: &Identity) -> (ClientTls, ServerTls) {
    (
        ClientTls::new(ca.issue(client)).unwrap(),
        ServerTls::new(ca.issue(server)).unwrap(),
    )
}

#[tokio::test]
async fn good_handshake_exposes_the_peer_identity() {
    let ca = TestCa::with_intermediate();
    let (client, server) = tls_pair(&ca, &client_id(), &server_id());
    let (c, s) = handshake(&client, &server, &[id("other", "x"), server_id()]).await;
    c.unwrap();
    assert_eq!(s.unwrap(), client_id());
}

#[tokio::test]
async fn server_identity_not_expected_is_refused() {
    let ca = TestCa::new();
    let (client, server) = tls_pair(&ca, &client_id(), &server_id());
    let (c, _) = handshake(&client, &server, &[id("default", "someone-else")]).await;
    match c.unwrap_err() {
        TlsError::PeerRejected(VerifyError::IdentityMismatch { expected, got }) => {
            assert_eq!(expected, vec![id("default", "someone-else")]);
            assert_eq!(got, vec![server_id()]);
        }
        other => panic!("unexpected error: {other:?}"),
    }
}

#[tokio::test]
async fn server_from_untrusted_root_is_refused() {
    let ours = TestCa::new();
    let theirs = TestCa::new();
    let client = ClientTls::new(ours.issue(&client_id())).unwrap();
    let server = ServerTls::new(theirs.issue(&server_id())).unwrap();
    let (c, _) = handshake(&client, &server, &[server_id()]).await;
    assert!(
        matches!(
            c,
            Err(TlsError::PeerRejected(VerifyError::UntrustedCertificate))
        ),
        "{c:?}"
    );
}

#[tokio::test]
async fn client_from_untrusted_root_is_refused() {
    let ours = TestCa::new();
    let theirs = TestCa::new();
    let server = ServerTls::new(ours.issue(&server_id())).unwrap();
    // Signed by their root but trusting ours, so only the server-side check can fail.
    let client_with_our_roots = {
        let c = theirs.issue(&client_id());
        let cert = hbone::tls::WorkloadCertificate::new(
            c.chain().to_vec(),
            c.key().clone_key(),
            vec![ours.root()],
        )
        .unwrap();
        ClientTls::new(Arc::new(cert)).unwrap()
    };
    let (c, s) = handshake(&client_with_our_roots, &server, &[server_id()]).await;
    assert!(
        matches!(
            s,
            Err(TlsError::PeerRejected(VerifyError::UntrustedCertificate))
        ),
        "{s:?}"
    );
    assert!(c.is_err(), "client must see the rejection");
}

#[tokio::test]
async fn client_from_another_trust_domain_is_refused() {
    let ca = TestCa::new();
    let foreign = Identity::new("other.domain", "default", "client").unwrap();
    let (client, server) = tls_pair(&ca, &foreign, &server_id());
    let (c, s) = handshake(&client, &server, &[server_id()]).await;
    match s.unwrap_err() {
        TlsError::PeerRejected(VerifyError::WrongTrustDomain { expected, got }) => {
            assert_eq!(expected, "cluster.local");
            assert_eq!(got, foreign);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(c.is_err());
}

#[tokio::test]
async fn expired_certificates_are_refused_both_ways() {
    let ca = TestCa::new();
    let expired_server =
        ServerTls::new(ca.issue_with(&server_id(), IssueOptions::expired())).unwrap();
    let client = ClientTls::new(ca.issue(&client_id())).unwrap();
    let (c, _) = handshake(&client, &expired_server, &[server_id()]).await;
    assert!(
        matches!(c, Err(TlsError::PeerRejected(VerifyError::Expired))),
        "{c:?}"
    );

    let server = ServerTls::new(ca.issue(&server_id())).unwrap();
    let expired_client =
        ClientTls::new(ca.issue_with(&client_id(), IssueOptions::expired())).unwrap();
    let (_, s) = handshake(&expired_client, &server, &[server_id()]).await;
    assert!(
        matches!(s, Err(TlsError::PeerRejected(VerifyError::Expired))),
        "{s:?}"
    );
}

#[tokio::test]
async fn certificate_without_spiffe_identity_cannot_be_loaded() {
    let ca = TestCa::new();
    let (chain, key) = ca.issue_without_identity();
    let err = hbone::tls::WorkloadCertificate::new(chain, key, vec![ca.root()]).unwrap_err();
    assert_eq!(err, hbone::tls::CertificateError::NoIdentity);
    let garbage = hbone::tls::WorkloadCertificate::from_pem(b"not pem", b"nor this", b"");
    assert!(garbage.is_err());
}

/// Sends a raw HTTP/2 request over mTLS and returns the response status.
async fn raw_request(f: &Fixture, method: http::Method, uri: &str) -> StatusCode {
    let tcp = TcpStream::connect(f.server.addr).await.unwrap();
    let tls = f.client_tls.connect(tcp, &[server_id()]).await.unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap();
    let (resp, _send) = client.send_request(req, false).unwrap();
    resp.await.unwrap().status()
}

#[tokio::test]
async fn non_connect_method_is_400() {
    let f = fixture().await;
    assert_eq!(
        raw_request(&f, http::Method::GET, "https://10.0.0.1:80/").await,
        StatusCode::BAD_REQUEST
    );
    assert!(
        f.server.recorder.seen().is_empty(),
        "handler must not be asked"
    );
}

#[tokio::test]
async fn malformed_authority_is_400() {
    let f = fixture().await;
    for authority in ["300.1.1.1:80", "10.0.0.1:0", "host_name-:80"] {
        assert_eq!(
            raw_request(&f, http::Method::CONNECT, authority).await,
            StatusCode::BAD_REQUEST,
            "{authority}"
        );
    }
    assert!(f.server.recorder.seen().is_empty());
}

#[tokio::test]
async fn denied_by_decision_is_401_and_unreachable_is_503() {
    let f = fixture().await;
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;

    *f.server.recorder.decision.lock().unwrap() = Decision::Reject(StatusCode::UNAUTHORIZED);
    let err = conn
        .connect(&ConnectRequest::new(f.echo))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{err}");

    *f.server.recorder.decision.lock().unwrap() = Decision::Connect(closed_port().await);
    let err = conn
        .connect(&ConnectRequest::new(f.echo))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{err}");

    // The same connection still carries good tunnels afterwards.
    *f.server.recorder.decision.lock().unwrap() = Decision::Connect(f.echo);
    let mut ok = conn.connect(&ConnectRequest::new(f.echo)).await.unwrap();
    assert_eq!(round_trip(&mut ok, b"still up").await, b"still up");
}

/// A server whose connections we drive one by one, to observe the typed error.
fn bare_server(ca: &TestCa, timeout: Duration) -> Server<Recorder, DirectConnector> {
    let mut config = ServerConfig::new(ServerTls::new(ca.issue(&server_id())).unwrap());
    config.handshake_timeout = timeout;
    Server::new(
        config,
        Recorder::new(Decision::Reject(StatusCode::UNAUTHORIZED)),
        DirectConnector,
    )
}

async fn serve_one(
    server: &Server<Recorder, DirectConnector>,
    listener: &TcpListener,
) -> Result<(), ServerError> {
    let (tcp, peer) = listener.accept().await.unwrap();
    let (_tx, rx) = watch::channel(false);
    server.serve_connection(tcp, peer, rx).await
}

#[tokio::test]
async fn garbage_instead_of_tls_is_a_tls_error() {
    let ca = TestCa::new();
    let server = bare_server(&ca, Duration::from_secs(5));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        // The server answers with an alert or just closes; either way the read ends.
        let _ = tcp.read_to_end(&mut buf).await;
    });
    let result = serve_one(&server, &listener).await;
    assert!(
        matches!(
            result,
            Err(ServerError::Tls {
                source: TlsError::Protocol(_),
                ..
            })
        ),
        "{result:?}"
    );
    peer.await.unwrap();
}

#[tokio::test]
async fn stalled_handshake_is_bounded_by_the_timeout() {
    let ca = TestCa::new();
    let server = bare_server(&ca, Duration::from_millis(300));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Half a TLS record header, then silence.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), serve_one(&server, &listener))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(ServerError::HandshakeTimeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(tcp);
}

#[tokio::test]
async fn client_bounded_by_connect_timeout_against_a_silent_server() {
    // Accepts TCP and never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let ca = TestCa::new();
    let tls = ClientTls::new(ca.issue(&client_id())).unwrap();
    let config = hbone::PoolConfig {
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let pool = hbone::Pool::new(config, Arc::new(hbone::TlsDialer::new(tls)));
    let key = hbone::PoolKey::new(client_id(), vec![server_id()], addr, None);
    let err = pool
        .connect(&key, &ConnectRequest::new(addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(pool.stats().connections, 0);
}

#[tokio::test]
async fn server_keeps_serving_after_bad_peers() {
    let f = fixture().await;
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(f.server.addr).await.unwrap();
        tcp.write_all(&[0xff; 64]).await.unwrap();
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
    }
    let conn = connection(&f.client_tls, f.server.addr, &[server_id()]).await;
    let mut stream = conn.connect(&ConnectRequest::new(f.echo)).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"alive").await, b"alive");
}

#[tokio::test]
async fn server_drops_a_client_that_stops_answering_pings() {
    let ca = TestCa::new();
    let mut config = ServerConfig::new(ServerTls::new(ca.issue(&server_id())).unwrap());
    config.h2.keepalive_interval = Duration::from_millis(100);
    config.h2.keepalive_timeout = Duration::from_millis(300);
    let server = Server::new(
        config,
        Recorder::new(Decision::Reject(StatusCode::UNAUTHORIZED)),
        DirectConnector,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = freezable_relay(listener.local_addr().unwrap()).await;

    // The client side: a plain HBONE client through the relay, with keepalive off.
    let tls = ClientTls::new(ca.issue(&client_id())).unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(relay.addr).await.unwrap();
        let stream = tls.connect(tcp, &[server_id()]).await.unwrap();
        let quiet = hbone::H2Settings {
            keepalive_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let (conn, driver) = hbone::Connection::handshake(stream, &quiet).await.unwrap();
        tokio::spawn(driver);
        // One answered CONNECT proves the server side is up; then the client's host "vanishes".
        let answered = conn
            .connect(&ConnectRequest::new(relay.addr))
            .await
            .unwrap_err();
        assert_eq!(answered.status(), Some(StatusCode::UNAUTHORIZED));
        relay
            .frozen
            .store(true, std::sync::atomic::Ordering::SeqCst);
        conn
    });
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), serve_one(&server, &listener))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(ServerError::Keepalive { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(client.await.unwrap());
}
