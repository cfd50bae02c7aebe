use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use super::{Resolved, cached};
use crate::upstream::{Cluster, ClusterKey, TrafficPolicy};

fn resolution(host: &str) -> Resolved {
    Resolved {
        endpoints: Arc::from(Vec::new()),
        key: Arc::new(ClusterKey {
            host: host.to_owned(),
            subset: None,
            port: 80,
        }),
        cluster: Arc::new(Cluster::new(TrafficPolicy::default(), Instant::now())),
    }
}

/// Stand-ins for the state, the configuration, the cluster table and two services.
struct World {
    state: Arc<u8>,
    config: Arc<u16>,
    clusters: Arc<u32>,
    reviews: Arc<String>,
    ratings: Arc<String>,
    resolved: Cell<usize>,
}

impl World {
    fn new() -> Self {
        World {
            state: Arc::new(1),
            config: Arc::new(1),
            clusters: Arc::new(1),
            reviews: Arc::new("reviews".into()),
            ratings: Arc::new("ratings".into()),
            resolved: Cell::new(0),
        }
    }

    /// The cluster `service` resolves to, counting the resolutions made.
    fn get(&self, service: &Arc<String>, subset: Option<&str>, port: u16) -> Arc<Cluster> {
        let against = (&self.state, &self.config, &self.clusters);
        let resolved = cached(against, service, subset, port, || {
            self.resolved.set(self.resolved.get() + 1);
            Ok::<_, ()>(resolution(service))
        });
        resolved.expect("resolved").cluster
    }
}

#[test]
fn a_service_is_resolved_once_per_subset_and_port() {
    let world = World::new();
    let first = world.get(&world.reviews, Some("v1"), 9080);
    let again = world.get(&world.reviews, Some("v1"), 9080);
    assert!(Arc::ptr_eq(&first, &again), "the kept cluster");
    assert_eq!(world.resolved.get(), 1);
    for (service, subset, port) in [
        (&world.reviews, Some("v2"), 9080),
        (&world.reviews, None, 9080),
        (&world.reviews, Some("v1"), 9081),
        (&world.ratings, Some("v1"), 9080),
    ] {
        let other = world.get(service, subset, port);
        assert!(!Arc::ptr_eq(&first, &other), "{service} {subset:?} {port}");
    }
    assert_eq!(world.resolved.get(), 5);
    assert!(Arc::ptr_eq(
        &first,
        &world.get(&world.reviews, Some("v1"), 9080)
    ));
    assert_eq!(world.resolved.get(), 5, "all five kept");
}

#[test]
fn a_new_state_configuration_or_cluster_table_resolves_again() {
    let mut world = World::new();
    let first = world.get(&world.reviews, None, 9080);
    world.state = Arc::new(2);
    let after_state = world.get(&world.reviews, None, 9080);
    world.config = Arc::new(2);
    let after_config = world.get(&world.reviews, None, 9080);
    world.clusters = Arc::new(2);
    let after_clusters = world.get(&world.reviews, None, 9080);
    assert_eq!(world.resolved.get(), 4);
    for later in [&after_state, &after_config, &after_clusters] {
        assert!(!Arc::ptr_eq(&first, later));
    }
    assert!(Arc::ptr_eq(
        &after_clusters,
        &world.get(&world.reviews, None, 9080)
    ));
}

#[test]
fn failures_are_not_kept() {
    let world = World::new();
    let against = (&world.state, &world.config, &world.clusters);
    let failed = cached(against, &world.reviews, None, 80, || {
        Err::<Resolved, _>("no")
    });
    assert_eq!(failed.err(), Some("no"));
    let _ = world.get(&world.reviews, None, 80);
    assert_eq!(world.resolved.get(), 1, "resolved after the failure");
}
