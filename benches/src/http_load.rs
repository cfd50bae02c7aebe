//! HTTP load for the waypoint benchmark: the server the lab's server pods run (HTTP/1.1
//! and prior-knowledge HTTP/2 on one port) and a closed-loop client over keep-alive
//! connections.
//!
//! The server answers every request `200` with the body `VERSION PATH_AND_QUERY`, so a
//! client can tell which subset answered and what path (after any rewrite) arrived.
//! The client keeps a fixed number of requests in flight (one per HTTP/1.1 connection,
//! `streams` per HTTP/2 connection), each sent as soon as the previous one on its slot
//! has been answered in full; it counts and times the requests that complete inside a
//! timed window that follows a warm-up.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::stats::{percentile, sorted};

/// Bound on one request during verification and measurement.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP version a client speaks to the first hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// HTTP/1.1, keep-alive, one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), many streams per connection.
    Http2,
}

impl Proto {
    pub const ALL: [Proto; 2] = [Proto::Http1, Proto::Http2];

    pub fn name(self) -> &'static str {
        match self {
            Proto::Http1 => "HTTP/1.1",
            Proto::Http2 => "HTTP/2",
        }
    }
}

/// Serves HTTP/1.1 and prior-knowledge HTTP/2 on `listener` (the first bytes decide)
/// until aborted; answers every request with `VERSION PATH_AND_QUERY`.
pub fn serve(listener: TcpListener, version: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                    let body = format!("{version} {target}");
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                // A proxy dropping its idle upstream connection ends it with an error on
                // some versions; the client side sees every failure that matters.
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// One keep-alive client connection.
pub enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sender::Http1(_) => "Sender::Http1",
            Sender::Http2(_) => "Sender::Http2",
        })
    }
}

impl Sender {
    /// Speaks `proto` on `tcp` (already connected); the connection task is spawned and
    /// ends when every clone of the sender is dropped.
    pub async fn handshake(proto: Proto, tcp: TcpStream) -> Result<Sender> {
        let io = TokioIo::new(tcp);
        Ok(match proto {
            Proto::Http1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::Http1(sender)
            }
            Proto::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::Http2(sender)
            }
        })
    }

    /// One GET; returns the status and the body.
    pub async fn get(&mut self, target: &Target, path: &str) -> Result<(u16, Bytes)> {
        let exchange = async {
            let response = match self {
                Sender::Http1(s) => {
                    s.ready().await?;
                    s.send_request(target.request(Proto::Http1, path)?).await?
                }
                Sender::Http2(s) => {
                    s.ready().await?;
                    s.send_request(target.request(Proto::Http2, path)?).await?
                }
            };
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("no answer to GET {path} within {REQUEST_TIMEOUT:?}"))?
    }
}

/// Where requests go: the authority they carry and extra headers.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` for the Host header (HTTP/1.1) or `:authority` (HTTP/2).
    pub authority: String,
    pub headers: Vec<(String, String)>,
}

