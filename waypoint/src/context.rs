//! What the waypoint knows about a request besides its HTTP head: who sent it (from the
//! HBONE tunnel it arrived on and the workload state) and which target it was sent to
//! (the tunnel's `:authority`). Every stage (authentication, authorization, routing,
//! load balancing) reads these; none of them does I/O to get them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dataplane::state::Workload;
use hbone::Identity;

/// Kubernetes labels.
pub type Labels = BTreeMap<String, String>;

/// The sender of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The peer's SPIFFE identity, from the client certificate of the HBONE connection
    /// (a ztunnel presents the identity of the pod it tunnels for). `None` for plaintext.
    pub identity: Option<Identity>,
    /// The client's IP: the `forwarded: for=` of the tunnel, else the peer address.
    pub ip: Option<IpAddr>,
    /// The source workload, when the workload state knows the client's IP.
    pub workload: Option<SourceWorkload>,
}

/// The source workload, as the workload state describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceWorkload {
    /// Pod name.
    pub name: String,
    pub namespace: String,
    /// The pod's labels (VirtualService `sourceLabels`).
    pub labels: Arc<Labels>,
}

impl Source {
    /// `source.namespace` as Istio defines it: the namespace of the peer's identity.
    pub fn namespace(&self) -> Option<&str> {
        self.identity.as_ref().map(Identity::namespace)
    }

    /// `source.principal`: the identity without `spiffe://` (`td/ns/N/sa/S`).
    pub fn principal(&self) -> Option<String> {
        self.identity.as_ref().map(|id| {
            let uri = id.to_string();
            uri.strip_prefix("spiffe://").unwrap_or(&uri).to_owned()
        })
    }
}

/// A Kubernetes Service the waypoint serves, by its names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// `NAME.NAMESPACE.svc.<domain suffix>`.
    pub hostname: String,
    pub name: String,
    pub namespace: String,
}

/// Where the request was going before the waypoint: the tunnel's original target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The service, when the target was one of its VIPs (service traffic). `None` for a
    /// workload addressed by its own IP (workload traffic).
    pub service: Option<ServiceName>,
    /// The original target: a service VIP and service port, or a pod IP and port.
    pub target: SocketAddr,
}

impl Destination {
    /// `destination.port` (the service port for service traffic).
    pub fn port(&self) -> u16 {
        self.target.port()
    }
}

/// One endpoint the waypoint can forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The workload uid (stable across updates).
    pub uid: Arc<str>,
    /// The workload, as the state it was found in has it.
    pub workload: Arc<Workload>,
    /// The endpoint's IP and the target port for the service port requested.
    pub addr: SocketAddr,
    /// `addr` as text (for access lines).
    pub addr_text: Arc<str>,
}

impl Endpoint {
    /// `workload`, reached at `addr`.
    pub fn new(workload: Arc<Workload>, addr: SocketAddr) -> Self {
        Endpoint {
            uid: Arc::from(workload.uid.as_str()),
            addr,
            addr_text: addr.to_string().into(),
            workload,
        }
    }
}

/// The request's authority: the URI's (HTTP/2 `:authority`, or an absolute-form HTTP/1.1
/// target), else the `Host` header.
pub fn authority(parts: &http::request::Parts) -> Option<&str> {
    authority_of(&parts.uri, parts.headers.get(http::header::HOST))
}

/// [`authority`] from a request's URI and `Host` header.
pub fn authority_of<'a>(
    uri: &'a http::Uri,
    host: Option<&'a http::HeaderValue>,
) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| host?.to_str().ok())
}

/// A Kubernetes service host in full: `a` -> `a.NS.svc.SUFFIX` (in the namespace `ns` of
/// the object naming it), `a.b` -> `a.b.svc.SUFFIX`, `a.b.svc` -> `a.b.svc.SUFFIX`;
/// anything else is kept. Lower-cased. Every host a waypoint routes to is a service, so
/// VirtualService destinations and DestinationRule hosts are read the same way.
pub fn fqdn(host: &str, ns: &str, suffix: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.svc.{suffix}"),
        1 => format!("{host}.svc.{suffix}"),
        2 if host.ends_with(".svc") => format!("{host}.{suffix}"),
        _ => host,
    }
}
