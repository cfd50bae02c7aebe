//! Access logs: one line per connection ztunnel closes, outbound and inbound (HBONE and
//! plaintext), at INFO on the target [`TARGET`] (`access`), so `RUST_LOG` can keep or
//! drop them on their own (`RUST_LOG=warn,access=info`, `RUST_LOG=info,access=off`).
//! Connections refused (by policy, or for want of a route) and those whose upstream
//! could not be reached get their line too, with a response flag.
//!
//! The proxies build a [`ConnectionLog`] as they learn about the connection and
//! [`ConnectionLog::emit`] it when it is over. Fields, Istio-like (omitted when unknown):
//!
//! | field | value |
//! |---|---|
//! | `src.addr`, `dst.addr` | client `ip:port`; where ztunnel sent the connection (outbound: the resolved endpoint; inbound: the CONNECT target or original destination) |
//! | `src.workload`, `dst.workload` | the pod's name, from the workload state (or, for ztunnel's own pod, from the node agent) |
//! | `src.namespace`, `dst.namespace` | the pod's namespace |
//! | `src.identity`, `dst.identity` | SPIFFE identity, only when mutual TLS proved it |
//! | `dst.service` | the service hostname, when the client addressed a service VIP |
//! | `direction` | `inbound` or `outbound` |
//! | `original_dst` | outbound: the address the app dialled (a VIP, or the pod itself) |
//! | `protocol` | `HBONE` or `TCP` |
//! | `bytes_sent` | bytes ztunnel wrote to the client (outbound: the app; inbound HBONE: into the tunnel; plaintext: the peer) |
//! | `bytes_recv` | bytes ztunnel read from the client |
//! | `duration_ms` | from accepting the connection to its close (inbound HBONE: from the CONNECT's `200`, or the time taken to refuse it) |
//! | `response_flags` | empty, or one of [`ResponseFlag`] |
//! | `connection_security_policy` | `mutual_tls` or `none` |
//! | `error` | why the connection failed or was cut, when it was |
//!
//! Bytes are payload bytes (inside the tunnel for HBONE, not counting TLS or HTTP/2).
//! In text format, addresses, names and identities are written bare
//! (`src.identity=spiffe://...`), the keywords and the error quoted (`direction="inbound"`).
//!
//! The same record feeds the Istio TCP metrics ([`crate::metrics`]): a log
//! [`counted`](ConnectionLog::counted) in its pod's metrics counts the connection as
//! opened when [`opened`](ConnectionLog::opened) (or, if it never was, when emitted:
//! refused connections), and as closed, with its bytes, when emitted. Every way a
//! connection ends writes its line, so every open is matched by a close.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hbone::Identity;
use hbone::copy::{CopyError, Transferred};
use tracing::field;

use crate::metrics::{Opened, TcpMetrics};
use crate::proxy::{PodContext, PodInfo, Refusal};
use crate::state::{ResolveError, TunnelProtocol, Upstream, Workload, WorkloadState};

/// The `tracing` target of access lines.
pub const TARGET: &str = "access";

/// Which proxy closed the connection; each has its own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The pod's outgoing connection (15001).
    Outbound,
    /// A CONNECT on the HBONE port (15008).
    Inbound,
    /// A plaintext connection to the pod (15006).
    InboundPlaintext,
}

impl Kind {
    pub fn message(self) -> &'static str {
        match self {
            Kind::Outbound => "outbound connection closed",
            Kind::Inbound => "inbound connection closed",
            Kind::InboundPlaintext => "inbound plaintext connection closed",
        }
    }

    pub fn direction(self) -> &'static str {
        match self {
            Kind::Outbound => "outbound",
            Kind::Inbound | Kind::InboundPlaintext => "inbound",
        }
    }
}

/// Envoy's response flags, those ztunnel has a use for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFlag {
    #[default]
    None,
    /// `DENY`: refused or cut off by authorization policy (outbound: the destination
    /// answered the CONNECT with 401, which is how its ztunnel says so).
    Deny,
    /// `UF`: the upstream could not be reached (TCP connect, HBONE handshake, CONNECT).
    UpstreamFailure,
    /// `UH`: the service has no healthy endpoint.
    NoHealthyUpstream,
    /// `NR`: nowhere to send it (no such service port, not an address of this pod, no
    /// original destination).
    NoRoute,
    /// `UO`: upstream overflow, refused because the pod was at its limit of concurrent
    /// inbound connections ([`crate::limits`]): a CONNECT answered 503, a plaintext
    /// connection reset.
    UpstreamOverflow,
}

impl ResponseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::None => "",
            ResponseFlag::Deny => "DENY",
            ResponseFlag::UpstreamFailure => "UF",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::UpstreamOverflow => "UO",
        }
    }
}

