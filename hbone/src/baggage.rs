//! The W3C `baggage` header as Istio uses it on HBONE: who the client workload is.
//!
//! `k8s.cluster.name=C,k8s.namespace.name=NS,k8s.<kind>.name=W,service.name=S,service.version=V`

use std::fmt::{self, Write as _};
use std::str::FromStr;

/// W3C limits: at most 8192 bytes and 180 list members.
pub const MAX_BAGGAGE_LEN: usize = 8192;
pub const MAX_BAGGAGE_MEMBERS: usize = 180;

/// The workload attributes Istio carries in baggage. Unknown members are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    pub cluster_id: Option<String>,
    pub namespace: Option<String>,
    /// The controller kind of the workload, e.g. `deployment`, `pod`, `job`.
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
    pub service_name: Option<String>,
    pub service_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaggageError {
    #[error("baggage is {0} bytes, over the {MAX_BAGGAGE_LEN}-byte limit")]
    TooLong(usize),
    #[error("baggage has more than {MAX_BAGGAGE_MEMBERS} members")]
    TooManyMembers,
    #[error("baggage member {0:?} is not key=value")]
    MissingEquals(String),
    #[error("baggage member {0:?} has an invalid key")]
    InvalidKey(String),
    #[error("baggage member {0:?} has an invalid value")]
    InvalidValue(String),
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_value_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(member: &str, raw: &str) -> Result<String, BaggageError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !is_value_octet(b) {
            return Err(BaggageError::InvalidValue(member.to_owned()));
        }
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(BaggageError::InvalidValue(member.to_owned())),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BaggageError::InvalidValue(member.to_owned()))
}

fn percent_encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        if is_value_octet(b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl FromStr for Baggage {
    type Err = BaggageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_BAGGAGE_LEN {
            return Err(BaggageError::TooLong(s.len()));
        }
        let mut baggage = Baggage::default();
        for (n, member) in s.split(',').enumerate() {
            if n >= MAX_BAGGAGE_MEMBERS {
                return Err(BaggageError::TooManyMembers);
            }
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            // Properties after ';' carry nothing Istio uses.
            let kv = member.split(';').next().unwrap_or_default();
            let (key, value) = kv
                .split_once('=')
                .ok_or_else(|| BaggageError::MissingEquals(member.to_owned()))?;
            let key = key.trim_matches([' ', '\t']);
            if key.is_empty() || !key.bytes().all(is_token_char) {
                return Err(BaggageError::InvalidKey(member.to_owned()));
            }
            let value = percent_decode(member, value.trim_matches([' ', '\t']))?;
            baggage.set(key, value);
        }
        Ok(baggage)
    }
}

impl Baggage {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "k8s.cluster.name" => self.cluster_id = Some(value),
            "k8s.namespace.name" => self.namespace = Some(value),
            "service.name" => self.service_name = Some(value),
            "service.version" => self.service_version = Some(value),
            _ => {
                if let Some(kind) = key
                    .strip_prefix("k8s.")
                    .and_then(|k| k.strip_suffix(".name"))
                    && !kind.is_empty()
                    && !kind.contains('.')
                {
                    self.workload_kind = Some(kind.to_owned());
                    self.workload_name = Some(value);
                }
            }
        }
    }
}

impl fmt::Display for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut push = |key: &str, value: &Option<String>| {
            if let Some(v) = value {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(key);
                out.push('=');
                percent_encode(&mut out, v);
            }
        };
        push("k8s.cluster.name", &self.cluster_id);
        push("k8s.namespace.name", &self.namespace);
        if let Some(kind) = &self.workload_kind {
            let valid_kind =
                !kind.is_empty() && kind.bytes().all(|b| is_token_char(b) && b != b'.');
            if valid_kind {
                push(&format!("k8s.{kind}.name"), &self.workload_name);
            }
        }
        push("service.name", &self.service_name);
        push("service.version", &self.service_version);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_baggage() {
        let b: Baggage = "k8s.cluster.name=Kubernetes, k8s.namespace.name=default,\
            k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1,\
            other=x;prop=1"
            .parse()
            .unwrap();
        assert_eq!(b.cluster_id.as_deref(), Some("Kubernetes"));
        assert_eq!(b.namespace.as_deref(), Some("default"));
        assert_eq!(b.workload_kind.as_deref(), Some("deployment"));
        assert_eq!(b.workload_name.as_deref(), Some("productpage-v1"));
        assert_eq!(b.service_name.as_deref(), Some("productpage"));
        assert_eq!(b.service_version.as_deref(), Some("v1"));
    }

    #[test]
    fn round_trips_with_escapes() {
        let b = Baggage {
            cluster_id: Some("c 1".into()),
            namespace: Some("ns,%;x".into()),
            workload_kind: Some("pod".into()),
            workload_name: Some("é".into()),
            service_name: None,
            service_version: Some("v=2".into()),
        };
        let s = b.to_string();
        assert!(!s.contains(' '), "{s}");
        assert_eq!(s.parse::<Baggage>().unwrap(), b);
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "novalue".parse::<Baggage>(),
            Err(BaggageError::MissingEquals(_))
        ));
        assert!(matches!(
            "=v".parse::<Baggage>(),
            Err(BaggageError::InvalidKey(_))
        ));
        assert!(matches!(
            "k(=v".parse::<Baggage>(),
            Err(BaggageError::InvalidKey(_))
        ));
        assert!(matches!(
            "k=v\"".parse::<Baggage>(),
            Err(BaggageError::InvalidValue(_))
        ));
        assert!(matches!(
            "k=%zz".parse::<Baggage>(),
            Err(BaggageError::InvalidValue(_))
        ));
        assert!(matches!(
            "k=%4".parse::<Baggage>(),
            Err(BaggageError::InvalidValue(_))
        ));
        assert!(matches!(
            "k=%ff".parse::<Baggage>(),
            Err(BaggageError::InvalidValue(_))
        ));
        let many = vec!["a=b"; 181].join(",");
        assert_eq!(many.parse::<Baggage>(), Err(BaggageError::TooManyMembers));
        let long = format!("a={}", "b".repeat(9000));
        assert!(matches!(
            long.parse::<Baggage>(),
            Err(BaggageError::TooLong(_))
        ));
        assert_eq!("".parse::<Baggage>().unwrap(), Baggage::default());
    }
}
