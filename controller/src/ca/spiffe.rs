//! The workload identities the CA signs: `spiffe://<trust domain>/ns/<namespace>/sa/<sa>`.
//!
//! The controller does not depend on `hbone` (whose `Identity` the proxies use), so the
//! CA keeps its own small, equally strict parser: a certificate is only ever issued for a
//! name both sides parse the same way.

use std::fmt;
use std::str::FromStr;

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";
const MAX_LEN: usize = 2048;

/// A SPIFFE ID naming a Kubernetes service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a service-account SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{0:?} is not a SPIFFE ID: it does not start with \"spiffe://\"")]
    Scheme(String),
    #[error("SPIFFE ID {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("SPIFFE ID {id:?} has an invalid trust domain (allowed: a-z 0-9 . - _)")]
    TrustDomain { id: String },
    #[error("SPIFFE ID {0:?} must have the path /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error("SPIFFE ID {id:?} has an invalid {part} (allowed: A-Z a-z 0-9 . - _)")]
    Segment { id: String, part: &'static str },
}

impl SpiffeId {
    /// Builds an ID from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LEN {
            return Err(SpiffeIdError::TooLong(s.chars().take(64).collect()));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeIdError::Path(s.to_owned()))?;
        if !valid_trust_domain(td) {
            return Err(SpiffeIdError::TrustDomain { id: s.to_owned() });
        }
        let parts: Vec<&str> = path.split('/').collect();
        let ["ns", ns, "sa", sa] = parts.as_slice() else {
            return Err(SpiffeIdError::Path(s.to_owned()));
        };
        for (part, value) in [("namespace", ns), ("service account", sa)] {
            if !valid_segment(value) {
                return Err(SpiffeIdError::Segment {
                    id: s.to_owned(),
                    part,
                });
            }
        }
        Ok(SpiffeId {
            trust_domain: td.to_owned(),
            namespace: (*ns).to_owned(),
            service_account: (*sa).to_owned(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_service_account_ids() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/echo".parse().unwrap();
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("cluster.local", "default", "echo")
        );
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/echo");
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "echo").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_everything_else() {
        type Check = fn(&SpiffeIdError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("https://cluster.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::Scheme(_))
            }),
            ("spiffe://Cluster.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::TrustDomain { .. })
            }),
            ("spiffe://td", |e| matches!(e, SpiffeIdError::Path(_))),
            ("spiffe://td/ns/a/sa/b/c", |e| {
                matches!(e, SpiffeIdError::Path(_))
            }),
            ("spiffe://td/sa/a/ns/b", |e| {
                matches!(e, SpiffeIdError::Path(_))
            }),
            ("spiffe://td/ns/../sa/b", |e| {
                matches!(e, SpiffeIdError::Segment { .. })
            }),
            ("spiffe://td/ns/a/sa/", |e| {
                matches!(e, SpiffeIdError::Segment { .. })
            }),
        ];
        for (input, check) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert!(check(&err), "{input}: unexpected {err:?}");
        }
        let long = format!("spiffe://td/ns/{}/sa/b", "a".repeat(3000));
        assert!(matches!(
            long.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong(_))
        ));
    }
}
