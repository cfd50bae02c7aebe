//! Service discovery without DNS: lab pods have no resolver, so a Service name is looked
//! up the way kubelet's env-var injection exposes it (`RATINGS_SERVICE_HOST`,
//! `RATINGS_SERVICE_PORT`). The environment is injected as a lookup function so tests
//! never mutate the process environment.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where variables come from: the process environment in production, a table in tests.
#[derive(Clone)]
pub struct Env(Arc<Lookup>);

impl Env {
    /// The process environment, read at each lookup (it never changes under us).
    pub fn process() -> Self {
        Self::from_fn(|key| std::env::var(key).ok())
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(lookup))
    }

    /// A fixed table, for tests and for callers that computed the variables themselves.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let table: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_fn(move |key| table.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    pub fn get(&self, key: &str) -> Option<String> {
        (self.0)(key)
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error(
        "no {var} in the environment: is the {service} Service defined in this namespace \
         (and was it created before this pod started)?"
    )]
    MissingHost { service: String, var: String },
    #[error(
        "{host} has no port in the URL and there is no {var} in the environment: \
         add the port to the URL or define the {service} Service"
    )]
    MissingPort {
        host: String,
        service: String,
        var: String,
    },
    #[error("{var}={value:?} is not an IP address: the Service's cluster IP is expected")]
    BadHost { var: String, value: String },
    #[error("{var}={value:?} is not a port number")]
    BadPort { var: String, value: String },
    #[error(
        "{host:?} is neither an IP address nor a Service name (NAME, NAME.NS, NAME.NS.svc or \
         NAME.NS.svc.cluster.local): there is no DNS in the lab"
    )]
    NotAServiceName { host: String },
}

/// Resolves `host` (a URL's host, IPv6 without brackets) to a socket address. An explicit
/// URL port wins, as it would with DNS; without one the Service's first port is used.
pub fn resolve(host: &str, port: Option<u16>, env: &Env) -> Result<SocketAddr, DiscoveryError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(literal(ip, port));
    }
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        return Ok(literal(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let service = service_name(&host)
        .ok_or_else(|| DiscoveryError::NotAServiceName { host: host.clone() })?;
    let prefix = env_prefix(service);
    let host_var = format!("{prefix}_SERVICE_HOST");
    let port_var = format!("{prefix}_SERVICE_PORT");
    let value = env
        .get(&host_var)
        .ok_or_else(|| DiscoveryError::MissingHost {
            service: service.to_string(),
            var: host_var.clone(),
        })?;
    let ip = value
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| DiscoveryError::BadHost {
            var: host_var,
            value: value.clone(),
        })?;
    let port =
        match port {
            Some(p) => p,
            None => {
                let value = env
                    .get(&port_var)
                    .ok_or_else(|| DiscoveryError::MissingPort {
                        host: host.clone(),
                        service: service.to_string(),
                        var: port_var.clone(),
                    })?;
                value.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or(
                    DiscoveryError::BadPort {
                        var: port_var,
                        value,
                    },
                )?
            }
        };
    Ok(SocketAddr::new(ip, port))
}

/// An IP literal has no Service behind it to supply a port: plain HTTP's default applies.
fn literal(ip: IpAddr, port: Option<u16>) -> SocketAddr {
    SocketAddr::new(ip, port.unwrap_or(80))
}

/// The Service name in `NAME`, `NAME.NS`, `NAME.NS.svc` or `NAME.NS.svc.cluster.local`;
/// `None` for anything else (external names cannot be resolved without DNS).
pub fn service_name(host: &str) -> Option<&str> {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let well_formed = matches!(
        labels.as_slice(),
        [_] | [_, _] | [_, _, "svc"] | [_, _, "svc", "cluster", "local"]
    );
    let name = labels[0];
    (well_formed && labels.iter().all(|l| is_dns_label(l)) && starts_with_letter(name))
        .then_some(name)
}

