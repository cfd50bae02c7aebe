//! The waypoint's HBONE side (15008): each CONNECT names an original target (a service
//! VIP:port, a service `hostname:port`, or a pod `ip:port`). It is accepted only for
//! targets that use this waypoint; then the tunnel's first bytes say what it carries:
//! HTTP/1.1 or HTTP/2 (served by hyper, each request through [`crate::proxy`]) or opaque
//! TCP, passed through to an endpoint with the waypoint's authorization policies applied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dataplane::state::{Upstream, WaypointAddress, WorkloadState};
use hbone::{Authority, ConnectRequest, IncomingConnect, PoolKey, StreamHandler};
use http::StatusCode;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::authz::Verdict;
use crate::context::{Destination, ServiceName, Source, SourceWorkload};
use crate::forward::HBONE_PORT;
use crate::proxy::{Tunnel, Waypoint};
use crate::smuggling::{self, Head};
use crate::sniff::{self, Protocol, Rewind};

/// How long a tunnel may stay silent before it is taken for a server-first protocol
/// (opaque TCP).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest request head accepted; beyond it HTTP/1.1 gets `431`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What identifies this waypoint in the workload API: its Service, and its pods' IPs.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub addresses: Vec<WaypointAddress>,
}

impl Identity {
    fn is(&self, waypoint: Option<&dataplane::state::Waypoint>) -> bool {
        waypoint.is_some_and(|w| self.addresses.contains(&w.address))
    }
}

/// The [`StreamHandler`] of the waypoint's HBONE server.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub waypoint: Arc<Waypoint>,
    pub identity: Identity,
    /// Turns true on shutdown: HTTP connections inside tunnels finish the request they
    /// are on and close (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY).
    pub shutdown: watch::Receiver<bool>,
}

impl StreamHandler for Inbound {
    async fn serve(&self, incoming: IncomingConnect) {
        let state = self.waypoint.state.snapshot();
        let tunnel = match self.tunnel(&state, &incoming) {
            Ok(t) => Arc::new(t),
            Err((status, why)) => {
                info!(authority = %incoming.request.authority, peer = %incoming.request.peer_identity, %status, why, "CONNECT refused");
                incoming.reject(status);
                return;
            }
        };
        drop(state);
        let mut stream = match incoming.accept() {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "client went away before the tunnel was up");
                return;
            }
        };
        let (protocol, seen) = match sniff::detect(&mut stream, DETECT_TIMEOUT).await {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "tunnel failed before its protocol was known");
                return;
            }
        };
        let io = Rewind::new(seen, stream);
        let (waypoint, for_requests) = (self.waypoint.clone(), tunnel.clone());
        // Boxed: hyper moves a request's future around, and ours is large (the whole
        // pipeline's state); moving a pointer beats copying kilobytes per request.
        let handle = move |request| {
            Box::pin(crate::proxy::handle(
                waypoint.clone(),
                for_requests.clone(),
                request,
            ))
        };
        let result = match protocol {
            Protocol::Http1 => {
                // hyper takes Content-Length with Transfer-Encoding; Envoy refuses it.
                let (io, heads) = smuggling::watch(io);
                let service = service_fn(move |request| {
                    let refused = heads.next() == Head::LengthAndEncoding;
                    let response = (!refused).then(|| handle(request));
                    async move {
                        match response {
                            Some(response) => response.await,
                            None => {
                                info!(target: "access", "request refused: Content-Length with Transfer-Encoding");
                                Ok(smuggling::refusal())
                            }
                        }
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .max_buf_size(MAX_HEADER_BYTES)
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(io), service);
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = runtime::stopped(self.shutdown.clone()) => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            }
            Protocol::Http2 => {
                let conn = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_header_list_size(MAX_HEADER_BYTES as u32)
                    .serve_connection(TokioIo::new(io), service_fn(handle));
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = runtime::stopped(self.shutdown.clone()) => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            }
            Protocol::Tcp => {
                self.tcp(&tunnel, io).await;
                return;
            }
        };
        if let Err(e) = result {
            debug!(error = %e, "HTTP over the tunnel ended with an error");
        }
    }
}

