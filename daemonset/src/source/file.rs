//! The pod list file: the lab's stand-in for the Kubernetes API.
//!
//! ```json
//! {"namespaces": [{"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}],
//!  "pods": [{"uid": "u1", "name": "a", "namespace": "default", "serviceAccount": "sa",
//!            "labels": {}, "ip": "10.244.1.2", "netns": "/proc/1234/ns/net",
//!            "hostNetwork": false}]}
//! ```
//!
//! The writer replaces it atomically (write to a temporary file, then rename). We poll
//! its metadata and, when that moved, its content; a new content is parsed, checked and
//! diffed against the last good list into [`PodEvent`]s. A malformed file is an error
//! naming the file and the field, and the last good list stays in force.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Namespace, Pod, PodEvent, PodSource};

/// How often the file is checked by default; cheap (one `stat`) when nothing changed.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a pod list could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PodListError {
    #[error("pod list {path}: cannot read: {source} (the agent keeps its last good pod list)")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "pod list {path}: field `{field}`: {message} (line {line}, column {column}; the last good pod list stays in force)"
    )]
    Malformed {
        path: PathBuf,
        /// Where in the document, e.g. `pods[2].ip`; `.` for the document itself.
        field: String,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("pod list {path}: field `{field}` must not be empty")]
    Empty { path: PathBuf, field: String },
    #[error("pod list {path}: pod uid {uid:?} appears twice (pods[{first}] and pods[{second}])")]
    DuplicatePod {
        path: PathBuf,
        uid: String,
        first: usize,
        second: usize,
    },
    #[error(
        "pod list {path}: namespace {name:?} appears twice (namespaces[{first}] and namespaces[{second}])"
    )]
    DuplicateNamespace {
        path: PathBuf,
        name: String,
        first: usize,
        second: usize,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    namespaces: Vec<Namespace>,
    #[serde(default)]
    pods: Vec<Pod>,
}

/// A checked pod list: namespaces by name, pods by uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodList {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<String, Pod>,
}

impl PodList {
    /// Parses and checks a file's content; `path` is only used in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, PodListError> {
        let malformed = |field: String, e: serde_json::Error| PodListError::Malformed {
            path: path.to_owned(),
            field,
            line: e.line(),
            column: e.column(),
            message: strip_position(&e),
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let doc: Document = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            malformed(field, e.into_inner())
        })?;
        // Trailing garbage after the document.
        de.end().map_err(|e| malformed(".".to_owned(), e))?;
        Self::check(path, doc)
    }

    fn check(path: &Path, doc: Document) -> Result<Self, PodListError> {
        let empty = |field: String| PodListError::Empty {
            path: path.to_owned(),
            field,
        };
        let mut list = Self::default();
        let mut ns_index = HashMap::new();
        for (i, ns) in doc.namespaces.into_iter().enumerate() {
            if ns.name.is_empty() {
                return Err(empty(format!("namespaces[{i}].name")));
            }
            if let Some(first) = ns_index.insert(ns.name.clone(), i) {
                return Err(PodListError::DuplicateNamespace {
                    path: path.to_owned(),
                    name: ns.name,
                    first,
                    second: i,
                });
            }
            list.namespaces.insert(ns.name.clone(), ns);
        }
        let mut pod_index = HashMap::new();
        for (i, pod) in doc.pods.into_iter().enumerate() {
            for (field, value) in [
                ("uid", &pod.uid),
                ("name", &pod.name),
                ("namespace", &pod.namespace),
            ] {
                if value.is_empty() {
                    return Err(empty(format!("pods[{i}].{field}")));
                }
            }
            if let Some(first) = pod_index.insert(pod.uid.clone(), i) {
                return Err(PodListError::DuplicatePod {
                    path: path.to_owned(),
                    uid: pod.uid,
                    first,
                    second: i,
                });
            }
            list.pods.insert(pod.uid.clone(), pod);
        }
        Ok(list)
    }

    /// The events that turn `self` into `next`: deletions first (pods, then
    /// namespaces), then upserts (namespaces, then pods). Unchanged objects yield nothing.
    pub fn diff(&self, next: &PodList) -> Vec<PodEvent> {
        let mut events = Vec::new();
        for uid in self.pods.keys().filter(|k| !next.pods.contains_key(*k)) {
            events.push(PodEvent::PodDeleted { uid: uid.clone() });
        }
        for name in self.namespaces.keys() {
            if !next.namespaces.contains_key(name) {
                events.push(PodEvent::NamespaceDeleted { name: name.clone() });
            }
        }
        for (name, ns) in &next.namespaces {
            if self.namespaces.get(name) != Some(ns) {
                events.push(PodEvent::NamespaceUpserted(ns.clone()));
            }
        }
        for (uid, pod) in &next.pods {
            if self.pods.get(uid) != Some(pod) {
                events.push(PodEvent::PodUpserted(pod.clone()));
            }
        }
        events
    }
}

/// serde_json appends " at line L column C"; we report the position separately.
fn strip_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(at) => full[..at].to_owned(),
        None => full,
    }
}

/// Identity of one version of the file: a rename gives a new inode, a rewrite in
/// place a new mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// What the last look at the file found; an error is reported once, not on every poll.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Nothing,
    Missing(io::ErrorKind),
    Version(Stamp),
}

/// A [`PodSource`] polling a pod list file.
#[derive(Debug)]
pub struct PodListFile {
    path: PathBuf,
    interval: Duration,
    seen: Seen,
    /// Content of the last version read (good or bad): a touch without change is quiet.
    last_bytes: Option<Vec<u8>>,
    /// The list in force: the last one that parsed and checked.
    good: PodList,
    /// Whether a good list was ever read (the first batch is the full initial state,
    /// even when empty).
    loaded: bool,
}

impl PodListFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_interval(path, DEFAULT_POLL_INTERVAL)
    }

    pub fn with_interval(path: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            path: path.into(),
            interval,
            seen: Seen::Nothing,
            last_bytes: None,
            good: PodList::default(),
            loaded: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The list in force.
    pub fn current(&self) -> &PodList {
        &self.good
    }

    /// One look at the file: `Ok(None)` when nothing new, `Ok(Some(events))` for a new
    /// good version (the first one always yields a batch, even an empty one).
    pub fn poll_once(&mut self) -> Result<Option<Vec<PodEvent>>, PodListError> {
        let read_error = |path: &Path, source| PodListError::Read {
            path: path.to_owned(),
            source,
        };
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta),
            Err(e) => {
                let seen = Seen::Missing(e.kind());
                if self.seen == seen {
                    return Ok(None);
                }
                self.seen = seen;
                return Err(read_error(&self.path, e));
            }
        };
        if self.seen == Seen::Version(stamp) {
            return Ok(None);
        }
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Report it once for this version; a new version is tried afresh.
                self.seen = Seen::Version(stamp);
                return Err(read_error(&self.path, e));
            }
        };
        self.seen = Seen::Version(stamp);
        if self.last_bytes.as_deref() == Some(bytes.as_slice()) {
            return Ok(None);
        }
        let parsed = PodList::parse(&self.path, &bytes);
        self.last_bytes = Some(bytes);
        let next = parsed?;
        let events = self.good.diff(&next);
        self.good = next;
        let first = !self.loaded;
        self.loaded = true;
        Ok((first || !events.is_empty()).then_some(events))
    }
}

impl PodSource for PodListFile {
    type Error = PodListError;

    async fn next_batch(&mut self) -> Result<Option<Vec<PodEvent>>, Self::Error> {
        loop {
            if let Some(events) = self.poll_once()? {
                return Ok(Some(events));
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

#[cfg(test)]
mod tests;
