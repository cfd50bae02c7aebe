//! One `CreateCertificate` round trip: a fresh key and CSR out, a checked
//! [`WorkloadCertificate`] (or an operator-readable [`CertError`]) back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use api::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use api::ca::{IstioCertificateRequest, IstioCertificateResponse};
use api::prost_types::{Struct, Value, value::Kind};
use hbone::Identity;
use hbone::tls::WorkloadCertificate;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use tonic::{Code, Status};

use super::{CaClientConfig, IMPERSONATED_IDENTITY};
use crate::cert::CertError;
use crate::control_plane::ControlPlane;

/// One CreateCertificate round trip with a fresh P-256 key.
pub(super) async fn fetch(
    control_plane: &ControlPlane,
    config: &CaClientConfig,
    identity: &Identity,
) -> Result<Arc<WorkloadCertificate>, CertError> {
    let address = control_plane.address();
    let csr_error = |e: rcgen::Error| CertError::Csr {
        identity: identity.clone(),
        reason: e.to_string(),
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(csr_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        identity.to_string().try_into().map_err(csr_error)?,
    )];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(csr_error)?;
    let metadata = Struct {
        fields: BTreeMap::from([(
            IMPERSONATED_IDENTITY.to_owned(),
            Value {
                kind: Some(Kind::StringValue(identity.to_string())),
            },
        )]),
    };
    let request = IstioCertificateRequest {
        csr,
        validity_duration: config.ttl.as_secs().try_into().unwrap_or(i64::MAX),
        metadata: Some(metadata),
    };
    let request = control_plane
        .request(request)
        .map_err(|status| status_error(identity, address, &status))?;
    let mut client = IstioCertificateServiceClient::new(control_plane.channel());
    let timeout = config.request_timeout;
    let response = tokio::time::timeout(timeout, client.create_certificate(request))
        .await
        .map_err(|_| CertError::CaUnreachable {
            identity: identity.clone(),
            address: address.to_owned(),
            reason: format!("no answer within {timeout:?}"),
        })?
        .map_err(|status| status_error(identity, address, &status))?;
    certificate_from_response(
        identity,
        address,
        response.into_inner(),
        &key.serialize_pem(),
    )
}

/// Maps a gRPC failure to what an operator should check; the one place CA errors are
/// classified.
pub(super) fn status_error(identity: &Identity, address: &str, status: &Status) -> CertError {
    let (identity, address) = (identity.clone(), address.to_owned());
    let mut reason = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        reason = format!("{reason}: {err}");
        source = err.source();
    }
    match status.code() {
        Code::Unauthenticated => CertError::CaUnauthenticated {
            identity,
            address,
            reason,
        },
        Code::PermissionDenied => CertError::CaDenied {
            identity,
            address,
            reason,
        },
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            CertError::CaUnreachable {
                identity,
                address,
                reason,
            }
        }
        code => CertError::CaRejected {
            identity,
            address,
            code: format!("{code:?}"),
            reason,
        },
    }
}

/// Builds the certificate from istiod's answer: `cert_chain` is leaf first; the roots are
/// `root_cert` when set, else the last `cert_chain` entry.
pub(super) fn certificate_from_response(
    identity: &Identity,
    address: &str,
    response: IstioCertificateResponse,
    key_pem: &str,
) -> Result<Arc<WorkloadCertificate>, CertError> {
    let bad = |reason: String| CertError::CaBadResponse {
        identity: identity.clone(),
        address: address.to_owned(),
        reason,
    };
    let mut chain = response.cert_chain;
    let roots = match response.root_cert {
        Some(roots) if !roots.ca_cert.is_empty() => roots.ca_cert,
        _ if chain.len() >= 2 => chain.split_off(chain.len() - 1),
        _ => {
            return Err(bad(format!(
                "expected the leaf and the root in cert_chain, got {} entries",
                chain.len()
            )));
        }
    };
    let pem = |parts: &[String]| parts.iter().fold(String::new(), |acc, p| acc + p + "\n");
    let cert = WorkloadCertificate::from_pem(
        pem(&chain).as_bytes(),
        key_pem.as_bytes(),
        pem(&roots).as_bytes(),
    )
    .map_err(|e| bad(e.to_string()))?;
    if cert.identity() != identity {
        return Err(bad(format!("the certificate is for {}", cert.identity())));
    }
    if cert.is_expired(SystemTime::now()) {
        return Err(bad(
            "the certificate has already expired (clock skew?)".into()
        ));
    }
    Ok(Arc::new(cert))
}
