//! From source events to what proxies are sent. The store absorbs events as they come;
//! once the source has synced and the changes have settled (debounce), the whole store is
//! translated and published as one immutable [`Published`] view plus the xDS
//! [`Snapshot`]. Nothing is published before the first sync, so a restarted controller
//! never tells reconnecting proxies that everything was deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::prost::Message;
use api::prost_types::Any;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ca::{IdentityAuthorizer, SpiffeId};
use crate::manifest::ConfigError;
use crate::source::SourceEvent;
use crate::store::Store;
use crate::translate::{MeshOptions, Translation, translate};
use crate::xds::{Snapshot, SnapshotBuilder};

/// How long changes must settle before a push, and the longest a push may be held back
/// while changes keep coming (Istio's PILOT_DEBOUNCE_AFTER / _MAX, scaled to a lab).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    pub quiet: Duration,
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

/// The identities of the pods scheduled on each node: what each node's token may sign.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeIdentities(BTreeMap<String, BTreeSet<SpiffeId>>);

impl NodeIdentities {
    fn from_translation(translation: &Translation) -> Self {
        let mut map: BTreeMap<String, BTreeSet<SpiffeId>> = BTreeMap::new();
        for address in translation.addresses.values() {
            let Some(api::workload::address::Type::Workload(w)) = &address.r#type else {
                continue;
            };
            if w.node.is_empty() {
                continue;
            }
            // Translation only emits valid names, so this cannot fail; skip rather than panic.
            if let Ok(id) = SpiffeId::new(&w.trust_domain, &w.namespace, &w.service_account) {
                map.entry(w.node.clone()).or_default().insert(id);
            }
        }
        NodeIdentities(map)
    }

    pub fn may_sign(&self, node: &str, identity: &SpiffeId) -> bool {
        self.0.get(node).is_some_and(|ids| ids.contains(identity))
    }
}

/// Everything derived from one version of the store.
#[derive(Debug, Default)]
pub struct Published {
    /// Counts the publications; 0 is the empty view before the first sync.
    pub generation: u64,
    pub objects: usize,
    pub translation: Translation,
    /// The source's problems followed by translation warnings.
    pub problems: Vec<ConfigError>,
    pub identities: NodeIdentities,
}

impl Published {
    pub fn is_synced(&self) -> bool {
        self.generation > 0
    }
}

/// Authorizes certificate requests against the latest publication.
#[derive(Debug, Clone)]
pub struct PublishedAuthorizer(pub watch::Receiver<Arc<Published>>);

impl IdentityAuthorizer for PublishedAuthorizer {
    fn node_may_sign(&self, node: &str, identity: &SpiffeId) -> bool {
        self.0.borrow().identities.may_sign(node, identity)
    }
}

/// Where the pipeline publishes.
#[derive(Debug)]
pub struct Outputs {
    pub published: watch::Sender<Arc<Published>>,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
}

/// Runs until the source's channel closes.
pub async fn run(
    mut events: mpsc::Receiver<SourceEvent>,
    options: MeshOptions,
    debounce: Debounce,
    outputs: Outputs,
) {
    let mut store = Store::default();
    let mut problems_changed = false;
    // When the first unpublished change arrived, and when the latest did.
    let mut pending: Option<(Instant, Instant)> = None;
    let mut generation = 0;
    loop {
        let deadline = pending
            .filter(|_| store.is_synced())
            .map(|(first, last)| (last + debounce.quiet).min(first + debounce.max));
        let event = match deadline {
            Some(deadline) => tokio::select! {
                event = events.recv() => event,
                _ = tokio::time::sleep_until(deadline) => {
                    generation += 1;
                    publish(&store, &options, generation, &outputs);
                    pending = None;
                    problems_changed = false;
                    continue;
                }
            },
            None => events.recv().await,
        };
        let Some(event) = event else { return };
        let was_synced = store.is_synced();
        let is_problems = matches!(event, SourceEvent::Problems(_));
        let changed = store.apply(event);
        problems_changed |= is_problems;
        if changed || problems_changed || (!was_synced && store.is_synced()) {
            let now = Instant::now();
            pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
        }
    }
}

fn publish(store: &Store, options: &MeshOptions, generation: u64, outputs: &Outputs) {
    let translation = translate(store, options);
    let mut builder = SnapshotBuilder::from_previous(outputs.snapshots.borrow().clone());
    for (name, address) in &translation.addresses {
        builder.insert(
            api::ADDRESS_TYPE_URL,
            name,
            any(api::ADDRESS_TYPE_URL, address),
        );
    }
    for (name, policy) in &translation.authorizations {
        builder.insert(
            api::AUTHORIZATION_TYPE_URL,
            name,
            any(api::AUTHORIZATION_TYPE_URL, policy),
        );
    }
    let snapshot = Arc::new(builder.build());
    let problems: Vec<ConfigError> = store
        .problems()
        .iter()
        .chain(&translation.problems)
        .cloned()
        .collect();
    let previous = outputs.published.borrow().clone();
    report_problems(&previous.problems, &problems);
    info!(
        generation,
        objects = store.len(),
        addresses = translation.addresses.len(),
        authorizations = translation.authorizations.len(),
        problems = problems.len(),
        version = snapshot.version(),
        "config translated"
    );
    let published = Published {
        generation,
        objects: store.len(),
        identities: NodeIdentities::from_translation(&translation),
        translation,
        problems,
    };
    outputs.published.send_replace(Arc::new(published));
    outputs.snapshots.send_replace(snapshot);
}

fn any(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

/// Logs each problem once, when it appears, and says when problems were resolved.
fn report_problems(before: &[ConfigError], now: &[ConfigError]) {
    let old: BTreeSet<&ConfigError> = before.iter().collect();
    let new: BTreeSet<&ConfigError> = now.iter().collect();
    for problem in new.difference(&old) {
        warn!("config problem: {problem}");
    }
    let resolved = old.difference(&new).count();
    if resolved > 0 {
        info!(resolved, remaining = new.len(), "config problems resolved");
    }
}

#[cfg(test)]
mod tests;
