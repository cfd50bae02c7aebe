//! The local state file: workloads and services in YAML (or JSON), with the fields of
//! Istio's workload API (`istio.workload.Workload` / `Service`) in camelCase. Used until
//! the controller pushes the same data over xDS, and for running ztunnel standalone.
//!
//! ```yaml
//! workloads:
//!   - uid: default/echo-1
//!     name: echo-1
//!     namespace: default
//!     serviceAccount: echo
//!     node: node-1
//!     addresses: [10.244.1.2]
//!     tunnelProtocol: HBONE
//!     services:
//!       default/echo.default.svc.cluster.local: {80: 8080}
//! services:
//!   - name: echo
//!     namespace: default
//!     hostname: echo.default.svc.cluster.local
//!     vips: [10.96.0.10]
//!     ports: {80: 8080}
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hbone::{DEFAULT_TRUST_DOMAIN, Identity};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info};

use super::{
    PortMap, Service, ServiceKey, StateError, StateStore, TunnelProtocol, Workload, WorkloadState,
};

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub workloads: Vec<LocalWorkload>,
    #[serde(default)]
    pub services: Vec<LocalService>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalWorkload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub tunnel_protocol: LocalTunnelProtocol,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canonical_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canonical_revision: String,
    /// `namespace/hostname -> {servicePort: targetPort}`.
    #[serde(default)]
    pub services: BTreeMap<String, PortMap>,
    #[serde(default)]
    pub status: LocalHealth,
    /// The pod's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LocalTunnelProtocol {
    #[default]
    None,
    Hbone,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalHealth {
    #[default]
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalService {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    #[serde(default)]
    pub ports: PortMap,
}

fn default_service_account() -> String {
    "default".to_owned()
}

/// Why a state file was refused. The previous state stays in force.
#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("state file {path}: workload {uid:?}: {reason}")]
    Workload {
        path: PathBuf,
        uid: String,
        reason: String,
    },
    #[error("state file {path}: service {name:?} in namespace {namespace:?}: {reason}")]
    Service {
        path: PathBuf,
        name: String,
        namespace: String,
        reason: String,
    },
    #[error("state file {path}: {source}")]
    Inconsistent {
        path: PathBuf,
        source: Box<StateError>,
    },
}

impl LocalConfig {
    /// Reads and validates a state file.
    pub fn load(path: &Path) -> Result<WorkloadState, LocalConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LocalConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)?.into_state(path)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, LocalConfigError> {
        serde_yaml_ng::from_str(text).map_err(|source| LocalConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Validates every object and builds the state.
    pub fn into_state(self, path: &Path) -> Result<WorkloadState, LocalConfigError> {
        let workloads = self
            .workloads
            .into_iter()
            .map(|w| {
                let uid = w.uid.clone();
                w.into_workload()
                    .map_err(|reason| LocalConfigError::Workload {
                        path: path.to_owned(),
                        uid,
                        reason,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let services = self
            .services
            .into_iter()
            .map(|s| {
                let (name, namespace) = (s.name.clone(), s.namespace.clone());
                s.into_service()
                    .map_err(|reason| LocalConfigError::Service {
                        path: path.to_owned(),
                        name,
                        namespace,
                        reason,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        WorkloadState::new(workloads, services).map_err(|source| LocalConfigError::Inconsistent {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

impl LocalWorkload {
    fn into_workload(self) -> Result<Workload, String> {
        if self.uid.is_empty() {
            return Err("uid is empty".into());
        }
        if self.name.is_empty() {
            return Err("name is empty".into());
        }
        let trust_domain = self
            .trust_domain
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
        let identity = Identity::new(&trust_domain, &self.namespace, &self.service_account)
            .map_err(|e| format!("no valid identity: {e}"))?;
        let services = self
            .services
            .into_iter()
            .map(|(key, ports)| Ok((parse_service_key(&key)?, check_ports(&key, ports)?)))
            .collect::<Result<_, String>>()?;
        Ok(Workload {
            canonical_name: non_empty_or(self.canonical_name, &self.name),
            canonical_revision: non_empty_or(self.canonical_revision, "latest"),
            workload_name: non_empty_or(self.workload_name, &self.name),
            uid: self.uid,
            name: self.name,
            namespace: self.namespace,
            service_account: self.service_account,
            trust_domain,
            node: self.node,
            addresses: self.addresses,
            protocol: match self.tunnel_protocol {
                LocalTunnelProtocol::None => TunnelProtocol::None,
                LocalTunnelProtocol::Hbone => TunnelProtocol::Hbone,
            },
            services,
            healthy: self.status == LocalHealth::Healthy,
            authorization_policies: Vec::new(),
            identity,
            waypoint: None,
            labels: std::sync::Arc::new(self.labels),
        })
    }
}

impl LocalService {
    fn into_service(self) -> Result<Service, String> {
        if self.name.is_empty() || self.namespace.is_empty() || self.hostname.is_empty() {
            return Err("name, namespace and hostname are required".into());
        }
        let ports = check_ports("ports", self.ports)?;
        Ok(Service {
            name: self.name,
            namespace: self.namespace,
            hostname: self.hostname,
            vips: self.vips,
            ports,
            waypoint: None,
        })
    }
}

fn parse_service_key(key: &str) -> Result<ServiceKey, String> {
    ServiceKey::parse(key).ok_or_else(|| format!("service key {key:?} is not namespace/hostname"))
}

fn check_ports(what: &str, ports: PortMap) -> Result<PortMap, String> {
    if ports.contains_key(&0) {
        return Err(format!("{what}: service port 0 is not a port"));
    }
    Ok(ports)
}

fn non_empty_or(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value
    }
}

/// Loads `path` (failing if it is invalid) and returns the store with a task body that
/// re-reads the file whenever it changes. A later invalid version is logged and ignored:
/// the last good state stays in force.
pub fn load_and_watch(
    path: PathBuf,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Arc<StateStore>, impl Future<Output = ()> + Send + 'static), LocalConfigError> {
    // Fingerprint before reading, so an edit racing with the first load is seen again.
    let mut last_seen = modified(&path);
    let store = Arc::new(StateStore::new(LocalConfig::load(&path)?));
    let watched = store.clone();
    let task = async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let now = modified(&path);
            if now == last_seen {
                continue;
            }
            last_seen = now;
            match LocalConfig::load(&path) {
                Ok(state) => {
                    info!(path = %path.display(), workloads = state.workloads.len(), services = state.services.len(), "state file applied");
                    watched.replace(state);
                }
                Err(e) => error!("{e}; keeping the previous state"),
            }
        }
    };
    Ok((store, task))
}

/// What tells a rewritten file apart: an atomic replace changes the inode, an in-place
/// edit the mtime or length.
fn modified(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

#[cfg(test)]
mod tests;
