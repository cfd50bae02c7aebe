use super::*;
use crate::xds::snapshot::{Snapshot, content_version};
use api::prost_types::Any;

const T: &str = "type.googleapis.com/test.T";

fn any(payload: &str) -> Any {
    Any {
        type_url: T.into(),
        value: payload.as_bytes().to_vec(),
    }
}

fn resources(pairs: &[(&str, &str)]) -> Arc<Resources> {
    let mut b = Snapshot::builder();
    for (name, payload) in pairs {
        b.insert(T, *name, any(payload));
    }
    b.build().resources(T)
}

fn request(subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: T.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// (changed names, removed names) of the next update; `None` when nothing is sent.
fn next(sub: &mut Subscription, current: &Arc<Resources>) -> Option<(Vec<String>, Vec<String>)> {
    sub.next_update(current).map(|d| {
        let changed = d.changed.iter().map(|(n, _)| n.to_string()).collect();
        (changed, d.removed.iter().map(|n| n.to_string()).collect())
    })
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn wildcard_gets_everything_then_only_changes() {
    let mut sub = Subscription::new(&request(&[], &[]));
    assert!(sub.is_wildcard());
    let v1 = resources(&[("a", "1"), ("b", "1")]);
    assert!(sub.is_due(&v1));
    assert_eq!(next(&mut sub, &v1), Some((names(&["a", "b"]), vec![])));
    assert!(!sub.is_due(&v1), "the same map needs no second look");
    assert_eq!(sub.held(), 2);

    let v2 = resources(&[("a", "1"), ("b", "2"), ("c", "1")]);
    assert!(sub.is_due(&v2));
    assert_eq!(next(&mut sub, &v2), Some((names(&["b", "c"]), vec![])));
    let v3 = resources(&[("b", "2"), ("c", "1")]);
    assert_eq!(next(&mut sub, &v3), Some((vec![], names(&["a"]))));
    let v4 = resources(&[("b", "2"), ("c", "1")]);
    assert!(sub.is_due(&v4), "a new map is looked at");
    assert_eq!(next(&mut sub, &v4), None, "equal content sends nothing");
}

#[test]
fn star_is_wildcard_too_and_first_response_is_sent_even_when_empty() {
    let mut sub = Subscription::new(&request(&["*"], &[]));
    assert!(sub.is_wildcard());
    let empty = resources(&[]);
    assert_eq!(next(&mut sub, &empty), Some((vec![], vec![])));
    assert_eq!(next(&mut sub, &resources(&[])), None);
}

#[test]
fn explicit_names_get_only_those_and_absent_ones_are_announced_once() {
    let mut sub = Subscription::new(&request(&["a", "missing"], &[]));
    assert!(!sub.is_wildcard());
    assert_eq!(sub.subscribed_names(), 2);
    let v1 = resources(&[("a", "1"), ("b", "1")]);
    assert_eq!(
        next(&mut sub, &v1),
        Some((names(&["a"]), names(&["missing"])))
    );
    let v2 = resources(&[("a", "1"), ("b", "2")]);
    assert_eq!(next(&mut sub, &v2), None, "b is not subscribed");
    let v3 = resources(&[("a", "1"), ("missing", "1")]);
    assert_eq!(next(&mut sub, &v3), Some((names(&["missing"]), vec![])));
}

#[test]
fn unsubscribe_stops_updates_and_resubscribe_resends() {
    let mut sub = Subscription::new(&request(&["a", "b"], &[]));
    let v1 = resources(&[("a", "1"), ("b", "1")]);
    assert_eq!(next(&mut sub, &v1), Some((names(&["a", "b"]), vec![])));
    sub.update(&request(&[], &["a"]));
    assert_eq!(sub.held(), 1);
    let v2 = resources(&[("a", "2"), ("b", "1")]);
    assert_eq!(next(&mut sub, &v2), None, "a is unsubscribed");
    sub.update(&request(&["a"], &[]));
    assert!(sub.is_due(&v2), "a subscription change is looked at");
    assert_eq!(next(&mut sub, &v2), Some((names(&["a"]), vec![])));
}

#[test]
fn wildcard_can_be_added_and_ended() {
    let mut sub = Subscription::new(&request(&["a"], &[]));
    let v1 = resources(&[("a", "1"), ("b", "1")]);
    assert_eq!(next(&mut sub, &v1), Some((names(&["a"]), vec![])));
    sub.update(&request(&["*"], &[]));
    assert!(sub.is_wildcard());
    assert_eq!(next(&mut sub, &v1), Some((names(&["b"]), vec![])));
    sub.update(&request(&[], &["*"]));
    assert!(!sub.is_wildcard());
    assert_eq!(sub.held(), 1, "only the explicit name stays tracked");
    let v2 = resources(&[("a", "2"), ("b", "2")]);
    assert_eq!(next(&mut sub, &v2), Some((names(&["a"]), vec![])));
}

#[test]
fn initial_versions_suppress_what_the_client_has() {
    let mut first = request(&[], &[]);
    first.initial_resource_versions = [
        ("same".to_string(), content_version(&any("1")).to_string()),
        (
            "changed".to_string(),
            content_version(&any("1")).to_string(),
        ),
        (
            "vanished".to_string(),
            content_version(&any("1")).to_string(),
        ),
        // Held from another server (e.g. istiod before a migration): not ours to trust.
        ("foreign".to_string(), "2024-05-01T00:00:00Z/17".to_string()),
    ]
    .into();
    let mut sub = Subscription::new(&first);
    let current = resources(&[
        ("same", "1"),
        ("changed", "2"),
        ("new", "1"),
        ("foreign", "1"),
    ]);
    assert_eq!(
        next(&mut sub, &current),
        Some((names(&["changed", "foreign", "new"]), names(&["vanished"])))
    );
}

#[test]
fn explicit_initial_versions_outside_the_subscription_are_dropped() {
    let mut first = request(&["a"], &[]);
    first.initial_resource_versions = [
        ("a".to_string(), content_version(&any("1")).to_string()),
        ("other".to_string(), content_version(&any("1")).to_string()),
    ]
    .into();
    let mut sub = Subscription::new(&first);
    assert_eq!(sub.held(), 1);
    let current = resources(&[("a", "1")]);
    assert_eq!(
        next(&mut sub, &current),
        Some((vec![], vec![])),
        "a is held at this version; the first response is still sent"
    );
}
