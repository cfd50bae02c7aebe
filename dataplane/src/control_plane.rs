//! How ztunnel reaches the controller: one gRPC channel to its port 15012, over TLS that
//! trusts only the mesh root, shared by the xDS stream and certificate requests. Every
//! call carries the node's bearer token, read from its file on each call so a rotated
//! token is picked up without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The name the controller's serving certificate carries (as istiod's does).
pub const DEFAULT_SERVER_NAME: &str = "istiod.istio-system.svc";

/// Where the controller is and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneConfig {
    /// `https://HOST:PORT` (a bare `HOST:PORT` means https).
    pub address: String,
    /// The name checked against the controller's certificate.
    pub server_name: String,
    /// PEM file with the mesh root certificate(s).
    pub root_cert: PathBuf,
    /// File holding this node's bearer token.
    pub token_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("controller address {address:?} is not a valid URI: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot read the mesh root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup for the controller failed: {0}")]
    Tls(String),
}

/// A lazily connected channel plus the token that authorizes calls on it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    channel: Channel,
    token_file: Arc<PathBuf>,
    address: Arc<str>,
}

impl ControlPlane {
    /// Builds the channel; nothing connects until the first call, and a broken connection
    /// is re-established on the next one.
    pub fn new(config: &ControlPlaneConfig) -> Result<Self, ControlPlaneError> {
        let address = if config.address.contains("://") {
            config.address.clone()
        } else {
            format!("https://{}", config.address)
        };
        let root = std::fs::read(&config.root_cert).map_err(|source| ControlPlaneError::Root {
            path: config.root_cert.clone(),
            source,
        })?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root))
            .domain_name(config.server_name.clone());
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| ControlPlaneError::Address {
                address: address.clone(),
                reason: e.to_string(),
            })?
            .tls_config(tls)
            .map_err(|e| ControlPlaneError::Tls(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(ControlPlane {
            channel: endpoint.connect_lazy(),
            token_file: Arc::new(config.token_file.clone()),
            address: address.into(),
        })
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The controller's address, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Wraps `message` in a request carrying `authorization: Bearer <token>`.
    #[allow(clippy::result_large_err)] // tonic::Status is what every caller returns anyway
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, tonic::Status> {
        let token = std::fs::read_to_string(&*self.token_file).map_err(|e| {
            tonic::Status::unauthenticated(format!(
                "cannot read the node token {}: {e}",
                self.token_file.display()
            ))
        })?;
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            tonic::Status::unauthenticated(format!(
                "the node token in {} is not a valid header value",
                self.token_file.display()
            ))
        })?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_carry_the_current_token_and_errors_name_files() {
        let dir = std::env::temp_dir().join(format!("ztunnel-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root.pem");
        std::fs::write(&root, hbone::testing::TestCa::new().root_pem()).unwrap();
        let token = dir.join("token");
        let config = ControlPlaneConfig {
            address: "127.0.0.1:15012".into(),
            server_name: DEFAULT_SERVER_NAME.into(),
            root_cert: root,
            token_file: token.clone(),
        };
        let cp = ControlPlane::new(&config).unwrap();
        assert_eq!(cp.address(), "https://127.0.0.1:15012");
        let err = cp.request(()).unwrap_err();
        assert!(err.message().contains("token"), "{err:?}");
        std::fs::write(&token, "first-token\n").unwrap();
        let req = cp.request(()).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer first-token"
        );
        std::fs::write(&token, "rotated").unwrap();
        let req = cp.request(()).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer rotated"
        );

        let missing = ControlPlaneConfig {
            root_cert: dir.join("nope.pem"),
            ..config
        };
        let err = ControlPlane::new(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
