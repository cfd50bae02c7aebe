//! The `:authority` of an HBONE CONNECT: `ip:port`, `[v6]:port` or `host:port`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Where a tunnel should lead: an address, or a hostname for the receiver to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Authority {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// Why an `:authority` value was rejected (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("authority is empty")]
    Empty,
    #[error("authority {0:?} has no port")]
    MissingPort(String),
    #[error("authority {0:?} has an invalid port (expected 1-65535)")]
    InvalidPort(String),
    #[error("authority {0:?} has an unterminated or invalid IPv6 literal")]
    InvalidIpv6(String),
    #[error("authority {0:?} has an invalid host name")]
    InvalidHost(String),
}

impl Authority {
    pub fn port(&self) -> u16 {
        match self {
            Authority::Addr(a) => a.port(),
            Authority::Host { port, .. } => *port,
        }
    }

    /// The socket address, when the authority names one directly.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Authority::Addr(a) => Some(*a),
            Authority::Host { .. } => None,
        }
    }
}

impl From<SocketAddr> for Authority {
    fn from(addr: SocketAddr) -> Self {
        Authority::Addr(addr)
    }
}

fn parse_port(whole: &str, port: &str) -> Result<u16, AuthorityError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::InvalidPort(whole.to_owned()));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(AuthorityError::InvalidPort(whole.to_owned())),
    }
}

fn valid_hostname(host: &str) -> bool {
    host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for Authority {
    type Err = AuthorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AuthorityError::Empty);
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| AuthorityError::InvalidIpv6(s.to_owned()))?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| AuthorityError::InvalidIpv6(s.to_owned()))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| AuthorityError::MissingPort(s.to_owned()))?;
            let port = parse_port(s, port)?;
            return Ok(Authority::Addr(SocketAddr::new(IpAddr::V6(ip), port)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| AuthorityError::MissingPort(s.to_owned()))?;
        if host.contains(':') {
            // A bare IPv6 address without brackets is ambiguous; HBONE requires `[v6]:port`.
            return Err(AuthorityError::InvalidIpv6(s.to_owned()));
        }
        let port = parse_port(s, port)?;
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Authority::Addr(SocketAddr::new(IpAddr::V4(ip), port)));
        }
        // Anything made only of digits and dots that failed to parse as IPv4 is a bad address.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') || !valid_hostname(host) {
            return Err(AuthorityError::InvalidHost(s.to_owned()));
        }
        Ok(Authority::Host {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr's Display already brackets IPv6.
            Authority::Addr(a) => write!(f, "{a}"),
            Authority::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid() {
        let cases = [
            ("10.0.0.1:8080", "10.0.0.1:8080"),
            ("[fd00::1]:443", "[fd00::1]:443"),
            ("[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.1]:80"),
            (
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local:9080",
            ),
            ("Reviews.Default:9080", "reviews.default:9080"),
        ];
        for (input, formatted) in cases {
            let a: Authority = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.to_string(), formatted);
            assert_eq!(a.to_string().parse::<Authority>().unwrap(), a);
        }
        assert_eq!(
            "10.0.0.1:8080".parse::<Authority>().unwrap().socket_addr(),
            Some("10.0.0.1:8080".parse().unwrap())
        );
    }

    #[test]
    fn rejects_invalid() {
        use AuthorityError::*;
        let cases: &[(&str, AuthorityError)] = &[
            ("", Empty),
            ("10.0.0.1", MissingPort("10.0.0.1".into())),
            ("10.0.0.1:", InvalidPort("10.0.0.1:".into())),
            ("10.0.0.1:0", InvalidPort("10.0.0.1:0".into())),
            ("10.0.0.1:65536", InvalidPort("10.0.0.1:65536".into())),
            ("10.0.0.1:+80", InvalidPort("10.0.0.1:+80".into())),
            ("[fd00::1:443", InvalidIpv6("[fd00::1:443".into())),
            ("[fd00::1]443", MissingPort("[fd00::1]443".into())),
            ("[10.0.0.1]:443", InvalidIpv6("[10.0.0.1]:443".into())),
            ("fd00::1:443", InvalidIpv6("fd00::1:443".into())),
            ("300.1.1.1:80", InvalidHost("300.1.1.1:80".into())),
            ("bad host:80", InvalidHost("bad host:80".into())),
            ("-a.b:80", InvalidHost("-a.b:80".into())),
            ("a..b:80", InvalidHost("a..b:80".into())),
            ("/path:80", InvalidHost("/path:80".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &input.parse::<Authority>().unwrap_err(),
                expected,
                "{input}"
            );
        }
        let long = format!("{}:80", "a.".repeat(200));
        assert!(matches!(long.parse::<Authority>(), Err(InvalidHost(_))));
    }
}