/// How the connection was protected on ztunnel's mesh side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// HBONE: mutual TLS, the peer's identity verified.
    MutualTls,
    /// Plain TCP.
    #[default]
    None,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::MutualTls => "mutual_tls",
            Security::None => "none",
        }
    }

    pub fn protocol(self) -> &'static str {
        match self {
            Security::MutualTls => "HBONE",
            Security::None => "TCP",
        }
    }
}

/// One end of the connection, as far as ztunnel knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The pod's name.
    pub workload: Option<String>,
    pub namespace: Option<String>,
    /// Only when mutual TLS verified it.
    pub identity: Option<Identity>,
    /// Its record in the workload state, when known (for the metrics' labels: owner,
    /// canonical service and revision, cluster).
    pub known: Option<Arc<Workload>>,
}

impl Peer {
    /// The pod ztunnel proxies for, with the identity it presents.
    pub fn pod(info: &PodInfo, identity: &Identity) -> Self {
        Peer {
            workload: Some(info.name.clone()),
            namespace: Some(info.namespace.clone()),
            identity: Some(identity.clone()),
            known: None,
        }
    }

    /// A workload from the state; `verified`: its identity was proven by mutual TLS.
    pub fn workload(workload: &Arc<Workload>, verified: bool) -> Self {
        Peer {
            workload: Some(workload.name.clone()),
            namespace: Some(workload.namespace.clone()),
            identity: verified.then(|| workload.identity.clone()),
            known: Some(workload.clone()),
        }
    }

    /// Whoever has `ip` in the state. `identity`, the one mutual TLS verified, is kept
    /// in any case; the workload is named only if it has that identity (plaintext
    /// peers, with none, are named by IP alone).
    pub fn by_ip(state: &WorkloadState, ip: IpAddr, identity: Option<&Identity>) -> Self {
        let known = state
            .workload_by_ip(ip)
            .filter(|w| identity.is_none_or(|id| *id == w.identity));
        Peer {
            workload: known.map(|w| w.name.clone()),
            namespace: known.map(|w| w.namespace.clone()),
            identity: identity.cloned(),
            known: known.cloned(),
        }
    }
}

/// One connection's access line (and its metrics, when [`counted`](Self::counted)).
#[derive(Debug, Clone)]
pub struct ConnectionLog {
    pub kind: Kind,
    pub src_addr: SocketAddr,
    pub src: Peer,
    /// `None` only when the redirected connection had no original destination.
    pub dst_addr: Option<String>,
    /// The service hostname, when a service VIP was dialled.
    pub dst_service: Option<String>,
    /// That service's name and namespace, as far as known.
    pub dst_service_name: Option<String>,
    pub dst_service_namespace: Option<String>,
    pub dst: Peer,
    /// Outbound: the address the app dialled.
    pub original_dst: Option<SocketAddr>,
    pub security: Security,
    /// Bytes ztunnel wrote to the client.
    pub bytes_sent: u64,
    /// Bytes ztunnel read from the client.
    pub bytes_recv: u64,
    pub duration: Option<Duration>,
    pub flag: ResponseFlag,
    pub error: Option<String>,
    /// Where the connection is counted, and its open once counted.
    metrics: Option<TcpMetrics>,
    opened: Option<Opened>,
    /// The open was counted by another log of this connection.
    open_counted: bool,
}

impl ConnectionLog {
    /// A connection from `src_addr`, nothing moved yet.
    pub fn new(kind: Kind, src_addr: SocketAddr, src: Peer, dst: Peer) -> Self {
        ConnectionLog {
            kind,
            src_addr,
            src,
            dst_addr: None,
            dst_service: None,
            dst_service_name: None,
            dst_service_namespace: None,
            dst,
            original_dst: None,
            security: Security::None,
            bytes_sent: 0,
            bytes_recv: 0,
            duration: None,
            flag: ResponseFlag::None,
            error: None,
            metrics: None,
            opened: None,
            open_counted: false,
        }
    }

    /// Counts this connection in the metrics of `context`'s pod, whose workload record
    /// (the source outbound, the destination inbound) labels it.
    pub(crate) fn counted(self, context: &PodContext) -> Self {
        self.recorded_in(&context.inputs.metrics)
            .pod_workload(context.workload())
    }

