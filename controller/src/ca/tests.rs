use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

/// A scratch directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("controller-ca-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PEM CSR with the given SANs, signed by a fresh P-256 key.
pub(crate) fn csr_with(sans: Vec<SanType>, tweak: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    tweak(&mut params);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

pub(crate) fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

pub(crate) fn csr_for(id: &str) -> String {
    csr_with(vec![uri(id)], |_| {})
}

pub(crate) fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn roots(ca: &MeshCa) -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for der in ders(&ca.root_pem()) {
        store.add(der).unwrap();
    }
    Arc::new(store)
}

/// Verifies a leaf + intermediates as a TLS client certificate, as a peer proxy would.
fn verify_as_client(ca: &MeshCa, chain: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca), provider)
        .build()
        .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
}

const ID: &str = "spiffe://cluster.local/ns/default/sa/echo";

#[test]
fn a_root_is_created_once_then_reloaded_identically() {
    let dir = TempDir::new("root");
    let ca = MeshCa::load_or_create(&dir.0).unwrap();
    let key_mode = std::fs::metadata(dir.0.join(root::ROOT_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let root = parse(&ders(&ca.root_pem())[0]).subject().to_string();
    assert!(root.contains("ambient mesh"), "{root}");
    assert!(ca.intermediates_pem().is_empty());

    let again = MeshCa::load_or_create(&dir.0).unwrap();
    assert_eq!(again.root_pem(), ca.root_pem());
    // The reloaded key signs certificates the original root verifies.
    let issued = again
        .sign(
            &again.parse_csr(&csr_for(ID)).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
    let chain: Vec<_> = issued.cert_chain[..1]
        .iter()
        .flat_map(|p| ders(p))
        .collect();
    verify_as_client(&ca, &chain).unwrap();
}

#[test]
fn half_a_root_or_a_broken_root_file_is_named() {
    let dir = TempDir::new("half");
    MeshCa::load_or_create(&dir.0).unwrap();
    std::fs::remove_file(dir.0.join(root::ROOT_KEY_FILE)).unwrap();
    let err = MeshCa::load_or_create(&dir.0).unwrap_err();
    assert!(matches!(err, CaLoadError::HalfRoot { .. }), "{err}");
    assert!(err.to_string().contains("root-key.pem"), "{err}");

    std::fs::write(dir.0.join(root::ROOT_KEY_FILE), "not a key").unwrap();
    let err = MeshCa::load_or_create(&dir.0).unwrap_err().to_string();
    assert!(
        err.contains("root-key.pem") && err.contains("no PEM"),
        "{err}"
    );
}

/// Writes an Istio `cacerts` directory: root → intermediate (the signing CA).
fn plugged_in_dir(name: &str) -> (TempDir, KeyPair, String) {
    let dir = TempDir::new(name);
    std::fs::create_dir_all(&dir.0).unwrap();
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("plugged root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca_params("plugged root"), root_key);
    let key = KeyPair::generate().unwrap();
    let intermediate = ca_params("plugged intermediate")
        .signed_by(&key, &root_issuer)
        .unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.0.join(name), text).unwrap();
    write(root::CA_CERT_FILE, &intermediate.pem());
    write(root::CA_KEY_FILE, &key.serialize_pem());
    write(root::ROOT_CERT_FILE, &root.pem());
    // Istio's cert-chain.pem repeats the signing certificate and the root.
    write(
        root::CERT_CHAIN_FILE,
        &format!("{}{}", intermediate.pem(), root.pem()),
    );
    (dir, key, root.pem())
}

#[test]
fn a_plugged_in_ca_signs_chains_that_verify_to_its_root() {
    let (dir, _, root_pem) = plugged_in_dir("plugged");
    let ca = MeshCa::from_plugged_in(&dir.0).unwrap();
    assert_eq!(ca.root_pem(), root_pem);
    assert_eq!(ca.intermediates_pem().len(), 1, "the chain is deduplicated");

    let issued = ca
        .sign(
            &ca.parse_csr(&csr_for(ID)).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
    // Leaf first, then the intermediate, the root last.
    assert_eq!(issued.cert_chain.len(), 3);
    assert_eq!(issued.cert_chain[1], ca.intermediates_pem()[0]);
    assert_eq!(issued.cert_chain[2], root_pem);
    let chain: Vec<_> = issued.cert_chain[..2]
        .iter()
        .flat_map(|p| ders(p))
        .collect();
    verify_as_client(&ca, &chain).unwrap();
    // Without the intermediate the leaf does not verify: the chain is needed.
    assert!(verify_as_client(&ca, &chain[..1]).is_err());
}

#[test]
fn broken_plugged_in_files_are_named_with_the_problem() {
    type Break = fn(&Path, &KeyPair);
    let cases: &[(&str, Break, &str)] = &[
        (
            "missing key",
            |d, _| std::fs::remove_file(d.join("ca-key.pem")).unwrap(),
            "ca-key.pem",
        ),
        (
            "cert not PEM",
            |d, _| std::fs::write(d.join("ca-cert.pem"), "junk").unwrap(),
            "ca-cert.pem: no PEM",
        ),
        (
            "other key",
            |d, _| {
                std::fs::write(
                    d.join("ca-key.pem"),
                    KeyPair::generate().unwrap().serialize_pem(),
                )
                .unwrap()
            },
            "ca-key.pem does not belong to",
        ),
        (
            "SEC1 key",
            |d, _| {
                std::fs::write(
                    d.join("ca-key.pem"),
                    "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
                )
                .unwrap()
            },
            "openssl pkcs8",
        ),
        (
            "not a CA",
            |d, key| {
                let leaf = CertificateParams::default().self_signed(key).unwrap();
                std::fs::write(d.join("ca-cert.pem"), leaf.pem()).unwrap();
            },
            "ca-cert.pem is not a CA certificate",
        ),
        (
            "foreign root",
            |d, _| {
                let mut p = CertificateParams::default();
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                let other = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
                std::fs::write(d.join("root-cert.pem"), other.pem()).unwrap();
                std::fs::remove_file(d.join("cert-chain.pem")).unwrap();
            },
            "does not chain to a root in",
        ),
    ];
    for (name, breaks, expected) in cases {
        let (dir, key, _) = plugged_in_dir(&name.replace(' ', "-"));
        breaks(&dir.0, &key);
        let err = MeshCa::from_plugged_in(&dir.0).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn issued_leaves_carry_only_the_spiffe_id_whatever_the_csr_asks() {
    let ca = MeshCa::load_or_create(&TempDir::new("leaf").0).unwrap();
    let pem = csr_with(vec![uri(ID)], |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p.distinguished_name
            .push(DnType::CommonName, "root of all evil");
    });
    let issued = ca
        .sign(&ca.parse_csr(&pem).unwrap(), Duration::from_secs(600))
        .unwrap();
    assert_eq!(issued.identity.to_string(), ID);
    assert_eq!(issued.cert_chain.len(), 2);
    assert_eq!(issued.cert_chain[1], ca.root_pem());
    let der = &ders(&issued.cert_chain[0])[0];
    let leaf = parse(der);
    assert!(!leaf.is_ca());
    assert_eq!(
        leaf.subject().iter_attributes().count(),
        0,
        "subject ignored"
    );
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "an empty subject requires a critical SAN");
    assert_eq!(san.value.general_names.len(), 1);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let v = leaf.validity();
    let lifetime = v.not_after.timestamp() - v.not_before.timestamp();
    assert!(
        (659..=661).contains(&lifetime),
        "backdated a minute: {lifetime}"
    );
}

#[test]
fn ttl_defaults_is_capped_and_refuses_negative() {
    let ca = MeshCa::load_or_create(&TempDir::new("ttl").0)
        .unwrap()
        .with_policy(SigningPolicy {
            max_ttl: Duration::from_secs(48 * 3600),
            ..SigningPolicy::default()
        });
    assert_eq!(ca.workload_ttl(0).unwrap(), DEFAULT_WORKLOAD_TTL);
    assert_eq!(ca.workload_ttl(60).unwrap(), Duration::from_secs(60));
    assert_eq!(
        ca.workload_ttl(365 * 86400).unwrap(),
        Duration::from_secs(48 * 3600)
    );
    assert_eq!(ca.workload_ttl(-1).unwrap_err(), SignError::NegativeTtl(-1));
    assert_eq!(
        SigningPolicy::default().max_ttl,
        Duration::from_secs(90 * 86400)
    );

    let issued = ca
        .sign(
            &ca.parse_csr(&csr_for(ID)).unwrap(),
            ca.workload_ttl(365 * 86400).unwrap(),
        )
        .unwrap();
    let expected = SystemTime::now() + Duration::from_secs(48 * 3600);
    let off = expected
        .duration_since(issued.not_after)
        .unwrap_or_default();
    assert!(
        off < Duration::from_secs(5),
        "not_after {:?}",
        issued.not_after
    );
}

#[test]
fn the_serving_certificate_verifies_against_the_root_for_its_names_only() {
    let (dir, _, _) = plugged_in_dir("serving");
    for ca in [
        MeshCa::load_or_create(&TempDir::new("serving-root").0).unwrap(),
        MeshCa::from_plugged_in(&dir.0).unwrap(),
    ] {
        let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        let serving = ca
            .serving_certificate(&[DEFAULT_SERVING_NAME], &[ip])
            .unwrap();
        let chain = ders(&serving.cert_chain_pem);
        assert_eq!(chain.len(), 1 + ca.intermediates_pem().len());
        assert!(KeyPair::from_pem(&serving.key_pem).is_ok());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&ca), provider)
                .build()
                .unwrap();
        let verify = |name: &str| {
            verifier.verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        verify(DEFAULT_SERVING_NAME).unwrap();
        verify("10.0.0.7").unwrap();
        assert!(verify("attacker.example").is_err());
    }
}
