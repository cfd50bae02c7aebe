//! The mesh certificate authority.
//!
//! [`MeshCa`] holds the signing key ([`root`]: a self-signed root in the state directory, or
//! a plugged-in CA) and issues two kinds of certificates: workload leaves for checked CSRs
//! ([`csr`]) and the controller's own serving certificate for port 15012. [`service`] is
//! Istio's `IstioCertificateService` on top, deciding *who* may get *which* identity.

pub mod csr;
pub mod root;
pub mod service;
pub mod spiffe;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

pub use csr::{CsrError, WorkloadCsr};
pub use root::CaLoadError;
pub use service::{CaService, IdentityAuthorizer, StaticAuthorizer};
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError};

/// Workload certificate lifetime when the request does not ask for one (as Istio).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest workload certificate issued (Istio's `MAX_WORKLOAD_CERT_TTL` default).
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The serving certificate is minted at every start and cannot be swapped while tonic
/// serves, so it must outlast any plausible uptime.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The name proxies expect on the controller's certificate (as istiod's).
pub const DEFAULT_SERVING_NAME: &str = "istiod.istio-system.svc";
/// Leaves are backdated so a peer whose clock is slightly behind accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What the CA is willing to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningPolicy {
    /// Only identities in this trust domain are signed.
    pub trust_domain: String,
    /// Lifetime when a request asks for none.
    pub default_ttl: Duration,
    /// Requests for more are shortened to this.
    pub max_ttl: Duration,
}

impl Default for SigningPolicy {
    fn default() -> Self {
        SigningPolicy {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            default_ttl: DEFAULT_WORKLOAD_TTL,
            max_ttl: MAX_WORKLOAD_TTL,
        }
    }
}

/// Why a certificate was not issued (the CSR itself is judged by [`CsrError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("validity_duration is {0} seconds; it must be 0 (the CA's default) or positive")]
    NegativeTtl(i64),
    #[error("{name:?} cannot go into a certificate: {reason}")]
    BadName { name: String, reason: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A signed workload certificate, as sent back to the caller.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub identity: SpiffeId,
    /// Leaf first, then intermediates, the root last (istiod's order).
    pub cert_chain: Vec<String>,
    pub not_after: SystemTime,
    /// Hex, for logs and audits.
    pub serial: String,
}

/// The controller's own TLS identity, chaining to the mesh root.
#[derive(Debug, Clone)]
pub struct ServingCertificate {
    /// Leaf then intermediates (no root: clients already hold it).
    pub cert_chain_pem: String,
    /// PKCS#8.
    pub key_pem: String,
    pub not_after: SystemTime,
}

/// The mesh CA: signing material plus the policy it signs under.
pub struct MeshCa {
    material: root::CaMaterial,
    policy: SigningPolicy,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("policy", &self.policy)
            .field("intermediates", &self.material.intermediates.len())
            .field("roots", &self.material.roots.len())
            .finish_non_exhaustive()
    }
}

impl MeshCa {
    /// Loads `root-cert.pem` / `root-key.pem` from `state_dir`, creating a new ECDSA P-256
    /// root there on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, CaLoadError> {
        Ok(Self::with_material(root::load_or_create(state_dir)?))
    }

    /// Loads an operator's CA from `dir` in Istio's `cacerts` layout: `ca-cert.pem`,
    /// `ca-key.pem`, `root-cert.pem` and optionally `cert-chain.pem`.
    pub fn from_plugged_in(dir: &Path) -> Result<Self, CaLoadError> {
        Ok(Self::with_material(root::plugged_in(dir)?))
    }

    fn with_material(material: root::CaMaterial) -> Self {
        MeshCa {
            material,
            policy: SigningPolicy::default(),
        }
    }

    /// Replaces the default [`SigningPolicy`].
    pub fn with_policy(mut self, policy: SigningPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> &SigningPolicy {
        &self.policy
    }

    /// The trust anchors (PEM, one or more certificates), for proxies to trust.
    pub fn root_pem(&self) -> String {
        self.material.roots.iter().map(|c| c.pem.as_str()).collect()
    }

    /// PEM certificates between a leaf and the root, the signing certificate first; empty
    /// when the root signs directly.
    pub fn intermediates_pem(&self) -> Vec<String> {
        self.material
            .intermediates
            .iter()
            .map(|c| c.pem.clone())
            .collect()
    }

    /// Checks a PEM CSR against this CA's trust domain.
    pub fn parse_csr(&self, pem: &str) -> Result<WorkloadCsr, CsrError> {
        WorkloadCsr::parse(pem, &self.policy.trust_domain)
    }

    /// The lifetime to issue for a request's `validity_duration` (seconds): the default
    /// for 0, capped at the maximum.
    pub fn workload_ttl(&self, requested_secs: i64) -> Result<Duration, SignError> {
        match requested_secs {
            s if s < 0 => Err(SignError::NegativeTtl(s)),
            0 => Ok(self.policy.default_ttl.min(self.policy.max_ttl)),
            s => Ok(Duration::from_secs(s as u64).min(self.policy.max_ttl)),
        }
    }

    /// Issues a workload leaf for a checked CSR. The caller decides beforehand whether
    /// the requester may have `csr.identity()`.
    pub fn sign(&self, csr: &WorkloadCsr, ttl: Duration) -> Result<IssuedCertificate, SignError> {
        let id = csr.identity().to_string();
        let mut params = self.leaf_params(ttl);
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().map_err(
            |e: rcgen::Error| SignError::BadName {
                name: id.clone(),
                reason: e.to_string(),
            },
        )?)];
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex(&s.to_bytes()))
            .unwrap_or_default();
        let not_after = params.not_after.into();
        let leaf = params
            .signed_by(csr.public_key(), &self.material.signer)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let mut cert_chain = vec![leaf.pem()];
        cert_chain.extend(self.intermediates_pem());
        cert_chain.push(self.root_pem());
        Ok(IssuedCertificate {
            identity: csr.identity().clone(),
            cert_chain,
            not_after,
            serial,
        })
    }

    /// A fresh key and certificate for the controller's own TLS listener, valid for the
    /// given DNS names (default [`DEFAULT_SERVING_NAME`]) and IP addresses.
    pub fn serving_certificate(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
    ) -> Result<ServingCertificate, SignError> {
        let dns_names = if dns_names.is_empty() && ips.is_empty() {
            &[DEFAULT_SERVING_NAME][..]
        } else {
            dns_names
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let mut params = self.leaf_params(SERVING_CERT_TTL);
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("controller"),
        );
        params.distinguished_name = name;
        for dns in dns_names {
            let san = (*dns)
                .try_into()
                .map_err(|e: rcgen::Error| SignError::BadName {
                    name: (*dns).to_owned(),
                    reason: e.to_string(),
                })?;
            params.subject_alt_names.push(SanType::DnsName(san));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let not_after = params.not_after.into();
        let cert = params
            .signed_by(&key, &self.material.signer)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let mut cert_chain_pem = cert.pem();
        for intermediate in &self.material.intermediates {
            cert_chain_pem.push_str(&intermediate.pem);
        }
        Ok(ServingCertificate {
            cert_chain_pem,
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// What every leaf shares: not a CA, TLS client+server use, backdated for clock skew
    /// and never outliving the signing certificate.
    fn leaf_params(&self, ttl: Duration) -> CertificateParams {
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + ttl).min(self.material.signer_not_after).into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params
    }
}

/// A positive 128-bit random serial: unique per certificate even when a key is reused.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A timestamp for operators' logs (`Jan  2 03:04:05 2026 +00:00`).
pub(crate) fn display_time(t: SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{secs} (unix seconds)"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
