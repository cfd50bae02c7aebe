//! Delta xDS protocol behaviour as a proxy sees it.

use std::collections::{BTreeMap, HashSet};

use api::rpc;
use api::xds::DeltaDiscoveryRequest;
use api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tonic::Code;

use super::harness::*;
use crate::xds::content_version;

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn addresses(pairs: &[(&str, u8)]) -> Vec<(&'static str, String, api::prost_types::Any)> {
    pairs
        .iter()
        .map(|(n, o)| (ADDRESS, n.to_string(), address(n, *o)))
        .collect()
}

#[tokio::test]
async fn wildcard_gets_every_resource_of_both_types_on_one_stream() {
    let mut items = addresses(&[("a", 1), ("b", 2), ("c", 3)]);
    items.push((AUTHZ, "default/allow".into(), policy("allow", 0)));
    items.push((AUTHZ, "default/deny".into(), policy("deny", 1)));
    let controller = Controller::start(snapshot(items)).await;
    let snap = controller.current();
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();

    // An unserved type is ignored without harming the stream.
    proxy
        .subscribe(
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            &[],
            &none(),
        )
        .await;
    proxy.assert_quiet("unserved type").await;

    proxy.subscribe(ADDRESS, &[], &none()).await;
    proxy.subscribe(AUTHZ, &[], &none()).await;
    let mut by_type = BTreeMap::new();
    for _ in 0..2 {
        let r = proxy.recv().await;
        assert_eq!(r.system_version_info, snap.version());
        assert!(r.removed_resources.is_empty());
        by_type.insert(r.type_url.clone(), r);
    }
    assert_eq!(names(&by_type[ADDRESS]), ["a", "b", "c"]);
    assert_eq!(names(&by_type[AUTHZ]), ["default/allow", "default/deny"]);
    for r in by_type.values() {
        for res in &r.resources {
            let any = res.resource.as_ref().expect("payload");
            assert_eq!(
                res.version,
                content_version(any).to_string(),
                "{}",
                res.name
            );
        }
    }
    let decoded: api::workload::Address = by_type[ADDRESS].resources[1]
        .resource
        .as_ref()
        .unwrap()
        .to_msg()
        .unwrap();
    assert_eq!(decoded, address("b", 2).to_msg().unwrap());
    assert_ne!(by_type[ADDRESS].nonce, by_type[AUTHZ].nonce);

    for r in by_type.values() {
        proxy.ack(r).await;
    }
    proxy
        .assert_quiet("everything is acknowledged and nothing changed")
        .await;
    let list = controller
        .status_until("both ACKs recorded", |l| {
            l.len() == 1 && l[0].types.values().all(|t| t.last_acked_nonce.is_some())
        })
        .await;
    let status = &list[0];
    assert_eq!(status.node, NODE);
    assert_eq!(status.node_id, format!("ztunnel~10.0.0.1~{NODE}"));
    assert!(status.peer.is_some_and(|p| p.ip().is_loopback()));
    assert_eq!(status.types.len(), 2, "the unserved type is not tracked");
    let address_status = &status.types[ADDRESS];
    assert!(address_status.wildcard);
    assert_eq!(address_status.resources_sent, 3);
    assert_eq!(address_status.resources_held, 3);
    assert_eq!(
        address_status.last_acked_nonce.as_deref(),
        Some(by_type[ADDRESS].nonce.as_str())
    );
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json[0]["types"][AUTHZ]["resources_sent"], 2);

    drop(proxy);
    controller
        .status_until("the connection to be forgotten", |l| l.is_empty())
        .await;
}

#[tokio::test]
async fn nack_is_recorded_not_resent_and_later_changes_still_flow() {
    let controller = Controller::start(snapshot(addresses(&[("a", 1), ("b", 1)]))).await;
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &none()).await;
    let first = proxy.recv().await;
    assert_eq!(names(&first), ["a", "b"]);

    let nack = |nonce: &str, message: &str| DeltaDiscoveryRequest {
        type_url: ADDRESS.into(),
        response_nonce: nonce.into(),
        error_detail: Some(rpc::Status {
            code: Code::InvalidArgument as i32,
            message: message.into(),
            details: vec![],
        }),
        ..Default::default()
    };
    proxy
        .send(nack(&first.nonce, "address a is malformed"))
        .await;
    let list = controller
        .status_until("the NACK", |l| l[0].types[ADDRESS].last_nack.is_some())
        .await;
    let t = &list[0].types[ADDRESS];
    let recorded = t.last_nack.as_ref().unwrap();
    assert_eq!(recorded.nonce, first.nonce);
    assert_eq!(recorded.message, "address a is malformed");
    assert!(recorded.at_unix_ms > 0);
    assert_eq!(t.last_acked_nonce, None);
    proxy
        .assert_quiet("a NACK is not answered with a resend")
        .await;

    let current = controller.current();
    controller.publish(next_snapshot(&current, addresses(&[("a", 1), ("b", 2)])));
    let second = proxy.recv().await;
    assert_eq!(
        names(&second),
        ["b"],
        "only the change, not the NACKed set again"
    );

    // A late NACK of the superseded nonce says nothing about the current config.
    proxy.send(nack(&first.nonce, "stale complaint")).await;
    proxy.ack(&second).await;
    let list = controller
        .status_until("the ACK", |l| {
            l[0].types[ADDRESS].last_acked_nonce.as_deref() == Some(second.nonce.as_str())
        })
        .await;
    let t = &list[0].types[ADDRESS];
    assert_eq!(
        t.last_nack.as_ref().unwrap().message,
        "address a is malformed"
    );
    assert_eq!(t.last_sent_nonce.as_deref(), Some(second.nonce.as_str()));
}

