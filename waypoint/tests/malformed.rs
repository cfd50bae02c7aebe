//! Tier 2 (in-process), like `through_waypoint.rs`: what the waypoint does with traffic
//! other than well-formed HTTP/1.1, each case over a real HBONE tunnel from the client.
//!
//! - Malformed HTTP/1.1 (an oversized head, `Content-Length` with `Transfer-Encoding`,
//!   conflicting `Content-Length`s, invalid header lines) gets Envoy's status (`431`,
//!   `400`), never reaches the backend, and does not disturb another tunnel on the same
//!   pooled HBONE connection.
//! - HTTP/2 with prior knowledge (as gRPC uses it) is routed by the VirtualService to an
//!   HTTP/2 backend, its trailers come back, and gRPC is counted as such.
//! - Bytes that are not HTTP are passed through to the endpoint.

mod common;

use bytes::Bytes;
use common::{BOUND, MESH, REVIEWS, Running, Seen, backend, eventually, get_on, listeners};
use hbone::H2Stream;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waypoint::inbound::MAX_HEADER_BYTES;

/// `reviews` (HTTP/1.1, one pod), `greeter` (HTTP/2, v1 and v2, routed by a
/// VirtualService) and `echo` (TCP), all behind the waypoint.
const MANIFESTS: &str = r#"
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.31
  selector: {app: greeter}
  ports: [{name: grpc, port: 50051, targetPort: HTTP2_PORT}]
