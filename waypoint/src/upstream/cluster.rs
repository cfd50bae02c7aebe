//! Per-cluster runtime state, keyed by (host, subset, port).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dataplane::state::WorkloadState;

use super::lb::LoadBalancer;
use super::outlier::OutlierDetector;
use super::pool::ConnectionPool;
use super::rule::TrafficPolicy;

/// Identifies a cluster, as Envoy's `outbound|PORT|SUBSET|HOST`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// The service FQDN.
    pub host: String,
    /// The subset, if the route named one.
    pub subset: Option<String>,
    /// The service port.
    pub port: u16,
}

/// The runtime state of one cluster, built from its effective [`TrafficPolicy`].
#[derive(Debug)]
pub struct Cluster {
    policy: TrafficPolicy,
    /// Endpoint selection.
    pub load_balancer: LoadBalancer,
    /// Admission control.
    pub pool: Arc<ConnectionPool>,
    /// Outlier detection, when the policy enables it.
    pub outlier: Option<OutlierDetector>,
}

impl Cluster {
    /// Fresh state for `policy`; outlier ticks start at `now`.
    pub fn new(policy: TrafficPolicy, now: Instant) -> Self {
        Cluster {
            load_balancer: LoadBalancer::new(policy.load_balancer.clone()),
            pool: ConnectionPool::new(policy.connection_pool.clone()),
            outlier: policy
                .outlier_detection
                .clone()
                .map(|c| OutlierDetector::new(c, now)),
            policy,
        }
    }

    /// The policy the state was built from.
    pub fn policy(&self) -> &TrafficPolicy {
        &self.policy
    }
}

/// The clusters of the waypoint, created on first use.
#[derive(Debug, Default)]
pub struct Clusters {
    map: Mutex<HashMap<ClusterKey, Arc<Cluster>>>,
}

impl Clusters {
    /// No clusters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of cluster `key`. Created when missing, and replaced (counters, ring and
    /// ejections start afresh, as when istiod pushes a changed cluster to Envoy) when
    /// `policy` differs from the one it was built from. Holders of the old state keep it
    /// until they drop it.
    pub fn get(&self, key: &ClusterKey, policy: &TrafficPolicy, now: Instant) -> Arc<Cluster> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(key)
            && c.policy == *policy
        {
            return c.clone();
        }
        let cluster = Arc::new(Cluster::new(policy.clone(), now));
        map.insert(key.clone(), cluster.clone());
        cluster
    }

    /// Drops the clusters of services and workloads that `state` no longer has (their
    /// load-balancer, outlier and connection-pool state with them; a cluster still in use
    /// lives on with its users, and one needed again starts afresh).
    pub fn retain_known(&self, state: &WorkloadState) {
        self.retain(|key| match key.host.parse::<IpAddr>() {
            // A workload addressed directly: its cluster is named by its IP.
            Ok(ip) => state.workload_by_ip(ip).is_some(),
            Err(_) => state.service_by_hostname(&key.host).is_some(),
        });
    }

    /// Keeps only the clusters for which `keep` is true (to drop removed services).
    pub fn retain(&self, mut keep: impl FnMut(&ClusterKey) -> bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| keep(k));
    }

    /// Number of clusters.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
