//! The BoringSSL implementation of the TLS facade (feature `boring`).

use std::sync::{Arc, Mutex};

use boring::pkey::PKey;
use boring::ssl::{
    AlpnError, CompliancePolicy, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions,
    SslSessionCacheMode, SslVerifyMode, SslVersion, select_next_proto,
};
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509, X509StoreContextRef, X509VerifyError};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    ALPN_H2, TlsError, VerifyError, WorkloadCertificate, check_client_identity,
    check_server_identity,
};
use crate::Identity;

pub(super) const NAME: &str = "boring";

pub(super) type Stream<IO> = tokio_boring::SslStream<IO>;

/// ALPN wire format: length-prefixed protocol names.
const ALPN_WIRE: &[u8] = b"\x02h2";

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// TLS 1.3 only, with the FIPS 2022-05 policy (AES-GCM suites, P-256/P-384 groups).
fn context(cert: &WorkloadCertificate) -> Result<SslContextBuilder, TlsError> {
    let mut ctx = SslContextBuilder::new(SslMethod::tls()).map_err(config_err)?;
    ctx.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(config_err)?;
    ctx.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(config_err)?;
    ctx.set_compliance_policy(CompliancePolicy::FIPS_202205)
        .map_err(config_err)?;
    let (leaf, intermediates) = cert
        .chain()
        .split_first()
        .ok_or_else(|| config_err("empty chain"))?;
    let leaf = X509::from_der(leaf).map_err(config_err)?;
    ctx.set_certificate(&leaf).map_err(config_err)?;
    for der in intermediates {
        ctx.add_extra_chain_cert(X509::from_der(der).map_err(config_err)?)
            .map_err(config_err)?;
    }
    let key = PKey::private_key_from_der(cert.key().secret_der()).map_err(config_err)?;
    ctx.set_private_key(&key).map_err(config_err)?;
    ctx.check_private_key().map_err(config_err)?;
    let mut store = X509StoreBuilder::new().map_err(config_err)?;
    for root in cert.roots() {
        store
            .add_cert(X509::from_der(root).map_err(config_err)?)
            .map_err(config_err)?;
    }
    ctx.set_cert_store(store.build());
    // No resumption: every connection proves its identity afresh.
    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
    ctx.set_options(SslOptions::NO_TICKET);
    Ok(ctx)
}

/// Where a verify callback leaves the typed reason it failed the handshake.
type VerifySlot = Arc<Mutex<Option<VerifyError>>>;

/// Runs `check` on the leaf once BoringSSL has verified the chain.
fn leaf_check(
    slot: VerifySlot,
    check: impl Fn(&[u8]) -> Result<(), VerifyError> + Send + Sync + 'static,
) -> impl Fn(bool, &mut X509StoreContextRef) -> bool + Send + Sync + 'static {
    move |chain_ok, ctx| {
        if !chain_ok || ctx.error_depth() != 0 {
            return chain_ok;
        }
        let result = match ctx.current_cert().map(|c| c.to_der()) {
            Some(Ok(der)) => check(&der),
            Some(Err(e)) => Err(VerifyError::BadCertificate(e.to_string())),
            None => Err(VerifyError::NoCertificate),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                false
            }
        }
    }
}

fn handshake_error<S>(err: tokio_boring::HandshakeError<S>, slot: &VerifySlot) -> TlsError {
    if let Some(verify) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return TlsError::PeerRejected(verify);
    }
    let verify = err.ssl().map(|ssl| ssl.verify_result()).unwrap_or(Ok(()));
    let mapped = match verify {
        // INVALID_CALL: the handshake failed before any certificate was verified.
        Ok(()) | Err(X509VerifyError::INVALID_CALL) => None,
        Err(X509VerifyError::CERT_HAS_EXPIRED) => Some(VerifyError::Expired),
        Err(X509VerifyError::CERT_NOT_YET_VALID) => Some(VerifyError::NotYetValid),
        Err(
            X509VerifyError::UNABLE_TO_GET_ISSUER_CERT
            | X509VerifyError::UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | X509VerifyError::UNABLE_TO_VERIFY_LEAF_SIGNATURE
            | X509VerifyError::DEPTH_ZERO_SELF_SIGNED_CERT
            | X509VerifyError::SELF_SIGNED_CERT_IN_CHAIN
            | X509VerifyError::CERT_SIGNATURE_FAILURE,
        ) => Some(VerifyError::UntrustedCertificate),
        Err(other) => Some(VerifyError::BadCertificate(other.error_string().to_owned())),
    };
    if let Some(v) = mapped {
        return TlsError::PeerRejected(v);
    }
    match err.as_io_error() {
        Some(io) => TlsError::Io(std::io::Error::new(io.kind(), io.to_string())),
        None => TlsError::Protocol(err.to_string()),
    }
}

pub(super) struct Client {
    cert: Arc<WorkloadCertificate>,
    ctx: SslContext,
}

impl Client {
    pub(super) fn new(cert: Arc<WorkloadCertificate>) -> Result<Self, TlsError> {
        let mut ctx = context(&cert)?;
        ctx.set_alpn_protos(ALPN_WIRE).map_err(config_err)?;
        Ok(Client {
            ctx: ctx.build(),
            cert,
        })
    }

    pub(super) fn identity(&self) -> &Identity {
        self.cert.identity()
    }

    pub(super) async fn connect<IO>(
        &self,
        io: IO,
        expected: &[Identity],
    ) -> Result<Stream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut ssl = Ssl::new(&self.ctx).map_err(config_err)?;
        let slot = VerifySlot::default();
        let expected = expected.to_vec();
        ssl.set_verify_callback(
            SslVerifyMode::PEER,
            leaf_check(slot.clone(), move |der| {
                check_server_identity(der, &expected)
            }),
        );
        let stream = tokio_boring::SslStreamBuilder::new(ssl, io)
            .connect()
            .await
            .map_err(|e| handshake_error(e, &slot))?;
        if stream.ssl().selected_alpn_protocol() != Some(ALPN_H2) {
            return Err(TlsError::NoAlpn);
        }
        Ok(stream)
    }
}

pub(super) struct Server {
    cert: Arc<WorkloadCertificate>,
    ctx: SslContext,
}

impl Server {
    pub(super) fn new(cert: Arc<WorkloadCertificate>) -> Result<Self, TlsError> {
        let mut ctx = context(&cert)?;
        ctx.set_alpn_select_callback(|_, offered| {
            select_next_proto(ALPN_WIRE, offered).ok_or(AlpnError::ALERT_FATAL)
        });
        Ok(Server {
            ctx: ctx.build(),
            cert,
        })
    }

    pub(super) async fn accept<IO>(&self, io: IO) -> Result<(Stream<IO>, Identity), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut ssl = Ssl::new(&self.ctx).map_err(config_err)?;
        let slot = VerifySlot::default();
        let trust_domain = self.cert.identity().trust_domain().to_owned();
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            leaf_check(slot.clone(), move |der| {
                check_client_identity(der, &trust_domain).map(|_| ())
            }),
        );
        let stream = tokio_boring::SslStreamBuilder::new(ssl, io)
            .accept()
            .await
            .map_err(|e| handshake_error(e, &slot))?;
        if stream.ssl().selected_alpn_protocol() != Some(ALPN_H2) {
            return Err(TlsError::NoAlpn);
        }
        let leaf = stream
            .ssl()
            .peer_certificate()
            .ok_or(VerifyError::NoCertificate)?;
        let der = leaf
            .to_der()
            .map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
        let peer = check_client_identity(&der, self.cert.identity().trust_domain())?;
        Ok((stream, peer))
    }
}
