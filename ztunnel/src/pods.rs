//! The pods ztunnel currently proxies for, keyed by pod uid.

use std::collections::{HashMap, HashSet};

use inpod::Netns;
use tracing::info;

use crate::proxy::{PodInfo, PodProxies, ProxyInputs, StartError};
use crate::socket::PodSockets;

/// Running proxies per pod. Owned by the ZDS loop, so changes are applied in order.
#[derive(Debug)]
pub struct PodRegistry {
    inputs: ProxyInputs,
    pods: HashMap<String, PodProxies>,
}

impl PodRegistry {
    pub fn new(inputs: ProxyInputs) -> Self {
        Self {
            inputs,
            pods: HashMap::new(),
        }
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
        let proxies = PodProxies::start(info, PodSockets::new(netns), self.inputs.clone()).await?;
        self.pods.insert(uid, proxies);
        Ok(())
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Stops a pod's proxies; unknown uids are fine (deletes are idempotent). The
    /// certificate of the pod's identity is released once no other pod here uses it.
    pub async fn remove(&mut self, uid: &str) {
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
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Stops everything (shutdown).
    pub async fn clear(&mut self) {
        for (_, proxies) in self.pods.drain() {
            proxies.stop().await;
        }
    }
}
