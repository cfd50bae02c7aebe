use std::collections::BTreeMap;

use api::prost_types::{Struct, Value};
use tonic::Code;

use super::*;
use crate::ca::tests::{TempDir, csr_for, ders};

const TOKEN_0: &str = "token-for-node-0-aaaa";
const TOKEN_1: &str = "token-for-node-1-bbbb";
const ECHO: &str = "spiffe://cluster.local/ns/default/sa/echo";
const DB: &str = "spiffe://cluster.local/ns/data/sa/db";

fn service(name: &str) -> (CaService, TempDir) {
    let dir = TempDir::new(name);
    let ca = Arc::new(MeshCa::load_or_create(&dir.0).unwrap());
    let tokens = NodeTokens::from_pairs([
        ("node-0".to_owned(), TOKEN_0.to_owned()),
        ("node-1".to_owned(), TOKEN_1.to_owned()),
    ])
    .unwrap();
    let authorizer = StaticAuthorizer::new()
        .allow("node-0", ECHO.parse().unwrap())
        .allow("node-1", DB.parse().unwrap());
    (CaService::new(ca, tokens, Arc::new(authorizer)), dir)
}

fn bearer(token: &str) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("authorization", format!("Bearer {token}").parse().unwrap());
    m
}

fn request(csr: String, impersonated: Option<Kind>) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr,
        validity_duration: 0,
        metadata: impersonated.map(|kind| Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_owned(),
                Value { kind: Some(kind) },
            )]),
        }),
    }
}

#[tokio::test]
async fn a_node_gets_its_own_pods_identity_leaf_first_root_last() {
    let (svc, _dir) = service("svc-ok");
    let req = request(csr_for(ECHO), Some(Kind::StringValue(ECHO.into())));
    let issued = svc.create(&bearer(TOKEN_0), &req).await.unwrap();
    assert_eq!(issued.identity.to_string(), ECHO);
    assert_eq!(issued.cert_chain.len(), 2);
    assert_eq!(issued.cert_chain[1], svc.ca.root_pem());
    let leaf = ders(&issued.cert_chain[0]).remove(0);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(
        lifetime,
        24 * 3600 + 60,
        "default TTL plus the skew backdating"
    );
}

#[tokio::test]
async fn refusals_carry_the_right_code_and_say_why() {
    let (svc, _dir) = service("svc-refusals");
    let mut negative = request(csr_for(ECHO), None);
    negative.validity_duration = -5;
    let cases: Vec<(&str, MetadataMap, IstioCertificateRequest, Code, Vec<&str>)> = vec![
        (
            "no token",
            MetadataMap::new(),
            request(csr_for(ECHO), None),
            Code::Unauthenticated,
            vec!["missing authorization"],
        ),
        (
            "unknown token",
            bearer("not-a-known-token-at-all"),
            request(csr_for(ECHO), None),
            Code::Unauthenticated,
            vec!["unknown bearer token"],
        ),
        (
            "another node's pod",
            bearer(TOKEN_0),
            request(csr_for(DB), None),
            Code::PermissionDenied,
            vec!["node-0", DB],
        ),
        (
            "malformed CSR",
            bearer(TOKEN_0),
            request(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
                None,
            ),
            Code::InvalidArgument,
            vec!["PKCS#10"],
        ),
        (
            "foreign trust domain",
            bearer(TOKEN_0),
            request(csr_for("spiffe://other.domain/ns/default/sa/echo"), None),
            Code::InvalidArgument,
            vec!["trust domain"],
        ),
        (
            "impersonation mismatch",
            bearer(TOKEN_1),
            request(csr_for(DB), Some(Kind::StringValue(ECHO.into()))),
            Code::InvalidArgument,
            vec![IMPERSONATED_IDENTITY, ECHO, DB],
        ),
        (
            "impersonation not a string",
            bearer(TOKEN_0),
            request(csr_for(ECHO), Some(Kind::BoolValue(true))),
            Code::InvalidArgument,
            vec!["must be a string"],
        ),
        (
            "negative TTL",
            bearer(TOKEN_0),
            negative,
            Code::InvalidArgument,
            vec!["-5"],
        ),
    ];
    for (name, metadata, req, code, words) in cases {
        let status = svc.create(&metadata, &req).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        for word in words {
            assert!(
                status.message().contains(word),
                "{name}: {:?}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn the_grpc_method_answers_with_the_chain() {
    let (svc, _dir) = service("svc-grpc");
    let mut req = tonic::Request::new(request(csr_for(DB), None));
    *req.metadata_mut() = bearer(TOKEN_1);
    let response = svc.create_certificate(req).await.unwrap().into_inner();
    assert_eq!(response.cert_chain.len(), 2);
    assert!(response.root_cert.is_none());
    assert_eq!(response.cert_chain[1], svc.ca.root_pem());
}
