//! The one store every source feeds: the objects in force and the problems seen.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::manifest::{ConfigError, Parsed};
use crate::resource::{Kind, Resource, ResourceKey};
use crate::source::SourceEvent;

#[derive(Debug, Default, Clone)]
pub struct Store {
    objects: BTreeMap<ResourceKey, Parsed>,
    problems: Vec<ConfigError>,
    synced: bool,
    /// Bumped on every change to the objects.
    generation: u64,
}

impl Store {
    /// Applies one event; true if the objects changed.
    pub fn apply(&mut self, event: SourceEvent) -> bool {
        let changed = match event {
            SourceEvent::Applied(parsed) => {
                self.objects.insert(parsed.key.clone(), parsed);
                true
            }
            SourceEvent::Deleted(key) => self.objects.remove(&key).is_some(),
            SourceEvent::Problems(problems) => {
                self.problems = problems;
                false
            }
            SourceEvent::Synced => {
                self.synced = true;
                false
            }
        };
        if changed {
            self.generation += 1;
        }
        changed
    }

    pub fn get(&self, key: &ResourceKey) -> Option<&Arc<Resource>> {
        self.objects.get(key).map(|p| &p.resource)
    }

    /// The object `key` with where it came from.
    pub fn parsed(&self, key: &ResourceKey) -> Option<&Parsed> {
        self.objects.get(key)
    }

    /// Every object of `kind`, ordered by namespace and name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Parsed> {
        self.objects
            .range(
                ResourceKey {
                    kind,
                    namespace: None,
                    name: Arc::from(""),
                }..,
            )
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, p)| p)
    }

    pub fn objects(&self) -> impl Iterator<Item = &Parsed> {
        self.objects.values()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The current problems (invalid objects, unreadable files, duplicates).
    pub fn problems(&self) -> &[ConfigError] {
        &self.problems
    }

    /// True once every source delivered its initial state.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}
