//! The CA's own key material: a self-signed root kept in the controller's state directory,
//! or a CA the operator plugs in using Istio's `cacerts` layout.
//!
//! Everything read from disk is checked before the CA signs anything with it, and every
//! error names the file and what is wrong with it: a CA that silently signs with the wrong
//! key produces certificates nobody trusts, which is much harder to debug.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use x509_parser::prelude::X509Certificate;

/// Files of a self-signed root in the state directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// Files of a plugged-in CA (Istio's `cacerts` secret layout).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Subject of the roots we create.
const ROOT_ORGANIZATION: &str = "ambient mesh";
const ROOT_COMMON_NAME: &str = "ambient mesh root CA";
/// A root outlives every certificate under it; rotating it means re-issuing everything.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the CA's key material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaLoadError {
    #[error("cannot create the CA state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{key} does not belong to {cert}: the private key does not match the certificate")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path} is not a CA certificate (it lacks basicConstraints CA:true)")]
    NotCa { path: PathBuf },
    #[error(
        "{path} expired at {not_after:?}; replace it (a new root means re-issuing every certificate)"
    )]
    Expired {
        path: PathBuf,
        not_after: SystemTime,
    },
    #[error("{path} does not chain to a root in {root}: {reason}")]
    Chain {
        path: PathBuf,
        root: PathBuf,
        reason: String,
    },
    #[error(
        "{present} exists but {missing} does not: restore it, or remove both to create a new root (every workload certificate will then be re-issued)"
    )]
    HalfRoot { present: PathBuf, missing: PathBuf },
    #[error("generating the mesh root failed: {0}")]
    Generate(String),
}

/// A certificate as read from a file: its PEM text (to hand out) and DER (to check).
#[derive(Debug, Clone)]
pub(super) struct PemCert {
    pub(super) pem: String,
    pub(super) der: Vec<u8>,
}

/// What the CA signs with, checked and ready.
pub(super) struct CaMaterial {
    pub(super) signer: Issuer<'static, KeyPair>,
    /// When the signing certificate expires: no leaf may outlive it.
    pub(super) signer_not_after: SystemTime,
    /// Certificates between a leaf and the root, the signing certificate first.
    pub(super) intermediates: Vec<PemCert>,
    pub(super) roots: Vec<PemCert>,
}

/// Loads the root in `dir`, or creates and persists one when neither file exists.
pub(super) fn load_or_create(dir: &Path) -> Result<CaMaterial, CaLoadError> {
    let cert_path = dir.join(ROOT_CERT_FILE);
    let key_path = dir.join(ROOT_KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => load_self_signed(&cert_path, &key_path),
        (false, false) => create(dir, &cert_path, &key_path),
        (true, false) => Err(CaLoadError::HalfRoot {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(CaLoadError::HalfRoot {
            present: key_path,
            missing: cert_path,
        }),
    }
}

fn load_self_signed(cert_path: &Path, key_path: &Path) -> Result<CaMaterial, CaLoadError> {
    let root = single_cert(cert_path)?;
    let key = read_key(key_path)?;
    let signer_not_after = check_signer(&root, cert_path, &key, key_path)?;
    warn_if_readable_by_others(key_path);
    let signer = issuer(&root, key, cert_path)?;
    Ok(CaMaterial {
        signer,
        signer_not_after,
        intermediates: Vec::new(),
        roots: vec![root],
    })
}

fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<CaMaterial, CaLoadError> {
    std::fs::create_dir_all(dir).map_err(|source| CaLoadError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaLoadError::Generate(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ROOT_ORGANIZATION);
    name.push(DnType::CommonName, ROOT_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + ROOT_VALIDITY).into();
    params.serial_number = Some(super::random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaLoadError::Generate(e.to_string()))?;
    // The key goes first and owner-only: a crash in between leaves a half root, which the
    // next start reports instead of silently minting a different one.
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), "created a new mesh root CA");
    Ok(CaMaterial {
        signer: Issuer::new(params, key),
        signer_not_after: now + ROOT_VALIDITY,
        intermediates: Vec::new(),
        roots: vec![PemCert {
            pem: cert.pem(),
            der: cert.der().to_vec(),
        }],
    })
}

/// Loads `ca-cert.pem`, `ca-key.pem`, `root-cert.pem` and optionally `cert-chain.pem`.
pub(super) fn plugged_in(dir: &Path) -> Result<CaMaterial, CaLoadError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let root_path = dir.join(ROOT_CERT_FILE);
    let chain_path = dir.join(CERT_CHAIN_FILE);
    let ca_cert = single_cert(&cert_path)?;
    let key = read_key(&key_path)?;
    let roots = read_certs(&root_path)?;
    let signer_not_after = check_signer(&ca_cert, &cert_path, &key, &key_path)?;
    let extra = if chain_path.exists() {
        read_certs(&chain_path)?
    } else {
        Vec::new()
    };

    // Istio's cert-chain.pem usually repeats ca-cert.pem and the root; keep each
    // certificate once, the signing certificate first and no root among them.
    let is_root = |c: &PemCert| roots.iter().any(|r| r.der == c.der);
    let mut intermediates: Vec<PemCert> = Vec::new();
    for cert in std::iter::once(&ca_cert).chain(&extra) {
        if !is_root(cert) && !intermediates.iter().any(|c| c.der == cert.der) {
            intermediates.push(cert.clone());
        }
    }
    check_chain(&intermediates, &roots, &cert_path, &root_path)?;
    warn_if_readable_by_others(&key_path);
    let signer = issuer(&ca_cert, key, &cert_path)?;
    Ok(CaMaterial {
        signer,
        signer_not_after,
        intermediates,
        roots,
    })
}

