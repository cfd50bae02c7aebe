//! Config sources: where Kubernetes-shaped objects come from. Each source produces typed
//! add/update/delete events into one [`crate::store::Store`]. The directory source
//! ([`dir::DirectorySource`]) reads manifests from disk; a Kubernetes source (kube-rs
//! reflectors) is a second implementation of the same trait.

use std::future::Future;

use tokio::sync::{mpsc, watch};

use crate::manifest::{ConfigError, Parsed};
use crate::resource::ResourceKey;

pub mod dir;
pub mod reader;

/// A change from a source.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// An object was added or changed.
    Applied(Parsed),
    /// An object is gone.
    Deleted(ResourceKey),
    /// Every problem the source currently sees (replaces the previous list). Invalid
    /// objects are reported here and never applied; their last good version stays.
    Problems(Vec<ConfigError>),
    /// The source has delivered its whole initial state.
    Synced,
}

/// Something that feeds the store.
pub trait ConfigSource: Send + 'static {
    /// For logs, e.g. `directory examples/bookinfo`.
    fn describe(&self) -> String;

    /// Sends the initial state, then [`SourceEvent::Synced`], then changes, until
    /// `shutdown` becomes true or the receiver is dropped.
    fn run(
        self,
        events: mpsc::Sender<SourceEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;
}
