//! Mutual TLS for HBONE, behind one API whatever the backend.
//!
//! TLS 1.3 only, AES-GCM suites only, ALPN `h2`, client certificates required.
//! The client accepts a server only if its URI SAN is one of the identities expected for
//! the destination; the server accepts a client only from its own trust domain.
//! rustls is the default backend; the `boring` feature switches to BoringSSL.

mod certificate;
mod read_ahead;

#[cfg(feature = "boring")]
mod boring_backend;
#[cfg(feature = "boring")]
use boring_backend as backend;

#[cfg(all(feature = "rustls", not(feature = "boring")))]
mod rustls_backend;
#[cfg(all(feature = "rustls", not(feature = "boring")))]
use rustls_backend as backend;

#[cfg(not(any(feature = "rustls", feature = "boring")))]
compile_error!("hbone needs a TLS backend: enable the `rustls` (default) or `boring` feature");

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use certificate::{CertificateError, WorkloadCertificate};
use read_ahead::ReadAhead;

use crate::Identity;

/// The ALPN protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// The name of the TLS backend compiled in, for logs and benchmarks.
pub const BACKEND: &str = backend::NAME;

/// Why a peer's certificate was refused. Shared by both backends so callers can match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("server identity mismatch: expected one of {expected:?}, got {got:?}")]
    IdentityMismatch {
        expected: Vec<Identity>,
        got: Vec<Identity>,
    },
    #[error("client identity {got} is not in trust domain {expected:?}")]
    WrongTrustDomain { expected: String, got: Identity },
    #[error("peer certificate carries no SPIFFE identity")]
    NoIdentity,
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error(
        "peer certificate is not signed by a trusted root (is the mesh root the same on both sides?)"
    )]
    UntrustedCertificate,
    #[error("peer certificate has expired (is the peer's CA client renewing it?)")]
    Expired,
    #[error("peer certificate is not valid yet (is the clock in sync?)")]
    NotYetValid,
    #[error("peer certificate is invalid: {0}")]
    BadCertificate(String),
}

/// Why a TLS session could not be established.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("peer certificate rejected: {0}")]
    PeerRejected(#[from] VerifyError),
    #[error("peer did not negotiate ALPN h2")]
    NoAlpn,
    #[error("TLS protocol failure: {0}")]
    Protocol(String),
    #[error("TLS configuration is invalid: {0}")]
    Config(String),
    #[error("I/O error during the TLS handshake: {0}")]
    Io(#[from] io::Error),
}

/// Client-side TLS for one source workload.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<backend::Client>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", self.inner.identity())
            .finish()
    }
}

impl ClientTls {
    pub fn new(cert: Arc<WorkloadCertificate>) -> Result<Self, TlsError> {
        Ok(ClientTls {
            inner: Arc::new(backend::Client::new(cert)?),
        })
    }

    /// Handshakes over `io`, accepting the server only if it proves one of `expected`.
    pub async fn connect<IO>(
        &self,
        io: IO,
        expected: &[Identity],
    ) -> Result<TlsStream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.inner
            .connect(ReadAhead::new(io), expected)
            .await
            .map(TlsStream)
    }

    pub fn identity(&self) -> &Identity {
        self.inner.identity()
    }
}

/// Server-side TLS for one workload (or waypoint).
/// The server certificate can be replaced while the server runs ([`ServerTls::replace`]):
/// renewed certificates are presented to the handshakes that follow, without a restart.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Current>>,
    identity: Identity,
}

struct Current {
    server: Arc<backend::Server>,
    cert: Arc<WorkloadCertificate>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("identity", &self.identity)
            .finish()
    }
}

impl ServerTls {
    pub fn new(cert: Arc<WorkloadCertificate>) -> Result<Self, TlsError> {
        let identity = cert.identity().clone();
        let server = Arc::new(backend::Server::new(cert.clone())?);
        Ok(ServerTls {
            current: Arc::new(RwLock::new(Current { server, cert })),
            identity,
        })
    }

    /// Presents `cert` (a renewal: same identity) from the next handshake on, on every
    /// clone of this `ServerTls`. Established sessions keep theirs.
    pub fn replace(&self, cert: Arc<WorkloadCertificate>) -> Result<(), TlsError> {
        if cert.identity() != &self.identity {
            return Err(TlsError::Config(format!(
                "a certificate for {} cannot replace one for {}",
                cert.identity(),
                self.identity
            )));
        }
        let server = Arc::new(backend::Server::new(cert.clone())?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current { server, cert };
        Ok(())
    }

    /// The certificate presented to new handshakes.
    pub fn certificate(&self) -> Arc<WorkloadCertificate> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert
            .clone()
    }

    /// Handshakes over `io`; returns the stream and the verified client identity.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, Identity), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .server
            .clone();
        let (stream, peer) = server.accept(ReadAhead::new(io)).await?;
        Ok((TlsStream(stream), peer))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// An established mTLS session (client or server side).
pub struct TlsStream<IO>(backend::Stream<ReadAhead<IO>>);

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsStream")
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Checks a server's leaf against the identities expected for the destination.
fn check_server_identity(leaf: &[u8], expected: &[Identity]) -> Result<(), VerifyError> {
    let got = certificate::spiffe_identities(leaf)
        .map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    if got.is_empty() {
        return Err(VerifyError::NoIdentity);
    }
    if got.iter().any(|id| expected.contains(id)) {
        Ok(())
    } else {
        Err(VerifyError::IdentityMismatch {
            expected: expected.to_vec(),
            got,
        })
    }
}

/// Checks a client's leaf is from `trust_domain`; returns its identity.
fn check_client_identity(leaf: &[u8], trust_domain: &str) -> Result<Identity, VerifyError> {
    let ids = certificate::spiffe_identities(leaf)
        .map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    let first = ids.first().cloned().ok_or(VerifyError::NoIdentity)?;
    ids.into_iter()
        .find(|id| id.trust_domain() == trust_domain)
        .ok_or(VerifyError::WrongTrustDomain {
            expected: trust_domain.to_owned(),
            got: first,
        })
}
