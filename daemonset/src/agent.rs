//! The reconciler: folds the source's events into the store, then makes the node match
//! it. Per pod, the order is fixed: install capture, *then* tell ztunnel (`add`); on the
//! way out, tell ztunnel (`del`) and wait for it, *then* remove capture. A pod whose
//! capture fails is retried on the next change and on a timer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::zds::WorkloadInfo;
use inpod::Netns;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::capture::{Capture, CaptureError};
use crate::enrollment::{Enrollment, NotEnrolled};
use crate::source::{Pod, PodSource};
use crate::store::PodStore;
use crate::zds_server::{PodSet, ZdsHub, ZdsPod};

/// How the agent paces itself.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Delay before retrying pods whose capture failed.
    pub retry_interval: Duration,
    /// Longest wait for ztunnel to confirm a `del` before capture is removed anyway.
    pub delete_timeout: Duration,
    /// Remove capture from every pod on shutdown. Off by default, as in Istio: pods
    /// keep their capture (and ztunnel its pods) across agent restarts and upgrades.
    pub cleanup_on_exit: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            retry_interval: Duration::from_secs(2),
            delete_timeout: Duration::from_secs(5),
            cleanup_on_exit: false,
        }
    }
}

/// Why one pod could not be captured (the agent logs it and retries).
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// `source` already names the path (`inpod::Netns::open` does).
    #[error("pod {namespace}/{name} ({uid}): cannot open its network namespace: {source}")]
    OpenNetns {
        uid: String,
        namespace: String,
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {namespace}/{name} ({uid}): cannot install capture: {source}")]
    Install {
        uid: String,
        namespace: String,
        name: String,
        source: CaptureError,
    },
}

/// A pod whose capture is installed.
#[derive(Debug, Clone)]
struct Captured {
    path: PathBuf,
    pod: ZdsPod,
}

/// The node agent's control loop.
#[derive(Debug)]
pub struct Agent<S, C> {
    source: S,
    capture: C,
    hub: ZdsHub,
    config: AgentConfig,
    store: PodStore,
    captured: BTreeMap<String, Captured>,
    /// Pods whose capture failed: uid -> last error, to log each new error once.
    failing: BTreeMap<String, String>,
    /// Whether the source delivered its first (complete) batch.
    synced: bool,
    /// Whether capture left from before a restart was swept from unenrolled pods.
    swept: bool,
}

impl<S: PodSource, C: Capture> Agent<S, C> {
    pub fn new(source: S, capture: C, hub: ZdsHub, config: AgentConfig) -> Self {
        Self {
            source,
            capture,
            hub,
            config,
            store: PodStore::default(),
            captured: BTreeMap::new(),
            failing: BTreeMap::new(),
            synced: false,
            swept: false,
        }
    }

