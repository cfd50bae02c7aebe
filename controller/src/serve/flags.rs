//! `controller run` flags, with environment fallbacks for the ones a deployment sets.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{DEFAULT_ADMIN, DEFAULT_LISTEN, RunConfig};
use crate::ca::SigningPolicy;
use crate::pipeline::Debounce;
use crate::translate::MeshOptions;

pub const RUN_USAGE: &str = "\
usage: controller run --manifests DIR --tokens FILE [options]

  --manifests DIR        Kubernetes/Istio manifests to watch (recursively)      [CONTROLLER_MANIFESTS]
  --tokens FILE          node bearer tokens, YAML `NODE: TOKEN` per line         [CONTROLLER_TOKENS]
  --state-dir DIR        where the generated root CA is kept (default ./controller-state) [CONTROLLER_STATE_DIR]
  --plugged-ca DIR       use this CA instead (Istio cacerts layout: ca-cert.pem, ca-key.pem,
                         root-cert.pem, optional cert-chain.pem)
  --listen ADDR          xDS + CA over TLS (default 0.0.0.0:15012)
  --admin ADDR           admin endpoint (default 127.0.0.1:15014)
  --server-name NAME     extra DNS name for the serving certificate (repeatable; it always
                         has istiod.istio-system.svc and the --listen IP)
  --server-ip IP         extra IP for the serving certificate (repeatable)
  --trust-domain TD      default cluster.local
  --root-namespace NS    mesh-wide policies live here (default istio-system)
  --cluster-id ID        default Kubernetes
  --max-cert-ttl SECS    longest workload certificate issued (default 7776000 = 90 days)
  --debounce-ms MS       a change after MS of idle is pushed at once; changes within MS of a
                         push are batched until MS of quiet (default 100; at most 1 s)
  --log-format FORMAT    text (default) or json; the level comes from RUST_LOG (default info)
";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} is required (flag or environment variable)")]
    Required(&'static str),
    #[error("{flag}: {value:?} is not {expected}")]
    Invalid {
        flag: String,
        value: String,
        expected: &'static str,
    },
    #[error("help requested")]
    Help,
}

/// Parsed flags: the run config plus how to log.
#[derive(Debug, Clone)]
pub struct RunFlags {
    pub config: RunConfig,
    pub json_logs: bool,
}

fn parsed<T: std::str::FromStr>(
    flag: &str,
    value: String,
    expected: &'static str,
) -> Result<T, FlagError> {
    value.parse().map_err(|_| FlagError::Invalid {
        flag: flag.to_owned(),
        value,
        expected,
    })
}

