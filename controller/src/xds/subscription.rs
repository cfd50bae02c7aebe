//! One client's interest in one resource type on one stream, per the Envoy delta xDS rules:
//! what it subscribed to (wildcard and/or names) and which versions it holds, so that each
//! response carries only the difference.

use std::collections::BTreeSet;
use std::sync::Arc;

use api::xds::DeltaDiscoveryRequest;

use super::snapshot::{Diff, Held, Resources, Scope, Version, diff, diff_since};

/// The name that subscribes to (or, unsubscribed, ends) the wildcard.
const WILDCARD: &str = "*";

#[derive(Debug)]
pub(super) struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the client holds: what it declared on its first request, updated with
    /// everything sent since. Sending updates it at once (no wait for the ACK), so a NACKed
    /// resource is not resent until it changes again.
    held: Held,
    /// Newly subscribed names the client does not hold: if they do not exist, the client
    /// is told so with a removal instead of waiting forever.
    announce: BTreeSet<String>,
    /// The first request of a type always gets a response, even an empty one, so the client
    /// knows it is in sync (e.g. after a reconnect where nothing changed).
    must_respond: bool,
    /// The subscription changed since the last diff.
    needs_diff: bool,
    /// The map the last diff ran against; an identical `Arc` needs no new diff.
    last_diffed: Option<Arc<Resources>>,
}

impl Subscription {
    /// Starts from the first request of a type on a stream: empty `resource_names_subscribe`
    /// (or `*`) means wildcard; `initial_resource_versions` is what the client already holds.
    pub(super) fn new(first: &DeltaDiscoveryRequest) -> Self {
        let mut sub = Subscription {
            wildcard: first.resource_names_subscribe.is_empty(),
            names: BTreeSet::new(),
            held: first
                .initial_resource_versions
                .iter()
                .map(|(name, version)| (Arc::from(name.as_str()), Version::parse(version)))
                .collect(),
            announce: BTreeSet::new(),
            must_respond: true,
            needs_diff: true,
            last_diffed: None,
        };
        sub.update(first);
        if !sub.wildcard {
            // Versions of names it does not subscribe to are not ours to track.
            let names = &sub.names;
            sub.held.retain(|name, _| names.contains(&**name));
        }
        sub
    }

    /// Applies a later request's subscribes and unsubscribes (in that order).
    pub(super) fn update(&mut self, request: &DeltaDiscoveryRequest) {
        for name in &request.resource_names_subscribe {
            if name == WILDCARD {
                self.needs_diff |= !self.wildcard;
                self.wildcard = true;
            } else if self.names.insert(name.clone()) {
                if !self.held.contains_key(name.as_str()) {
                    self.announce.insert(name.clone());
                }
                self.needs_diff = true;
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
                let names = &self.names;
                self.held.retain(|held, _| names.contains(&**held));
            } else {
                self.names.remove(name);
                self.announce.remove(name);
                if !self.wildcard {
                    // Forgotten, so a later re-subscribe sends it again.
                    self.held.remove(name.as_str());
                }
            }
        }
    }

    /// Whether [`next_update`](Self::next_update) may have something to say for `current`.
    pub(super) fn is_due(&self, current: &Arc<Resources>) -> bool {
        self.must_respond
            || self.needs_diff
            || !self
                .last_diffed
                .as_ref()
                .is_some_and(|last| Arc::ptr_eq(last, current))
    }

    /// What to send so the client holds `current`'s versions of what it subscribed to, or
    /// `None` when there is nothing to say. Records the result as held.
    pub(super) fn next_update(&mut self, current: &Arc<Resources>) -> Option<Diff> {
        let scope = if self.wildcard {
            Scope::All
        } else {
            Scope::Names(&self.names)
        };
        let mut update = match &self.last_diffed {
            // Nothing about the subscription changed: only changed entries need a look.
            Some(last) if !self.needs_diff => diff_since(&self.held, last, current, scope),
            _ => diff(&self.held, current, scope),
        };
        for name in std::mem::take(&mut self.announce) {
            if current.get(&name).is_none() && !self.held.contains_key(name.as_str()) {
                update.removed.push(name.into());
            }
        }
        update.removed.sort();
        for (name, entry) in &update.changed {
            self.held.insert(name.clone(), Some(entry.version));
        }
        for name in &update.removed {
            self.held.remove(name);
        }
        self.last_diffed = Some(current.clone());
        self.needs_diff = false;
        let respond = std::mem::take(&mut self.must_respond) || !update.is_empty();
        respond.then_some(update)
    }

    pub(super) fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    pub(super) fn subscribed_names(&self) -> usize {
        self.names.len()
    }

    pub(super) fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests;
