//! The directory source: every `*.yaml`, `*.yml` and `*.json` file under a directory
//! (recursively, hidden files and directories skipped), re-read when it changes.
//!
//! Changes are noticed through file-system notifications (inotify on Linux, via `notify`)
//! within milliseconds; the directory is also rescanned periodically, because
//! notifications can be lost (queue overflow, the watch limit) or unavailable (some
//! network and FUSE file systems). Either way a scan compares file fingerprints, so a
//! notification never does more than trigger a scan.
//!
//! Bad input never removes good config: an object that fails to parse or validate keeps
//! its last good version in force, a file that is not YAML at all keeps everything it
//! held, and only an object that is really gone (removed from a readable file, or its
//! file deleted) is deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{ConfigSource, SourceEvent};
use crate::manifest::{ConfigError, FileContents, Parsed, parse_file};
use crate::resource::{Resource, ResourceKey};

/// How often the directory is rescanned by default: the safety net behind notifications,
/// and the only way changes are seen where notifications do not work.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// How long a file must be left alone after a write that did not close it (or after it
/// was created) before it is read: a writer still busy with it would be caught half way.
/// A write that closes the file, a rename into place or a removal is read at once.
pub const SETTLE: Duration = Duration::from_millis(50);

/// Watches a directory of manifests: file-system notifications, plus a periodic rescan.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    dir: PathBuf,
    interval: Duration,
}

impl DirectorySource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirectorySource {
            dir: dir.into(),
            interval: DEFAULT_INTERVAL,
        }
    }

    /// The rescan period (default [`DEFAULT_INTERVAL`]).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