/// Each certificate must be signed by the next, and the last by one of the roots.
fn check_chain(
    chain: &[PemCert],
    roots: &[PemCert],
    cert_path: &Path,
    root_path: &Path,
) -> Result<(), CaLoadError> {
    let chain_err = |reason: String| CaLoadError::Chain {
        path: cert_path.to_owned(),
        root: root_path.to_owned(),
        reason,
    };
    for pair in chain.windows(2) {
        let (child, parent) = (parse(&pair[0], cert_path)?, parse(&pair[1], cert_path)?);
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                chain_err(format!(
                    "{} is not signed by {} (is {CERT_CHAIN_FILE} in order, leaf side first?)",
                    child.subject(),
                    parent.subject()
                ))
            })?;
    }
    let Some(last) = chain.last() else {
        return Ok(()); // the signing certificate is itself a root
    };
    let last = parse(last, cert_path)?;
    let signed_by_root = roots.iter().any(|root| {
        parse(root, root_path)
            .map(|root| root.is_ca() && last.verify_signature(Some(root.public_key())).is_ok())
            .unwrap_or(false)
    });
    if signed_by_root {
        Ok(())
    } else {
        Err(chain_err(format!(
            "no CA certificate in {ROOT_CERT_FILE} signed {}",
            last.subject()
        )))
    }
}

/// Checks that `cert` is a current CA certificate whose public key is `key`'s; returns
/// its expiry.
fn check_signer(
    cert: &PemCert,
    cert_path: &Path,
    key: &KeyPair,
    key_path: &Path,
) -> Result<SystemTime, CaLoadError> {
    let parsed = parse(cert, cert_path)?;
    if !parsed.is_ca() {
        return Err(CaLoadError::NotCa {
            path: cert_path.to_owned(),
        });
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaLoadError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        });
    }
    let secs = parsed.validity().not_after.timestamp();
    let not_after = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    if not_after <= SystemTime::now() {
        return Err(CaLoadError::Expired {
            path: cert_path.to_owned(),
            not_after,
        });
    }
    Ok(not_after)
}

fn issuer(
    cert: &PemCert,
    key: KeyPair,
    cert_path: &Path,
) -> Result<Issuer<'static, KeyPair>, CaLoadError> {
    Issuer::from_ca_cert_der(&cert.der.clone().into(), key).map_err(|e| CaLoadError::Invalid {
        path: cert_path.to_owned(),
        reason: format!("unusable as an issuer: {e}"),
    })
}

fn parse<'a>(cert: &'a PemCert, path: &Path) -> Result<X509Certificate<'a>, CaLoadError> {
    x509_parser::parse_x509_certificate(&cert.der)
        .map(|(_, c)| c)
        .map_err(|e| CaLoadError::Invalid {
            path: path.to_owned(),
            reason: format!("not a valid X.509 certificate: {e}"),
        })
}

fn read_text(path: &Path) -> Result<String, CaLoadError> {
    std::fs::read_to_string(path).map_err(|source| CaLoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block in a PEM file, each checked to parse; at least one.
pub(super) fn read_certs(path: &Path) -> Result<Vec<PemCert>, CaLoadError> {
    let text = read_text(path)?;
    let invalid = |reason: String| CaLoadError::Invalid {
        path: path.to_owned(),
        reason,
    };
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..]
            .find(END)
            .map(|e| start + e + END.len())
            .ok_or_else(|| invalid(format!("certificate {} has no END line", certs.len() + 1)))?;
        let pem = format!("{}\n", &rest[start..end]);
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| invalid(format!("certificate {}: {e}", certs.len() + 1)))?;
        block
            .parse_x509()
            .map_err(|e| invalid(format!("certificate {} is not X.509: {e}", certs.len() + 1)))?;
        certs.push(PemCert {
            pem,
            der: block.contents,
        });
        rest = &rest[end..];
    }
    if certs.is_empty() {
        return Err(invalid("no PEM \"CERTIFICATE\" block found".into()));
    }
    Ok(certs)
}

fn single_cert(path: &Path) -> Result<PemCert, CaLoadError> {
    let mut certs = read_certs(path)?;
    if certs.len() != 1 {
        return Err(CaLoadError::Invalid {
            path: path.to_owned(),
            reason: format!("expected one certificate, found {}", certs.len()),
        });
    }
    Ok(certs.remove(0))
}

fn read_key(path: &Path) -> Result<KeyPair, CaLoadError> {
    let text = read_text(path)?;
    let invalid = |reason: String| CaLoadError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let label = text
        .lines()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| invalid("no PEM private key block found".into()))?;
    if label != "PRIVATE KEY" {
        return Err(invalid(format!(
            "holds a {label:?} block; the CA needs an unencrypted PKCS#8 key \
             (convert with: openssl pkcs8 -topk8 -nocrypt -in {0} -out {0}.pkcs8)",
            path.display()
        )));
    }
    KeyPair::from_pem(&text).map_err(|e| invalid(format!("unusable private key: {e}")))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaLoadError> {
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| CaLoadError::Write {
        path: path.to_owned(),
        source,
    })
}

fn warn_if_readable_by_others(key_path: &Path) {
    if let Ok(meta) = std::fs::metadata(key_path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %key_path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the CA private key is readable by other users; chmod 600 it"
        );
    }
}