impl Target {
    pub fn new(authority: impl Into<String>) -> Target {
        Target {
            authority: authority.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Target {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn request(&self, proto: Proto, path: &str) -> Result<Request<Empty<Bytes>>> {
        let mut builder = match proto {
            // Origin form and a Host header, as curl and browsers send.
            Proto::Http1 => Request::get(path).header(hyper::header::HOST, &self.authority),
            // Absolute form: hyper turns scheme and authority into the pseudo-headers.
            Proto::Http2 => Request::get(format!("http://{}{path}", self.authority)),
        };
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        Ok(builder.body(Empty::new())?)
    }
}

/// What a closed-loop measurement gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadResult {
    /// Requests completed inside the timed window.
    pub requests: u64,
    /// Every request completed, warm-up and the window's edges included (what the proxy
    /// saw, for its access-log count).
    pub completed_total: u64,
    pub requests_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// How a closed-loop run is timed.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub timed: Duration,
}

/// Runs `streams` request loops on every sender (1 for HTTP/1.1), all sending `GET path`
/// to `target` and expecting `200` with a body starting with `expect`, for the warm-up
/// and then the timed window. `at_edges` is called at the window's start and end (e.g. to
/// read the proxies' CPU time); its two results are returned with the figures.
pub async fn closed_loop<T: Send + 'static>(
    senders: Vec<Sender>,
    streams: usize,
    target: &Target,
    path: &str,
    expect: &str,
    window: Window,
    at_edges: impl Fn() -> T + Send + 'static,
) -> Result<(LoadResult, [T; 2])> {
    ensure!(!senders.is_empty() && streams > 0, "no request slots");
    let start = Instant::now() + Duration::from_millis(20);
    let t0 = start + window.warmup;
    let t1 = t0 + window.timed;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(t0).await;
        let first = at_edges();
        tokio::time::sleep_until(t1).await;
        [first, at_edges()]
    });
    let mut loops = JoinSet::new();
    // One loop per HTTP/1.1 connection, `streams` loops sharing each HTTP/2 connection.
    let slots = senders.into_iter().flat_map(|sender| match sender {
        Sender::Http1(s) => vec![Sender::Http1(s)],
        Sender::Http2(s) => (0..streams).map(|_| Sender::Http2(s.clone())).collect(),
    });
    for mut sender in slots {
        let (target, path) = (target.clone(), path.to_owned());
        let expect = Bytes::from(expect.to_owned());
        loops.spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut latencies = Vec::with_capacity(4096);
            let mut total = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= t1 {
                    break;
                }
                let (status, body) = sender.get(&target, &path).await?;
                if status != 200 || !body.starts_with(&expect) {
                    bail!(
                        "GET {path} answered {status} {:?} (expected 200 from {:?})",
                        String::from_utf8_lossy(&body),
                        String::from_utf8_lossy(&expect)
                    );
                }
                let done = Instant::now();
                total += 1;
                if done >= t0 && done < t1 {
                    latencies.push((done - sent).as_secs_f64() * 1e6);
                }
            }
            anyhow::Ok((latencies, total))
        });
    }
    let mut all = Vec::new();
    let mut completed_total = 0;
    while let Some(joined) = loops.join_next().await {
        let (latencies, total) = joined.context("a request loop panicked")??;
        all.extend(latencies);
        completed_total += total;
    }
    let edges = sampler.await.context("the window sampler panicked")?;
    let requests = all.len() as u64;
    ensure!(requests > 0, "no request completed in the timed window");
    let all = sorted(all);
    let pct = |p| percentile(&all, p).unwrap_or(f64::NAN);
    Ok((
        LoadResult {
            requests,
            completed_total,
            requests_per_s: requests as f64 / window.timed.as_secs_f64(),
            p50_us: pct(50.0),
            p99_us: pct(99.0),
            max_us: pct(100.0),
        },
        edges,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn loopback_server() -> (std::net::SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, serve(listener, "v1"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_protocols_reach_the_server_and_are_timed() {
        let (addr, server) = loopback_server().await;
        let target = Target::new("svc:8080");
        for proto in Proto::ALL {
            let mut senders = Vec::new();
            for _ in 0..2 {
                let tcp = TcpStream::connect(addr).await.unwrap();
                senders.push(Sender::handshake(proto, tcp).await.unwrap());
            }
            let (status, body) = senders[0].get(&target, "/a?b=1").await.unwrap();
            assert_eq!((status, body.as_ref()), (200, b"v1 /a?b=1".as_ref()));
            let window = Window {
                warmup: Duration::from_millis(50),
                timed: Duration::from_millis(200),
            };
            let (result, edges) =
                closed_loop(senders, 4, &target, "/x", "v1 /x", window, Instant::now)
                    .await
                    .unwrap();
            assert!(result.requests > 0 && result.completed_total >= result.requests);
            assert!(result.p50_us <= result.p99_us && result.p99_us <= result.max_us);
            let measured = edges[1] - edges[0];
            assert!(
                measured >= Duration::from_millis(190) && measured < Duration::from_millis(400),
                "{proto:?}: window edges {measured:?} apart"
            );
        }
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_answer_fails_the_measurement() {
        let (addr, server) = loopback_server().await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let sender = Sender::handshake(Proto::Http1, tcp).await.unwrap();
        let window = Window {
            warmup: Duration::ZERO,
            timed: Duration::from_millis(100),
        };
        let err = closed_loop(
            vec![sender],
            1,
            &Target::new("s"),
            "/x",
            "v2",
            window,
            || (),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("expected 200 from \"v2\""),
            "{err:#}"
        );
        server.abort();
    }
}
