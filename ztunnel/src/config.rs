//! ztunnel's settings, from flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hbone::DEFAULT_TRUST_DOMAIN;

use crate::admin::DEFAULT_ADMIN_ADDRESS;
use crate::control_plane::{ControlPlaneConfig, DEFAULT_SERVER_NAME};
use crate::limits::{
    DEFAULT_MAX_INBOUND_CONNECTIONS, DEFAULT_MAX_PENDING_HANDSHAKES, LimitsConfig,
};
use crate::metrics::DEFAULT_METRICS_ADDRESS;
use crate::readiness::DEFAULT_READINESS_ADDRESS;

pub const USAGE: &str = "\
usage: ztunnel --xds-address ADDR --root-cert FILE --token-file FILE --node-name NODE [options]
       ztunnel --state-file FILE --ca-dir DIR [options]            (standalone, no controller)

  --xds-address ADDR    the controller: delta xDS and the CA, https://HOST:15012    [ZTUNNEL_XDS_ADDRESS]
  --root-cert FILE      mesh root certificate (PEM) the controller is checked against [ZTUNNEL_ROOT_CERT]
  --token-file FILE     this node's bearer token for the controller                 [ZTUNNEL_TOKEN_FILE]
  --node-name NODE      the node this ztunnel serves                                [NODE_NAME]
  --server-name NAME    name in the controller's certificate (default istiod.istio-system.svc)
  --state-file FILE     workloads and services from a file instead of xDS (YAML/JSON;
                        see ztunnel/README.md)                                     [ZTUNNEL_STATE_FILE]
  --ca-dir DIR          sign certificates locally with DIR/ca.crt and DIR/ca.key instead
                        of asking the controller                                   [ZTUNNEL_CA_DIR]
  --zds-socket PATH     the node agent's ZDS socket (default /var/run/ztunnel/ztunnel.sock) [ZTUNNEL_ZDS_SOCKET]
  --trust-domain TD     trust domain for pods the state does not know (default cluster.local)
  --log-format FORMAT   text (default) or json (one object per line, fields at the top level);
                        the filter comes from RUST_LOG (default info; access lines: target
                        `access`) and can be changed at runtime with POST /logging
  --worker-threads N    proxy threads (default 1: one thread serves every pod)         [ZTUNNEL_WORKER_THREADS]
  --admin-address ADDR  admin endpoint: GET /config_dump, GET|POST /logging, POST /quitquitquit
                        (default 127.0.0.1:15000; a wildcard address is refused)   [ZTUNNEL_ADMIN_ADDRESS]
  --readiness-address ADDR
                        readiness: GET /healthz/ready (default 0.0.0.0:15021)      [ZTUNNEL_READINESS_ADDRESS]
  --metrics-address ADDR
                        metrics: GET /metrics or /stats/prometheus, Istio's TCP metrics and
                        ztunnel's gauges (default 0.0.0.0:15020)                    [ZTUNNEL_METRICS_ADDRESS]
  --drain-timeout DUR   after SIGTERM, how long connections in flight may run before the
                        rest are closed: seconds (20, 0.5) or a duration (10s, 1m30s)
                        (default: TERMINATION_GRACE_PERIOD_SECONDS minus 1 s, 29 s
                        without it)                                                [ZTUNNEL_DRAIN_TIMEOUT]
  --max-inbound-connections N
                        concurrent inbound connections per pod, HBONE CONNECT streams (15008)
                        and plaintext (15006) together; beyond it a CONNECT gets 503 and a
                        plaintext connection is reset, flag UO (default 32768)   [ZTUNNEL_MAX_INBOUND_CONNECTIONS]
  --max-pending-handshakes N
                        TLS handshakes in flight per pod on 15008; beyond it the pod's HBONE
                        listener stops accepting until one finishes (default 128) [ZTUNNEL_MAX_PENDING_HANDSHAKES]
";

/// One thread: a hop through ztunnel stays on one CPU with no cross-thread wake-ups,
/// which is what keeps its added latency low on small nodes.
pub const DEFAULT_WORKER_THREADS: usize = 1;
pub const MAX_WORKER_THREADS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where workloads, services and policies come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadSource {
    /// The controller's delta xDS.
    Controller,
    /// A local state file, re-read when it changes.
    File(PathBuf),
}

