//! The directory source: every `*.yaml`, `*.yml` and `*.json` file under a directory
//! (recursively, hidden files and directories skipped), re-read when it changes.
//!
//! Bad input never removes good config: an object that fails to parse or validate keeps
//! its last good version in force, a file that is not YAML at all keeps everything it
//! held, and only an object that is really gone (removed from a readable file, or its
//! file deleted) is deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{ConfigSource, SourceEvent};
use crate::manifest::{ConfigError, FileContents, Parsed, parse_file};
use crate::resource::ResourceKey;

/// How often the directory is checked for changes by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// Watches a directory of manifests by polling file metadata.
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
        loop {
            let dir = self.dir.clone();
            let scan = state.fingerprints();
            // File I/O and YAML parsing happen off the async threads.
            let changes = tokio::task::spawn_blocking(move || read_changes(&dir, &scan)).await;
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
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
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
    emitted: BTreeMap<ResourceKey, Parsed>,
    problems: Vec<ConfigError>,
}

#[derive(Debug)]
struct FileState {
    fingerprint: Fingerprint,
    /// The objects in force from this file: the latest valid version of each.
    good: BTreeMap<ResourceKey, Parsed>,
    errors: Vec<ConfigError>,
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
        let Some((fingerprint, contents)) = change else {
            self.files.remove(&path);
            return;
        };
        let previous = self.files.remove(&path);
        let mut old_good = previous.map(|f| f.good).unwrap_or_default();
        let good = if contents.unreadable {
            old_good
        } else {
            let mut good: BTreeMap<ResourceKey, Parsed> = BTreeMap::new();
            for parsed in contents.objects {
                good.entry(parsed.key.clone()).or_insert(parsed);
            }
            for key in contents.rejected {
                if let Some(kept) = old_good.remove(&key) {
                    good.entry(key).or_insert(kept);
                }
            }
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

    /// The events that bring a consumer from what was emitted to the current state.
    pub fn reconcile(&mut self) -> Vec<SourceEvent> {
        let mut merged: BTreeMap<ResourceKey, Parsed> = BTreeMap::new();
        let mut problems: Vec<ConfigError> = Vec::new();
        for file in self.files.values() {
            problems.extend(file.errors.iter().cloned());
            for (key, parsed) in &file.good {
                match merged.get(key) {
                    Some(first) => problems.push(ConfigError {
                        file: parsed.origin.file.clone(),
                        document: Some(parsed.origin.document),
                        object: Some(key.to_string()),
                        field: None,
                        message: format!(
                            "defined again; the definition in {} is used",
                            first.origin
                        ),
                    }),
                    None => {
                        merged.insert(key.clone(), parsed.clone());
                    }
                }
            }
        }
        let mut events = Vec::new();
        for (key, parsed) in &merged {
            let same = self
                .emitted
                .get(key)
                // Objects of unchanged files are the same allocation: skip the deep compare.
                .is_some_and(|old| {
                    Arc::ptr_eq(&old.resource, &parsed.resource) || old.resource == parsed.resource
                });
            if !same {
                events.push(SourceEvent::Applied(parsed.clone()));
            }
        }
        for key in self.emitted.keys() {
            if !merged.contains_key(key) {
                events.push(SourceEvent::Deleted(key.clone()));
            }
        }
        if problems != self.problems {
            for p in problems.iter().filter(|p| !self.problems.contains(p)) {
                warn!("invalid config, not applied: {p}");
            }
            self.problems = problems.clone();
            events.push(SourceEvent::Problems(problems));
        }
        self.emitted = merged;
        events
    }
}

#[cfg(test)]
mod tests;
