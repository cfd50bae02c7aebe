//! Opens a pod's HBONE connections: the TCP socket is made inside the pod (so the tunnel
//! leaves with the pod's IP and mark 0x539) and the pod's certificate is presented.

use std::io;
use std::net::SocketAddr;

use dataplane::dialer::{CertDialer, TcpConnector};
use tokio::net::TcpStream;

use crate::socket::PodSockets;

/// The pod's HBONE dialer: [`CertDialer`] over sockets made in the pod's netns.
pub type PodDialer = CertDialer<PodSockets>;

impl TcpConnector for PodSockets {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        PodSockets::connect(self, addr, None).await
    }
}
