//! The agent's view of the node: namespaces and pods as the source last described them.
//! Read-only to everything but [`PodStore::apply`], so enrollment is a pure function of it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::enrollment::{Enrollment, enrollment};
use crate::source::{Namespace, Pod, PodEvent};

#[derive(Debug, Clone, Default)]
pub struct PodStore {
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<String, Pod>,
}

impl PodStore {
    pub fn apply(&mut self, event: PodEvent) {
        match event {
            PodEvent::NamespaceUpserted(ns) => {
                self.namespaces.insert(ns.name.clone(), ns);
            }
            PodEvent::NamespaceDeleted { name } => {
                self.namespaces.remove(&name);
            }
            PodEvent::PodUpserted(pod) => {
                self.pods.insert(pod.uid.clone(), pod);
            }
            PodEvent::PodDeleted { uid } => {
                self.pods.remove(&uid);
            }
        }
    }

    pub fn pod(&self, uid: &str) -> Option<&Pod> {
        self.pods.get(uid)
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The verdict for a known pod.
    pub fn enrollment<'a>(&self, pod: &'a Pod) -> Enrollment<'a> {
        enrollment(self.namespaces.get(&pod.namespace), pod)
    }

    /// Pods to capture now, by uid, with their namespace path.
    pub fn enrolled(&self) -> BTreeMap<&str, (&Pod, &Path)> {
        self.pods
            .values()
            .filter_map(|pod| match self.enrollment(pod) {
                Enrollment::Enrolled { netns } => Some((pod.uid.as_str(), (pod, netns))),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrollment::{DATAPLANE_MODE_LABEL, NotEnrolled};

    fn ns(name: &str, mode: &str) -> Namespace {
        Namespace {
            name: name.into(),
            labels: [(DATAPLANE_MODE_LABEL.to_owned(), mode.to_owned())].into(),
        }
    }

    fn pod(uid: &str, namespace: &str) -> Pod {
        Pod {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: namespace.into(),
            service_account: "default".into(),
            labels: Default::default(),
            ip: Some("10.0.0.1".parse().unwrap()),
            netns: Some(format!("/run/netns/{uid}").into()),
            host_network: false,
        }
    }

    #[test]
    fn namespace_label_changes_move_its_pods() {
        let mut store = PodStore::default();
        store.apply(PodEvent::NamespaceUpserted(ns("a", "ambient")));
        store.apply(PodEvent::PodUpserted(pod("1", "a")));
        store.apply(PodEvent::PodUpserted(pod("2", "b")));
        assert_eq!(store.enrolled().keys().copied().collect::<Vec<_>>(), ["1"]);

        store.apply(PodEvent::NamespaceUpserted(ns("b", "ambient")));
        assert_eq!(
            store.enrolled().keys().copied().collect::<Vec<_>>(),
            ["1", "2"]
        );

        store.apply(PodEvent::NamespaceDeleted { name: "a".into() });
        assert_eq!(store.enrolled().keys().copied().collect::<Vec<_>>(), ["2"]);
        let one = store.pod("1").unwrap();
        assert_eq!(
            store.enrollment(one),
            Enrollment::NotEnrolled(NotEnrolled::NotSelected)
        );

        store.apply(PodEvent::PodDeleted { uid: "2".into() });
        assert!(store.enrolled().is_empty());
        assert_eq!(store.pods().count(), 1);
    }
}