impl RunFlags {
    /// Parses the arguments after `run`; `env` looks up environment variables.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, FlagError> {
        let mut manifests = env("CONTROLLER_MANIFESTS");
        let mut tokens = env("CONTROLLER_TOKENS");
        let mut state_dir =
            env("CONTROLLER_STATE_DIR").unwrap_or_else(|| "controller-state".to_owned());
        let mut plugged_ca = None;
        let mut listen: SocketAddr = DEFAULT_LISTEN.parse().expect("valid default");
        let mut admin: SocketAddr = DEFAULT_ADMIN.parse().expect("valid default");
        let mut server_names = Vec::new();
        let mut server_ips = Vec::new();
        let mut mesh = MeshOptions::default();
        let mut signing = SigningPolicy::default();
        let mut debounce = Debounce::default();
        let mut json_logs = false;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| FlagError::MissingValue(flag.clone()))
            };
            match flag.as_str() {
                "--manifests" => manifests = Some(value()?),
                "--tokens" => tokens = Some(value()?),
                "--state-dir" => state_dir = value()?,
                "--plugged-ca" => plugged_ca = Some(PathBuf::from(value()?)),
                "--listen" => listen = parsed(&flag, value()?, "an IP:PORT address")?,
                "--admin" => admin = parsed(&flag, value()?, "an IP:PORT address")?,
                "--server-name" => server_names.push(value()?),
                "--server-ip" => server_ips.push(parsed::<IpAddr>(&flag, value()?, "an IP")?),
                "--trust-domain" => mesh.trust_domain = value()?,
                "--root-namespace" => mesh.root_namespace = value()?,
                "--cluster-id" => mesh.cluster_id = value()?,
                "--max-cert-ttl" => {
                    let secs: u64 = parsed(&flag, value()?, "a number of seconds")?;
                    if secs == 0 {
                        return Err(FlagError::Invalid {
                            flag,
                            value: "0".into(),
                            expected: "a positive number of seconds",
                        });
                    }
                    signing.max_ttl = Duration::from_secs(secs);
                }
                "--debounce-ms" => {
                    let ms: u64 = parsed(&flag, value()?, "a number of milliseconds")?;
                    debounce.quiet = Duration::from_millis(ms);
                    debounce.max = debounce.max.max(debounce.quiet);
                }
                "--log-format" => {
                    json_logs = match value()?.as_str() {
                        "text" => false,
                        "json" => true,
                        other => {
                            return Err(FlagError::Invalid {
                                flag,
                                value: other.to_owned(),
                                expected: "text or json",
                            });
                        }
                    }
                }
                "-h" | "--help" => return Err(FlagError::Help),
                _ => return Err(FlagError::Unknown(flag)),
            }
        }
        signing.trust_domain = mesh.trust_domain.clone();
        signing.default_ttl = signing.default_ttl.min(signing.max_ttl);
        Ok(RunFlags {
            config: RunConfig {
                manifests: manifests.ok_or(FlagError::Required("--manifests"))?.into(),
                tokens: tokens.ok_or(FlagError::Required("--tokens"))?.into(),
                state_dir: state_dir.into(),
                plugged_ca,
                listen,
                admin,
                mesh,
                signing,
                server_names,
                server_ips,
                debounce,
            },
            json_logs,
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
    fn defaults_environment_and_flags() {
        let env = |k: &str| (k == "CONTROLLER_TOKENS").then(|| "/env/tokens".to_owned());
        let f = RunFlags::parse(args(&["--manifests", "m"]), env).unwrap();
        assert_eq!(f.config.tokens, PathBuf::from("/env/tokens"));
        assert_eq!(f.config.listen.port(), 15012);
        assert_eq!(f.config.admin, "127.0.0.1:15014".parse().unwrap());
        assert_eq!(f.config.state_dir, PathBuf::from("controller-state"));
        assert!(!f.json_logs);
        let f = RunFlags::parse(
            args(&[
                "--manifests",
                "m",
                "--tokens",
                "t",
                "--trust-domain",
                "example.org",
                "--max-cert-ttl",
                "3600",
                "--server-ip",
                "10.0.0.1",
                "--log-format",
                "json",
            ]),
            env,
        )
        .unwrap();
        assert_eq!(f.config.tokens, PathBuf::from("t"));
        assert_eq!(f.config.signing.trust_domain, "example.org");
        assert_eq!(f.config.mesh.trust_domain, "example.org");
        assert_eq!(f.config.signing.max_ttl, Duration::from_secs(3600));
        assert_eq!(f.config.signing.default_ttl, Duration::from_secs(3600));
        assert_eq!(
            f.config.server_ips,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(f.json_logs);
    }

    #[test]
    fn errors_name_the_flag() {
        let none = |_: &str| None;
        assert_eq!(
            RunFlags::parse(args(&["--tokens", "t"]), none).unwrap_err(),
            FlagError::Required("--manifests")
        );
        let err = RunFlags::parse(args(&["--manifests", "m", "--listen", "nope"]), none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen") && err.contains("nope"), "{err}");
        assert_eq!(
            RunFlags::parse(args(&["--what"]), none).unwrap_err(),
            FlagError::Unknown("--what".into())
        );
        assert_eq!(
            RunFlags::parse(args(&["--manifests"]), none).unwrap_err(),
            FlagError::MissingValue("--manifests".into())
        );
    }
}