impl ConfigSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    async fn run(self, events: mpsc::Sender<SourceEvent>, mut shutdown: watch::Receiver<bool>) {
        let mut state = DirectoryState::default();
        let mut synced = false;
        let wake = Arc::new(Wake::default());
        let mut notifications = Notifications::new(&self.dir, wake.clone());
        loop {
            let dir = self.dir.clone();
            let known = state.fingerprints();
            let scan = std::time::Instant::now();
            // File I/O and YAML parsing happen off the async threads.
            let changes = tokio::task::spawn_blocking(move || read_changes(&dir, &known)).await;
            // After the first scan (which takes everything, so that the initial state is
            // complete), a file written during the scan, or still being written, is left
            // for later: its fingerprint is not taken, so the scan that its close (or
            // SETTLE) brings reads it again.
            let mut settled: Option<Instant> = None;
            let changes = changes.map(|changes| {
                let (later, now): (Vec<FileChange>, Vec<FileChange>) = changes
                    .into_iter()
                    .partition(|change| synced && wake.unsettled(change, scan));
                if !later.is_empty() {
                    settled = Some(Instant::now() + SETTLE);
                }
                now
            });
            match changes {
                Ok(changes) => {
                    // Nothing changed on disk: nothing to merge or compare.
                    let pending = if changes.is_empty() {
                        Vec::new()
                    } else {
                        for (path, contents) in changes {
                            state.update_file(path, contents);
                        }
                        state.reconcile()
                    };
                    // Back to back, so the pipeline finds one scan's events queued together.
                    for event in pending {
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    if !synced {
                        synced = true;
                        info!(dir = %self.dir.display(), objects = state.emitted.len(), "manifests loaded");
                        if events.send(SourceEvent::Synced).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => warn!(dir = %self.dir.display(), error = %e, "manifest scan failed"),
            }
            // Until the next scan is due: a notification that says "now", the end of a
            // settle period, or the periodic rescan (which also repairs the watch).
            let rescan = Instant::now() + self.interval;
            loop {
                let wake_at = settled.map_or(rescan, |settled| settled.min(rescan));
                tokio::select! {
                    () = wake.now.notified() => break,
                    () = wake.soon.notified() => settled = Some(Instant::now() + SETTLE),
                    () = tokio::time::sleep_until(wake_at) => {
                        if Instant::now() >= rescan {
                            notifications.repair();
                        }
                        break;
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

/// What notifications tell the scanning task. `now` and `soon` hold at most one permit
/// each, so a flood of events costs one scan.
#[derive(Debug, Default)]
struct Wake {
    /// Scan at once.
    now: Notify,
    /// Scan once things have been quiet for [`SETTLE`].
    soon: Notify,
    /// The latest write-related notification per file: a scan must not take a file that
    /// was written while it read it (it may have read it torn: a truncated file would
    /// delete everything it held), nor one still being written, until it is closed or has
    /// been left alone for [`SETTLE`].
    writes: Mutex<HashMap<PathBuf, Write>>,
}

#[derive(Debug, Clone, Copy)]
struct Write {
    at: std::time::Instant,
    /// Modified or created, and not yet closed or renamed into place.
    open: bool,
}

impl Wake {
    fn on_event(&self, event: notify::Result<notify::Event>) {
        if let Err(e) = &event {
            warn!(error = %e, "file-system notification error; rescanning");
        }
        if let Ok(event) = &event {
            self.track_writes(event);
        }
        match urgency(&event) {
            Urgency::Now => self.now.notify_one(),
            Urgency::Settle => self.soon.notify_one(),
            Urgency::None => {}
        }
    }

    fn track_writes(&self, event: &notify::Event) {
        let open = match event.kind {
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other)
            | EventKind::Create(CreateKind::File | CreateKind::Any | CreateKind::Other) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => false,
            _ => return,
        };
        let at = std::time::Instant::now();
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        for path in &event.paths {
            writes.insert(path.clone(), Write { at, open });
        }
    }

    /// Whether what a scan that started at `scan` read may be torn or incomplete: the
    /// file was written since, or is still being written. Without a notification about
    /// it (none yet, or no watch), a file modified less than [`SETTLE`] ago counts as
    /// being written: a writer that truncates before writing leaves an empty file behind
    /// for a moment.
    fn unsettled(&self, change: &FileChange, scan: std::time::Instant) -> bool {
        let (path, Some((print, _))) = change else {
            return false; // a removal cannot be torn
        };
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        writes.retain(|_, w| w.at > scan || w.at.elapsed() < SETTLE);
        match writes.get(path) {
            Some(w) => w.at > scan || (w.open && w.at.elapsed() < SETTLE),
            None => print.modified.is_some_and(|modified| {
                let now = SystemTime::now();
                let age = now
                    .duration_since(modified)
                    .unwrap_or_else(|e| e.duration());
                age < SETTLE
            }),
        }
    }
}

/// How urgently a notification calls for a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// Nothing a scan could see (someone, e.g. the scan itself, opened or read a file).
    None,
    /// A file is being written or was just created: read it once the writer is done.
    Settle,
    /// Something is complete (written and closed, renamed into place, removed), or
    /// notifications were lost: scan now.
    Now,
}

fn urgency(event: &notify::Result<notify::Event>) -> Urgency {
    let Ok(event) = event else {
        return Urgency::Now;
    };
    if event.need_rescan() {
        return Urgency::Now;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Urgency::Now,
        EventKind::Access(_) => Urgency::None,
        // A new file is read once written; a new directory is listed once its own watch
        // has begun (files written in it before that sent no notification).
        EventKind::Create(_) => Urgency::Settle,
        EventKind::Modify(ModifyKind::Name(_)) => Urgency::Now,
        EventKind::Modify(_) => Urgency::Settle,
        EventKind::Remove(_) | EventKind::Any | EventKind::Other => Urgency::Now,
    }
}

/// The file-system watch on the directory, when there is one. Without it (the directory
/// is missing, the file system or the watch limit does not allow it) the periodic rescan
/// is all there is, and each rescan tries again.
#[derive(Debug)]
struct Notifications {
    dir: PathBuf,
    wake: Arc<Wake>,
    /// The watch, and which directory (device, inode) it is on: a directory replaced
    /// under the same name needs a new watch.
    active: Option<(RecommendedWatcher, (u64, u64))>,
    /// Whether the last failure was logged, so a lasting one is logged once.
    failure_logged: bool,
}

impl Notifications {
    fn new(dir: &Path, wake: Arc<Wake>) -> Self {
        let mut n = Notifications {
            dir: dir.to_owned(),
            wake,
            active: None,
            failure_logged: false,
        };
        n.repair();
        n
    }

    /// Starts the watch if there is none, or if the directory was replaced.
    fn repair(&mut self) {
        let identity = dir_identity(&self.dir);
        if identity.is_some() && self.active.as_ref().map(|(_, id)| *id) == identity {
            return;
        }
        self.active = None;
        let Some(identity) = identity else {
            return; // missing: the scan reports it
        };
        match self.start() {
            Ok(watcher) => {
                info!(dir = %self.dir.display(), "watching for file changes");
                self.active = Some((watcher, identity));
                // Whatever happened before the watch began is found by the scan that
                // always follows a repair.
                self.failure_logged = false;
            }
            Err(e) if !self.failure_logged => {
                self.failure_logged = true;
                warn!(
                    dir = %self.dir.display(), error = %e,
                    "no file-system notifications; changes are found by rescanning"
                );
            }
            Err(_) => {}
        }
    }

    fn start(&self) -> notify::Result<RecommendedWatcher> {
        let wake = self.wake.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                wake.on_event(event)
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        Ok(watcher)
    }
}

fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// What tells a changed file apart: mtime, length and inode (atomic replaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// A file whose contents changed (`None`: it is gone).
pub type FileChange = (PathBuf, Option<(Fingerprint, FileContents)>);

/// Lists the manifest files under `dir` and reads those whose fingerprint differs from
/// `known` (plus those that disappeared).
pub fn read_changes(dir: &Path, known: &BTreeMap<PathBuf, Fingerprint>) -> Vec<FileChange> {
    let mut found = BTreeMap::new();
    let mut errors = Vec::new();
    list(dir, &mut found, &mut errors);
    let mut changes: Vec<FileChange> = Vec::new();
    for (path, print) in &found {
        if known.get(path) == Some(print) {
            continue;
        }
        let contents = match std::fs::read_to_string(path) {
            Ok(text) => parse_file(path, &text),
            Err(e) => FileContents {
                errors: vec![ConfigError {
                    file: path.clone(),
                    document: None,
                    object: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }],
                unreadable: true,
                ..FileContents::default()
            },
        };
        changes.push((path.clone(), Some((*print, contents))));
    }
    for path in known.keys() {
        if !found.contains_key(path) {
            changes.push((path.clone(), None));
        }
    }
    for (path, message) in errors {
        warn!(path = %path.display(), "{message}");
    }
    changes
}

fn list(
    dir: &Path,
    found: &mut BTreeMap<PathBuf, Fingerprint>,
    errors: &mut Vec<(PathBuf, String)>,
) {
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.to_owned(), format!("cannot list manifests: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // hidden, e.g. an editor's swap file
        }
        let path = entry.path();
        // Follows symlinks, as `kubectl apply -f DIR` does.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            list(&path, found, errors);
        } else if is_manifest(&path) {
            found.insert(
                path,
                Fingerprint {
                    modified: meta.modified().ok(),
                    len: meta.len(),
                    inode: meta.ino(),
                },
            );
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// What the directory holds, file by file, and what has been emitted.
#[derive(Debug, Default)]
pub struct DirectoryState {
    files: BTreeMap<PathBuf, FileState>,
    emitted: BTreeMap<ResourceKey, Arc<Resource>>,
    problems: Vec<ConfigError>,
    /// Objects of the files updated since the last reconcile: only they can have changed.
    dirty: BTreeSet<ResourceKey>,
    /// Objects defined in more than one file: the problem reported for each unused copy.
    duplicates: BTreeMap<ResourceKey, Vec<ConfigError>>,
}

#[derive(Debug)]
struct FileState {
    fingerprint: Fingerprint,
    /// The objects in force from this file: the latest valid version of each.
    good: Objects,
    errors: Vec<ConfigError>,
}

/// A file's objects, sorted by key, one per key. A file's set is only ever built whole, so
/// a sorted vector does (at a third of a map's memory).
#[derive(Debug, Default)]
struct Objects(Vec<Parsed>);

impl Objects {
    /// From objects in order of preference: the first of each key is kept.
    fn new(mut objects: Vec<Parsed>) -> Self {
        objects.sort_by(|a, b| a.key.cmp(&b.key)); // stable: the first stays first
        objects.dedup_by(|later, first| later.key == first.key);
        objects.shrink_to_fit();
        Objects(objects)
    }

    fn position(&self, key: &ResourceKey) -> Result<usize, usize> {
        self.0.binary_search_by(|p| p.key.cmp(key))
    }

    fn get(&self, key: &ResourceKey) -> Option<&Parsed> {
        self.position(key).ok().map(|i| &self.0[i])
    }

    fn remove(&mut self, key: &ResourceKey) -> Option<Parsed> {
        self.position(key).ok().map(|i| self.0.remove(i))
    }

    fn into_keys(self) -> impl Iterator<Item = ResourceKey> {
        self.0.into_iter().map(|p| p.key)
    }

    fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.0.iter().map(|p| &p.key)
    }
}

impl DirectoryState {
    pub fn fingerprints(&self) -> BTreeMap<PathBuf, Fingerprint> {
        self.files
            .iter()
            .map(|(p, f)| (p.clone(), f.fingerprint))
            .collect()
    }

    /// Folds in a file's new contents (`None`: the file is gone).
    pub fn update_file(&mut self, path: PathBuf, change: Option<(Fingerprint, FileContents)>) {
        let previous = self.files.remove(&path);
        let Some((fingerprint, contents)) = change else {
            if let Some(gone) = previous {
                self.dirty.extend(gone.good.into_keys());
            }
            return;
        };
        let mut old_good = previous.map(|f| f.good).unwrap_or_default();
        let good = if contents.unreadable {
            old_good
        } else {
            // The file's valid objects first, then the last good version of each invalid
            // one (unless the file also holds a valid definition of it).
            let mut objects = contents.objects;
            for key in contents.rejected {
                objects.extend(old_good.remove(&key));
            }
            let good = Objects::new(objects);
            // What the file held before (now gone or replaced) and what it holds now.
            self.dirty.extend(old_good.into_keys());
            self.dirty.extend(good.keys().cloned());
            good
        };
        self.files.insert(
            path,
            FileState {
                fingerprint,
                good,
                errors: contents.errors,
            },
        );
    }

    /// The events that bring a consumer from what was emitted to the current state. Only
    /// the objects of files updated since the last call are looked at, so a one-object
    /// change costs the same whatever the directory holds.
    pub fn reconcile(&mut self) -> Vec<SourceEvent> {
        let mut applied = Vec::new();
        let mut deleted = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            // The definition in the first file (by path) is used; later ones are reported.
            let mut definitions = self.files.values().filter_map(|f| f.good.get(&key));
            let winner = definitions.next();
            let copies: Vec<ConfigError> = match winner {
                Some(first) => definitions
                    .map(|parsed| ConfigError {
                        file: parsed.origin.file.to_path_buf(),
                        document: Some(parsed.origin.document),
                        object: Some(key.to_string()),
                        field: None,
                        message: format!(
                            "defined again; the definition in {} is used",
                            first.origin
                        ),
                    })
                    .collect(),
                None => Vec::new(),
            };
            match winner {
                Some(parsed) => {
                    let old = self.emitted.get(&key);
                    // Objects of unchanged files are the same allocation: no deep compare.
                    let identical = old.is_some_and(|o| Arc::ptr_eq(o, &parsed.resource));
                    if !identical {
                        if !old.is_some_and(|o| *o == parsed.resource) {
                            applied.push(SourceEvent::Applied(parsed.clone()));
                        }
                        self.emitted.insert(key.clone(), parsed.resource.clone());
                    }
                }
                None => {
                    if self.emitted.remove(&key).is_some() {
                        deleted.push(SourceEvent::Deleted(key.clone()));
                    }
                }
            }
            if copies.is_empty() {
                self.duplicates.remove(&key);
            } else {
                self.duplicates.insert(key, copies);
            }
        }
        let mut events = applied;
        events.append(&mut deleted);
        // File by file: its errors, then the copies it holds that are not used.
        let mut problems: Vec<ConfigError> = Vec::new();
        for (path, file) in &self.files {
            problems.extend(file.errors.iter().cloned());
            for copies in self.duplicates.values() {
                problems.extend(copies.iter().filter(|c| c.file == *path).cloned());
            }
        }
        if problems != self.problems {
            for p in problems.iter().filter(|p| !self.problems.contains(p)) {
                warn!("invalid config, not applied: {p}");
            }
            self.problems = problems.clone();
            events.push(SourceEvent::Problems(problems));
        }
        events
    }
}

#[cfg(test)]
mod tests;