/// Where workload certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateAuthority {
    /// The controller's CA (`CreateCertificate`).
    Controller,
    /// A CA key on local disk.
    LocalDir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub workloads: WorkloadSource,
    pub certificates: CertificateAuthority,
    /// Set when anything comes from the controller.
    pub control_plane: Option<ControlPlaneConfig>,
    /// The node this ztunnel serves (reported to the controller).
    pub node_name: String,
    pub zds_socket: PathBuf,
    pub trust_domain: String,
    pub log_format: LogFormat,
    /// How often the state file is checked for changes.
    pub state_poll: Duration,
    /// Runtime threads; 1 runs everything on the main thread.
    pub worker_threads: usize,
    /// The admin endpoint (`/config_dump`, `/quitquitquit`).
    pub admin_address: SocketAddr,
    /// The readiness endpoint (`/healthz/ready`).
    pub readiness_address: SocketAddr,
    /// The metrics endpoint (`/metrics`, `/stats/prometheus`).
    pub metrics_address: SocketAddr,
    /// After SIGTERM: how long connections in flight may finish before they are closed.
    pub drain_timeout: Duration,
    /// Per-pod bounds on inbound connections and pending handshakes.
    pub limits: LimitsConfig,
}

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_PERIOD_SECS: u64 = 30;

/// The drain deadline when `--drain-timeout` is not given: the pod's grace period
/// (`TERMINATION_GRACE_PERIOD_SECONDS`, as the DaemonSet passes it) minus one second, so
/// that ztunnel closes what is left itself before the kubelet's SIGKILL.
fn default_drain_timeout(grace_period: Option<&str>) -> Result<Duration, ConfigError> {
    let secs = match grace_period {
        None => DEFAULT_GRACE_PERIOD_SECS,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ConfigError::GracePeriod(v.to_owned()))?,
    };
    Ok(Duration::from_secs(secs.saturating_sub(1)))
}

/// The largest value a limit flag takes: a semaphore holds at most this many permits.
const MAX_LIMIT: usize = 1 << 28;

/// A limit flag's value: a whole number from 1 to [`MAX_LIMIT`], `default` when absent.
fn limit(flag: &'static str, value: Option<String>, default: usize) -> Result<usize, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    value
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or(ConfigError::Limit {
            flag,
            value,
            max: MAX_LIMIT,
        })
}

/// `--drain-timeout`: seconds (`20`, `0.5`) or a Go-style duration (`10s`, `1m30s`), as
/// Istio's own flags take them.
fn parse_drain_timeout(value: &str) -> Result<Duration, ConfigError> {
    let trimmed = value.trim();
    trimmed
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .or_else(|| api::config::duration::parse_duration(trimmed).ok())
        .ok_or_else(|| ConfigError::DrainTimeout(value.to_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} is required (flag or environment variable)")]
    Required(&'static str),
    #[error("give either --xds-address (the controller) or --state-file (standalone), not both")]
    TwoWorkloadSources,
    #[error("{0} is needed with --xds-address (flag or environment variable)")]
    NeededWithController(&'static str),
    #[error("--log-format must be text or json, not {0:?}")]
    LogFormat(String),
    #[error("--worker-threads must be a whole number from 1 to {MAX_WORKER_THREADS}, not {0:?}")]
    WorkerThreads(String),
    #[error("{flag} must be an IP address and port such as 127.0.0.1:15000, not {value:?}")]
    Address { flag: &'static str, value: String },
    #[error(
        "--admin-address {0} is a wildcard address: the admin endpoint can stop ztunnel, so give a specific one such as 127.0.0.1:15000"
    )]
    WildcardAdmin(SocketAddr),
    #[error(
        "--drain-timeout must be seconds such as 20 or 0.5, or a duration such as 10s or 1m30s, not {0:?}"
    )]
    DrainTimeout(String),
    #[error("TERMINATION_GRACE_PERIOD_SECONDS must be a whole number of seconds, not {0:?}")]
    GracePeriod(String),
    #[error("{flag} must be a whole number from 1 to {max}, not {value:?}")]
    Limit {
        flag: &'static str,
        value: String,
        max: usize,
    },
    #[error("help requested")]
    Help,
}