type Refusal = (StatusCode, &'static str);

/// The client's IP: the tunnel's `forwarded: for=` (ztunnel tunnels for the pod, from the
/// node's address) when that IP belongs to a workload running as the identity the tunnel
/// proved, so a client cannot claim another workload's address for `ipBlocks` policies;
/// else the tunnel's own peer address.
fn client_ip(state: &WorkloadState, request: &hbone::InboundConnect) -> std::net::IpAddr {
    let claimed = request.forwarded().and_then(|f| f.for_addr.ip());
    match claimed {
        Some(ip)
            if state
                .workload_by_ip(ip)
                .is_some_and(|w| w.identity == request.peer_identity) =>
        {
            ip
        }
        _ => request.peer_addr.ip(),
    }
}

impl Inbound {
    /// Who sent the tunnel and where it goes, if that target uses this waypoint.
    fn tunnel(&self, state: &WorkloadState, incoming: &IncomingConnect) -> Result<Tunnel, Refusal> {
        let request = &incoming.request;
        let (service, workload, target) = match &request.authority {
            Authority::Addr(addr) => match state.service_by_vip(addr.ip()) {
                Some(s) => (Some(s.clone()), None, *addr),
                None => match state.workload_by_ip(addr.ip()) {
                    Some(w) => (None, Some(w.clone()), *addr),
                    None => return Err((StatusCode::BAD_REQUEST, "unknown target address")),
                },
            },
            Authority::Host { host, port } => match state.service_by_hostname(host) {
                Some(s) => {
                    let vip = s.vips.first().copied().ok_or((
                        StatusCode::BAD_REQUEST,
                        "the service addressed by name has no VIP",
                    ))?;
                    (Some(s.clone()), None, SocketAddr::new(vip, *port))
                }
                None => return Err((StatusCode::BAD_REQUEST, "unknown target host")),
            },
        };
        let ours = match (&service, &workload) {
            (Some(s), _) => self.identity.is(s.waypoint.as_ref()),
            (None, Some(w)) => self.identity.is(w.waypoint.as_ref()),
            (None, None) => false,
        };
        if !ours {
            return Err((
                StatusCode::UNAUTHORIZED,
                "the target does not use this waypoint",
            ));
        }
        let ip = client_ip(state, request);
        let source_workload = state.workload_by_ip(ip).cloned();
        let source = Source {
            identity: Some(request.peer_identity.clone()),
            ip: Some(ip),
            workload: source_workload.as_ref().map(|w| SourceWorkload {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                labels: w.labels.clone(),
            }),
        };
        let destination = Destination {
            service: service.as_ref().map(|s| ServiceName {
                hostname: s.hostname.clone(),
                name: s.name.clone(),
                namespace: s.namespace.clone(),
            }),
            target,
        };
        let principal = source.identity.as_ref().map(|i| Arc::from(i.to_string()));
        let source_addr = source.ip.map(|ip| Arc::from(ip.to_string()));
        Ok(Tunnel {
            source,
            source_workload,
            destination,
            target_service: service,
            target_workload: workload,
            principal,
            source_addr,
        })
    }

    /// Opaque TCP: the waypoint's policies, evaluated without HTTP attributes as Istio
    /// does (an ALLOW rule that needs a method, path, host, header or JWT never matches;
    /// a DENY rule ignores those fields), then bytes both ways to an endpoint chosen as
    /// ztunnel would.
    async fn tcp(&self, peer: &Tunnel, mut client: Rewind<hbone::H2Stream>) {
        let state = self.waypoint.state.snapshot();
        let config = self.waypoint.config.current();
        let verdict =
            config
                .policies
                .evaluate_tcp(&self.waypoint.binding, &peer.source, &peer.destination);
        if let Verdict::Denied { policy, .. } = verdict {
            info!(target: "access", policy, dst = %peer.destination.target, "TCP tunnel denied");
            return;
        }
        let upstream = match state.resolve(peer.destination.target) {
            Ok(Upstream::Workload { workload, addr, .. }) => (Some(workload), addr),
            Ok(Upstream::Passthrough(addr)) => (None, addr),
            Ok(Upstream::Waypoint { target, .. }) => (None, target),
            Err(e) => {
                info!(target: "access", error = %e, "TCP tunnel has no upstream");
                return;
            }
        };
        drop(state);
        let result = match upstream {
            (Some(w), addr) if w.protocol == dataplane::state::TunnelProtocol::Hbone => {
                let key = PoolKey::new(
                    self.waypoint.upstreams.identity().clone(),
                    vec![w.identity.clone()],
                    SocketAddr::new(addr.ip(), HBONE_PORT),
                    None,
                );
                match self
                    .waypoint
                    .upstreams
                    .pool()
                    .connect(&key, &ConnectRequest::new(addr))
                    .await
                {
                    Ok(mut tunnel) => hbone::copy_bidirectional(&mut client, &mut tunnel)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            (_, addr) => match tokio::net::TcpStream::connect(addr).await {
                Ok(mut tcp) => hbone::copy_bidirectional(&mut client, &mut tcp)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(t) => {
                info!(target: "access", dst = %upstream.1, bytes_received = t.a_to_b, bytes_sent = t.b_to_a, "TCP tunnel closed")
            }
            Err(e) => info!(target: "access", dst = %upstream.1, error = %e, "TCP tunnel failed"),
        }
    }
}

#[cfg(test)]
mod tests {

    use dataplane::state::Workload;
    use hbone::Identity;

    use super::*;

    fn pod(name: &str, ip: &str) -> Workload {
        Workload::pod(name, "shop", name, ip.parse().unwrap()).unwrap()
    }

    fn connect(peer: &str, forwarded: Option<&str>) -> hbone::InboundConnect {
        let mut headers = http::HeaderMap::new();
        if let Some(f) = forwarded {
            headers.insert("forwarded", f.parse().unwrap());
        }
        hbone::InboundConnect {
            peer_identity: Identity::new("cluster.local", "shop", peer).unwrap(),
            peer_addr: "10.244.0.10:40000".parse().unwrap(),
            authority: "10.96.0.30:9080".parse().unwrap(),
            headers,
        }
    }

    #[test]
    fn a_forwarded_address_is_believed_only_for_the_identity_that_runs_there() {
        let state = WorkloadState::new(
            vec![pod("client", "10.244.0.10"), pod("admin", "10.244.0.99")],
            Vec::new(),
        )
        .unwrap();
        let cases = [
            ("client", Some(r#"for="10.244.0.10:5000""#), "10.244.0.10"),
            ("client", Some(r#"for="10.244.0.99:5000""#), "10.244.0.10"),
            ("admin", Some(r#"for="10.244.0.99:5000""#), "10.244.0.99"),
            ("client", Some(r#"for="192.0.2.1:5000""#), "10.244.0.10"),
            ("client", None, "10.244.0.10"),
        ];
        for (peer, forwarded, want) in cases {
            let ip = client_ip(&state, &connect(peer, forwarded));
            assert_eq!(ip.to_string(), want, "{peer} claiming {forwarded:?}");
        }
    }
}
