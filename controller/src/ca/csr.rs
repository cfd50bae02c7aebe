//! Reading a workload's certificate signing request.
//!
//! The CSR is untrusted input: its signature must verify against its own public key
//! (proof the caller holds the private key), and the only thing taken from it besides the
//! key is its single `spiffe://` URI SAN. Everything else it asks for (subject, CA flag,
//! key usages, more SANs) is ignored or refused, so a CSR can never widen what the CA
//! issues.

use rcgen::SubjectPublicKeyInfo;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::spiffe::{SpiffeId, SpiffeIdError};

#[cfg(test)]
mod tests;

/// Why a CSR was refused; shown to the caller as `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not a PEM \"CERTIFICATE REQUEST\" block: {0}")]
    Pem(String),
    #[error("the CSR is not a valid PKCS#10 request: {0}")]
    Der(String),
    #[error("the CSR's signature does not verify against its own public key (corrupted or forged)")]
    Signature,
    #[error("the CSR's public key algorithm is not supported (use ECDSA P-256): {0}")]
    PublicKey(String),
    #[error(
        "the CSR must ask for exactly one subject alternative name, a spiffe:// URI; it asks for {count}: [{names}]"
    )]
    SanCount { count: usize, names: String },
    #[error("the CSR's subject alternative name {0} is not a spiffe:// URI")]
    NotSpiffe(String),
    #[error("the CSR's SPIFFE ID is malformed: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("the CSR asks for {id}, which is outside this CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain { id: SpiffeId, trust_domain: String },
}

/// A CSR that passed every check: the identity it asks for and the key to certify.
#[derive(Debug, Clone)]
pub struct WorkloadCsr {
    identity: SpiffeId,
    public_key: SubjectPublicKeyInfo,
}

impl WorkloadCsr {
    /// Parses and checks a PEM CSR for a workload of `trust_domain`.
    pub fn parse(pem: &str, trust_domain: &str) -> Result<Self, CsrError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| CsrError::Pem(e.to_string()))?;
        if !matches!(
            block.label.as_str(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(CsrError::Pem(format!("found a {:?} block", block.label)));
        }
        let csr = match X509CertificationRequest::from_der(&block.contents) {
            Ok(([], csr)) => csr,
            Ok(_) => return Err(CsrError::Der("trailing bytes after the request".into())),
            Err(e) => return Err(CsrError::Der(e.to_string())),
        };
        csr.verify_signature().map_err(|_| CsrError::Signature)?;
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CsrError::PublicKey(e.to_string()))?;

        let names: Vec<&GeneralName<'_>> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
                _ => None,
            })
            .flatten()
            .collect();
        let [name] = names.as_slice() else {
            return Err(CsrError::SanCount {
                count: names.len(),
                names: names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let GeneralName::URI(uri) = name else {
            return Err(CsrError::NotSpiffe(name.to_string()));
        };
        if !uri.starts_with("spiffe://") {
            return Err(CsrError::NotSpiffe(format!("URI:{uri}")));
        }
        let identity: SpiffeId = uri.parse()?;
        if identity.trust_domain() != trust_domain {
            return Err(CsrError::ForeignTrustDomain {
                id: identity,
                trust_domain: trust_domain.to_owned(),
            });
        }
        Ok(WorkloadCsr {
            identity,
            public_key,
        })
    }

    /// The one identity the certificate will carry.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    pub(crate) fn public_key(&self) -> &SubjectPublicKeyInfo {
        &self.public_key
    }
}
