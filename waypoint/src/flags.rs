//! The waypoint's settings, from flags with environment fallbacks (as a Deployment sets
//! them).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use dataplane::control_plane::{ControlPlaneConfig, DEFAULT_SERVER_NAME};

pub const USAGE: &str = "\
usage: waypoint --name NAME --namespace NS --xds-address ADDR --root-cert FILE --token-file FILE [options]

  --name NAME           the waypoint's Gateway (gatewayClassName: istio-waypoint)   [WAYPOINT_NAME]
  --namespace NS        its namespace                                                [POD_NAMESPACE]
  --service-account SA  the identity it runs as (default: NAME, as Istio deploys it) [SERVICE_ACCOUNT]
  --pod-ip IP           this pod's IP (workloads may name their waypoint by IP)      [POD_IP]
  --xds-address ADDR    the controller: delta xDS and the CA, https://HOST:15012    [WAYPOINT_XDS_ADDRESS]
  --root-cert FILE      mesh root certificate (PEM) the controller is checked against [WAYPOINT_ROOT_CERT]
  --token-file FILE     bearer token for the controller                              [WAYPOINT_TOKEN_FILE]
  --node-name NODE      the node it runs on (sent to the controller)                 [NODE_NAME]
  --server-name NAME    name in the controller's certificate (default istiod.istio-system.svc)
  --trust-domain TD     (default cluster.local)
  --domain-suffix SUF   services are NAME.NS.svc.SUF (default cluster.local)
  --root-namespace NS   policies bound to the istio-waypoint GatewayClass live here
                        (default istio-system)
  --hbone-address ADDR  HBONE listener (default 0.0.0.0:15008)
  --metrics-address ADDR
                        Istio's request metrics: GET /metrics or /stats/prometheus
                        (default 0.0.0.0:15020)
  --readiness-address ADDR
                        GET /healthz/ready (default 0.0.0.0:15021)
  --admin-address ADDR  GET /config_dump (L7 config in force and its problems)
                        (default 127.0.0.1:15000)
  --log-format FORMAT   text (default) or json; the filter comes from RUST_LOG (default
                        info; one access line per request on target `access`)
  --worker-threads N    threads serving requests, each with its own event loop and
                        upstream connections; tunnels are spread over them (default 2)
";

#[derive(Debug, Clone)]
pub struct Flags {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub pod_ip: Option<IpAddr>,
    pub control_plane: ControlPlaneConfig,
    pub node_name: String,
    pub trust_domain: String,
    pub domain_suffix: String,
    pub root_namespace: String,
    pub hbone_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub readiness_address: SocketAddr,
    pub admin_address: SocketAddr,
    pub json_logs: bool,
    pub worker_threads: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("help requested")]
    Help,
    #[error("unknown flag {0}")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{flag}: {value:?} is not {what}")]
    Invalid {
        flag: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("{0} is required (flag or environment variable)")]
    Required(&'static str),
}

