//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";
const MAX_ID_LEN: usize = 2048;

/// A workload identity as carried in a certificate's URI SAN.
///
/// Cheap to clone: the three parts share one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    inner: Arc<IdentityParts>,
}

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IdentityParts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a valid SPIFFE workload identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with \"spiffe://\"")]
    MissingScheme(String),
    #[error("identity {0:?} is longer than {MAX_ID_LEN} bytes")]
    TooLong(String),
    #[error(
        "identity {id:?} has an invalid trust domain {trust_domain:?} (allowed: a-z 0-9 . - _)"
    )]
    InvalidTrustDomain { id: String, trust_domain: String },
    #[error("identity {0:?} must have the path /ns/<namespace>/sa/<service-account>")]
    InvalidPath(String),
    #[error("identity {id:?} has an invalid {part} {value:?} (allowed: A-Z a-z 0-9 . - _)")]
    InvalidSegment {
        id: String,
        part: &'static str,
        value: String,
    },
}

impl Identity {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        let id = format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        validate_trust_domain(&id, trust_domain)?;
        validate_segment(&id, "namespace", namespace)?;
        validate_segment(&id, "service account", service_account)?;
        Ok(Self::from_valid_parts(
            trust_domain,
            namespace,
            service_account,
        ))
    }

    fn from_valid_parts(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity {
            inner: Arc::new(IdentityParts {
                trust_domain: trust_domain.to_owned(),
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
            }),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.inner.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.inner.service_account
    }
}

fn validate_trust_domain(id: &str, td: &str) -> Result<(), IdentityError> {
    let ok = !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidTrustDomain {
            id: id.to_owned(),
            trust_domain: td.to_owned(),
        })
    }
}

fn validate_segment(id: &str, part: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidSegment {
            id: id.to_owned(),
            part,
            value: value.to_owned(),
        })
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_ID_LEN {
            return Err(IdentityError::TooLong(s.chars().take(64).collect()));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::MissingScheme(s.to_owned()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::InvalidPath(s.to_owned()))?;
        validate_trust_domain(s, td)?;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                validate_segment(s, "namespace", ns)?;
                validate_segment(s, "service account", sa)?;
                Ok(Self::from_valid_parts(td, ns, sa))
            }
            _ => Err(IdentityError::InvalidPath(s.to_owned())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.inner.trust_domain, self.inner.namespace, self.inner.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            Identity::new("cluster.local", "default", "bookinfo-productpage").unwrap(),
            id
        );
    }

    type Check = fn(&IdentityError) -> bool;

    #[test]
    fn rejects_malformed() {
        let cases: &[(&str, Check)] = &[
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::MissingScheme(_))
            }),
            ("spiffe://Cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::InvalidTrustDomain { .. })
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, IdentityError::InvalidTrustDomain { .. })
            }),
            ("spiffe://td", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://td/ns/a/sa", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://td/ns/a/sa/b/c", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://td/sa/a/ns/b", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://td/ns//sa/b", |e| {
                matches!(e, IdentityError::InvalidSegment { .. })
            }),
            ("spiffe://td/ns/a/sa/b%20c", |e| {
                matches!(e, IdentityError::InvalidSegment { .. })
            }),
            ("spiffe://td/ns/../sa/b", |e| {
                matches!(e, IdentityError::InvalidSegment { .. })
            }),
        ];
        for (input, check) in cases {
            let err = input.parse::<Identity>().unwrap_err();
            assert!(check(&err), "{input}: unexpected error {err:?}");
        }
        let long = format!("spiffe://td/ns/{}/sa/b", "a".repeat(3000));
        assert!(matches!(
            long.parse::<Identity>(),
            Err(IdentityError::TooLong(_))
        ));
    }
}