#[tokio::test]
async fn reconnect_after_restart_sends_only_what_changed() {
    let mut before = addresses(&[("same", 1), ("changed", 1), ("vanished", 1)]);
    before.push((AUTHZ, "p".into(), policy("p", 0)));
    let first = Controller::start(snapshot(before)).await;
    let mut proxy = first.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &none()).await;
    proxy.subscribe(AUTHZ, &[], &none()).await;
    let mut held = BTreeMap::new();
    for _ in 0..2 {
        let r = proxy.recv().await;
        held.insert(r.type_url.clone(), versions(&r));
    }
    drop(proxy);

    // A new controller process: its snapshot is built from scratch, sharing nothing.
    let mut after = addresses(&[("same", 1), ("changed", 2), ("added", 1)]);
    after.push((AUTHZ, "p".into(), policy("p", 0)));
    let second = Controller::start(snapshot(after)).await;
    let mut proxy = second.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &held[ADDRESS]).await;
    proxy.subscribe(AUTHZ, &[], &held[AUTHZ]).await;
    let mut by_type = BTreeMap::new();
    for _ in 0..2 {
        let r = proxy.recv().await;
        by_type.insert(r.type_url.clone(), r);
    }
    let addresses = &by_type[ADDRESS];
    assert_eq!(names(addresses), ["added", "changed"]);
    assert_eq!(addresses.removed_resources, ["vanished"]);
    let policies = &by_type[AUTHZ];
    assert!(
        policies.resources.is_empty() && policies.removed_resources.is_empty(),
        "in sync: an empty response confirms it, got {policies:?}"
    );
    proxy.assert_quiet("nothing more to say").await;
}

#[tokio::test]
async fn explicit_subscription_and_unsubscribe() {
    let controller = Controller::start(snapshot(addresses(&[("a", 1), ("b", 1), ("c", 1)]))).await;
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &["a", "missing"], &none()).await;
    let r = proxy.recv().await;
    assert_eq!(names(&r), ["a"]);
    assert_eq!(
        r.removed_resources,
        ["missing"],
        "told that it does not exist"
    );

    let s1 = controller.current();
    let s2 = controller.publish(next_snapshot(
        &s1,
        addresses(&[("a", 2), ("b", 2), ("c", 1)]),
    ));
    let r = proxy.recv().await;
    assert_eq!(names(&r), ["a"], "b and c are not subscribed");
    assert!(r.removed_resources.is_empty());

    // ACK and subscribe to b in one request.
    proxy
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS.into(),
            response_nonce: r.nonce.clone(),
            resource_names_subscribe: vec!["b".into()],
            ..Default::default()
        })
        .await;
    let r = proxy.recv().await;
    assert_eq!(names(&r), ["b"]);

    proxy
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS.into(),
            resource_names_unsubscribe: vec!["a".into()],
            ..Default::default()
        })
        .await;
    proxy.assert_quiet("an unsubscribe needs no answer").await;
    let s3 = controller.publish(next_snapshot(
        &s2,
        addresses(&[("a", 3), ("b", 2), ("c", 1)]),
    ));
    proxy
        .assert_quiet("a changed but is no longer subscribed")
        .await;
    controller.publish(next_snapshot(
        &s3,
        addresses(&[("a", 3), ("b", 3), ("c", 1)]),
    ));
    let r = proxy.recv().await;
    assert_eq!(names(&r), ["b"]);
    let list = controller.status_until("status", |l| l.len() == 1).await;
    let t = &list[0].types[ADDRESS];
    assert!(!t.wildcard);
    assert_eq!(
        (t.subscribed_names, t.resources_held),
        (2, 1),
        "b held; missing subscribed"
    );
}

#[tokio::test]
async fn streams_without_a_known_token_are_refused() {
    let controller = Controller::start(snapshot(addresses(&[("a", 1)]))).await;
    for token in [None, Some("some-other-token-123456")] {
        let err = match controller.connect(token).await {
            Ok(_) => panic!("token {token:?} was accepted"),
            Err(err) => err,
        };
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    assert!(controller.server.connections().is_empty());
}

#[tokio::test]
async fn state_of_the_world_is_unimplemented() {
    let controller = Controller::start(snapshot(addresses(&[("a", 1)]))).await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", controller.addr))
            .await
            .unwrap();
    let requests = tokio_stream::iter(Vec::<api::xds::DiscoveryRequest>::new());
    let err = bounded(
        "the SotW answer",
        client.stream_aggregated_resources(requests),
    )
    .await
    .expect_err("SotW is refused");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("delta"), "{err:?}");
}

#[tokio::test]
async fn nonces_are_unique_per_response() {
    let controller = Controller::start(snapshot(addresses(&[("a", 0)]))).await;
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &none()).await;
    let mut seen = HashSet::new();
    let mut r = proxy.recv().await;
    for octet in 1..=5 {
        assert!(seen.insert(r.nonce.clone()), "nonce {} repeated", r.nonce);
        proxy.ack(&r).await;
        let current = controller.current();
        controller.publish(next_snapshot(&current, addresses(&[("a", octet)])));
        r = proxy.recv().await;
        assert_eq!(names(&r), ["a"]);
    }
    assert!(seen.insert(r.nonce.clone()));
}
