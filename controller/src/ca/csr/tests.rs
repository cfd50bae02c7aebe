use rcgen::SanType;

use super::*;
use crate::ca::MeshCa;
use crate::ca::tests::{TempDir, csr_for, csr_with, uri};

const ID: &str = "spiffe://cluster.local/ns/default/sa/echo";

#[test]
fn csrs_asking_for_anything_but_one_local_spiffe_id_are_refused() {
    let ca = MeshCa::load_or_create(&TempDir::new("csr").0).unwrap();
    type Check = fn(&CsrError) -> bool;
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "wrong trust domain",
            csr_for("spiffe://evil.local/ns/default/sa/echo"),
            |e| matches!(e, CsrError::ForeignTrustDomain { .. }),
        ),
        (
            "two SANs",
            csr_with(
                vec![
                    uri(ID),
                    uri("spiffe://cluster.local/ns/kube-system/sa/admin"),
                ],
                |_| {},
            ),
            |e| matches!(e, CsrError::SanCount { count: 2, .. }),
        ),
        (
            "extra DNS SAN",
            csr_with(
                vec![
                    uri(ID),
                    SanType::DnsName("kubernetes.default".try_into().unwrap()),
                ],
                |_| {},
            ),
            |e| matches!(e, CsrError::SanCount { count: 2, .. }),
        ),
        ("no SAN", csr_with(vec![], |_| {}), |e| {
            matches!(e, CsrError::SanCount { count: 0, .. })
        }),
        (
            "DNS only",
            csr_with(
                vec![SanType::DnsName("echo.default".try_into().unwrap())],
                |_| {},
            ),
            |e| matches!(e, CsrError::NotSpiffe(_)),
        ),
        (
            "https URI",
            csr_for("https://cluster.local/ns/default/sa/echo"),
            |e| matches!(e, CsrError::NotSpiffe(_)),
        ),
        (
            "bad path",
            csr_for("spiffe://cluster.local/default/echo"),
            |e| matches!(e, CsrError::Identity(_)),
        ),
        ("tampered", tamper(&csr_for(ID)), |e| {
            matches!(e, CsrError::Signature)
        }),
        ("not PEM", "hello".into(), |e| matches!(e, CsrError::Pem(_))),
    ];
    for (name, pem, check) in cases {
        let err = ca.parse_csr(&pem).unwrap_err();
        assert!(check(&err), "{name}: unexpected {err:?}");
    }
    // The untampered original is accepted, so the refusal above is the tampering's.
    assert_eq!(
        ca.parse_csr(&csr_for(ID)).unwrap().identity().to_string(),
        ID
    );
}

/// Rewrites the SPIFFE ID inside a signed CSR without re-signing it.
fn tamper(pem: &str) -> String {
    let mut der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let at = der.windows(4).position(|w| w == b"echo").unwrap();
    der[at..at + 4].copy_from_slice(b"evil");
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64(&der)
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
