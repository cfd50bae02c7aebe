//! From source events to what proxies are sent. The store absorbs events as they come;
//! once the source has synced, the whole store is translated and published as one
//! immutable [`Published`] view plus the xDS [`Snapshot`]. Nothing is published before
//! the first sync, so a restarted controller never tells reconnecting proxies that
//! everything was deleted.
//!
//! Debouncing has a leading edge: a change that finds the pipeline idle is published at
//! once (with every event already queued behind it, so one scan of a file is one
//! publication); changes during the `quiet` period after a publication are batched until
//! they settle, at most `max` after the first of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::prost::Message;
use api::prost_types::Any;
use api::security::Authorization;
use api::waypoint::L7Resource;
use api::workload::{Address, Workload, address};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ca::{IdentityAuthorizer, SpiffeId};
use crate::manifest::ConfigError;
use crate::resource::intern::Pool;
use crate::resource::{Kind, Resource, ResourceKey};
use crate::source::SourceEvent;
use crate::store::Store;
use crate::translate::{Context, MeshOptions, Translation};
use crate::xds::{Entry, Snapshot, SnapshotBuilder};

/// How changes are batched (Istio's PILOT_DEBOUNCE_AFTER / _MAX, scaled to a lab). A
/// change arriving `quiet` or more after the last publication is published at once; one
/// arriving sooner waits until changes have stopped for `quiet`, but at most `max` after
/// the first change of the batch. So an isolated change is pushed without delay, a burst
/// costs at most one publication per `quiet`, and churn at least one per `max`.
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
pub struct NodeIdentities(BTreeMap<String, Arc<BTreeSet<SpiffeId>>>);

impl NodeIdentities {
    pub fn may_sign(&self, node: &str, identity: &SpiffeId) -> bool {
        self.0.get(node).is_some_and(|ids| ids.contains(identity))
    }
}

/// The node a workload runs on and its identity, if it has both. Both are shared: the
/// pods of a node name the same node, those of a service account the same identity.
fn node_identity(
    w: &Workload,
    node: Option<&Arc<str>>,
    ids: &Pool<SpiffeId>,
) -> Option<(Arc<str>, Arc<SpiffeId>)> {
    let node = node.filter(|n| !n.is_empty())?;
    // Translation only emits valid names, so this cannot fail; skip rather than panic.
    let id = SpiffeId::new(&w.trust_domain, &w.namespace, &w.service_account).ok()?;
    Some((node.clone(), ids.value(id)))
}

/// Everything derived from one version of the store.
#[derive(Debug, Default)]
pub struct Published {
    /// Counts the publications; 0 is the empty view before the first sync.
    pub generation: u64,
    pub objects: usize,
    /// What proxies are sent (the same snapshot the xDS server serves).
    pub snapshot: Arc<Snapshot>,
    /// The source's problems followed by translation warnings.
    pub problems: Vec<ConfigError>,
    /// How many of `problems` are translation warnings (the last ones).
    pub translation_problems: usize,
    pub identities: NodeIdentities,
}

impl Published {
    pub fn is_synced(&self) -> bool {
        self.generation > 0
    }

    /// The translation this publication was made from, decoded from the snapshot (the
    /// decoded form is not kept: it would double the memory a large mesh costs).
    pub fn translation(&self) -> Translation {
        let mut out = Translation {
            problems: self.problems[self.problems.len() - self.translation_problems..].to_vec(),
            ..Translation::default()
        };
        for (name, entry) in self.snapshot.resources(api::ADDRESS_TYPE_URL).iter() {
            if let Ok(address) = Address::decode(entry.value.as_slice()) {
                out.addresses.insert(name.to_owned(), address);
            }
        }
        for (name, entry) in self.snapshot.resources(api::AUTHORIZATION_TYPE_URL).iter() {
            if let Ok(policy) = Authorization::decode(entry.value.as_slice()) {
                out.authorizations.insert(name.to_owned(), policy);
            }
        }
        for (name, entry) in self.snapshot.resources(api::L7_RESOURCE_TYPE_URL).iter() {
            if let Ok(resource) = L7Resource::decode(entry.value.as_slice()) {
                out.l7.insert(name.to_owned(), resource);
            }
        }
        out
    }
}

/// Authorizes certificate requests against the latest publication.
#[derive(Debug, Clone)]
pub struct PublishedAuthorizer(pub watch::Receiver<Arc<Published>>);

impl IdentityAuthorizer for PublishedAuthorizer {
    fn node_may_sign(&self, node: &str, identity: &SpiffeId) -> bool {
        self.0.borrow().identities.may_sign(node, identity)
    }

