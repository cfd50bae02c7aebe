//! Who is calling: every node's proxies present a bearer token (`authorization: Bearer
//! TOKEN`) on both the xDS stream and certificate requests, and the token names the node.
//! The CA uses the node to decide which identities it may sign for.
//!
//! The token file is YAML (or JSON), one entry per node:
//!
//! ```yaml
//! node-0: 6f1c0d9e...   # at least 16 characters
//! node-1: 0b7a44f2...
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path}: not a map of node name to token: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("token file {path}: node {node:?}: {message}")]
    Invalid {
        path: PathBuf,
        node: String,
        message: String,
    },
}

/// The nodes allowed to call, by token. Tokens are kept only as SHA-256 digests and looked
/// up by digest, so a lookup does not compare secrets byte by byte.
#[derive(Clone, Default)]
pub struct NodeTokens {
    by_digest: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut nodes: Vec<&String> = self.by_digest.values().collect();
        nodes.sort();
        f.debug_struct("NodeTokens").field("nodes", &nodes).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl NodeTokens {
    /// Reads a token file (see the module docs).
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let map: BTreeMap<String, String> =
            serde_yaml_ng::from_str(&text).map_err(|source| TokenFileError::Parse {
                path: path.to_owned(),
                source,
            })?;
        Self::from_pairs(map).map_err(|(node, message)| TokenFileError::Invalid {
            path: path.to_owned(),
            node,
            message,
        })
    }

    /// Builds the table from `(node, token)` pairs; the error names the node at fault.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, (String, String)> {
        let mut by_digest = HashMap::new();
        for (node, token) in pairs {
            let token = token.trim();
            if node.is_empty() {
                return Err((node, "the node name is empty".into()));
            }
            if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace()) {
                return Err((
                    node,
                    format!("the token must be at least {MIN_TOKEN_LEN} characters without spaces"),
                ));
            }
            if let Some(other) = by_digest.insert(digest(token), node.clone()) {
                return Err((node, format!("shares its token with node {other:?}")));
            }
        }
        Ok(NodeTokens { by_digest })
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The node whose token the request carries, or `UNAUTHENTICATED` saying what is
    /// missing.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization is not a Bearer token"))?;
        self.by_digest
            .get(&digest(token.trim()))
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn tokens() -> NodeTokens {
        NodeTokens::from_pairs([
            ("node-0".to_owned(), "aaaaaaaaaaaaaaaa0".to_owned()),
            ("node-1".to_owned(), "bbbbbbbbbbbbbbbb1".to_owned()),
        ])
        .unwrap()
    }

    #[test]
    fn a_token_names_its_node() {
        let t = tokens();
        assert_eq!(
            t.authenticate(&with_header("Bearer bbbbbbbbbbbbbbbb1"))
                .unwrap(),
            "node-1"
        );
        assert_eq!(
            t.authenticate(&with_header("Bearer aaaaaaaaaaaaaaaa0"))
                .unwrap(),
            "node-0"
        );
    }

    #[test]
    fn missing_wrong_and_unknown_tokens_are_unauthenticated() {
        let t = tokens();
        for (metadata, why) in [
            (MetadataMap::new(), "missing"),
            (with_header("Basic Zm9vOmJhcg=="), "not a Bearer"),
            (with_header("Bearer aaaaaaaaaaaaaaaa1"), "unknown"),
        ] {
            let err = t.authenticate(&metadata).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(err.message().contains(why), "{err:?}");
        }
    }

    #[test]
    fn weak_or_shared_tokens_are_refused_naming_the_node() {
        let short = NodeTokens::from_pairs([("node-0".to_owned(), "short".to_owned())]);
        assert_eq!(short.unwrap_err().0, "node-0");
        let shared = NodeTokens::from_pairs([
            ("node-0".to_owned(), "same-token-0123456".to_owned()),
            ("node-1".to_owned(), "same-token-0123456".to_owned()),
        ]);
        let (node, message) = shared.unwrap_err();
        assert_eq!(node, "node-1");
        assert!(message.contains("node-0"), "{message}");
    }

    #[test]
    fn token_files_are_read_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("controller-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("tokens.yaml");
        std::fs::write(&good, "node-0: 0123456789abcdef0\n").unwrap();
        let t = NodeTokens::from_file(&good).unwrap();
        assert_eq!(
            t.authenticate(&with_header("Bearer 0123456789abcdef0"))
                .unwrap(),
            "node-0"
        );
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "- just\n- a list\n").unwrap();
        let err = NodeTokens::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
