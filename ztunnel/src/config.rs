//! ztunnel's settings, from flags with environment fallbacks.

use std::path::PathBuf;
use std::time::Duration;

use hbone::DEFAULT_TRUST_DOMAIN;

pub const USAGE: &str = "\
usage: ztunnel --state-file FILE --ca-dir DIR [options]

  --state-file FILE     workloads and services (YAML/JSON; see ztunnel/README.md)  [ZTUNNEL_STATE_FILE]
  --ca-dir DIR          local CA: DIR/ca.crt and DIR/ca.key (PEM)                  [ZTUNNEL_CA_DIR]
  --zds-socket PATH     the node agent's ZDS socket (default /var/run/ztunnel/ztunnel.sock) [ZTUNNEL_ZDS_SOCKET]
  --trust-domain TD     trust domain for pods the state does not know (default cluster.local)
  --log-format FORMAT   text (default) or json; the level comes from RUST_LOG (default info)
  --worker-threads N    proxy threads (default 1: one thread serves every pod)         [ZTUNNEL_WORKER_THREADS]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_file: PathBuf,
    pub ca_dir: PathBuf,
    pub zds_socket: PathBuf,
    pub trust_domain: String,
    pub log_format: LogFormat,
    /// How often the state file is checked for changes.
    pub state_poll: Duration,
    /// Runtime threads; 1 runs everything on the main thread.
    pub worker_threads: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} is required (flag or environment variable)")]
    Required(&'static str),
    #[error("--log-format must be text or json, not {0:?}")]
    LogFormat(String),
    #[error("--worker-threads must be a whole number from 1 to {MAX_WORKER_THREADS}, not {0:?}")]
    WorkerThreads(String),
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
        let mut trust_domain = DEFAULT_TRUST_DOMAIN.to_owned();
        let mut log_format = LogFormat::Text;
        let mut worker_threads = env("ZTUNNEL_WORKER_THREADS");
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
                "--trust-domain" => trust_domain = value()?,
                "--log-format" => {
                    log_format = match value()?.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        other => return Err(ConfigError::LogFormat(other.to_owned())),
                    }
                }
                "--worker-threads" => worker_threads = Some(value()?),
                "-h" | "--help" => return Err(ConfigError::Help),
                _ => return Err(ConfigError::Unknown(flag)),
            }
        }
        Ok(Config {
            state_file: state_file
                .ok_or(ConfigError::Required("--state-file"))?
                .into(),
            ca_dir: ca_dir.ok_or(ConfigError::Required("--ca-dir"))?.into(),
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
        assert_eq!(c.state_file, PathBuf::from("/s.yaml"));
        assert_eq!(c.ca_dir, PathBuf::from("/env/ca"));
        assert_eq!(c.zds_socket, PathBuf::from(inpod::zds::DEFAULT_SOCKET));
        assert_eq!(c.trust_domain, "cluster.local");
        assert_eq!(c.log_format, LogFormat::Json);
        let c = Config::parse(args(&["--state-file", "a", "--ca-dir", "/flag/ca"]), env).unwrap();
        assert_eq!(c.ca_dir, PathBuf::from("/flag/ca"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let none = |_: &str| None;
        assert_eq!(
            Config::parse(args(&["--ca-dir", "x"]), none),
            Err(ConfigError::Required("--state-file"))
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
}