    /// Re-asks at every publication until yes or until `patience` runs out.
    fn node_may_sign_within<'a>(
        &'a self,
        node: &'a str,
        identity: &'a SpiffeId,
        patience: Duration,
    ) -> BoxFuture<'a, bool> {
        let mut published = self.0.clone();
        Box::pin(async move {
            let deadline = Instant::now() + patience;
            loop {
                if published
                    .borrow_and_update()
                    .identities
                    .may_sign(node, identity)
                {
                    return true;
                }
                match tokio::time::timeout_at(deadline, published.changed()).await {
                    Ok(Ok(())) => continue,
                    // Out of patience, or the pipeline is gone.
                    _ => return false,
                }
            }
        })
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
    let mut pending = Pending::default();
    let mut translator = Translator::new(options);
    let mut generation = 0;
    loop {
        let due = pending.due(debounce).filter(|_| store.is_synced());
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            () = sleep_until_some(due) => {
                generation += 1;
                publish(&store, &mut translator, generation, &outputs);
                pending.published(Instant::now());
                continue;
            }
        };
        pending.absorb(&mut store, event, debounce);
        if pending.prompt && store.is_synced() {
            // Leading edge: the pipeline was idle, so this change goes out now, together
            // with whatever is already queued behind it (the rest of the same scan).
            while let Ok(event) = events.try_recv() {
                pending.absorb(&mut store, event, debounce);
            }
            generation += 1;
            publish(&store, &mut translator, generation, &outputs);
            pending.published(Instant::now());
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The unpublished changes and when they may go out. A change that finds the pipeline
/// idle (nothing published for `quiet`) is published at once; changes that follow a
/// publication closer than that wait until they settle (`quiet` without a change), but
/// never longer than `max` after the first of them.
#[derive(Debug, Default)]
struct Pending {
    /// When the first and the latest unpublished change arrived.
    changes: Option<(Instant, Instant)>,
    /// The first unpublished change found the pipeline idle: publish without waiting.
    prompt: bool,
    /// A problems list arrived: publish even if no object changed.
    problems: bool,
    last_published: Option<Instant>,
}

impl Pending {
    /// Applies `event` to `store` and notes whether it needs publishing.
    fn absorb(&mut self, store: &mut Store, event: SourceEvent, debounce: Debounce) {
        let was_synced = store.is_synced();
        self.problems |= matches!(event, SourceEvent::Problems(_));
        let changed = store.apply(event);
        if !(changed || self.problems || (!was_synced && store.is_synced())) {
            return;
        }
        let now = Instant::now();
        match &mut self.changes {
            Some((_, last)) => *last = now,
            None => {
                self.changes = Some((now, now));
                self.prompt = self
                    .last_published
                    .is_none_or(|at| now.duration_since(at) >= debounce.quiet);
            }
        }
    }

    /// When the batched changes are due.
    fn due(&self, debounce: Debounce) -> Option<Instant> {
        self.changes
            .map(|(first, last)| (last + debounce.quiet).min(first + debounce.max))
    }

    fn published(&mut self, at: Instant) {
        *self = Pending {
            last_published: Some(at),
            ..Pending::default()
        };
    }
}

/// The xDS snapshot of a whole `translation`, sharing unchanged entries with `previous`.
pub fn snapshot_of(translation: &Translation, previous: Arc<Snapshot>) -> Snapshot {
    let mut builder = SnapshotBuilder::from_previous(previous);
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
    for (name, resource) in &translation.l7 {
        builder.insert(
            api::L7_RESOURCE_TYPE_URL,
            name,
            any(api::L7_RESOURCE_TYPE_URL, resource),
        );
    }
    builder.build()
}

/// Translates the store into snapshots, keeping each pod's encoded workload from one
/// publication to the next: a pod is translated again only when it changed or when
/// something every workload depends on did (any object that is not a pod). The result
/// equals [`translate`](crate::translate::translate) + [`snapshot_of`]; a one-pod change
/// in a large mesh costs one pod's translation instead of every pod's.
#[derive(Debug)]
pub struct Translator {
    options: MeshOptions,
    /// Every object that is not a pod, by allocation (the store shares unchanged
    /// objects): what workloads depend on besides their pod.
    context: Vec<usize>,
    /// Every pod's result, in store order.
    pods: Vec<CachedPod>,
    /// Everything but the workloads (services, policies) and the translation's warnings,
    /// from the last time the context changed.
    rest: Option<Rest>,
    /// How many workloads on each node have each identity.
    identity_counts: BTreeMap<Arc<str>, BTreeMap<Arc<SpiffeId>, usize>>,
    /// One copy of each identity.
    ids: Pool<SpiffeId>,
    /// The identities of each node as last published: only the sets of nodes whose
    /// workloads changed are built again.
    identities: BTreeMap<String, Arc<BTreeSet<SpiffeId>>>,
}

#[derive(Debug)]
struct CachedPod {
    key: ResourceKey,
    pod: Arc<Resource>,
    /// `None` while the pod has no workload (no IP yet).
    workload: Option<CachedWorkload>,
    /// What its own labels ask that cannot be done (see [`Context::pod_problems`]).
    problems: Vec<ConfigError>,
}

#[derive(Debug)]
struct CachedWorkload {
    name: Arc<str>,
    entry: Arc<Entry>,
    identity: Option<(Arc<str>, Arc<SpiffeId>)>,
}

#[derive(Debug)]
struct Rest {
    entries: Vec<(&'static str, Arc<str>, Arc<Entry>)>,
    problems: Vec<ConfigError>,
}

impl Rest {
    fn new(cx: &Context<'_>, previous: &Snapshot) -> Self {
        let entry = |type_url: &'static str, name: String, any: Any| {
            let entry = Entry::new(any);
            // An unchanged resource keeps its entry: streams compare entries by pointer.
            let entry = match previous.get(type_url).and_then(|r| r.get(&name)) {
                Some(old) if old.version == entry.version => old.clone(),
                _ => Arc::new(entry),
            };
            (type_url, Arc::from(name), entry)
        };
        let services = cx.services().map(|(name, address)| {
            entry(
                api::ADDRESS_TYPE_URL,
                name,
                any(api::ADDRESS_TYPE_URL, &address),
            )
        });
        let policies = cx.authorizations().map(|(name, policy)| {
            entry(
                api::AUTHORIZATION_TYPE_URL,
                name,
                any(api::AUTHORIZATION_TYPE_URL, &policy),
            )
        });
        let l7 = cx.l7().iter().map(|(name, resource)| {
            entry(
                api::L7_RESOURCE_TYPE_URL,
                name.clone(),
                any(api::L7_RESOURCE_TYPE_URL, resource),
            )
        });
        Rest {
            entries: services.chain(policies).chain(l7).collect(),
            problems: cx.problems().to_vec(),
        }
    }
}

/// What one translation gives.
#[derive(Debug)]
pub struct Translated {
    pub snapshot: Snapshot,
    pub identities: NodeIdentities,
    /// Translation warnings (see [`Translation::problems`]).
    pub problems: Vec<ConfigError>,
    /// How many pods were translated (the others kept their cached result).
    pub translated_pods: usize,
}

impl Translator {
    pub fn new(options: MeshOptions) -> Self {
        Translator {
            options,
            context: Vec::new(),
            pods: Vec::new(),
            rest: None,
            identity_counts: BTreeMap::new(),
            ids: Pool::default(),
            identities: BTreeMap::new(),
        }
    }

    /// Translates `store`; unchanged resources keep `previous`'s entries.
    pub fn translate(&mut self, store: &Store, previous: Arc<Snapshot>) -> Translated {
        let context: Vec<usize> = store
            .objects()
            .filter(|p| p.key.kind != Kind::Pod)
            .map(|p| Arc::as_ptr(&p.resource) as usize)
            .collect();
        let context_changed = context != self.context || self.rest.is_none();
        self.context = context;
        let Translator {
            options,
            pods,
            rest,
            identity_counts,
            identities,
            ids,
            ..
        } = self;
        // Built only when something is to be translated.
        let mut cx: Option<Context<'_>> = None;
        if context_changed {
            let fresh = Context::new(store, options);
            *rest = Some(Rest::new(&fresh, &previous));
            cx = Some(fresh);
        }
        let mut builder = SnapshotBuilder::from_previous(previous);
        let mut counts = IdentityCounts {
            counts: identity_counts,
            touched: BTreeSet::new(),
        };
        // The cache is in store order too: walk both together.
        let mut old = std::mem::take(pods).into_iter().peekable();
        let mut kept = Vec::with_capacity(old.len());
        let mut translated_pods = 0;
        for parsed in store.of_kind(Kind::Pod) {
            let Resource::Pod(pod) = parsed.resource.as_ref() else {
                continue;
            };
            let same = |c: &CachedPod| Arc::ptr_eq(&c.pod, &parsed.resource);
            while let Some(gone) = old.next_if(|c| !same(c) && c.key < parsed.key) {
                counts.replace(gone.workload.as_ref(), None);
            }
            let cached = match old.next_if(|c| same(c) || c.key == parsed.key) {
                Some(c) if same(&c) && !context_changed => c,
                earlier => {
                    let (key, earlier) = match earlier {
                        Some(c) => (c.key, c.workload),
                        None => (parsed.key.clone(), None),
                    };
                    translated_pods += 1;
                    let cx = cx.get_or_insert_with(|| Context::new(store, options));
                    let problems = cx.pod_problems(parsed, pod);
                    let workload = cx.workload(pod).map(|w| {
                        let identity = node_identity(&w, pod.node_name.as_ref(), ids);
                        let name = w.uid.clone();
                        let entry = Entry::new(any(api::ADDRESS_TYPE_URL, &address_of(w)));
                        // An unchanged result keeps its entry: streams compare by pointer.
                        match &earlier {
                            Some(e) if e.entry.version == entry.version => CachedWorkload {
                                name: e.name.clone(),
                                entry: e.entry.clone(),
                                identity,
                            },
                            _ => CachedWorkload {
                                name: name.into(),
                                entry: Arc::new(entry),
                                identity,
                            },
                        }
                    });
                    counts.replace(earlier.as_ref(), workload.as_ref());
                    CachedPod {
                        key,
                        pod: parsed.resource.clone(),
                        workload,
                        problems,
                    }
                }
            };
            if let Some(w) = &cached.workload {
                builder.insert_entry(api::ADDRESS_TYPE_URL, w.name.clone(), w.entry.clone());
            }
            kept.push(cached);
        }
        for gone in old {
            counts.replace(gone.workload.as_ref(), None);
        }
        *pods = kept;
        for node in std::mem::take(&mut counts.touched) {
            match counts.counts.get(&node) {
                Some(ids) => identities.insert(
                    node.to_string(),
                    Arc::new(ids.keys().map(|id| SpiffeId::clone(id)).collect()),
                ),
                None => identities.remove(&*node),
            };
        }
        let rest = rest.as_ref().expect("built above when missing");
        for (type_url, name, entry) in &rest.entries {
            builder.insert_entry(type_url, name.clone(), entry.clone());
        }
        let problems = rest
            .problems
            .iter()
            .chain(pods.iter().flat_map(|p| &p.problems))
            .cloned()
            .collect();
        Translated {
            snapshot: builder.build(),
            identities: NodeIdentities(identities.clone()),
            problems,
            translated_pods,
        }
    }
}

/// The identities of the workloads on each node, counted, and the nodes whose set changed.
struct IdentityCounts<'a> {
    counts: &'a mut BTreeMap<Arc<str>, BTreeMap<Arc<SpiffeId>, usize>>,
    touched: BTreeSet<Arc<str>>,
}

