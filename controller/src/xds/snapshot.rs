//! Immutable, versioned sets of xDS resources. The translator builds one per config change
//! and publishes it; every stream diffs what its client holds against the newest one.
//!
//! Versions are content hashes, so they survive a controller restart: a proxy that
//! reconnects with `initial_resource_versions` is sent only what really changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock};

use api::prost_types::Any;
use sha2::{Digest, Sha256};

use crate::resource::intern::Pool;

/// One resource as sent on the wire, with its content version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: Version,
    /// The payload's type URL, one copy shared by every entry of the type.
    type_url: Arc<str>,
    /// The encoded payload.
    pub value: Vec<u8>,
}

/// Type URLs: a handful of distinct strings, each repeated by thousands of entries.
static TYPE_URLS: LazyLock<Pool<str>> = LazyLock::new(Pool::default);

/// A resource's content version: the first 8 bytes of SHA-256 over its type URL and
/// bytes, sent as 16 hex digits. Kept as a number: every stream records the version of
/// every resource its client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version(u64);

impl Version {
    /// Reads a version as [`Display`](fmt::Display) writes it; `None` for anything else
    /// (a version some other server gave the client).
    pub fn parse(text: &str) -> Option<Version> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Entry {
    /// The entry for `resource`, versioned by its content.
    pub fn new(resource: Any) -> Self {
        Entry {
            version: content_version(&resource),
            type_url: TYPE_URLS.str(&resource.type_url),
            value: resource.value,
        }
    }

    /// The payload as sent.
    pub fn to_any(&self) -> Any {
        Any {
            type_url: self.type_url.to_string(),
            value: self.value.clone(),
        }
    }
}

/// The version of a payload: stable across processes, and equal only for equal content
/// (up to a 64-bit collision).
pub fn content_version(any: &Any) -> Version {
    let mut hasher = Sha256::new();
    hasher.update(any.type_url.as_bytes());
    hasher.update([0]);
    hasher.update(&any.value);
    let digest = hasher.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    Version(u64::from_be_bytes(first))
}

/// All resources of one type, by name. Shared between snapshots when unchanged, so a stream
/// can skip a type whose map is pointer-equal to the one it last diffed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Names are shared with whoever built the snapshot (a large snapshot rebuilt for a
    /// one-resource change need not copy every name).
    by_name: BTreeMap<Arc<str>, Arc<Entry>>,
}

static NO_RESOURCES: LazyLock<Arc<Resources>> = LazyLock::new(Default::default);

impl Resources {
    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Entry>)> {
        self.by_name.iter().map(|(n, e)| (&**n, e))
    }
}

/// Type URL → [`Resources`], plus a version naming the whole set (for `system_version_info`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    types: BTreeMap<String, Arc<Resources>>,
    version: String,
}

impl Snapshot {
    /// An empty snapshot builder; see [`SnapshotBuilder::from_previous`] to share entries.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The resources of a type, `None` when the snapshot has none of it.
    pub fn get(&self, type_url: &str) -> Option<&Arc<Resources>> {
        self.types.get(type_url)
    }

    /// Like [`get`](Self::get), with a shared empty map for absent types.
    pub fn resources(&self, type_url: &str) -> Arc<Resources> {
        self.types
            .get(type_url)
            .cloned()
            .unwrap_or_else(|| NO_RESOURCES.clone())
    }

    /// Content hash over every (type, name, version): equal snapshots have equal versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

/// Collects resources for a [`Snapshot`]. Inserting a name twice keeps the last payload.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    previous: Option<Arc<Snapshot>>,
    /// In insertion order; sorted (the last insert of a name winning) by `build`.
    types: BTreeMap<String, Vec<Named>>,
}

/// A resource name and its entry.
type Named = (Arc<str>, Arc<Entry>);

impl SnapshotBuilder {
    /// A builder that reuses `previous`'s entries (and whole per-type maps) where content is
    /// unchanged, so unchanged resources stay pointer-equal across snapshots.
    pub fn from_previous(previous: Arc<Snapshot>) -> Self {
        SnapshotBuilder {
            previous: Some(previous),
            types: BTreeMap::new(),
        }
    }

    pub fn insert(
        &mut self,
        type_url: impl Into<String>,
        name: impl Into<String>,
        resource: Any,
    ) -> &mut Self {
        let type_url = type_url.into();
        let name = name.into();
        let entry = Entry::new(resource);
        let reused = self
            .previous
            .as_ref()
            .and_then(|p| p.get(&type_url))
            .and_then(|r| r.get(&name))
            .filter(|old| ***old == entry)
            .cloned();
        let entry = reused.unwrap_or_else(|| Arc::new(entry));
        self.push(&type_url, name.into(), entry);
        self
    }

    /// Adds an entry built earlier, as it is: the caller keeps unchanged resources'
    /// entries (the same `Arc`) from one snapshot to the next.
    pub fn insert_entry(
        &mut self,
        type_url: &str,
        name: impl Into<Arc<str>>,
        entry: Arc<Entry>,
    ) -> &mut Self {
        self.push(type_url, name.into(), entry);
        self
    }

