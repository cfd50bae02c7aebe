//! The `forwarded` header (RFC 7239) on HBONE: the client's original address, and the
//! service hostname when a service was addressed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

const MAX_FORWARDED_LEN: usize = 4096;

/// The first hop of a `forwarded` header; later hops are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub for_addr: ForwardedFor,
    pub host: Option<String>,
}

/// The `for=` node: an address with or without port, or an obfuscated/unknown node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedFor {
    Addr(SocketAddr),
    Ip(IpAddr),
    Unknown,
}

impl ForwardedFor {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            ForwardedFor::Addr(a) => Some(a.ip()),
            ForwardedFor::Ip(ip) => Some(*ip),
            ForwardedFor::Unknown => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    #[error("forwarded header is longer than {MAX_FORWARDED_LEN} bytes")]
    TooLong,
    #[error("forwarded pair {0:?} is not name=value")]
    InvalidPair(String),
    #[error("forwarded header has an invalid for= node {0:?}")]
    InvalidNode(String),
    #[error("forwarded header has no for= parameter")]
    MissingFor,
}

impl Forwarded {
    pub fn new(client: SocketAddr, host: Option<String>) -> Self {
        Forwarded {
            for_addr: ForwardedFor::Addr(client),
            host,
        }
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_node(raw: &str) -> Result<ForwardedFor, ForwardedError> {
    let v = unquote(raw);
    if v.eq_ignore_ascii_case("unknown") || v.starts_with('_') {
        return Ok(ForwardedFor::Unknown);
    }
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok(ForwardedFor::Addr(addr));
    }
    let ip = v
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(v);
    ip.parse::<IpAddr>()
        .map(ForwardedFor::Ip)
        .map_err(|_| ForwardedError::InvalidNode(raw.to_owned()))
}

impl FromStr for Forwarded {
    type Err = ForwardedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_FORWARDED_LEN {
            return Err(ForwardedError::TooLong);
        }
        let first = s.split(',').next().unwrap_or_default();
        let mut for_addr = None;
        let mut host = None;
        for pair in first.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| ForwardedError::InvalidPair(pair.to_owned()))?;
            match name.trim().to_ascii_lowercase().as_str() {
                "for" => for_addr = Some(parse_node(value.trim())?),
                "host" => host = Some(unquote(value.trim()).to_owned()),
                _ => {}
            }
        }
        Ok(Forwarded {
            for_addr: for_addr.ok_or(ForwardedError::MissingFor)?,
            host,
        })
    }
}

impl fmt::Display for Forwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.for_addr {
            ForwardedFor::Addr(a) => write!(f, "for=\"{a}\"")?,
            ForwardedFor::Ip(ip @ IpAddr::V6(_)) => write!(f, "for=\"[{ip}]\"")?,
            ForwardedFor::Ip(ip) => write!(f, "for={ip}")?,
            ForwardedFor::Unknown => f.write_str("for=unknown")?,
        }
        if let Some(host) = &self.host {
            write!(f, ";host={host}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases = [
            Forwarded::new("10.1.0.5:40000".parse().unwrap(), None),
            Forwarded::new(
                "[fd00::5]:40000".parse().unwrap(),
                Some("reviews.ns.svc.cluster.local".into()),
            ),
            Forwarded {
                for_addr: ForwardedFor::Ip("fd00::1".parse().unwrap()),
                host: None,
            },
            Forwarded {
                for_addr: ForwardedFor::Unknown,
                host: Some("h".into()),
            },
        ];
        for f in cases {
            assert_eq!(f.to_string().parse::<Forwarded>().unwrap(), f, "{f}");
        }
        assert_eq!(
            "for=\"10.1.0.5:40000\";host=reviews.ns.svc.cluster.local"
                .parse::<Forwarded>()
                .unwrap(),
            Forwarded::new(
                "10.1.0.5:40000".parse().unwrap(),
                Some("reviews.ns.svc.cluster.local".into())
            )
        );
    }

    #[test]
    fn parses_first_hop_only() {
        let f: Forwarded = "For=192.0.2.60;proto=http, for=198.51.100.17"
            .parse()
            .unwrap();
        assert_eq!(f.for_addr.ip(), Some("192.0.2.60".parse().unwrap()));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            "host=x".parse::<Forwarded>(),
            Err(ForwardedError::MissingFor)
        );
        assert!(matches!(
            "for".parse::<Forwarded>(),
            Err(ForwardedError::InvalidPair(_))
        ));
        assert!(matches!(
            "for=\"not-an-ip\"".parse::<Forwarded>(),
            Err(ForwardedError::InvalidNode(_))
        ));
        assert_eq!(
            "x".repeat(5000).parse::<Forwarded>(),
            Err(ForwardedError::TooLong)
        );
    }
}