impl IdentityCounts<'_> {
    fn replace(&mut self, old: Option<&CachedWorkload>, new: Option<&CachedWorkload>) {
        let old = old.and_then(|w| w.identity.as_ref());
        let new = new.and_then(|w| w.identity.as_ref());
        if old == new {
            return;
        }
        if let Some((node, id)) = old
            && let Some(ids) = self.counts.get_mut(node)
        {
            if let Some(n) = ids.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    ids.remove(id);
                }
            }
            if ids.is_empty() {
                self.counts.remove(node);
            }
            self.touched.insert(node.clone());
        }
        if let Some((node, id)) = new {
            *self
                .counts
                .entry(node.clone())
                .or_default()
                .entry(id.clone())
                .or_default() += 1;
            self.touched.insert(node.clone());
        }
    }
}

fn address_of(workload: Workload) -> Address {
    Address {
        r#type: Some(address::Type::Workload(workload)),
    }
}

fn publish(store: &Store, translator: &mut Translator, generation: u64, outputs: &Outputs) {
    let translated = translator.translate(store, outputs.snapshots.borrow().clone());
    // Translating every pod again is megabytes of garbage at a large mesh.
    crate::memory::after_burst(translated.translated_pods);
    let snapshot = Arc::new(translated.snapshot);
    let translation_problems = translated.problems.len();
    let problems: Vec<ConfigError> = store
        .problems()
        .iter()
        .chain(&translated.problems)
        .cloned()
        .collect();
    let previous = outputs.published.borrow().clone();
    report_problems(&previous.problems, &problems);
    info!(
        generation,
        objects = store.len(),
        addresses = snapshot.resources(api::ADDRESS_TYPE_URL).len(),
        authorizations = snapshot.resources(api::AUTHORIZATION_TYPE_URL).len(),
        problems = problems.len(),
        version = snapshot.version(),
        "config translated"
    );
    let published = Published {
        generation,
        objects: store.len(),
        snapshot: snapshot.clone(),
        problems,
        translation_problems,
        identities: translated.identities,
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
