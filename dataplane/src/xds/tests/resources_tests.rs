use api::prost_types::Any;

use super::*;
use crate::state::StateError;
use crate::xds::resources::{Rejected, Resources};

#[test]
fn responses_apply_all_or_nothing() {
    let mut held = Resources::default();
    let svc = resource(
        "prod/web.prod.svc.cluster.local",
        "1",
        address_any(wl::address::Type::Service(pb_service(
            "web",
            [10, 96, 0, 1],
        ))),
    );
    let first = response(
        api::ADDRESS_TYPE_URL,
        vec![
            workload_resource(pb_workload("a", vec![vec![10, 0, 0, 1]]), "1"),
            svc,
        ],
        &[],
    );
    let applied = held.apply(&first).unwrap();
    assert_eq!((applied.updated, applied.removed), (2, 0));
    assert!(applied.state.workload_by_ip(ip("10.0.0.1")).is_some());
    assert!(applied.state.service_by_vip(ip("10.96.0.1")).is_some());

    let policy = resource("prod/p", "7", Any::from_msg(&pb_policy(vec![])).unwrap());
    let applied = held
        .apply(&response(api::AUTHORIZATION_TYPE_URL, vec![policy], &[]))
        .unwrap();
    assert!(applied.state.policies().get("prod/p").is_some());
    assert_eq!(
        applied.state.workloads().count(),
        1,
        "policies rebuild with the held addresses"
    );

    // One bad resource spoils the whole response, even with a good one next to it.
    let mixed = response(
        api::ADDRESS_TYPE_URL,
        vec![
            workload_resource(pb_workload("b", vec![vec![10, 0, 0, 2]]), "1"),
            workload_resource(pb_workload("bad", vec![vec![1, 2, 3, 4, 5]]), "1"),
        ],
        &["a"],
    );
    let Err(Rejected::Invalid(errors)) = held.apply(&mixed) else {
        panic!("expected a rejection")
    };
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("\"bad\": addresses[0]"),
        "{}",
        errors[0]
    );

    let clash = response(
        api::ADDRESS_TYPE_URL,
        vec![workload_resource(
            pb_workload("c", vec![vec![10, 0, 0, 1]]),
            "1",
        )],
        &[],
    );
    assert!(matches!(
        held.apply(&clash),
        Err(Rejected::Inconsistent(StateError::DuplicateAddress { .. }))
    ));
    let versions = held.versions(api::ADDRESS_TYPE_URL);
    assert_eq!(
        versions.len(),
        2,
        "refused responses leave nothing behind: {versions:?}"
    );
    assert_eq!(versions["a"], "1");

    let update = response(
        api::ADDRESS_TYPE_URL,
        vec![workload_resource(
            pb_workload("a", vec![vec![10, 0, 0, 9]]),
            "2",
        )],
        &["prod/web.prod.svc.cluster.local", "never-seen"],
    );
    let applied = held.apply(&update).unwrap();
    assert_eq!((applied.updated, applied.removed), (1, 1));
    assert!(applied.state.workload_by_ip(ip("10.0.0.9")).is_some());
    assert_eq!(applied.state.services().count(), 0);
    assert_eq!(
        held.versions(api::ADDRESS_TYPE_URL),
        [("a".to_owned(), "2".to_owned())].into()
    );
    assert_eq!(
        held.versions(api::AUTHORIZATION_TYPE_URL),
        [("prod/p".to_owned(), "7".to_owned())].into()
    );

    let other = response(
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        vec![],
        &[],
    );
    assert!(matches!(held.apply(&other), Err(Rejected::UnknownType(_))));
}
