//! The HTTP/1.1 server every role shares: it stamps each JSON answer with the pod, its
//! version and the TCP peer it saw (the mesh must preserve the client's IP), logs one
//! line per request, and drains in-flight requests on shutdown within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::pod::PodInfo;

/// Names the replica that answered, for `curl -i` users who do not read the body.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// How long in-flight requests get after SIGTERM: above the 2 s upstream timeout, well
/// below Kubernetes' 30 s grace period.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What a handler needs to know about a request (bodies are never read: the API is GETs).
#[derive(Debug)]
pub struct Inbound {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    /// The answering pod, for handlers that name themselves (productpage's summary).
    pub pod: Arc<PodInfo>,
}

/// A JSON object answer; the server adds `pod`, `version` and `client` to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Map<String, Value>,
}

impl Reply {
    pub fn new(status: StatusCode, body: Value) -> Self {
        let body = match body {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_string(), other)]),
        };
        Self { status, body }
    }

    pub fn ok(body: Value) -> Self {
        Self::new(StatusCode::OK, body)
    }

    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, json!({ "error": message.into() }))
    }

    pub fn not_found(path: &str) -> Self {
        Self::error(StatusCode::NOT_FOUND, format!("no route for {path}"))
    }
}

/// The `{id}` in `{prefix}{id}`: `None` if the path is not under `prefix`, a 400 reply
/// if the id is not a product number.
pub fn product_id(path: &str, prefix: &str) -> Option<Result<u64, Reply>> {
    let id = path.strip_prefix(prefix)?;
    Some(id.parse::<u64>().map_err(|_| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            format!("product id {id:?} is not a number"),
        )
    }))
}

/// One role's API. `/healthz` and method checks are the server's, not the handler's.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Inbound) -> impl Future<Output = Reply> + Send;
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets open
/// connections finish their current request, and cuts the rest after [`DRAIN_GRACE`].
pub async fn serve<H: Handler>(
    listener: TcpListener,
    pod: PodInfo,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let pod = Arc::new(pod);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = connection(stream, peer, pod.clone(), handler.clone(), drain_rx.clone());
                    connections.spawn(conn);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => info!(open, "stopped: all connections drained"),
        Err(_) => warn!(
            cut = connections.len(),
            "stopped: connections still busy after {DRAIN_GRACE:?} were cut"
        ),
    }
}

async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    pod: Arc<PodInfo>,
    handler: Arc<H>,
    mut drain: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| {
        let pod = pod.clone();
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(respond(request, peer, pod, &*handler).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // The `Ref` is dropped inside: it is not `Send`, and the task must be.
        () = async { drop(drain.wait_for(|draining| *draining).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Clients hanging up is normal traffic; keep it out of the info log.
        tracing::debug!(client = %peer, "connection ended: {e}");
    }
}

async fn respond<H: Handler>(
    request: Request<Incoming>,
    peer: SocketAddr,
    pod: Arc<PodInfo>,
    handler: &H,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let reply = if method != Method::GET {
        Reply::error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served")
    } else if path == "/healthz" {
        Reply::ok(json!({ "status": "ok" }))
    } else {
        let inbound = Inbound {
            method: method.clone(),
            path: path.clone(),
            headers: request.headers().clone(),
            peer,
            pod: pod.clone(),
        };
        handler.handle(inbound).await
    };
    let status = reply.status;
    let response = render(reply, peer, &pod);
    info!(
        client = %peer,
        %method,
        path,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

fn render(reply: Reply, peer: SocketAddr, pod: &PodInfo) -> Response<Full<Bytes>> {
    let mut body = reply.body;
    body.insert("pod".into(), Value::String(pod.name.clone()));
    body.insert("version".into(), Value::String(pod.version.clone()));
    body.insert("client".into(), Value::String(peer.to_string()));
    let mut text = Value::Object(body).to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A pod name that is not a valid header value (it always is, in Kubernetes) only
    // loses the header; the body still names the pod.
    if let Ok(value) = HeaderValue::from_str(&pod.name) {
        headers.insert(SERVED_BY, value);
    }
    response
}