    /// Counts this connection in `metrics` (see [`Self::opened`] and [`Self::emit`]).
    pub fn recorded_in(mut self, metrics: &TcpMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The state's record of the pod ztunnel proxies for: the source of an outbound
    /// connection, the destination of an inbound one.
    pub fn pod_workload(mut self, workload: Option<Arc<Workload>>) -> Self {
        match self.kind {
            Kind::Outbound => self.src.known = workload,
            Kind::Inbound | Kind::InboundPlaintext => self.dst.known = workload,
        }
        self
    }

    /// The connection is established (accepted and routed): counted as opened now, with
    /// what is known of it so far, and as active until this log and its clones are gone.
    pub fn opened(mut self) -> Self {
        if let (Some(metrics), None) = (&self.metrics, &self.opened) {
            self.opened = Some(metrics.open(&self));
        }
        self
    }

    /// The open counted by [`Self::opened`]: the connection is active while it is held.
    pub fn open(&self) -> Option<Opened> {
        self.opened.clone()
    }

    /// `counted`: this connection's open was counted already, by another log of it
    /// (inbound HBONE: the one made as its tunnel started).
    pub fn was_opened(mut self, counted: bool) -> Self {
        self.open_counted |= counted;
        self
    }

    /// Inbound HBONE: the service the client addressed, from the CONNECT's `forwarded`
    /// header (`host=`), named and placed as the state has it.
    pub fn addressed(mut self, state: &WorkloadState, host: Option<String>) -> Self {
        let Some(host) = host else {
            return self;
        };
        let dst_ip = self
            .dst_addr
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip());
        // Of the services with that hostname, the one this pod backs.
        let service = state
            .services()
            .filter(|s| s.hostname == host)
            .max_by_key(|s| {
                let key = s.key();
                state
                    .endpoints(&key)
                    .iter()
                    .any(|w| dst_ip.is_some_and(|ip| w.addresses.contains(&ip)))
            });
        match service {
            Some(s) => {
                self.dst_service_name = Some(s.name.clone());
                self.dst_service_namespace = Some(s.namespace.clone());
            }
            None => self.dst_service_name = service_name_of(&host, None),
        }
        self.dst_service = Some(host);
        self
    }

    /// An outbound connection `client` of the pod `info` opened to `original_dst`
    /// (`None`: the kernel had none).
    pub fn outbound(
        info: &PodInfo,
        identity: &Identity,
        client: SocketAddr,
        original_dst: Option<SocketAddr>,
    ) -> Self {
        let mut log = Self::new(
            Kind::Outbound,
            client,
            Peer::pod(info, identity),
            Peer::default(),
        );
        log.original_dst = original_dst;
        log.dst_addr = original_dst.map(|a| a.to_string());
        log
    }

    /// A connection from `src_addr` to the pod `info`, over HBONE when the peer's
    /// `src_identity` was verified, else plaintext; `dst_addr`: what it asked for.
    pub fn inbound(
        state: &WorkloadState,
        info: &PodInfo,
        identity: &Identity,
        src_addr: SocketAddr,
        src_identity: Option<&Identity>,
        dst_addr: Option<String>,
    ) -> Self {
        let (kind, security) = match src_identity {
            Some(_) => (Kind::Inbound, Security::MutualTls),
            None => (Kind::InboundPlaintext, Security::None),
        };
        let src = Peer::by_ip(state, src_addr.ip(), src_identity);
        let mut log = Self::new(kind, src_addr, src, Peer::pod(info, identity));
        log.security = security;
        log.dst_addr = dst_addr;
        log
    }

    /// Outbound: where the state sends it (the endpoint, its service, HBONE or not).
    pub fn upstream(mut self, upstream: &Upstream) -> Self {
        match upstream {
            Upstream::Workload {
                workload,
                addr,
                service,
            } => {
                let hbone = workload.protocol == TunnelProtocol::Hbone;
                self.dst_addr = Some(addr.to_string());
                self.dst = Peer::workload(workload, hbone);
                self.dst_service = service.as_ref().map(|s| s.hostname.clone());
                self.dst_service_name = service.as_ref().map(|s| s.name.clone());
                self.dst_service_namespace = service.as_ref().map(|s| s.namespace.clone());
                self.security = if hbone {
                    Security::MutualTls
                } else {
                    Security::None
                };
            }
            Upstream::Waypoint {
                waypoint,
                target,
                service,
                ..
            } => {
                // The hop this ztunnel makes is to the waypoint pod; the target it asks
                // for is the original destination.
                self.dst_addr = Some(target.to_string());
                self.dst = Peer::workload(waypoint, true);
                self.dst_service = service.as_ref().map(|s| s.hostname.clone());
                self.dst_service_name = service.as_ref().map(|s| s.name.clone());
                self.dst_service_namespace = service.as_ref().map(|s| s.namespace.clone());
                self.security = Security::MutualTls;
            }
            Upstream::Passthrough(addr) => {
                self.dst_addr = Some(addr.to_string());
                self.security = Security::None;
            }
        }
        self
    }

