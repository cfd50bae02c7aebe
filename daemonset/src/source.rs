//! Where the agent learns about namespaces and pods: a [`PodSource`] yields typed
//! events, whatever produces them (the lab's pod list file today, a Kubernetes watch
//! later). The agent folds them into a [`crate::store::PodStore`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;

use tokio::sync::mpsc;

pub mod file;

pub use file::{PodList, PodListError, PodListFile};

/// Kubernetes labels. Ordered so that equality and debug output are deterministic.
pub type Labels = BTreeMap<String, String>;

/// A namespace, as far as enrollment cares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

/// A pod on this node, as far as the agent cares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    /// Kubernetes `metadata.uid`: the key ztunnel knows the pod by.
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `spec.serviceAccountName`; Kubernetes defaults it to `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default)]
    pub labels: Labels,
    /// `status.podIP`; absent (or empty) until the CNI has wired the pod.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub ip: Option<IpAddr>,
    /// Path of the pod's network namespace (`/proc/PID/ns/net`, `/var/run/netns/X`,
    /// `/proc/PID/fd/N`); absent (or empty) until the sandbox exists.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub netns: Option<PathBuf>,
    /// `spec.hostNetwork`: such a pod shares the node's namespace and is never captured.
    #[serde(default)]
    pub host_network: bool,
}

fn default_service_account() -> String {
    "default".to_owned()
}

/// Kubernetes writes `podIP: ""` before an address is assigned: read it as absent.
fn empty_as_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw: Option<String> = serde::Deserialize::deserialize(de)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// One change seen by a source. Upserts carry the whole object (level-triggered), so a
/// missed intermediate state cannot leave the agent wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    NamespaceUpserted(Namespace),
    NamespaceDeleted { name: String },
    PodUpserted(Pod),
    PodDeleted { uid: String },
}

/// A stream of pod and namespace changes.
///
/// Each call returns the next *batch*: events that belong together (one file rewrite,
/// one watch relist) and are applied before the agent reconciles, so that a namespace
/// relabel and its pods never produce a transient half state. The first successful
/// batch is the complete initial state; until it arrives, the agent tells ztunnel
/// nothing (an empty snapshot would make ztunnel drop every pod).
pub trait PodSource: Send {
    /// What can go wrong while reading; the agent logs it and asks again, keeping the
    /// last good state.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Waits for the next batch. A source that can end (a closed channel) returns
    /// `Ok(None)`; the agent then keeps its state and stops reading. Must be
    /// cancel-safe: the agent drops a pending call to retry failed pods or to stop, and
    /// calls again; no event may be lost in between.
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<PodEvent>>, Self::Error>> + Send;
}

/// A source fed in-process (the lab embedding the agent, tests).
#[derive(Debug)]
pub struct ChannelSource {
    rx: mpsc::Receiver<Vec<PodEvent>>,
}

impl ChannelSource {
    /// A source and the sender that feeds it batches.
    pub fn new(capacity: usize) -> (mpsc::Sender<Vec<PodEvent>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx })
    }
}

impl PodSource for ChannelSource {
    type Error = std::convert::Infallible;

    async fn next_batch(&mut self) -> Result<Option<Vec<PodEvent>>, Self::Error> {
        Ok(self.rx.recv().await)
    }
}
