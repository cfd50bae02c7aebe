//! Test helpers (feature `testing`): an in-memory CA that mints roots and workload
//! certificates, so tests need no files.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Identity;
use crate::tls::WorkloadCertificate;

/// A root CA, optionally with one intermediate that signs the leaves.
pub struct TestCa {
    root_der: CertificateDer<'static>,
    root_pem: String,
    signer: Issuer<'static, KeyPair>,
    /// Intermediates between the leaf and the root, leaf-side first.
    intermediates: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("intermediates", &self.intermediates.len())
            .finish()
    }
}

/// How to mint a leaf; defaults to valid from a minute ago for 24 hours.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Default for IssueOptions {
    fn default() -> Self {
        let now = SystemTime::now();
        IssueOptions {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(24 * 3600),
        }
    }
}

impl IssueOptions {
    /// A certificate that expired an hour ago.
    pub fn expired() -> Self {
        let now = SystemTime::now();
        IssueOptions {
            not_before: now - Duration::from_secs(48 * 3600),
            not_after: now - Duration::from_secs(3600),
        }
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "hbone-test");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
    params
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key generation")
}

impl TestCa {
    /// A fresh self-signed root that signs leaves directly.
    pub fn new() -> Self {
        let key = p256();
        let params = ca_params("test root");
        let root = params.self_signed(&key).expect("self-sign root");
        TestCa {
            root_der: root.der().clone(),
            root_pem: root.pem(),
            signer: Issuer::new(params, key),
            intermediates: Vec::new(),
        }
    }

    /// A fresh root with one intermediate CA that signs the leaves, so chains have two certs.
    pub fn with_intermediate() -> Self {
        let root_key = p256();
        let root_params = ca_params("test root");
        let root = root_params.self_signed(&root_key).expect("self-sign root");
        let root_issuer = Issuer::new(root_params, root_key);
        let key = p256();
        let params = ca_params("test intermediate");
        let intermediate = params
            .signed_by(&key, &root_issuer)
            .expect("sign intermediate");
        TestCa {
            root_der: root.der().clone(),
            root_pem: root.pem(),
            signer: Issuer::new(params, key),
            intermediates: vec![intermediate.der().clone()],
        }
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.root_der.clone()
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The signing key as PKCS#8 PEM, to persist a root-signed CA with [`Self::root_pem`]
    /// and load it in another process with [`Self::from_pem`].
    pub fn signing_key_pem(&self) -> String {
        self.signer.key().serialize_pem()
    }

    /// A CA that signs leaves directly with a root loaded from PEM (as written by
    /// [`Self::root_pem`] and [`Self::signing_key_pem`]).
    pub fn from_pem(root_cert_pem: &str, root_key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(root_key_pem)?;
        let signer = Issuer::from_ca_cert_pem(root_cert_pem, key)?;
        let root_der = CertificateDer::from_pem_slice(root_cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(TestCa {
            root_der,
            root_pem: root_cert_pem.to_owned(),
            signer,
            intermediates: Vec::new(),
        })
    }

    /// A workload certificate for `identity`, valid now for 24 hours.
    pub fn issue(&self, identity: &Identity) -> Arc<WorkloadCertificate> {
        self.issue_with(identity, IssueOptions::default())
    }

    pub fn issue_with(&self, identity: &Identity, opts: IssueOptions) -> Arc<WorkloadCertificate> {
        let key = p256();
        let der = self.sign_leaf(
            &key,
            SanType::URI(identity.to_string().try_into().expect("URI SAN")),
            opts,
        );
        let mut chain = vec![der];
        chain.extend(self.intermediates.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Arc::new(
            WorkloadCertificate::new(chain, key, vec![self.root()])
                .expect("valid test certificate"),
        )
    }

    /// A leaf with only a DNS SAN (no SPIFFE identity), as DER chain + PKCS#8 key.
    pub fn issue_without_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = p256();
        let der = self.sign_leaf(
            &key,
            SanType::DnsName("example.test".try_into().expect("DNS SAN")),
            IssueOptions::default(),
        );
        (
            vec![der],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    fn sign_leaf(
        &self,
        key: &KeyPair,
        san: SanType,
        opts: IssueOptions,
    ) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = opts.not_before.into();
        params.not_after = opts.not_after.into();
        params
            .signed_by(key, &self.signer)
            .expect("sign leaf")
            .der()
            .clone()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_reloaded_from_pem_issues_certificates_the_original_root_trusts() {
        let ca = TestCa::new();
        let reloaded = TestCa::from_pem(ca.root_pem(), &ca.signing_key_pem()).unwrap();
        assert_eq!(reloaded.root(), ca.root());
        let id: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let cert = reloaded.issue(&id);
        assert_eq!(cert.identity(), &id);
        assert_eq!(cert.roots(), &[ca.root()]);
        assert!(TestCa::from_pem("not pem", &ca.signing_key_pem()).is_err());
    }
}