impl Flags {
    /// Parses `args` (without the program name); `env` reads fallbacks.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Flags, FlagError> {
        let mut given = std::collections::HashMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(FlagError::Help);
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            if !FLAGS.contains(&flag.as_str()) {
                return Err(FlagError::Unknown(arg));
            }
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| FlagError::MissingValue(flag.clone()))?,
            };
            given.insert(flag, value);
        }
        let get = |flag: &str, var: Option<&str>| {
            given
                .get(flag)
                .cloned()
                .or_else(|| var.and_then(&env))
                .filter(|v| !v.is_empty())
        };
        let required =
            |flag: &'static str, var: &str| get(flag, Some(var)).ok_or(FlagError::Required(flag));
        let addr = |flag: &'static str, default: &str| {
            let value = get(flag, None).unwrap_or_else(|| default.to_owned());
            value.parse().map_err(|_| FlagError::Invalid {
                flag,
                value,
                what: "an IP:port address",
            })
        };
        let name = required("--name", "WAYPOINT_NAME")?;
        let pod_ip = match get("--pod-ip", Some("POD_IP")) {
            Some(v) => Some(v.parse().map_err(|_| FlagError::Invalid {
                flag: "--pod-ip",
                value: v,
                what: "an IP address",
            })?),
            None => None,
        };
        let json_logs = match get("--log-format", None).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(FlagError::Invalid {
                    flag: "--log-format",
                    value: other.to_owned(),
                    what: "text or json",
                });
            }
        };
        let worker_threads = match get("--worker-threads", None) {
            None => 2,
            Some(v) => {
                v.parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or(FlagError::Invalid {
                        flag: "--worker-threads",
                        value: v,
                        what: "a number of threads (1-256)",
                    })?
            }
        };
        Ok(Flags {
            service_account: get("--service-account", Some("SERVICE_ACCOUNT"))
                .unwrap_or_else(|| name.clone()),
            namespace: required("--namespace", "POD_NAMESPACE")?,
            pod_ip,
            control_plane: ControlPlaneConfig {
                address: required("--xds-address", "WAYPOINT_XDS_ADDRESS")?,
                server_name: get("--server-name", None)
                    .unwrap_or_else(|| DEFAULT_SERVER_NAME.to_owned()),
                root_cert: PathBuf::from(required("--root-cert", "WAYPOINT_ROOT_CERT")?),
                token_file: PathBuf::from(required("--token-file", "WAYPOINT_TOKEN_FILE")?),
            },
            node_name: get("--node-name", Some("NODE_NAME")).unwrap_or_default(),
            trust_domain: get("--trust-domain", None)
                .unwrap_or_else(|| hbone::DEFAULT_TRUST_DOMAIN.to_owned()),
            domain_suffix: get("--domain-suffix", None)
                .unwrap_or_else(|| "cluster.local".to_owned()),
            root_namespace: get("--root-namespace", None)
                .unwrap_or_else(|| crate::authz::DEFAULT_ROOT_NAMESPACE.to_owned()),
            hbone_address: addr("--hbone-address", "0.0.0.0:15008")?,
            metrics_address: addr("--metrics-address", "0.0.0.0:15020")?,
            readiness_address: addr("--readiness-address", "0.0.0.0:15021")?,
            admin_address: addr("--admin-address", "127.0.0.1:15000")?,
            json_logs,
            worker_threads,
            name,
        })
    }
}

const FLAGS: &[&str] = &[
    "--name",
    "--namespace",
    "--service-account",
    "--pod-ip",
    "--xds-address",
    "--root-cert",
    "--token-file",
    "--node-name",
    "--server-name",
    "--trust-domain",
    "--domain-suffix",
    "--root-namespace",
    "--hbone-address",
    "--metrics-address",
    "--readiness-address",
    "--admin-address",
    "--log-format",
    "--worker-threads",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Flags, FlagError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Flags::parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
        })
    }

    const BASE: &[&str] = &[
        "--name",
        "wp",
        "--namespace",
        "shop",
        "--xds-address",
        "10.0.0.1:15012",
        "--root-cert",
        "/root.pem",
        "--token-file",
        "/token",
    ];

    #[test]
    fn flags_and_environment_with_defaults() {
        let f = parse(BASE, &[("POD_IP", "10.244.0.9")]).unwrap();
        assert_eq!(
            (
                f.name.as_str(),
                f.namespace.as_str(),
                f.service_account.as_str()
            ),
            ("wp", "shop", "wp")
        );
        assert_eq!(f.pod_ip, Some("10.244.0.9".parse().unwrap()));
        assert_eq!(f.hbone_address, "0.0.0.0:15008".parse().unwrap());
        assert_eq!(f.admin_address, "127.0.0.1:15000".parse().unwrap());
        let f = parse(
            &[],
            &[
                ("WAYPOINT_NAME", "w"),
                ("POD_NAMESPACE", "n"),
                ("WAYPOINT_XDS_ADDRESS", "a:1"),
                ("WAYPOINT_ROOT_CERT", "/r"),
                ("WAYPOINT_TOKEN_FILE", "/t"),
                ("SERVICE_ACCOUNT", "sa"),
            ],
        )
        .unwrap();
        assert_eq!(f.service_account, "sa");
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            parse(&["--name"], &[]).unwrap_err(),
            FlagError::MissingValue("--name".into())
        );
        assert_eq!(
            parse(&["--nmae", "x"], &[]).unwrap_err(),
            FlagError::Unknown("--nmae".into())
        );
        assert_eq!(
            parse(&BASE[2..], &[]).unwrap_err(),
            FlagError::Required("--name")
        );
        let mut args = BASE.to_vec();
        args.extend(["--pod-ip", "nope"]);
        assert_eq!(
            parse(&args, &[]).unwrap_err().to_string(),
            "--pod-ip: \"nope\" is not an IP address"
        );
    }
}
