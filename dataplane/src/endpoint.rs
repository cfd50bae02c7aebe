//! The small HTTP/1.1 server behind every proxy's admin, readiness and metrics
//! endpoints: a synchronous handler per request, a bounded number of connections, a
//! header timeout, and a short drain on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Connections served at once per server; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, open connections get this long to finish their current response.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Binds `addr` for the endpoint called `what`; the error names both.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for the {what} endpoint: {e}"))
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_else(|e| e.to_string().into_bytes());
    bytes.push(b'\n');
    with_type(status, bytes, "application/json")
}

/// A plain-text response; a newline is added.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body = body.into();
    body.push('\n');
    with_type(status, body.into_bytes(), "text/plain; charset=utf-8")
}

pub fn with_type(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` turns true; then stops
/// accepting and gives open connections [`DRAIN`] to finish the response they are on.
pub async fn serve_http<H>(
    what: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: watch::Receiver<bool>,
) where
    H: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        debug!(endpoint = what, %peer, "too many connections; closing this one");
                        continue;
                    }
                    let fut = connection(what, stream, peer, handler.clone(), shutdown.clone());
                    connections.spawn(fut);
                }
                Err(error) => {
                    warn!(endpoint = what, %error, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = runtime::stopped(shutdown.clone()) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            endpoint = what,
            open = connections.len(),
            "connections still open after the drain; closing them"
        );
    }
    debug!(endpoint = what, "stopped");
}

async fn connection<H>(
    what: &'static str,
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
) where
    H: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let response = (*handler)(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = runtime::stopped(shutdown.clone()) => {
            // Finishes the response in progress (a /quitquitquit's "OK"), then closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(endpoint = what, %peer, %error, "connection ended");
    }
}