/// kubelet's variable prefix: upper case, dashes become underscores.
pub fn env_prefix(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn starts_with_letter(name: &str) -> bool {
    name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs([
            ("RATINGS_SERVICE_HOST", "10.96.0.12"),
            ("RATINGS_SERVICE_PORT", "9080"),
            ("MY_SVC_SERVICE_HOST", "fd00::12"),
            ("MY_SVC_SERVICE_PORT", "8080"),
            ("NOPORT_SERVICE_HOST", "10.96.0.13"),
            ("BADHOST_SERVICE_HOST", "badhost.example"),
            ("BADPORT_SERVICE_HOST", "10.96.0.14"),
            ("BADPORT_SERVICE_PORT", "http"),
        ])
    }

    fn addr(s: &str) -> Result<SocketAddr, DiscoveryError> {
        Ok(s.parse().unwrap())
    }

    #[test]
    fn resolves_like_kubelet_env_injection() {
        let missing_host = |host: &str| DiscoveryError::MissingHost {
            service: host.to_string(),
            var: format!("{}_SERVICE_HOST", env_prefix(host)),
        };
        let cases: Vec<(&str, Option<u16>, Result<SocketAddr, DiscoveryError>)> = vec![
            ("ratings", None, addr("10.96.0.12:9080")),
            ("ratings", Some(9081), addr("10.96.0.12:9081")),
            ("RATINGS", None, addr("10.96.0.12:9080")),
            ("ratings.default", None, addr("10.96.0.12:9080")),
            ("ratings.default.svc", None, addr("10.96.0.12:9080")),
            (
                "ratings.default.svc.cluster.local",
                None,
                addr("10.96.0.12:9080"),
            ),
            (
                "ratings.default.svc.cluster.local.",
                None,
                addr("10.96.0.12:9080"),
            ),
            ("my-svc", None, addr("[fd00::12]:8080")),
            ("10.1.2.3", Some(9080), addr("10.1.2.3:9080")),
            ("10.1.2.3", None, addr("10.1.2.3:80")),
            ("::1", Some(9080), addr("[::1]:9080")),
            ("localhost", Some(9080), addr("127.0.0.1:9080")),
            ("reviews", Some(9080), Err(missing_host("reviews"))),
            ("my-missing-svc", None, Err(missing_host("my-missing-svc"))),
            (
                "noport",
                None,
                Err(DiscoveryError::MissingPort {
                    host: "noport".into(),
                    service: "noport".into(),
                    var: "NOPORT_SERVICE_PORT".into(),
                }),
            ),
            ("noport", Some(7000), addr("10.96.0.13:7000")),
            (
                "badhost",
                Some(1),
                Err(DiscoveryError::BadHost {
                    var: "BADHOST_SERVICE_HOST".into(),
                    value: "badhost.example".into(),
                }),
            ),
            (
                "badport",
                None,
                Err(DiscoveryError::BadPort {
                    var: "BADPORT_SERVICE_PORT".into(),
                    value: "http".into(),
                }),
            ),
        ];
        for (host, port, want) in cases {
            assert_eq!(resolve(host, port, &env()), want, "{host} {port:?}");
        }
    }

    #[test]
    fn rejects_names_that_need_dns() {
        for host in [
            "example.com.au.x",
            "ratings.default.svc.cluster",
            "ratings.default.svc.other.local",
            "ratings.default.pod",
            "under_score",
            "-dash",
            "dash-",
            "1ratings",
            "",
            "a..b",
        ] {
            assert_eq!(
                resolve(host, Some(80), &env()),
                Err(DiscoveryError::NotAServiceName {
                    host: host.to_ascii_lowercase()
                }),
                "{host}"
            );
        }
    }

    #[test]
    fn missing_service_message_names_the_variable_and_the_service() {
        let err = resolve("ratings", None, &Env::from_pairs::<&str, &str>([])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "no RATINGS_SERVICE_HOST in the environment: \
                 is the ratings Service defined in this namespace"
            ),
            "{msg}"
        );
    }

    #[test]
    fn env_prefix_matches_kubelet() {
        assert_eq!(env_prefix("ratings"), "RATINGS");
        assert_eq!(env_prefix("my-svc-2"), "MY_SVC_2");
    }
}