    /// Runs until `shutdown` is set (or its sender dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut source_open = true;
        loop {
            let retry = !self.failing.is_empty();
            tokio::select! {
                batch = self.source.next_batch(), if source_open => match batch {
                    Ok(Some(events)) => {
                        debug!(events = events.len(), "pod source batch");
                        for event in events {
                            self.store.apply(event);
                        }
                        self.synced = true;
                    }
                    Ok(None) => {
                        info!("pod source ended; keeping the last known pods");
                        source_open = false;
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %e, "pod source error");
                        continue;
                    }
                },
                () = tokio::time::sleep(self.config.retry_interval), if retry => {}
                () = crate::stopped(&mut shutdown) => break,
            }
            if self.synced {
                self.reconcile().await;
            }
        }
        if self.config.cleanup_on_exit {
            info!(
                pods = self.captured.len(),
                "removing capture from every pod before exiting"
            );
            let all: Vec<String> = self.captured.keys().cloned().collect();
            self.release(all).await;
        } else {
            info!(
                pods = self.captured.len(),
                "node agent stopping; capture stays in place for the next agent"
            );
        }
    }

    /// One pass: release pods that left, capture pods that came, publish to ztunnel.
    async fn reconcile(&mut self) {
        let wanted: BTreeMap<String, (Pod, PathBuf)> = self
            .store
            .enrolled()
            .into_iter()
            .map(|(uid, (pod, path))| (uid.to_owned(), (pod.clone(), path.to_owned())))
            .collect();
        // A pod whose namespace path changed (sandbox recreated) leaves and comes back.
        let leaving: Vec<String> = self
            .captured
            .iter()
            .filter(|(uid, c)| wanted.get(*uid).is_none_or(|(_, path)| *path != c.path))
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut changed = !self.hub.is_synced();
        if !leaving.is_empty() {
            self.release(leaving).await;
            changed = true;
        }

        self.failing.retain(|uid, _| wanted.contains_key(uid));
        for (uid, (pod, path)) in &wanted {
            if self.captured.contains_key(uid) {
                continue;
            }
            match self.enroll(pod, path).await {
                Ok(captured) => {
                    info!(%uid, pod = %pod.name, namespace = %pod.namespace, "capture installed");
                    self.failing.remove(uid);
                    self.captured.insert(uid.clone(), captured);
                    changed = true;
                }
                Err(e) => {
                    let message = e.to_string();
                    if self.failing.get(uid) != Some(&message) {
                        warn!(error = %message, retry_in = ?self.config.retry_interval, "pod not captured");
                    } else {
                        debug!(error = %message, "pod still not captured");
                    }
                    self.failing.insert(uid.clone(), message);
                }
            }
        }
        if changed {
            self.hub.publish(self.pod_set());
        }
        // After the first publish, so that ztunnel's snapshot does not wait for it.
        if !self.swept {
            self.sweep_unenrolled().await;
            self.swept = true;
        }
    }

    /// Tells ztunnel to let go of `uids`, waits for it, then removes their capture.
    async fn release(&mut self, uids: Vec<String>) {
        let released: Vec<(String, Captured)> = uids
            .into_iter()
            .filter_map(|uid| self.captured.remove(&uid).map(|c| (uid, c)))
            .collect();
        let generation = self.hub.publish(self.pod_set());
        let delivered = self.hub.delivered(generation);
        if tokio::time::timeout(self.config.delete_timeout, delivered)
            .await
            .is_err()
        {
            warn!(
                timeout = ?self.config.delete_timeout,
                "ztunnel did not confirm the del in time; removing capture anyway"
            );
        }
        for (uid, captured) in released {
            let info = &captured.pod.info;
            match self.capture.remove(&captured.pod.netns).await {
                Ok(()) => {
                    info!(%uid, pod = %info.name, namespace = %info.namespace, "capture removed")
                }
                Err(e) => warn!(
                    %uid, pod = %info.name, namespace = %info.namespace, error = %e,
                    "cannot remove capture (the pod may be gone)"
                ),
            }
        }
    }

    async fn enroll(&self, pod: &Pod, path: &Path) -> Result<Captured, PodError> {
        let netns = Netns::open(path).map_err(|source| PodError::OpenNetns {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            path: path.to_owned(),
            source,
        })?;
        self.capture
            .install(&netns)
            .await
            .map_err(|source| PodError::Install {
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                source,
            })?;
        Ok(Captured {
            path: path.to_owned(),
            pod: ZdsPod {
                info: WorkloadInfo {
                    name: pod.name.clone(),
                    namespace: pod.namespace.clone(),
                    service_account: pod.service_account.clone(),
                    windows_namespace: None,
                },
                netns: Arc::new(netns),
            },
        })
    }

    /// Capture stays in place when the agent stops; a pod unenrolled while no agent ran
    /// would keep it. Removal is idempotent, so on the first pass it is removed from every
    /// reachable pod outside the mesh.
    async fn sweep_unenrolled(&self) {
        for pod in self.store.pods() {
            let unenrolled = matches!(
                self.store.enrollment(pod),
                Enrollment::NotEnrolled(NotEnrolled::OptedOut | NotEnrolled::NotSelected)
            );
            let Some(path) = pod.netns.as_deref().filter(|_| unenrolled) else {
                continue;
            };
            let result = match Netns::open(path) {
                Ok(netns) => self.capture.remove(&netns).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = result {
                debug!(uid = %pod.uid, %error, "no stale capture removed");
            }
        }
    }

    fn pod_set(&self) -> PodSet {
        self.captured
            .iter()
            .map(|(uid, c)| (uid.clone(), c.pod.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