---
apiVersion: v1
kind: Pod
metadata: {name: greeter-v1, namespace: shop, labels: {app: greeter, version: v1}}
spec: {nodeName: node-0, containers: [{name: app, image: greeter}]}
status: {podIP: 127.0.0.13}
---
apiVersion: v1
kind: Pod
metadata: {name: greeter-v2, namespace: shop, labels: {app: greeter, version: v2}}
spec: {nodeName: node-0, containers: [{name: app, image: greeter}]}
status: {podIP: 127.0.0.14}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: shop}
spec:
  host: greeter
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: shop}
spec:
  hosts: [greeter]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: greeter, subset: v2}}]
  - route: [{destination: {host: greeter, subset: v1}}]
    headers: {response: {set: {x-routed-by: waypoint}}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.32
  selector: {app: echo}
  ports: [{name: tcp, port: 7000, targetPort: TCP_PORT}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: shop, labels: {app: echo}}
spec: {nodeName: node-0, containers: [{name: app, image: echo}]}
status: {podIP: 127.0.0.15}
"#;

const GREETER: &str = "10.96.0.31:50051";
const ECHO: &str = "10.96.0.32:7000";

struct Backends {
    /// What the `reviews` backend was asked for.
    reviews: Seen,
}

/// The backends, then the mesh pointing at them. Returns once `reviews` answers through
/// the waypoint (its certificate and xDS config are in).
async fn start() -> (Running, Backends) {
    let (http1_port, mut reviews) = listeners(&["127.0.0.11"]).await;
    let reviews = backend(reviews.remove(0), "v1");
    let (http2_port, mut greeters) = listeners(&["127.0.0.13", "127.0.0.14"]).await;
    http2_backend(greeters.remove(0), "v1");
    http2_backend(greeters.remove(0), "v2");
    let (tcp_port, mut echo) = listeners(&["127.0.0.15"]).await;
    echo_backend(echo.remove(0));
    let manifests = common::reviews(http1_port, &["v1"])
        + &MANIFESTS
            .replace("HTTP2_PORT", &http2_port.to_string())
            .replace("TCP_PORT", &tcp_port.to_string());
    let mesh = common::start(&format!("{MESH}{manifests}")).await;
    eventually("reviews through the waypoint", || async {
        matches!(mesh.get("/ready", &[]).await, Ok((200, body, _)) if body == "v1 /ready")
    })
    .await;
    (mesh, Backends { reviews })
}

/// An HTTP/2 (prior knowledge) backend, gRPC style: it echoes the request body with the
/// request's content type, says who it is and which HTTP version it was spoken to in the
/// response headers, and ends with `grpc-status: 0` in the trailers.
fn http2_backend(listener: TcpListener, name: &'static str) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let content_type = req.headers().get(http::header::CONTENT_TYPE).cloned();
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    let body = Full::new(body).with_trailers(async move { Some(Ok(trailers)) });
                    let mut response = Response::new(body);
                    let headers = response.headers_mut();
                    headers.insert("x-backend", HeaderValue::from_static(name));
                    headers.insert("x-backend-version", version.parse().unwrap());
                    if let Some(content_type) = content_type {
                        headers.insert(http::header::CONTENT_TYPE, content_type);
                    }
                    Ok::<_, hyper::Error>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A TCP backend that sends back whatever it reads.
fn echo_backend(listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
}

/// Writes `request` into `tunnel` and reads what comes back until the waypoint closes the
/// tunnel. Reading and writing run together: the waypoint may answer (and stop reading)
/// before the request is all written.
async fn exchange_raw(tunnel: H2Stream, request: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(tunnel);
    let send = async {
        // The waypoint may reset the tunnel before it has read everything.
        let _ = write.write_all(request).await;
        let _ = write.flush().await;
        write
    };
    let receive = async {
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let (_write, received) = tokio::time::timeout(BOUND, async { tokio::join!(send, receive) })
        .await
        .expect("the waypoint answers and closes the tunnel in time");
    received
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response).ok()?;
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    status.parse().ok()
}

/// Sends each of `malformed` (raw HTTP/1.1 whose paths start with `/malformed`) on a
/// tunnel of its own while another tunnel on the same pooled HBONE connection carries
/// normal requests. Each malformed request gets `status` and its tunnel is closed; the
/// other tunnel keeps working; no new HBONE connection is needed; and the backend sees
/// none of the malformed requests.
async fn rejected_without_harm(malformed: &[&[u8]], status: u16) {
    let (mesh, backends) = start().await;
    let handshakes = mesh.client.stats().handshakes;
    let good = mesh.tunnel(REVIEWS).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(good))
        .await
        .unwrap();
    tokio::spawn(conn);
    let ok = |path: &str| (200, format!("v1 {path}"));
    for (i, request) in malformed.iter().enumerate() {
        // Both tunnels open at once.
        let bad = mesh.tunnel(REVIEWS).await.unwrap();
        let before = format!("/before/{i}");
        let (code, body, _) = get_on(&mut sender, &before, &[]).await.unwrap();
        assert_eq!((code, body), ok(&before));

        let response = exchange_raw(bad, request).await;
        let shown = String::from_utf8_lossy(&response);
        assert_eq!(
            status_of(&response),
            Some(status),
            "request {i} ({}...) got: {shown}",
            String::from_utf8_lossy(&request[..request.len().min(120)])
        );

        let after = format!("/after/{i}");
        let (code, body, _) = get_on(&mut sender, &after, &[]).await.unwrap();
        assert_eq!((code, body), ok(&after));
    }
    let stats = mesh.client.stats();
    assert_eq!(
        (stats.connections, stats.handshakes),
        (1, handshakes),
        "the tunnels shared one HBONE connection, which survived"
    );
    let seen = backends.reviews.paths();
    assert!(
        seen.iter().all(|p| !p.starts_with("/malformed")),
        "the backend saw a malformed request: {seen:?}"
    );
    assert!(seen.contains(&format!("/after/{}", malformed.len() - 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_431() {
    let oversized = format!(
        "GET /malformed HTTP/1.1\r\nhost: reviews:9080\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES + 1024)
    );
    rejected_without_harm(&[oversized.as_bytes()], 431).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_just_under_the_limit_passes() {
    let (mesh, _) = start().await;
    let big = "a".repeat(MAX_HEADER_BYTES - 4096);
    let (status, body, _) = mesh.get("/big", &[("x-big", &big)]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 /big"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_gets_400() {
    // Each body is read one way as a chunked end, the other as `0\r\n\r\nGET /malformed...`
    // to smuggle a second request.
    let smuggled = "GET /malformed-smuggled HTTP/1.1\r\nhost: reviews:9080\r\n\r\n";
    let length_first = format!(
        "POST /malformed HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: {}\r\n\
         transfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let chunked_first = format!(
        "POST /malformed HTTP/1.1\r\nhost: reviews:9080\r\ntransfer-encoding: chunked\r\n\
         content-length: {}\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    rejected_without_harm(&[length_first.as_bytes(), chunked_first.as_bytes()], 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_get_400() {
    let request = b"POST /malformed HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: 5\r\n\
          content-length: 60\r\n\r\nhelloGET /malformed-smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    rejected_without_harm(&[request], 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_header_lines_get_400() {
    rejected_without_harm(
        &[
            b"GET /malformed HTTP/1.1\r\nhost: reviews:9080\r\nbad header: x\r\n\r\n",
            b"GET /malformed HTTP/1.1\r\nhost: reviews:9080\r\nno colon here\r\n\r\n",
            b"GET /malformed HTTP/1.1\r\nhost: reviews:9080\r\nx-ctl: a\x01b\r\n\r\n",
        ],
        400,
    )
    .await;
}

/// An HTTP/2 connection (prior knowledge) to `greeter` through a tunnel.
async fn greeter_connection(
    mesh: &Running,
) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, String> {
    let tunnel = mesh.tunnel(GREETER).await?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tunnel))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A unary call (or, with another content type, a plain HTTP/2 POST) on `sender`.
async fn call(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    content_type: &str,
    headers: &[(&str, &str)],
    message: &'static [u8],
) -> Result<Answer, String> {
    let mut request = Request::post("http://greeter:50051/helloworld.Greeter/SayHello")
        .version(Version::HTTP_2)
        .header("content-type", content_type)
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(Bytes::from_static(message)))
        .unwrap();
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok(Answer {
            status,
            headers,
            body: collected.to_bytes(),
            trailers,
        })
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .map_err(|_| "no HTTP/2 response in time".to_owned())?
}

/// A gRPC message: uncompressed, 5 bytes long.
const MESSAGE: &[u8] = b"\x00\x00\x00\x00\x05hello";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_routed_keeps_trailers_and_counts_grpc() {
    let (mesh, _) = start().await;
    let grpc = "application/grpc";
    eventually("greeter routed over HTTP/2", || async {
        let Ok(mut sender) = greeter_connection(&mesh).await else {
            return false;
        };
        let answer = call(&mut sender, grpc, &[("end-user", "jason")], MESSAGE).await;
        matches!(answer, Ok(a) if a.status == 200 && a.header("x-backend") == Some("v2"))
    })
    .await;

    // Both routes on one HTTP/2 connection, as gRPC channels do.
    let mut sender = greeter_connection(&mesh).await.unwrap();
    let jason = call(&mut sender, grpc, &[("end-user", "jason")], MESSAGE)
        .await
        .unwrap();
    let anyone = call(&mut sender, grpc, &[], MESSAGE).await.unwrap();
    for (answer, backend) in [(&jason, "v2"), (&anyone, "v1")] {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-backend"), Some(backend));
        assert_eq!(
            answer.header("x-backend-version"),
            Some("HTTP/2.0"),
            "the backend is spoken to in HTTP/2"
        );
        assert_eq!(answer.header("content-type"), Some(grpc));
        assert_eq!(answer.body.as_ref(), MESSAGE);
        let trailers = answer.trailers.as_ref().expect("trailers reach the client");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
            Some("0")
        );
    }
    assert_eq!(jason.header("x-routed-by"), None);
    assert_eq!(anyone.header("x-routed-by"), Some("waypoint"));
    // HTTP/2 that is not gRPC.
    let plain = call(&mut sender, "text/plain", &[], b"hi").await.unwrap();
    assert_eq!(
        (plain.status, plain.header("x-backend"), plain.body.as_ref()),
        (200, Some("v1"), b"hi".as_ref())
    );

    // Requests answered 200 by greeter v1, with these labels too.
    let greeter_v1 = |text: &str, labels: &[&str]| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("destination_service=\"greeter.shop.svc.cluster.local\"")
                    && l.contains("destination_version=\"v1\"")
                    && l.contains("response_code=\"200\"")
                    && labels.iter().all(|label| l.contains(label))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let (grpc, http) = ("request_protocol=\"grpc\"", "request_protocol=\"http\"");
    // A request is counted once its response is over. (Calls made while waiting for the
    // VirtualService may have gone to v1 too, all of them gRPC.)
    let deadline = tokio::time::Instant::now() + BOUND;
    let text = loop {
        let text = mesh.metrics().await;
        let counted = greeter_v1(&text, &[grpc]) >= 1 && greeter_v1(&text, &[http]) >= 1;
        if counted || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        greeter_v1(&text, &[http]),
        1,
        "only one was not gRPC:\n{text}"
    );
    assert!(
        greeter_v1(&text, &[grpc, "grpc_response_status=\"0\""]) >= 1,
        "gRPC counted with the status from the trailers:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_passed_through_to_the_endpoint() {
    let (mesh, _) = start().await;
    let echo = |line: &'static [u8]| {
        let mesh = &mesh;
        async move {
            let mut tunnel = mesh.tunnel(ECHO).await?;
            tunnel.write_all(line).await.map_err(|e| e.to_string())?;
            let mut back = vec![0; line.len()];
            tokio::time::timeout(BOUND, tunnel.read_exact(&mut back))
                .await
                .map_err(|_| "no echo in time".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((tunnel, back))
        }
    };
    eventually("the echo service in the waypoint's state", || async {
        echo(b"ping\n").await.is_ok()
    })
    .await;

    let (mut tunnel, back) = echo(b"hello\n").await.unwrap();
    assert_eq!(back, b"hello\n");
    // The same tunnel carries more, and closing it closes the connection to the
    // endpoint (whose echo then ends).
    tunnel.write_all(b"not HTTP at all\r\n\r\n").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(BOUND, tunnel.read_to_end(&mut rest))
        .await
        .expect("the tunnel ends in time")
        .unwrap();
    assert_eq!(rest, b"not HTTP at all\r\n\r\n");
}