    /// Outbound: the state has no upstream for the destination.
    pub fn unresolved(mut self, error: &ResolveError) -> Self {
        let (flag, service) = match error {
            ResolveError::UnknownServicePort { service, .. } => (ResponseFlag::NoRoute, service),
            ResolveError::NoHealthyEndpoints { service } => {
                (ResponseFlag::NoHealthyUpstream, service)
            }
            ResolveError::WaypointUnavailable { .. } => {
                return self.failed(ResponseFlag::NoHealthyUpstream, error);
            }
        };
        self.dst_service = Some(service.hostname.clone());
        self.dst_service_name = service_name_of(&service.hostname, Some(&service.namespace));
        self.dst_service_namespace = Some(service.namespace.clone());
        self.failed(flag, error)
    }

    /// The bytes moved, `a` being the client (`a_to_b`: read from it, `b_to_a`: written to
    /// it), as every copy in the proxies counts them.
    pub fn transferred(mut self, transferred: Transferred) -> Self {
        self.bytes_recv = transferred.a_to_b;
        self.bytes_sent = transferred.b_to_a;
        self
    }

    /// How the copy between the client (`a`) and the upstream ended. A connection cut
    /// off by policy (see [`revoked`]) is flagged `DENY`.
    pub fn copied(self, outcome: &Result<Transferred, CopyError>) -> Self {
        match outcome {
            Ok(t) => self.transferred(*t),
            Err(e) if is_revoked(&e.source) => self
                .transferred(e.transferred)
                .failed(ResponseFlag::Deny, &e.source),
            Err(e) => self.transferred(e.transferred).error(&e.source),
        }
    }

    /// Inbound: refused before the app was contacted (`NR`: not this pod's address;
    /// `DENY`: authorization policy, named in the error).
    pub(crate) fn refused(self, refusal: &Refusal) -> Self {
        match refusal {
            Refusal::NotThisPod => self.failed(ResponseFlag::NoRoute, "not an address of this pod"),
            Refusal::Denied(denied) => self.failed(
                ResponseFlag::Deny,
                format_args!(
                    "denied by authorization policy {}: {}",
                    denied.policy, denied.reason
                ),
            ),
        }
    }

    /// The connection failed or was refused, with `flag`.
    pub fn failed(mut self, flag: ResponseFlag, error: impl fmt::Display) -> Self {
        self.flag = flag;
        self.error(error)
    }

    pub fn error(mut self, error: impl fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    pub fn lasted(mut self, duration: Option<Duration>) -> Self {
        self.duration = duration;
        self
    }

    /// Writes the access line, and counts the connection as closed (opened too, if it
    /// never was) with its bytes when it is [`counted`](Self::counted).
    pub fn emit(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.close(self, self.open_counted || self.opened.is_some());
        }
        let duration_ms = self
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // `event!`: `info!` cannot take `target:` with dotted field names.
        tracing::event!(
            target: TARGET,
            tracing::Level::INFO,
            src.addr = %self.src_addr,
            src.workload = self.src.workload.as_deref().map(field::display),
            src.namespace = self.src.namespace.as_deref().map(field::display),
            src.identity = self.src.identity.as_ref().map(field::display),
            dst.addr = self.dst_addr.as_deref().map(field::display),
            dst.service = self.dst_service.as_deref().map(field::display),
            dst.workload = self.dst.workload.as_deref().map(field::display),
            dst.namespace = self.dst.namespace.as_deref().map(field::display),
            dst.identity = self.dst.identity.as_ref().map(field::display),
            direction = self.kind.direction(),
            original_dst = self.original_dst.map(field::display),
            protocol = self.security.protocol(),
            bytes_sent = self.bytes_sent,
            bytes_recv = self.bytes_recv,
            duration_ms,
            response_flags = self.flag.as_str(),
            connection_security_policy = self.security.as_str(),
            error = self.error.as_deref(),
            "{}",
            self.kind.message()
        );
    }
}

/// The name of the Kubernetes service `host` (`NAME.NAMESPACE.svc...`), when it has that
/// form (and, if given, that namespace).
fn service_name_of(host: &str, namespace: Option<&str>) -> Option<String> {
    let mut labels = host.split('.');
    let (name, ns, svc) = (labels.next()?, labels.next()?, labels.next()?);
    let fits = svc == "svc" && !name.is_empty() && namespace.is_none_or(|n| n == ns);
    fits.then(|| name.to_owned())
}

/// A connection cut off because policy no longer allows it: what the copy of a revoked
/// connection fails with, so that its access line says `DENY`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Revoked(io::Error);

/// Marks `error`, the reason a live connection is being cut off by policy, as such.
pub fn revoked(error: io::Error) -> io::Error {
    io::Error::new(error.kind(), Revoked(error))
}

fn is_revoked(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<Revoked>())
}

#[cfg(test)]
mod tests;
