//! Istio's `IstioCertificateService/CreateCertificate` over the mesh CA.
//!
//! A caller is a node (its bearer token names it, see [`crate::auth`]) and may only get
//! identities of pods scheduled on that node: a compromised node then cannot impersonate
//! workloads elsewhere. Who runs where is the controller's knowledge, asked through
//! [`IdentityAuthorizer`].
//!
//! A pod's certificate is asked for as soon as the node learns of the pod, which can be a
//! moment before the controller has published the change that puts the pod on that node.
//! So a refusal on placement is only final after [`PLACEMENT_PATIENCE`]: until then the
//! request waits for the next publication.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use api::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use api::ca::{IstioCertificateRequest, IstioCertificateResponse};
use api::prost_types::value::Kind;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{IssuedCertificate, MeshCa, SignError, SpiffeId, display_time};
use crate::auth::NodeTokens;

#[cfg(test)]
mod tests;

/// The request metadata key upstream ztunnel sets to the identity it asks for on a pod's
/// behalf.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// How long a certificate request for an identity not (yet) placed on the caller's node
/// waits for the controller's view to catch up before it is refused.
pub const PLACEMENT_PATIENCE: Duration = Duration::from_secs(2);

/// Decides whether a node may hold an identity; the controller answers from its store
/// (service accounts of the pods scheduled on the node).
pub trait IdentityAuthorizer: Send + Sync + 'static {
    /// The answer now.
    fn node_may_sign(&self, node: &str, identity: &SpiffeId) -> bool;

    /// The answer once it is yes, or after `patience` if it stays no. The default asks
    /// once: a fixed table never changes its mind.
    fn node_may_sign_within<'a>(
        &'a self,
        node: &'a str,
        identity: &'a SpiffeId,
        patience: Duration,
    ) -> BoxFuture<'a, bool> {
        let _ = patience;
        Box::pin(std::future::ready(self.node_may_sign(node, identity)))
    }
}

/// A fixed node → identities table, for tests and static setups.
#[derive(Debug, Clone, Default)]
pub struct StaticAuthorizer {
    by_node: BTreeMap<String, BTreeSet<SpiffeId>>,
}

impl StaticAuthorizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `node` obtain `identity`.
    pub fn allow(mut self, node: &str, identity: SpiffeId) -> Self {
        self.by_node
            .entry(node.to_owned())
            .or_default()
            .insert(identity);
        self
    }
}

impl IdentityAuthorizer for StaticAuthorizer {
    fn node_may_sign(&self, node: &str, identity: &SpiffeId) -> bool {
        self.by_node
            .get(node)
            .is_some_and(|ids| ids.contains(identity))
    }
}

/// The gRPC service. Build it with [`CaService::new`] and add [`CaService::into_server`]
/// to a `tonic::transport::Server`.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<MeshCa>,
    tokens: NodeTokens,
    authorizer: Arc<dyn IdentityAuthorizer>,
    patience: Duration,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl CaService {
    pub fn new(
        ca: Arc<MeshCa>,
        tokens: NodeTokens,
        authorizer: Arc<dyn IdentityAuthorizer>,
    ) -> Self {
        CaService {
            ca,
            tokens,
            authorizer,
            patience: PLACEMENT_PATIENCE,
        }
    }

    /// How long a request for an identity not placed on the caller's node waits for the
    /// controller's view to change (default [`PLACEMENT_PATIENCE`]).
    pub fn with_placement_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The tonic service, ready for `Server::builder().add_service(..)`.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }

    /// Authenticates, checks and signs one request; every refusal is logged here.
    #[allow(clippy::result_large_err)] // tonic::Status is the gRPC answer itself
    pub async fn create(
        &self,
        metadata: &MetadataMap,
        request: &IstioCertificateRequest,
    ) -> Result<IssuedCertificate, Status> {
        let node = self.tokens.authenticate(metadata).inspect_err(|status| {
            tracing::warn!(
                reason = status.message(),
                "certificate request refused: not authenticated"
            );
        })?;
        let refuse = |status: Status, identity: Option<&SpiffeId>| {
            tracing::warn!(
                node,
                identity = identity.map(|i| i.to_string()),
                code = ?status.code(),
                reason = status.message(),
                "certificate request refused"
            );
            status
        };

        let csr = self
            .ca
            .parse_csr(&request.csr)
            .map_err(|e| refuse(Status::invalid_argument(e.to_string()), None))?;
        let identity = csr.identity();
        if let Some(impersonated) = impersonated_identity(request)
            .map_err(|e| refuse(Status::invalid_argument(e), Some(identity)))?
            && impersonated != identity.to_string()
        {
            return Err(refuse(
                Status::invalid_argument(format!(
                    "metadata {IMPERSONATED_IDENTITY} {impersonated:?} differs from the CSR's SPIFFE ID {identity}"
                )),
                Some(identity),
            ));
        }
        let ttl = self
            .ca
            .workload_ttl(request.validity_duration)
            .map_err(|e| refuse(Status::invalid_argument(e.to_string()), Some(identity)))?;
        if !self
            .authorizer
            .node_may_sign_within(&node, identity, self.patience)
            .await
        {
            return Err(refuse(
                Status::permission_denied(format!(
                    "node {node:?} runs no pod with identity {identity}; a node may only get certificates for its own pods' service accounts"
                )),
                Some(identity),
            ));
        }
        let issued = self.ca.sign(&csr, ttl).map_err(|e| {
            let status = match e {
                SignError::NegativeTtl(_) | SignError::BadName { .. } => {
                    Status::invalid_argument(e.to_string())
                }
                SignError::Signing(_) => Status::internal(e.to_string()),
            };
            refuse(status, Some(identity))
        })?;
        tracing::info!(
            node,
            identity = %issued.identity,
            not_after = display_time(issued.not_after),
            serial = issued.serial,
            "issued workload certificate"
        );
        Ok(issued)
    }
}

/// The `ImpersonatedIdentity` metadata string, if the caller sent one.
fn impersonated_identity(request: &IstioCertificateRequest) -> Result<Option<String>, String> {
    let Some(value) = request
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(Kind::StringValue(s)) => Ok(Some(s.clone())),
        other => Err(format!(
            "metadata {IMPERSONATED_IDENTITY} must be a string, got {other:?}"
        )),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let issued = self.create(request.metadata(), request.get_ref()).await?;
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: issued.cert_chain,
            root_cert: None,
        }))
    }
}
