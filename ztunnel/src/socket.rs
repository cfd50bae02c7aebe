//! Every socket ztunnel opens for a pod, made inside that pod's network namespace.
//!
//! This is the only place that knows about "in-pod" mode: the proxies ask a
//! [`PodSockets`] for listeners and connections and never branch on the mode. All sockets
//! carry mark 0x539 so the pod's capture rules never redirect ztunnel's own traffic.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use inpod::Netns;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The mark on ztunnel's packets (1337), matched by the capture rules.
pub const ZTUNNEL_MARK: u32 = 0x539;

/// Per network namespace: the namespace of the thread that opens it.
const TCP_MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Listen backlog of each per-pod listener.
const BACKLOG: i32 = 1024;

/// Socket factory for one pod.
#[derive(Debug, Clone)]
pub struct PodSockets {
    netns: Arc<Netns>,
}

impl PodSockets {
    pub fn new(netns: Netns) -> Self {
        Self {
            netns: Arc::new(netns),
        }
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    fn socket(&self, domain: Domain) -> io::Result<Socket> {
        let socket = self
            .netns
            .run(|| Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP)))??;
        socket.set_mark(ZTUNNEL_MARK)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// A listener on `addr` in the pod. `SO_REUSEPORT` lets a new ztunnel take over the same
    /// port beside the old one during an upgrade.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = self.socket(Domain::for_address(addr))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // IPv4 has its own listener; a dual-stack socket would report v4-mapped
            // addresses that SO_ORIGINAL_DST cannot answer for.
            socket.set_only_v6(true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(BACKLOG)?;
        TcpListener::from_std(socket.into())
    }

    /// Makes a closing listener hand the connections queued on it (handshake done or in
    /// progress, not yet accepted) to another listener of its `SO_REUSEPORT` group instead
    /// of resetting them: `net.ipv4.tcp_migrate_req` (Linux 5.14+), a setting of the pod's
    /// network namespace. This is what lets an old ztunnel close its listeners while a new
    /// one listens beside it without a single connection attempt failing.
    pub fn enable_listener_handover(&self) -> io::Result<()> {
        self.netns.run(|| {
            std::fs::write(TCP_MIGRATE_REQ, "1")?;
            match std::fs::read_to_string(TCP_MIGRATE_REQ)?.trim() {
                "1" => Ok(()),
                other => Err(io::Error::other(format!(
                    "{TCP_MIGRATE_REQ} reads {other:?} after writing 1"
                ))),
            }
        })?
    }

    /// Listeners on `port` for every address family the pod has: `0.0.0.0` always, `[::]`
    /// when the pod has IPv6 enabled.
    pub fn listen_all(&self, port: u16) -> io::Result<Vec<TcpListener>> {
        let mut listeners = vec![self.listen(SocketAddr::from(([0, 0, 0, 0], port)))?];
        match self.listen(SocketAddr::from(([0u16; 8], port))) {
            Ok(l) => listeners.push(l),
            // IPv6 disabled in this pod: nothing to capture there.
            Err(e) if ipv6_unavailable(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(listeners)
    }

    /// Connects from inside the pod. With `spoof_source`, the connection leaves with that
    /// source IP (IP_TRANSPARENT + IP_FREEBIND, any port): the app sees the real client.
    pub async fn connect(
        &self,
        dst: SocketAddr,
        spoof_source: Option<IpAddr>,
    ) -> io::Result<TcpStream> {
        let socket = self.socket(Domain::for_address(dst))?;
        if let Some(ip) = spoof_source {
            match ip {
                IpAddr::V4(_) => {
                    socket.set_ip_transparent_v4(true)?;
                    socket.set_freebind_v4(true)?;
                }
                IpAddr::V6(_) => {
                    socket.set_ip_transparent_v6(true)?;
                    socket.set_freebind_v6(true)?;
                }
            }
            // Port 0: reusing the client's own port would clash with the conntrack entry of
            // the original (redirected) connection.
            socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        let stream = TcpSocket::from_std_stream(socket.into())
            .connect(dst)
            .await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
}

/// Closes `stream` with a TCP reset instead of a FIN (`SO_LINGER` 0): a refused peer sees
/// "connection reset", not an empty but orderly response.
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

/// The destination a redirected connection was originally sent to (`SO_ORIGINAL_DST`).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("SO_ORIGINAL_DST returned a non-IP address"))
}
