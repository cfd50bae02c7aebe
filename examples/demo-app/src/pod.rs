//! Who is answering: every response names its pod and version so a tour can see which
//! replica, and which version of reviews, served each hop.

use crate::discovery::Env;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub version: String,
}

impl PodInfo {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
        }
    }

    /// The pod name as kubelet exposes it (`HOSTNAME`), else the kernel's host name.
    pub fn from_env(version: impl Into<String>, env: &Env) -> Self {
        let name = env
            .get("HOSTNAME")
            .filter(|h| !h.trim().is_empty())
            .or_else(machine_hostname)
            .unwrap_or_else(|| "unknown".to_string());
        Self::new(name.trim(), version)
    }
}

fn machine_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_variable_names_the_pod() {
        let env = Env::from_pairs([("HOSTNAME", "reviews-v2-7f9c\n")]);
        assert_eq!(
            PodInfo::from_env("v2", &env),
            PodInfo::new("reviews-v2-7f9c", "v2")
        );
    }

    #[test]
    fn without_the_variable_falls_back_to_a_non_empty_name() {
        let pod = PodInfo::from_env("v1", &Env::from_pairs([("HOSTNAME", " ")]));
        assert!(!pod.name.is_empty());
        assert_eq!(pod.version, "v1");
    }
}
