//! Where workload certificates come from.
//!
//! ztunnel holds one certificate per workload identity it proxies for, shared by every
//! pod running as that identity. Today the source is a local CA (a root certificate and
//! key on disk, as the lab and single-machine setups use); the controller's CA client
//! implements the same trait later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use hbone::Identity;
use hbone::testing::TestCa;
use hbone::tls::WorkloadCertificate;

pub mod refresh;

/// Why no certificate could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    #[error("cannot read CA file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("CA files {cert} / {key} are not a usable CA certificate and key: {reason}")]
    InvalidCa {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "cannot reach the CA at {address} for a certificate for {identity}: {reason} (is the controller running, port 15012 reachable, and its certificate signed by the mesh root this node trusts?)"
    )]
    CaUnreachable {
        identity: Identity,
        address: String,
        reason: String,
    },
    #[error(
        "the CA at {address} did not accept this node's token when asked for {identity}: {reason} (does the node token file match the controller's token table?)"
    )]
    CaUnauthenticated {
        identity: Identity,
        address: String,
        reason: String,
    },
    #[error(
        "the CA at {address} refused {identity} to this node: {reason} (is a pod with that service account scheduled on this node, and has the controller seen it yet?)"
    )]
    CaDenied {
        identity: Identity,
        address: String,
        reason: String,
    },
    #[error("the CA at {address} rejected the request for {identity} ({code}): {reason}")]
    CaRejected {
        identity: Identity,
        address: String,
        code: String,
        reason: String,
    },
    #[error(
        "the CA at {address} answered the request for {identity} with an unusable certificate: {reason}"
    )]
    CaBadResponse {
        identity: Identity,
        address: String,
        reason: String,
    },
    #[error(
        "the certificate for {identity} expired and could not be renewed from the CA at {address}: {reason}"
    )]
    Expired {
        identity: Identity,
        address: String,
        reason: String,
    },
    #[error("cannot build a certificate request for {identity}: {reason}")]
    Csr { identity: Identity, reason: String },
    #[error("the certificate request for {identity} was cancelled: no pod needs it any more")]
    Cancelled { identity: Identity },
}

/// Gives the certificate to present for an identity.
pub trait CertificateSource: Send + Sync + 'static {
    fn certificate(
        &self,
        identity: &Identity,
    ) -> BoxFuture<'_, Result<Arc<WorkloadCertificate>, CertError>>;

    /// No pod on this node runs as `identity` any more: its certificate need not be kept
    /// or renewed. A later [`Self::certificate`] call gets a fresh one.
    fn release(&self, identity: &Identity) {
        let _ = identity;
    }

    /// What the source holds right now, one entry per identity (for the admin endpoint's
    /// `config_dump`). Read-only: nothing is fetched or renewed by asking.
    fn certificates(&self) -> Vec<CertificateStatus> {
        Vec::new()
    }
}

/// One identity's certificate as a [`CertificateSource`] currently holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStatus {
    pub identity: Identity,
    pub state: CertificateState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateState {
    /// The first request is in flight.
    Pending,
    /// A certificate is held (possibly expired: compare `not_after` with the clock).
    /// `renewal_error` is set while renewing it fails.
    Available {
        not_before: SystemTime,
        not_after: SystemTime,
        renewal_error: Option<String>,
    },
    /// The last attempt to get one failed; the next request for it tries again.
    Failed { error: String, at: SystemTime },
}

impl CertificateState {
    /// The certificate's validity as a held [`CertificateState::Available`].
    pub fn held(cert: &WorkloadCertificate, renewal_error: Option<String>) -> Self {
        CertificateState::Available {
            not_before: cert.not_before(),
            not_after: cert.not_after(),
            renewal_error,
        }
    }
}

/// Signs certificates locally with a CA read from `ca.crt` / `ca.key` (PEM) in a
/// directory. Certificates are cached per identity and re-issued at half-life.
pub struct LocalCa {
    ca: TestCa,
    cache: Mutex<HashMap<Identity, Arc<WorkloadCertificate>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

/// File names inside a local CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

impl LocalCa {
    pub fn new(ca: TestCa) -> Self {
        Self {
            ca,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Loads `DIR/ca.crt` and `DIR/ca.key`.
    pub fn from_dir(dir: &Path) -> Result<Self, CertError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| CertError::Read {
                path,
                reason: e.to_string(),
            })
        };
        let (cert, key) = (read(CA_CERT_FILE)?, read(CA_KEY_FILE)?);
        let ca = TestCa::from_pem(&cert, &key).map_err(|e| CertError::InvalidCa {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
            reason: e.to_string(),
        })?;
        Ok(Self::new(ca))
    }

    /// Writes a CA into `dir` in the layout [`Self::from_dir`] reads.
    pub fn write_dir(ca: &TestCa, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(CA_CERT_FILE), ca.root_pem())?;
        std::fs::write(dir.join(CA_KEY_FILE), ca.signing_key_pem())
    }

    fn get(&self, identity: &Identity) -> Arc<WorkloadCertificate> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        if let Some(cert) = cache.get(identity).filter(|c| c.refresh_at() > now) {
            return cert.clone();
        }
        let cert = self.ca.issue(identity);
        cache.insert(identity.clone(), cert.clone());
        cert
    }
}

impl CertificateSource for LocalCa {
    fn certificate(
        &self,
        identity: &Identity,
    ) -> BoxFuture<'_, Result<Arc<WorkloadCertificate>, CertError>> {
        let cert = self.get(identity);
        Box::pin(async move { Ok(cert) })
    }

    fn release(&self, identity: &Identity) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(identity);
    }

    fn certificates(&self) -> Vec<CertificateStatus> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<CertificateStatus> = cache
            .iter()
            .map(|(identity, cert)| CertificateStatus {
                identity: identity.clone(),
                state: CertificateState::held(cert, None),
            })
            .collect();
        held.sort_by(|a, b| a.identity.cmp(&b.identity));
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issues_once_per_identity_and_round_trips_through_a_directory() {
        let dir = std::env::temp_dir().join(format!("ztunnel-ca-{}", std::process::id()));
        let original = TestCa::new();
        LocalCa::write_dir(&original, &dir).unwrap();
        let ca = LocalCa::from_dir(&dir).unwrap();
        let id: Identity = "spiffe://cluster.local/ns/default/sa/echo".parse().unwrap();
        let a = ca.certificate(&id).await.unwrap();
        let b = ca.certificate(&id).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            ca.certificates(),
            vec![CertificateStatus {
                identity: id.clone(),
                state: CertificateState::held(&a, None),
            }]
        );
        assert_eq!(a.identity(), &id);
        assert_eq!(a.roots(), &[original.root()]);
        ca.release(&id);
        assert!(
            ca.certificates().is_empty(),
            "a released identity is not held"
        );
        let c = ca.certificate(&id).await.unwrap();
        assert!(
            !Arc::ptr_eq(&a, &c),
            "a released identity gets a new certificate"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_broken_ca_names_the_file() {
        let dir = std::env::temp_dir().join(format!("ztunnel-ca-bad-{}", std::process::id()));
        let err = LocalCa::from_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CA_CERT_FILE), "garbage").unwrap();
        std::fs::write(dir.join(CA_KEY_FILE), "garbage").unwrap();
        let err = LocalCa::from_dir(&dir).unwrap_err();
        assert!(matches!(err, CertError::InvalidCa { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