    fn push(&mut self, type_url: &str, name: Arc<str>, entry: Arc<Entry>) {
        match self.types.get_mut(type_url) {
            Some(entries) => entries.push((name, entry)),
            None => {
                self.types.insert(type_url.to_owned(), vec![(name, entry)]);
            }
        }
    }

    pub fn build(self) -> Snapshot {
        let mut hasher = Sha256::new();
        let mut types = BTreeMap::new();
        for (type_url, entries) in self.types {
            // Sorts (cheaply when inserted in order); a later insert of a name wins.
            let by_name: BTreeMap<Arc<str>, Arc<Entry>> = entries.into_iter().collect();
            for (name, entry) in &by_name {
                for part in [
                    type_url.as_bytes(),
                    name.as_bytes(),
                    &entry.version.0.to_be_bytes(),
                ] {
                    hasher.update((part.len() as u64).to_be_bytes());
                    hasher.update(part);
                }
            }
            let fresh = Resources { by_name };
            let shared = self
                .previous
                .as_ref()
                .and_then(|p| p.get(&type_url))
                .filter(|old| same_entries(old, &fresh))
                .cloned();
            types.insert(type_url, shared.unwrap_or_else(|| Arc::new(fresh)));
        }
        let version = hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Snapshot { types, version }
    }
}

fn same_entries(a: &Resources, b: &Resources) -> bool {
    a.len() == b.len()
        && a.by_name
            .iter()
            .zip(&b.by_name)
            .all(|((na, ea), (nb, eb))| na == nb && Arc::ptr_eq(ea, eb))
}

/// Which names of a type a client is subscribed to.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Wildcard: every resource of the type.
    All,
    /// Only these names.
    Names(&'a BTreeSet<String>),
}

/// What a client holds, name -> version (`None`: a version this server did not give, so
/// whatever it is, it is not the current one). Names are shared with the snapshots.
pub type Held = HashMap<Arc<str>, Option<Version>>;

/// What to send a client so it holds the snapshot's versions of its subscribed resources.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Added or changed, in name order.
    pub changed: Vec<(Arc<str>, Arc<Entry>)>,
    /// Held by the client but gone from the snapshot, in name order.
    pub removed: Vec<Arc<str>>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Compares what the client holds (name → version) with `resources`, within `scope`.
/// Held names outside the scope are left alone: the client drops what it unsubscribes.
pub fn diff(held: &Held, resources: &Resources, scope: Scope<'_>) -> Diff {
    let mut out = Diff::default();
    match scope {
        Scope::All => {
            for (name, entry) in &resources.by_name {
                if held.get(name) != Some(&Some(entry.version)) {
                    out.changed.push((name.clone(), entry.clone()));
                }
            }
            let mut gone: Vec<Arc<str>> = held
                .keys()
                .filter(|n| resources.get(n).is_none())
                .cloned()
                .collect();
            gone.sort();
            out.removed = gone;
        }
        Scope::Names(names) => {
            for name in names {
                match (
                    resources.by_name.get_key_value(name.as_str()),
                    held.get_key_value(name.as_str()),
                ) {
                    (Some((_, entry)), Some((_, version))) if *version == Some(entry.version) => {}
                    (Some((name, entry)), _) => out.changed.push((name.clone(), entry.clone())),
                    (None, Some((name, _))) => out.removed.push(name.clone()),
                    (None, None) => {}
                }
            }
        }
    }
    out
}

/// [`diff`] for a client that was last diffed against `last` (within the same `scope`):
/// it holds `last`'s version of every name in scope, so only names whose entry is not the
/// same allocation in `last` and `current` can differ. A one-resource change in a large
/// snapshot costs a walk over two sorted maps instead of a lookup per name.
pub fn diff_since(held: &Held, last: &Resources, current: &Resources, scope: Scope<'_>) -> Diff {
    use std::cmp::Ordering;
    let in_scope = |name: &str| match scope {
        Scope::All => true,
        Scope::Names(names) => names.contains(name),
    };
    let mut out = Diff::default();
    let changed = |name: &Arc<str>, entry: &Arc<Entry>, out: &mut Diff| {
        if in_scope(name) && held.get(name) != Some(&Some(entry.version)) {
            out.changed.push((name.clone(), entry.clone()));
        }
    };
    let gone = |name: &Arc<str>, out: &mut Diff| {
        if in_scope(name) && held.contains_key(name) {
            out.removed.push(name.clone());
        }
    };
    let mut old = last.by_name.iter().peekable();
    let mut new = current.by_name.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((o, _)), None) => {
                gone(o, &mut out);
                old.next();
            }
            (None, Some((n, entry))) => {
                changed(n, entry, &mut out);
                new.next();
            }
            (Some((o, old_entry)), Some((n, entry))) => match o.cmp(n) {
                Ordering::Less => {
                    gone(o, &mut out);
                    old.next();
                }
                Ordering::Greater => {
                    changed(n, entry, &mut out);
                    new.next();
                }
                Ordering::Equal => {
                    if !Arc::ptr_eq(old_entry, entry) {
                        changed(n, entry, &mut out);
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests;
