//! The rustls (ring) implementation of the TLS facade.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    ALPN_H2, TlsError, VerifyError, WorkloadCertificate, check_client_identity,
    check_server_identity,
};
use crate::Identity;

pub(super) const NAME: &str = "rustls";

pub(super) type Stream<IO> = tokio_rustls::TlsStream<IO>;

/// Encrypted bytes a session may hold before the writer must wait for the socket. rustls's
/// default (64 KiB) is nine bytes short of a 64 KiB HTTP/2 DATA frame with its header, so
/// every such frame cost a second `writev` carrying a 9-byte record; this takes a whole
/// bulk frame (up to [`crate::copy::MAX_BUFFER`]) at once, with room for the next. A
/// session holds this much only while its socket is full.
const SEND_BUFFER_LIMIT: usize = 2 * crate::copy::MAX_BUFFER;

/// TLS 1.3 with AES-GCM only, on ring.
fn provider() -> Arc<CryptoProvider> {
    let base = ring::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
        ..base
    })
}

fn root_store(cert: &WorkloadCertificate) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for root in cert.roots() {
        roots
            .add(root.clone())
            .map_err(|e| TlsError::Config(format!("bad root certificate: {e}")))?;
    }
    Ok(roots)
}

fn config_err(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

pub(super) struct Client {
    cert: Arc<WorkloadCertificate>,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
}

impl Client {
    pub(super) fn new(cert: Arc<WorkloadCertificate>) -> Result<Self, TlsError> {
        let roots = Arc::new(root_store(&cert)?);
        let client = Client {
            cert,
            provider: provider(),
            roots,
        };
        // Build once up front so a bad key or chain fails here, not on first use.
        client.config(&[])?;
        Ok(client)
    }

    pub(super) fn identity(&self) -> &Identity {
        self.cert.identity()
    }

    fn config(&self, expected: &[Identity]) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = SpiffeServerVerifier {
            roots: self.roots.clone(),
            expected: expected.to_vec(),
            algs: self.provider.signature_verification_algorithms,
        };
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.cert.chain().to_vec(), self.cert.key().clone_key())
            .map_err(config_err)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // A resumed session would skip verifying the server against *this* expected set.
        config.resumption = Resumption::disabled();
        config.enable_sni = false;
        Ok(config)
    }

    pub(super) async fn connect<IO>(
        &self,
        io: IO,
        expected: &[Identity],
    ) -> Result<Stream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.config(expected)?));
        // Identities are checked by URI SAN; the name is unused (and SNI is off).
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let stream = connector
            .connect_with(name, io, |c| c.set_buffer_limit(Some(SEND_BUFFER_LIMIT)))
            .await
            .map_err(handshake_error)?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(TlsError::NoAlpn);
        }
        Ok(stream.into())
    }
}

pub(super) struct Server {
    cert: Arc<WorkloadCertificate>,
    config: Arc<rustls::ServerConfig>,
}

impl Server {
    pub(super) fn new(cert: Arc<WorkloadCertificate>) -> Result<Self, TlsError> {
        let provider = provider();
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(&cert)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let verifier = TrustDomainClientVerifier {
            inner,
            trust_domain: cert.identity().trust_domain().to_owned(),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(cert.chain().to_vec(), cert.key().clone_key())
            .map_err(config_err)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Server {
            cert,
            config: Arc::new(config),
        })
    }

    pub(super) async fn accept<IO>(&self, io: IO) -> Result<(Stream<IO>, Identity), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let stream = acceptor
            .accept_with(io, |c| c.set_buffer_limit(Some(SEND_BUFFER_LIMIT)))
            .await
            .map_err(handshake_error)?;
        let conn = stream.get_ref().1;
        if conn.alpn_protocol() != Some(ALPN_H2) {
            return Err(TlsError::NoAlpn);
        }
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(VerifyError::NoCertificate)?;
        let peer = check_client_identity(leaf, self.cert.identity().trust_domain())?;
        Ok((stream.into(), peer))
    }
}

/// Recovers our typed verification errors from the io::Error tokio-rustls returns.
fn handshake_error(err: io::Error) -> TlsError {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Io(err);
    };
    let verify = match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Other(other) => match other.0.downcast_ref::<VerifyError>() {
                Some(v) => v.clone(),
                None => VerifyError::BadCertificate(other.to_string()),
            },
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                VerifyError::UntrustedCertificate
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                VerifyError::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                VerifyError::NotYetValid
            }
            other => VerifyError::BadCertificate(format!("{other:?}")),
        },
        rustls::Error::NoCertificatesPresented => VerifyError::NoCertificate,
        rustls::Error::NoApplicationProtocol => return TlsError::NoAlpn,
        other => return TlsError::Protocol(other.to_string()),
    };
    TlsError::PeerRejected(verify)
}

fn rejected(err: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(err))))
}

/// Verifies the server chains to our roots and proves one of the expected identities.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<Identity>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        check_server_identity(end_entity, &self.expected).map_err(rejected)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// WebPKI chain verification plus "the client is in our trust domain".
#[derive(Debug)]
struct TrustDomainClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for TrustDomainClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_client_identity(end_entity, &self.trust_domain).map_err(rejected)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

    use super::SEND_BUFFER_LIMIT;
    use crate::Identity;
    use crate::testing::TestCa;
    use crate::tls::{ClientTls, ServerTls};

    /// A socket stand-in that takes vectored writes whole, as a TCP socket does, and
    /// records the size of every write it is handed.
    struct CountingSocket {
        io: DuplexStream,
        writes: Arc<Mutex<Vec<usize>>>,
    }

    impl AsyncRead for CountingSocket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let whole: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &whole))?;
            assert_eq!(
                n,
                whole.len(),
                "the duplex buffer is large enough for any write"
            );
            self.writes.lock().unwrap().push(n);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// HTTP/2 hands TLS a DATA frame as its 9-byte header and its payload. A 64 KiB payload
    /// must be taken in one call and leave in one socket write; with rustls's default
    /// 64 KiB buffer the last 9 bytes needed a second call and a second write.
    #[tokio::test]
    async fn a_64_kib_data_frame_is_taken_whole_and_written_once() {
        let ca = TestCa::new();
        let client_id: Identity = "spiffe://cluster.local/ns/a/sa/client".parse().unwrap();
        let server_id: Identity = "spiffe://cluster.local/ns/a/sa/server".parse().unwrap();
        let client_tls = ClientTls::new(ca.issue(&client_id)).unwrap();
        let server_tls = ServerTls::new(ca.issue(&server_id)).unwrap();
        let (client_io, server_io) = tokio::io::duplex(4 * SEND_BUFFER_LIMIT);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let socket = CountingSocket {
            io: client_io,
            writes: writes.clone(),
        };
        let expected = [server_id.clone()];
        let (client, server) = tokio::join!(
            client_tls.connect(socket, &expected),
            server_tls.accept(server_io)
        );
        let (mut client, (mut server, _)) = (client.unwrap(), server.unwrap());
        writes.lock().unwrap().clear();

        let header = [0u8; 9];
        let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        let taken = client
            .write_vectored(&[IoSlice::new(&header), IoSlice::new(&payload)])
            .await
            .unwrap();
        assert_eq!(
            taken,
            header.len() + payload.len(),
            "the whole frame in one call"
        );
        assert_eq!(
            writes.lock().unwrap().len(),
            1,
            "one socket write for the frame's records: {:?}",
            writes.lock().unwrap()
        );

        let mut got = vec![0u8; taken];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..9], &header);
        assert_eq!(&got[9..], &payload[..]);
    }
}
