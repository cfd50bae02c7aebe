//! Opens a proxy's HBONE connections: the current certificate of the connection's source
//! identity from a [`CertificateSource`], TLS over a TCP socket that a [`TcpConnector`]
//! opens (ztunnel inside the pod's network namespace, the waypoint in its own).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use hbone::tls::{ClientTls, TlsStream};
use hbone::{ConnectError, Dialer, PoolKey};
use tokio::net::TcpStream;

use crate::cert::CertificateSource;

/// Opens the TCP socket to an HBONE next hop.
pub trait TcpConnector: Send + Sync + 'static {
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// Connects from this process's network namespace, with `TCP_NODELAY` set.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelayConnector;

impl TcpConnector for NoDelayConnector {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// An HBONE [`Dialer`] presenting the certificate of `key.src_identity`, fetched for
/// each new connection (so a renewed certificate is used from then on).
pub struct CertDialer<C> {
    connector: Arc<C>,
    certs: Arc<dyn CertificateSource>,
}

impl<C: std::fmt::Debug> std::fmt::Debug for CertDialer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertDialer")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl<C: TcpConnector> CertDialer<C> {
    pub fn new(connector: C, certs: Arc<dyn CertificateSource>) -> Self {
        Self {
            connector: Arc::new(connector),
            certs,
        }
    }
}

impl<C: TcpConnector> Dialer for CertDialer<C> {
    fn dial(
        &self,
        key: &PoolKey,
    ) -> BoxFuture<'static, Result<TlsStream<TcpStream>, ConnectError>> {
        let connector = self.connector.clone();
        let certs = self.certs.clone();
        let key = key.clone();
        Box::pin(async move {
            let cert = certs
                .certificate(&key.src_identity)
                .await
                .map_err(|_| ConnectError::NoCertificate(key.src_identity.to_string()))?;
            let tls = ClientTls::new(cert)?;
            let addr = key.next_hop;
            let tcp = connector
                .connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            Ok(tls.connect(tcp, &key.dst_identities).await?)
        })
    }
}
