//! The HTTP/1.1 client behind service-to-service calls and `get`. Every exchange runs
//! under one deadline, so a broken mesh shows up as a named error, never as a hang.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::discovery::{self, DiscoveryError, Env};
use crate::url::Url;

/// Service calls give up after this long: long enough for a cold tunnel, short enough
/// that a tour step never looks stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Responses are demo JSON; anything larger is a misrouted call, not a payload.
const MAX_BODY: usize = 1 << 20;

/// The far end of a call, as an operator wants it named: the address dialled, and the
/// Service name it was resolved from (when there was one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(ip) if ip == self.addr.ip() => write!(f, "{}", self.addr),
            _ => write!(f, "{} ({})", self.addr, self.host),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {host}: {source}")]
    Discovery {
        host: String,
        source: DiscoveryError,
    },
    #[error("connect to {peer}: connection refused: is the server listening?")]
    ConnectRefused { peer: Peer },
    #[error(
        "connect to {peer}: timed out after {timeout:?}: is a policy dropping traffic, or is \
         the pod gone?"
    )]
    ConnectTimeout { peer: Peer, timeout: Duration },
    #[error("connect to {peer}: {source}")]
    Connect { peer: Peer, source: io::Error },
    #[error("connection to {peer} reset before a response: a mesh policy denial looks like this")]
    Reset { peer: Peer },
    #[error("connection to {peer} closed before a complete response")]
    Closed { peer: Peer },
    #[error("no response from {peer} within {timeout:?}")]
    Timeout { peer: Peer, timeout: Duration },
    #[error("HTTP exchange with {peer} failed: {source}")]
    Http { peer: Peer, source: hyper::Error },
    #[error("response body from {peer} is unreadable or over {MAX_BODY} bytes")]
    Body { peer: Peer },
}

/// One completed request: what came back, and both ends of the TCP connection (so a test
/// can compare the client address the server reports with the one we used).
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct HttpClient {
    env: Env,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(env: Env, timeout: Duration) -> Self {
        Self { env, timeout }
    }

    /// `GET url` on a fresh connection; `headers` may override `Host` and `User-Agent`.
    pub async fn get(
        &self,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Exchange, ClientError> {
        let addr = discovery::resolve(url.host(), url.port(), &self.env).map_err(|source| {
            ClientError::Discovery {
                host: url.host().to_string(),
                source,
            }
        })?;
        let peer = Peer {
            host: url.host().to_string(),
            addr,
        };
        let deadline = Instant::now() + self.timeout;
        let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                let timeout = self.timeout;
                return Err(ClientError::ConnectTimeout { peer, timeout });
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ClientError::ConnectRefused { peer });
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Reset { peer });
            }
            Ok(Err(source)) => return Err(ClientError::Connect { peer, source }),
            Ok(Ok(s)) => s,
        };
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(source) => return Err(ClientError::Connect { peer, source }),
        };
        let request = build_request(url, headers);
        match timeout_at(deadline, exchange(stream, request, &peer)).await {
            Err(_) => Err(ClientError::Timeout {
                peer,
                timeout: self.timeout,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, headers, body))) => Ok(Exchange {
                status,
                headers,
                body,
                local,
                peer: addr,
            }),
        }
    }
}

fn build_request(url: &Url, headers: &[(HeaderName, HeaderValue)]) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = url
        .path_and_query()
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let map = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(&url.authority()) {
        map.insert(HOST, host);
    }
    map.insert(USER_AGENT, HeaderValue::from_static("demo-app"));
    for (name, value) in headers {
        map.insert(name.clone(), value.clone());
    }
    request
}

/// Aborts the connection driver when the exchange ends or is cancelled by the deadline.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(
    stream: TcpStream,
    request: Request<Empty<Bytes>>,
    peer: &Peer,
) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
    let classify = |e: hyper::Error| classify(e, peer.clone());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(classify)?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        // Its errors reach the pending request through `send_request`.
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.map_err(classify)?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => classify(*e),
            Err(_) => ClientError::Body { peer: peer.clone() },
        })?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// Names a failed exchange by what happened on the wire: a reset (how ztunnel refuses a
/// denied connection) reads differently from a server that hung up mid-response.
fn classify(error: hyper::Error, peer: Peer) -> ClientError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            )
        {
            return ClientError::Reset { peer };
        }
        source = e.source();
    }
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return ClientError::Closed { peer };
    }
    ClientError::Http {
        peer,
        source: error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_name_the_service_unless_dialled_by_address() {
        let addr: SocketAddr = "10.96.0.12:9080".parse().unwrap();
        let peer = |host: &str| Peer {
            host: host.into(),
            addr,
        };
        assert_eq!(peer("ratings").to_string(), "10.96.0.12:9080 (ratings)");
        assert_eq!(peer("10.96.0.12").to_string(), "10.96.0.12:9080");
    }
}
