//! Reading a manifest directory on demand, without a task or a channel: for one-shot
//! checks (`controller validate`) and for callers that decide themselves when to look
//! again (the local mesh's pod runner). Same semantics as the directory source: an
//! object whose edit is invalid keeps its last good version.

use std::path::{Path, PathBuf};

use super::SourceEvent;
use super::dir::{DirectoryState, read_changes};
use crate::store::Store;

#[derive(Debug)]
pub struct DirectoryReader {
    dir: PathBuf,
    state: DirectoryState,
    store: Store,
}

impl DirectoryReader {
    /// Reads `dir` in full.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let mut reader = DirectoryReader {
            dir: dir.into(),
            state: DirectoryState::default(),
            store: Store::default(),
        };
        reader.refresh();
        reader.store.apply(SourceEvent::Synced);
        reader
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the files that changed; true if any object changed.
    pub fn refresh(&mut self) -> bool {
        for (path, change) in read_changes(&self.dir, &self.state.fingerprints()) {
            self.state.update_file(path, change);
        }
        let mut changed = false;
        for event in self.state.reconcile() {
            changed |= self.store.apply(event);
        }
        changed
    }

    /// The objects in force and the current problems.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
