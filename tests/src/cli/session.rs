//! What `lab up` leaves in its work directory so that `lab exec` can find the pods:
//! the process holding every namespace, whether it runs in its own user namespace, and
//! each pod's namespace descriptor and environment.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::mesh::write_atomically;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The `lab up` process: it holds every namespace open.
    pub pid: u32,
    /// `lab up` runs in a user namespace of its own (not root): `lab exec` joins it first.
    pub user_namespace: bool,
    pub manifests: PathBuf,
    pub targets: Vec<Target>,
}

/// Something `lab exec` can enter: a pod (`namespace/name`) or a node (`node-N`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `/proc/PID/fd/N` of `lab up`.
    pub netns: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Session {
    pub fn path(work_dir: &Path) -> PathBuf {
        work_dir.join("session.json")
    }

    /// The session of a running cluster.
    pub fn of(cluster: &Cluster, user_namespace: bool) -> Result<Session> {
        let mut targets = Vec::new();
        for node in cluster.lab().nodes() {
            targets.push(Target {
                name: format!("node-{}", node.index()),
                netns: node.netns_path()?,
                env: Vec::new(),
            });
        }
        for (plan, pod) in cluster.pods() {
            targets.push(Target {
                name: plan.key.to_string(),
                netns: pod.netns_path()?,
                env: plan.env.clone(),
            });
        }
        Ok(Session {
            pid: std::process::id(),
            user_namespace,
            manifests: cluster.config().manifests.clone(),
            targets,
        })
    }

    pub fn write(&self, work_dir: &Path) -> Result<()> {
        write_atomically(&Self::path(work_dir), &serde_json::to_vec_pretty(self)?)
    }

    /// The session in `work_dir`, if its `lab up` is still alive.
    pub fn read_live(work_dir: &Path) -> Result<Option<Session>> {
        let path = Self::path(work_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let session: Session = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab session file", path.display()))?;
        Ok(Path::new(&format!("/proc/{}", session.pid))
            .exists()
            .then_some(session))
    }

    /// The target called `name`: `namespace/name`, a pod name that only one namespace
    /// uses, or `node-N`.
    pub fn find(&self, name: &str) -> Result<&Target> {
        if let Some(t) = self.targets.iter().find(|t| t.name == name) {
            return Ok(t);
        }
        let matches: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.name.rsplit('/').next() == Some(name))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => bail!(
                "no pod or node {name:?}; there are: {}",
                self.targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            many => bail!(
                "{name:?} is ambiguous: {}; say NAMESPACE/NAME",
                many.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            netns: PathBuf::from("/proc/1/fd/3"),
            env: vec![],
        }
    }

    #[test]
    fn finds_by_full_name_unique_short_name_or_node() {
        let session = Session {
            pid: 1,
            user_namespace: false,
            manifests: PathBuf::from("m"),
            targets: vec![
                target("node-0"),
                target("shop/web"),
                target("shop/db"),
                target("blog/web"),
            ],
        };
        assert_eq!(session.find("shop/web").unwrap().name, "shop/web");
        assert_eq!(session.find("db").unwrap().name, "shop/db");
        assert_eq!(session.find("node-0").unwrap().name, "node-0");
        let ambiguous = session.find("web").unwrap_err().to_string();
        assert!(ambiguous.contains("ambiguous") && ambiguous.contains("blog/web"));
        let missing = session.find("nope").unwrap_err().to_string();
        assert!(missing.contains("shop/db"), "{missing}");
    }
}
