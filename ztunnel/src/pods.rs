//! The pods ztunnel currently proxies for, keyed by pod uid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use hbone::Identity;
use inpod::Netns;
use tracing::info;

use crate::proxy::{PodInfo, PodProxies, ProxyInputs, StartError};
use crate::socket::PodSockets;

/// Running proxies per pod. Owned by the ZDS loop, so changes are applied in order.
#[derive(Debug)]
pub struct PodRegistry {
    inputs: ProxyInputs,
    pods: HashMap<String, PodProxies>,
    view: PodsView,
}

/// One pod as the registry last left it (for the admin endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    pub info: PodInfo,
    /// The pod's network namespace as `net:[INODE]`, as `/proc/PID/ns/net` reads.
    pub netns: String,
    pub state: PodState,
    /// When the pod reached this state.
    pub since: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Its proxies are up, presenting `identity`'s certificate.
    Running {
        identity: Identity,
        listeners: Vec<SocketAddr>,
    },
    /// The node agent's last `add` for it failed (it was NACKed with `error`).
    Failed { error: String },
}

/// A read-only window on a [`PodRegistry`], which lives inside the ZDS loop: what each
/// pod's proxies are doing. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PodsView(Arc<Mutex<BTreeMap<String, PodStatus>>>);

impl PodsView {
    /// Every pod the node agent handed over and has not taken back, by uid.
    pub fn list(&self) -> Vec<PodStatus> {
        self.lock().values().cloned().collect()
    }

    /// Shows `status` for `uid`, as the registry would (tests of what reads the view).
    #[cfg(test)]
    pub(crate) fn insert(&self, uid: &str, status: PodStatus) {
        self.lock().insert(uid.to_owned(), status);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PodStatus>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `net:[INODE]`, the name `/proc/PID/ns/net` links to.
fn netns_name(netns: &Netns) -> String {
    match nix::sys::stat::fstat(netns) {
        Ok(stat) => format!("net:[{}]", stat.st_ino),
        Err(_) => format!("{netns:?}"),
    }
}

impl PodRegistry {
    pub fn new(inputs: ProxyInputs) -> Self {
        Self {
            inputs,
            pods: HashMap::new(),
            view: PodsView::default(),
        }
    }

    /// A read-only view of the pods, which stays current as the registry changes.
    pub fn view(&self) -> PodsView {
        self.view.clone()
    }

    /// Starts proxies for a pod. A pod we already run in the same namespace is left alone
    /// (a reconnecting agent re-sends every pod); a new namespace for the same uid replaces
    /// the old proxies.
    pub async fn add(&mut self, info: PodInfo, netns: Netns) -> Result<(), StartError> {
        if let Some(running) = self.pods.get(&info.uid) {
            if running.context().sockets.netns() == &netns {
                return Ok(());
            }
            info!(uid = %info.uid, "pod came back with a new network namespace; replacing its proxies");
            if let Some(old) = self.pods.remove(&info.uid) {
                old.stop().await;
            }
        }
        let uid = info.uid.clone();
        let (pod, netns_name) = (info.clone(), netns_name(&netns));
        let started = PodProxies::start(info, PodSockets::new(netns), self.inputs.clone()).await;
        let state = match &started {
            Ok(proxies) => PodState::Running {
                identity: proxies.context().identity.clone(),
                listeners: proxies.listeners().to_vec(),
            },
            Err(e) => PodState::Failed {
                error: e.to_string(),
            },
        };
        let status = PodStatus {
            info: pod,
            netns: netns_name,
            state,
            since: SystemTime::now(),
        };
        self.view.lock().insert(uid.clone(), status);
        self.pods.insert(uid, started?);
        Ok(())
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Stops a pod's proxies; unknown uids are fine (deletes are idempotent). The
    /// certificate of the pod's identity is released once no other pod here uses it.
    pub async fn remove(&mut self, uid: &str) {
        self.view.lock().remove(uid);
        if let Some(proxies) = self.pods.remove(uid) {
            let identity = proxies.context().identity.clone();
            proxies.stop().await;
            if !self.pods.values().any(|p| p.context().identity == identity) {
                self.inputs.certs.release(&identity);
            }
        }
    }

    /// After a snapshot: stops every pod that was not part of it.
    pub async fn retain(&mut self, keep: &HashSet<String>) {
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            info!(%uid, "pod not in the node agent's snapshot; stopping its proxies");
            self.remove(&uid).await;
        }
        // Pods that failed to start have no proxies but are shown until let go of.
        self.view.lock().retain(|uid, _| keep.contains(uid));
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Stops accepting in every pod (the first step of a graceful stop); connections in
    /// flight go on until [`Self::clear`].
    pub async fn drain(&mut self) {
        for proxies in self.pods.values_mut() {
            proxies.drain().await;
        }
    }

    /// Stops everything (shutdown).
    pub async fn clear(&mut self) {
        self.view.lock().clear();
        for (_, proxies) in self.pods.drain() {
            proxies.stop().await;
        }
    }
}