impl Config {
    /// Parses `args` (without the program name); `env` looks up environment variables.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (mut state_file, mut ca_dir, mut zds_socket) = (
            env("ZTUNNEL_STATE_FILE"),
            env("ZTUNNEL_CA_DIR"),
            env("ZTUNNEL_ZDS_SOCKET"),
        );
        let (mut xds_address, mut root_cert, mut token_file, mut node_name) = (
            env("ZTUNNEL_XDS_ADDRESS"),
            env("ZTUNNEL_ROOT_CERT"),
            env("ZTUNNEL_TOKEN_FILE"),
            env("NODE_NAME"),
        );
        let mut server_name = DEFAULT_SERVER_NAME.to_owned();
        let mut trust_domain = DEFAULT_TRUST_DOMAIN.to_owned();
        let mut log_format = LogFormat::Text;
        let mut worker_threads = env("ZTUNNEL_WORKER_THREADS");
        let mut admin_address = env("ZTUNNEL_ADMIN_ADDRESS");
        let mut readiness_address = env("ZTUNNEL_READINESS_ADDRESS");
        let mut metrics_address = env("ZTUNNEL_METRICS_ADDRESS");
        let mut drain_timeout = env("ZTUNNEL_DRAIN_TIMEOUT");
        let mut max_inbound_connections = env("ZTUNNEL_MAX_INBOUND_CONNECTIONS");
        let mut max_pending_handshakes = env("ZTUNNEL_MAX_PENDING_HANDSHAKES");
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| ConfigError::MissingValue(flag.clone()))
            };
            match flag.as_str() {
                "--state-file" => state_file = Some(value()?),
                "--ca-dir" => ca_dir = Some(value()?),
                "--zds-socket" => zds_socket = Some(value()?),
                "--xds-address" => xds_address = Some(value()?),
                "--root-cert" => root_cert = Some(value()?),
                "--token-file" => token_file = Some(value()?),
                "--node-name" => node_name = Some(value()?),
                "--server-name" => server_name = value()?,
                "--trust-domain" => trust_domain = value()?,
                "--log-format" => {
                    log_format = match value()?.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        other => return Err(ConfigError::LogFormat(other.to_owned())),
                    }
                }
                "--worker-threads" => worker_threads = Some(value()?),
                "--admin-address" => admin_address = Some(value()?),
                "--readiness-address" => readiness_address = Some(value()?),
                "--metrics-address" => metrics_address = Some(value()?),
                "--drain-timeout" => drain_timeout = Some(value()?),
                "--max-inbound-connections" => max_inbound_connections = Some(value()?),
                "--max-pending-handshakes" => max_pending_handshakes = Some(value()?),
                "-h" | "--help" => return Err(ConfigError::Help),
                _ => return Err(ConfigError::Unknown(flag)),
            }
        }
        let control_plane = match &xds_address {
            None => None,
            Some(address) => Some(ControlPlaneConfig {
                address: address.clone(),
                server_name,
                root_cert: root_cert
                    .ok_or(ConfigError::NeededWithController("--root-cert"))?
                    .into(),
                token_file: token_file
                    .ok_or(ConfigError::NeededWithController("--token-file"))?
                    .into(),
            }),
        };
        let workloads = match (xds_address.is_some(), state_file) {
            (true, Some(_)) => return Err(ConfigError::TwoWorkloadSources),
            (true, None) => WorkloadSource::Controller,
            (false, Some(file)) => WorkloadSource::File(file.into()),
            (false, None) => return Err(ConfigError::Required("--xds-address or --state-file")),
        };
        let certificates = match (ca_dir, control_plane.is_some()) {
            (Some(dir), _) => CertificateAuthority::LocalDir(dir.into()),
            (None, true) => CertificateAuthority::Controller,
            (None, false) => return Err(ConfigError::Required("--ca-dir (or --xds-address)")),
        };
        let node_name = match (node_name, &control_plane) {
            (Some(n), _) => n,
            (None, Some(_)) => return Err(ConfigError::NeededWithController("--node-name")),
            (None, None) => String::new(),
        };
        let address = |flag: &'static str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_owned());
            value
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::Address { flag, value })
        };
        let admin_address = address("--admin-address", admin_address, DEFAULT_ADMIN_ADDRESS)?;
        if admin_address.ip().is_unspecified() {
            return Err(ConfigError::WildcardAdmin(admin_address));
        }
        let readiness_address = address(
            "--readiness-address",
            readiness_address,
            DEFAULT_READINESS_ADDRESS,
        )?;
        let metrics_address = address(
            "--metrics-address",
            metrics_address,
            DEFAULT_METRICS_ADDRESS,
        )?;
        let drain_timeout = match drain_timeout {
            Some(v) => parse_drain_timeout(&v)?,
            None => default_drain_timeout(env("TERMINATION_GRACE_PERIOD_SECONDS").as_deref())?,
        };
        let limits = LimitsConfig {
            max_inbound_connections: limit(
                "--max-inbound-connections",
                max_inbound_connections,
                DEFAULT_MAX_INBOUND_CONNECTIONS,
            )?,
            max_pending_handshakes: limit(
                "--max-pending-handshakes",
                max_pending_handshakes,
                DEFAULT_MAX_PENDING_HANDSHAKES,
            )?,
        };
        Ok(Config {
            limits,
            drain_timeout,
            admin_address,
            readiness_address,
            metrics_address,
            workloads,
            certificates,
            control_plane,
            node_name,
            zds_socket: zds_socket
                .unwrap_or_else(|| inpod::zds::DEFAULT_SOCKET.to_owned())
                .into(),
            trust_domain,
            log_format,
            state_poll: Duration::from_millis(200),
            worker_threads: match worker_threads {
                None => DEFAULT_WORKER_THREADS,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
                    .ok_or(ConfigError::WorkerThreads(v))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_environment_and_defaults_apply() {
        let env = |k: &str| (k == "ZTUNNEL_CA_DIR").then(|| "/env/ca".to_owned());
        let c = Config::parse(
            args(&["--state-file", "/s.yaml", "--log-format", "json"]),
            env,
        )
        .unwrap();
        assert_eq!(c.workloads, WorkloadSource::File("/s.yaml".into()));
        assert_eq!(
            c.certificates,
            CertificateAuthority::LocalDir("/env/ca".into())
        );
        assert_eq!(c.control_plane, None);
        assert_eq!(c.zds_socket, PathBuf::from(inpod::zds::DEFAULT_SOCKET));
        assert_eq!(c.trust_domain, "cluster.local");
        assert_eq!(c.log_format, LogFormat::Json);
        let c = Config::parse(args(&["--state-file", "a", "--ca-dir", "/flag/ca"]), env).unwrap();
        assert_eq!(
            c.certificates,
            CertificateAuthority::LocalDir("/flag/ca".into())
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let none = |_: &str| None;
        assert_eq!(
            Config::parse(args(&["--ca-dir", "x"]), none),
            Err(ConfigError::Required("--xds-address or --state-file"))
        );
        assert_eq!(
            Config::parse(args(&["--state-file"]), none),
            Err(ConfigError::MissingValue("--state-file".into()))
        );
        assert_eq!(
            Config::parse(args(&["--bogus"]), none),
            Err(ConfigError::Unknown("--bogus".into()))
        );
        assert_eq!(
            Config::parse(args(&["--log-format", "xml"]), none),
            Err(ConfigError::LogFormat("xml".into()))
        );
        for bad in ["0", "-1", "two", "257"] {
            assert_eq!(
                Config::parse(
                    args(&[
                        "--state-file",
                        "s",
                        "--ca-dir",
                        "c",
                        "--worker-threads",
                        bad
                    ]),
                    none
                ),
                Err(ConfigError::WorkerThreads(bad.into()))
            );
        }
    }

    #[test]
    fn the_controller_supplies_workloads_and_certificates() {
        let env = |k: &str| (k == "NODE_NAME").then(|| "node-1".to_owned());
        let base = [
            "--xds-address",
            "https://10.0.0.1:15012",
            "--root-cert",
            "/root.pem",
            "--token-file",
            "/token",
        ];
        let c = Config::parse(args(&base), env).unwrap();
        assert_eq!(c.workloads, WorkloadSource::Controller);
        assert_eq!(c.certificates, CertificateAuthority::Controller);
        assert_eq!(c.node_name, "node-1");
        let cp = c.control_plane.unwrap();
        assert_eq!(cp.address, "https://10.0.0.1:15012");
        assert_eq!(cp.server_name, DEFAULT_SERVER_NAME);
        assert_eq!(cp.root_cert, PathBuf::from("/root.pem"));
        // A local CA may still sign while xDS comes from the controller.
        let mut local = args(&base);
        local.extend(args(&["--ca-dir", "/ca"]));
        let c = Config::parse(local, env).unwrap();
        assert_eq!(c.certificates, CertificateAuthority::LocalDir("/ca".into()));

        let none = |_: &str| None;
        assert_eq!(
            Config::parse(args(&base), none),
            Err(ConfigError::NeededWithController("--node-name"))
        );
        assert_eq!(
            Config::parse(args(&base[..4]), env),
            Err(ConfigError::NeededWithController("--token-file"))
        );
        let mut both = args(&base);
        both.extend(args(&["--state-file", "s"]));
        assert_eq!(
            Config::parse(both, env),
            Err(ConfigError::TwoWorkloadSources)
        );
    }

    #[test]
    fn metrics_on_15020_everywhere_unless_told() {
        let base = args(&["--state-file", "s", "--ca-dir", "c"]);
        let none = |_: &str| None;
        let c = Config::parse(base.clone(), none).unwrap();
        assert_eq!(c.metrics_address, "0.0.0.0:15020".parse().unwrap());

        let env = |k: &str| (k == "ZTUNNEL_METRICS_ADDRESS").then(|| "10.0.0.1:9020".to_owned());
        let c = Config::parse(base.clone(), env).unwrap();
        assert_eq!(c.metrics_address, "10.0.0.1:9020".parse().unwrap());
        let mut flags = base.clone();
        flags.extend(args(&["--metrics-address", "[::]:15020"]));
        let c = Config::parse(flags, env).unwrap();
        assert_eq!(c.metrics_address, "[::]:15020".parse().unwrap());

        let mut flags = base;
        flags.extend(args(&["--metrics-address", "15020"]));
        assert_eq!(
            Config::parse(flags, none),
            Err(ConfigError::Address {
                flag: "--metrics-address",
                value: "15020".into()
            })
        );
        assert!(USAGE.contains("--metrics-address ADDR"), "{USAGE}");
        assert!(USAGE.contains("[ZTUNNEL_METRICS_ADDRESS]"), "{USAGE}");
    }

    #[test]
    fn admin_on_localhost_and_readiness_everywhere_unless_told() {
        let base = args(&["--state-file", "s", "--ca-dir", "c"]);
        let none = |_: &str| None;
        let c = Config::parse(base.clone(), none).unwrap();
        assert_eq!(c.admin_address, "127.0.0.1:15000".parse().unwrap());
        assert!(c.admin_address.ip().is_loopback());
        assert_eq!(c.readiness_address, "0.0.0.0:15021".parse().unwrap());

        let env = |k: &str| match k {
            "ZTUNNEL_ADMIN_ADDRESS" => Some("127.0.0.1:9000".to_owned()),
            "ZTUNNEL_READINESS_ADDRESS" => Some("10.0.0.1:9021".to_owned()),
            _ => None,
        };
        let c = Config::parse(base.clone(), env).unwrap();
        assert_eq!(c.admin_address, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.readiness_address, "10.0.0.1:9021".parse().unwrap());
        let mut flags = base.clone();
        flags.extend(args(&[
            "--admin-address",
            "[::1]:15000",
            "--readiness-address",
            "127.0.0.1:0",
        ]));
        let c = Config::parse(flags, env).unwrap();
        assert_eq!(c.admin_address, "[::1]:15000".parse().unwrap());
        assert_eq!(c.readiness_address, "127.0.0.1:0".parse().unwrap());

        for wildcard in ["0.0.0.0:15000", "[::]:15000"] {
            let mut flags = base.clone();
            flags.extend(args(&["--admin-address", wildcard]));
            assert_eq!(
                Config::parse(flags, none),
                Err(ConfigError::WildcardAdmin(wildcard.parse().unwrap()))
            );
        }
        let mut flags = base;
        flags.extend(args(&["--readiness-address", "localhost:15021"]));
        assert_eq!(
            Config::parse(flags, none),
            Err(ConfigError::Address {
                flag: "--readiness-address",
                value: "localhost:15021".into()
            })
        );
    }

    #[test]
    fn worker_threads_default_to_one_and_can_be_raised() {
        let base = args(&["--state-file", "s", "--ca-dir", "c"]);
        let none = |_: &str| None;
        assert_eq!(Config::parse(base.clone(), none).unwrap().worker_threads, 1);
        let env = |k: &str| (k == "ZTUNNEL_WORKER_THREADS").then(|| "4".to_owned());
        assert_eq!(Config::parse(base.clone(), env).unwrap().worker_threads, 4);
        let mut flag = base;
        flag.extend(args(&["--worker-threads", "2"]));
        assert_eq!(Config::parse(flag, env).unwrap().worker_threads, 2);
    }

    #[test]
    fn the_drain_timeout_follows_the_grace_period_unless_given() {
        let base = args(&["--state-file", "s", "--ca-dir", "c"]);
        let drain = |extra: &[&str], env: &dyn Fn(&str) -> Option<String>| {
            let mut flags = base.clone();
            flags.extend(args(extra));
            Config::parse(flags, env).map(|c| c.drain_timeout)
        };
        let none = |_: &str| None;
        assert_eq!(drain(&[], &none), Ok(Duration::from_secs(29)));
        let grace = |k: &str| (k == "TERMINATION_GRACE_PERIOD_SECONDS").then(|| "60".to_owned());
        assert_eq!(drain(&[], &grace), Ok(Duration::from_secs(59)));
        let zero = |k: &str| (k == "TERMINATION_GRACE_PERIOD_SECONDS").then(|| "0".to_owned());
        assert_eq!(drain(&[], &zero), Ok(Duration::ZERO));
        let env = |k: &str| match k {
            "ZTUNNEL_DRAIN_TIMEOUT" => Some("7".to_owned()),
            "TERMINATION_GRACE_PERIOD_SECONDS" => Some("60".to_owned()),
            _ => None,
        };
        assert_eq!(drain(&[], &env), Ok(Duration::from_secs(7)));
        assert_eq!(
            drain(&["--drain-timeout", "0.5"], &env),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            drain(&["--drain-timeout", "-1"], &none),
            Err(ConfigError::DrainTimeout("-1".into()))
        );
        assert_eq!(
            drain(&["--drain-timeout", "10s"], &none),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            drain(&["--drain-timeout", "1m30s"], &none),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(
            drain(&["--drain-timeout", "250ms"], &none),
            Ok(Duration::from_millis(250))
        );
        for bad in ["10 parsecs", "-5s", "soon"] {
            assert_eq!(
                drain(&["--drain-timeout", bad], &none),
                Err(ConfigError::DrainTimeout(bad.into()))
            );
        }
        let bad = |k: &str| (k == "TERMINATION_GRACE_PERIOD_SECONDS").then(|| "soon".to_owned());
        assert_eq!(
            drain(&[], &bad),
            Err(ConfigError::GracePeriod("soon".into()))
        );
    }

    #[test]
    fn limits_have_defaults_and_can_be_set_by_flag_or_environment() {
        let base = args(&["--state-file", "s", "--ca-dir", "c"]);
        let none = |_: &str| None;
        assert_eq!(
            Config::parse(base.clone(), none).unwrap().limits,
            LimitsConfig {
                max_inbound_connections: 32_768,
                max_pending_handshakes: 128,
            }
        );
        let env = |k: &str| match k {
            "ZTUNNEL_MAX_INBOUND_CONNECTIONS" => Some("20000".to_owned()),
            "ZTUNNEL_MAX_PENDING_HANDSHAKES" => Some("16".to_owned()),
            _ => None,
        };
        let limits = Config::parse(base.clone(), env).unwrap().limits;
        assert_eq!(limits.max_inbound_connections, 20_000);
        assert_eq!(limits.max_pending_handshakes, 16);
        let mut flags = base.clone();
        flags.extend(args(&[
            "--max-inbound-connections",
            "5",
            "--max-pending-handshakes",
            "1",
        ]));
        let limits = Config::parse(flags, env).unwrap().limits;
        assert_eq!(limits.max_inbound_connections, 5);
        assert_eq!(limits.max_pending_handshakes, 1);
        for (flag, bad) in [
            ("--max-inbound-connections", "0"),
            ("--max-inbound-connections", "-3"),
            ("--max-inbound-connections", "many"),
            ("--max-pending-handshakes", "999999999999"),
        ] {
            let mut flags = base.clone();
            flags.extend(args(&[flag, bad]));
            assert_eq!(
                Config::parse(flags, none),
                Err(ConfigError::Limit {
                    flag,
                    value: bad.into(),
                    max: MAX_LIMIT,
                })
            );
        }
    }
}
