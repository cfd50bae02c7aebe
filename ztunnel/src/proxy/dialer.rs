//! Opens a pod's HBONE connections: the TCP socket is made inside the pod (so the tunnel
//! leaves with the pod's IP and mark 0x539) and the pod's certificate is presented.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use hbone::tls::{ClientTls, TlsStream};
use hbone::{ConnectError, Dialer, PoolKey};
use tokio::net::TcpStream;

use crate::cert::CertificateSource;
use crate::socket::PodSockets;

pub struct PodDialer {
    sockets: PodSockets,
    certs: Arc<dyn CertificateSource>,
}

impl std::fmt::Debug for PodDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodDialer")
            .field("sockets", &self.sockets)
            .finish_non_exhaustive()
    }
}

impl PodDialer {
    pub fn new(sockets: PodSockets, certs: Arc<dyn CertificateSource>) -> Self {
        Self { sockets, certs }
    }
}

impl Dialer for PodDialer {
    fn dial(
        &self,
        key: &PoolKey,
    ) -> BoxFuture<'static, Result<TlsStream<TcpStream>, ConnectError>> {
        let sockets = self.sockets.clone();
        let certs = self.certs.clone();
        let key = key.clone();
        Box::pin(async move {
            let cert = certs
                .certificate(&key.src_identity)
                .await
                .map_err(|_| ConnectError::NoCertificate(key.src_identity.to_string()))?;
            let tls = ClientTls::new(cert)?;
            let addr = key.next_hop;
            let tcp = sockets
                .connect(addr, None)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            Ok(tls.connect(tcp, &key.dst_identities).await?)
        })
    }
}
