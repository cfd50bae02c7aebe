//! A workload's certificate: leaf + chain, private key and the trust roots, with the
//! identity and validity read from the leaf once at load time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Identity;

/// Why a certificate could not be loaded or understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("no trust roots were given")]
    NoRoots,
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("certificate is not valid DER X.509: {0}")]
    Parse(String),
    #[error("certificate has no spiffe:// URI SAN")]
    NoIdentity,
    #[error("certificate has a malformed SPIFFE identity: {0}")]
    BadIdentity(String),
}

/// The material a workload presents in TLS. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct WorkloadCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    identity: Identity,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl WorkloadCertificate {
    /// `chain` is leaf first, then any intermediates; `roots` are the trust anchors
    /// that peers' certificates must chain to.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::EmptyChain)?;
        if roots.is_empty() {
            return Err(CertificateError::NoRoots);
        }
        let identity = spiffe_identities(leaf)?
            .into_iter()
            .next()
            .ok_or(CertificateError::NoIdentity)?;
        let (not_before, not_after) = validity(leaf)?;
        Ok(WorkloadCertificate {
            chain,
            key,
            roots,
            identity,
            not_before,
            not_after,
        })
    }

    /// Loads PEM text: the chain (leaf first), a PKCS#8/SEC1/PKCS#1 key, and the roots.
    pub fn from_pem(chain: &[u8], key: &[u8], roots: &[u8]) -> Result<Self, CertificateError> {
        let certs = |what, pem: &[u8]| {
            CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CertificateError::Pem {
                    what,
                    reason: e.to_string(),
                })
        };
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CertificateError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        Self::new(
            certs("certificate chain", chain)?,
            key,
            certs("roots", roots)?,
        )
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When this certificate should be renewed: half-way through its lifetime.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime / 2
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertificateError::Parse(
            "trailing bytes after certificate".into(),
        )),
        Err(e) => Err(CertificateError::Parse(e.to_string())),
    }
}

/// All `spiffe://` URI SANs of a DER certificate, parsed. A malformed SPIFFE URI is an
/// error rather than skipped, so a bad certificate is never half-trusted.
pub(crate) fn spiffe_identities(der: &[u8]) -> Result<Vec<Identity>, CertificateError> {
    let cert = parse(der)?;
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Parse(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .map(|uri| {
            uri.parse()
                .map_err(|e: crate::IdentityError| CertificateError::BadIdentity(e.to_string()))
        })
        .collect()
}

fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), CertificateError> {
    let cert = parse(der)?;
    let to_system = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let v = cert.validity();
    Ok((to_system(v.not_before), to_system(v.not_after)))
}
