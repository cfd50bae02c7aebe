use hbone::testing::{IssueOptions, TestCa};
use rcgen::{BasicConstraints, IsCa, Issuer};

use super::request::{certificate_from_response, status_error};
use super::*;
use api::ca::IstioCertificateResponse;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use tonic::Status;

const ADDRESS: &str = "https://ca.test:15012";

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

/// A root, an intermediate and a leaf for `san` (all PEM), plus the leaf's key.
struct Chain {
    root: String,
    intermediate: String,
    leaf: String,
    key: String,
}

fn chain_for(san: &str) -> Chain {
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = ca("root").self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let intermediate = ca("intermediate")
        .signed_by(&int_key, &Issuer::new(ca("root"), root_key))
        .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
    let leaf = leaf
        .signed_by(&key, &Issuer::new(ca("intermediate"), int_key))
        .unwrap();
    Chain {
        root: root.pem(),
        intermediate: intermediate.pem(),
        leaf: leaf.pem(),
        key: key.serialize_pem(),
    }
}

const ECHO: &str = "spiffe://cluster.local/ns/default/sa/echo";

#[test]
fn the_last_chain_entry_or_root_cert_are_the_roots() {
    let c = chain_for(ECHO);
    let respond = |cert_chain: Vec<&String>, root_cert: Option<Vec<&String>>| {
        certificate_from_response(
            &id(ECHO),
            ADDRESS,
            IstioCertificateResponse {
                cert_chain: cert_chain.into_iter().cloned().collect(),
                root_cert: root_cert.map(|r| api::ca::Roots {
                    ca_cert: r.into_iter().cloned().collect(),
                }),
            },
            &c.key,
        )
    };
    let cert = respond(vec![&c.leaf, &c.intermediate, &c.root], None).unwrap();
    assert_eq!((cert.chain().len(), cert.roots().len()), (2, 1));
    assert_eq!(cert.identity(), &id(ECHO));

    let cert = respond(vec![&c.leaf, &c.intermediate], Some(vec![&c.root])).unwrap();
    assert_eq!((cert.chain().len(), cert.roots().len()), (2, 1));

    let err = respond(vec![&c.leaf], None).unwrap_err();
    assert!(matches!(err, CertError::CaBadResponse { .. }), "{err}");
    assert!(err.to_string().contains("1 entries"), "{err}");
}

#[test]
fn an_answer_for_another_identity_or_garbage_is_refused() {
    let other = chain_for("spiffe://cluster.local/ns/default/sa/other");
    let err = certificate_from_response(
        &id(ECHO),
        ADDRESS,
        IstioCertificateResponse {
            cert_chain: vec![other.leaf, other.root],
            root_cert: None,
        },
        &other.key,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CertError::CaBadResponse { .. }), "{text}");
    assert!(
        text.contains("sa/other") && text.contains(ADDRESS),
        "{text}"
    );

    let err = certificate_from_response(
        &id(ECHO),
        ADDRESS,
        IstioCertificateResponse {
            cert_chain: vec!["junk".into(), "more junk".into()],
            root_cert: None,
        },
        &other.key,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::CaBadResponse { .. }), "{err}");
}

#[test]
fn grpc_failures_map_to_what_to_check() {
    type Check = fn(&CertError) -> bool;
    let cases: &[(Status, Check, &str)] = &[
        (
            Status::unauthenticated("unknown bearer token"),
            |e| matches!(e, CertError::CaUnauthenticated { .. }),
            "node token file",
        ),
        (
            Status::permission_denied("node \"n1\" runs no pod"),
            |e| matches!(e, CertError::CaDenied { .. }),
            "scheduled on this node",
        ),
        (
            Status::unavailable("tcp connect error"),
            |e| matches!(e, CertError::CaUnreachable { .. }),
            "port 15012",
        ),
        (
            Status::invalid_argument("bad CSR"),
            |e| matches!(e, CertError::CaRejected { .. }),
            "InvalidArgument",
        ),
    ];
    for (status, check, hint) in cases {
        let err = status_error(&id(ECHO), ADDRESS, status);
        let text = err.to_string();
        assert!(check(&err), "{status:?}: {text}");
        assert!(text.contains(ECHO) && text.contains(ADDRESS), "{text}");
        assert!(
            text.contains(hint) && text.contains(status.message()),
            "{text}"
        );
    }
}

#[test]
fn renewal_is_at_half_life_even_for_backdated_short_certificates() {
    let ca = TestCa::new();
    let now = SystemTime::now();
    let short = ca.issue_with(
        &id(ECHO),
        IssueOptions {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(4),
        },
    );
    let at = renew_at(&short, now).duration_since(now).unwrap();
    assert!(
        at > Duration::from_millis(1500) && at <= Duration::from_secs(2),
        "{at:?}"
    );

    let day = ca.issue(&id(ECHO));
    let at = renew_at(&day, now).duration_since(now).unwrap();
    assert!(
        at > Duration::from_secs(11 * 3600) && at <= Duration::from_secs(12 * 3600),
        "{at:?}"
    );
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let config = CaClientConfig::default();
    let mut backoff = config.retry_initial;
    let mut seen = vec![backoff.as_secs()];
    for _ in 0..7 {
        backoff = next_backoff(backoff, config.retry_max);
        seen.push(backoff.as_secs());
    }
    assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
}

/// Every wait below is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn held_certificates_show_requests_in_flight_and_failures() {
    use crate::control_plane::{ControlPlaneConfig, DEFAULT_SERVER_NAME};
    // A "CA" that completes TCP handshakes (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("ztunnel-ca-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root.pem"), TestCa::new().root_pem()).unwrap();
    std::fs::write(dir.join("token"), "token").unwrap();
    let control_plane = ControlPlane::new(&ControlPlaneConfig {
        address: silent.local_addr().unwrap().to_string(),
        server_name: DEFAULT_SERVER_NAME.into(),
        root_cert: dir.join("root.pem"),
        token_file: dir.join("token"),
    })
    .unwrap();
    let config = CaClientConfig {
        request_timeout: Duration::from_millis(500),
        ..CaClientConfig::default()
    };
    let client = Arc::new(CaClient::new(control_plane, config));
    let echo = id(ECHO);
    assert!(client.certificates().is_empty());

    let call = tokio::spawn({
        let (client, echo) = (client.clone(), echo.clone());
        async move { client.certificate(&echo).await }
    });
    tokio::time::timeout(BOUND, async {
        while client.certificates().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request shows up");
    let pending = client.certificates();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].identity, echo);
    assert_eq!(pending[0].state, CertificateState::Pending);

    let err = tokio::time::timeout(BOUND, call)
        .await
        .expect("the request times out")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CertError::CaUnreachable { .. }), "{err}");
    let failed = client.certificates();
    assert_eq!(failed.len(), 1, "{failed:?}");
    match &failed[0].state {
        CertificateState::Failed { error, .. } => {
            assert_eq!(error, &err.to_string());
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(client.identities().is_empty(), "a failure is not cached");
    client.forget(&echo);
    assert!(
        client.certificates().is_empty(),
        "forgotten with the identity"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
