//! The `node-agent` command line.

use std::path::PathBuf;
use std::time::Duration;

use crate::source::file::DEFAULT_POLL_INTERVAL;

pub const USAGE: &str = "\
usage: node-agent --pods FILE [options]

  --pods FILE           pod list (JSON) to watch; see daemonset/README.md
  --zds-socket PATH     where ztunnel connects (default /var/run/ztunnel/ztunnel.sock)
  --log-level FILTER    tracing filter, e.g. info or daemonset=debug (default: RUST_LOG, else info)
  --nft PATH            nft binary (default: nft, from PATH)
  --poll-interval-ms N  how often the pod list is checked (default 100)
  --cleanup-on-exit     remove capture from every pod when stopping (default: leave it,
                        so pods stay captured across agent restarts, as Istio does)
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pods: PathBuf,
    pub zds_socket: PathBuf,
    /// `None`: take the filter from `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    pub nft: PathBuf,
    pub poll_interval: Duration,
    pub cleanup_on_exit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("--pods is required")]
    MissingPods,
    #[error("--poll-interval-ms must be a positive integer, not {0:?}")]
    PollInterval(String),
    #[error("help requested")]
    Help,
}

impl Config {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        let mut pods = None;
        let mut zds_socket = PathBuf::from(inpod::zds::DEFAULT_SOCKET);
        let mut log_level = None;
        let mut nft = PathBuf::from("nft");
        let mut poll_interval = DEFAULT_POLL_INTERVAL;
        let mut cleanup_on_exit = false;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| ConfigError::MissingValue(flag.clone()))
            };
            match flag.as_str() {
                "--pods" => pods = Some(PathBuf::from(value()?)),
                "--zds-socket" => zds_socket = value()?.into(),
                "--log-level" => log_level = Some(value()?),
                "--nft" => nft = value()?.into(),
                "--poll-interval-ms" => {
                    let raw = value()?;
                    poll_interval = match raw.parse::<u64>() {
                        Ok(ms) if ms > 0 => Duration::from_millis(ms),
                        _ => return Err(ConfigError::PollInterval(raw)),
                    };
                }
                "--cleanup-on-exit" => cleanup_on_exit = true,
                "-h" | "--help" => return Err(ConfigError::Help),
                _ => return Err(ConfigError::Unknown(flag)),
            }
        }
        Ok(Self {
            pods: pods.ok_or(ConfigError::MissingPods)?,
            zds_socket,
            log_level,
            nft,
            poll_interval,
            cleanup_on_exit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        Config::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        let c = parse(&["--pods", "/tmp/pods.json"]).unwrap();
        assert_eq!(c.pods, PathBuf::from("/tmp/pods.json"));
        assert_eq!(c.zds_socket, PathBuf::from("/var/run/ztunnel/ztunnel.sock"));
        assert_eq!(c.log_level, None);
        assert_eq!(c.nft, PathBuf::from("nft"));
        assert_eq!(c.poll_interval, Duration::from_millis(100));
        assert!(!c.cleanup_on_exit);
    }

    #[test]
    fn every_flag() {
        let c = parse(&[
            "--pods",
            "p.json",
            "--zds-socket",
            "/run/z.sock",
            "--log-level",
            "debug",
            "--nft",
            "/usr/sbin/nft",
            "--poll-interval-ms",
            "20",
            "--cleanup-on-exit",
        ])
        .unwrap();
        assert_eq!(c.zds_socket, PathBuf::from("/run/z.sock"));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.nft, PathBuf::from("/usr/sbin/nft"));
        assert_eq!(c.poll_interval, Duration::from_millis(20));
        assert!(c.cleanup_on_exit);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[]), Err(ConfigError::MissingPods));
        assert_eq!(
            parse(&["--pods"]),
            Err(ConfigError::MissingValue("--pods".into()))
        );
        assert_eq!(
            parse(&["--pods", "p", "--bogus"]),
            Err(ConfigError::Unknown("--bogus".into()))
        );
        assert_eq!(
            parse(&["--pods", "p", "--poll-interval-ms", "0"]),
            Err(ConfigError::PollInterval("0".into()))
        );
        assert_eq!(parse(&["--help"]), Err(ConfigError::Help));
    }
}
