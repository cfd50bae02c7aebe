//! Volume and flow: incremental pushes in large snapshots, slow proxies, shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use api::prost_types::Any;
use tonic::Code;

use super::harness::*;
use crate::xds::Snapshot;

fn many(
    count: usize,
    changed: Option<usize>,
    deleted: Option<usize>,
) -> Vec<(&'static str, String, Any)> {
    (0..count)
        .filter(|i| Some(*i) != deleted)
        .map(|i| {
            let name = format!("wl-{i:05}");
            let octet = if Some(i) == changed { 2 } else { 1 };
            let any = address(&name, octet);
            (ADDRESS, name, any)
        })
        .collect()
}

#[tokio::test]
async fn one_change_among_ten_thousand_sends_one_resource() {
    const N: usize = 10_000;
    let controller = Controller::start(snapshot(many(N, None, None))).await;
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &BTreeMap::new()).await;
    let full = proxy.recv().await;
    assert_eq!(full.resources.len(), N);
    proxy.ack(&full).await;

    let s1 = controller.current();
    let s2 = controller.publish(next_snapshot(&s1, many(N, Some(4321), None)));
    let r = proxy.recv().await;
    assert_eq!(names(&r), ["wl-04321"]);
    assert!(r.removed_resources.is_empty());
    assert_eq!(r.system_version_info, s2.version());
    proxy.ack(&r).await;

    let s3 = controller.publish(next_snapshot(&s2, many(N, Some(4321), Some(17))));
    let r = proxy.recv().await;
    assert!(r.resources.is_empty(), "{:?}", names(&r));
    assert_eq!(r.removed_resources, ["wl-00017"]);
    proxy.ack(&r).await;

    // Same content, new snapshot object (built from scratch): nothing to send.
    controller.publish(snapshot(many(N, Some(4321), Some(17))));
    proxy.assert_quiet("no resource changed").await;
    let list = controller.status_until("status", |l| l.len() == 1).await;
    let t = &list[0].types[ADDRESS];
    assert_eq!(
        (t.resources_sent, t.removals_sent, t.responses_sent),
        (N as u64 + 1, 1, 3)
    );
    assert_eq!(t.resources_held, N - 1);
    assert_eq!(s3.get(ADDRESS).unwrap().len(), N - 1);
}

/// Resources big enough that a few responses fill the HTTP/2 window and socket buffers.
const BIG: usize = 100;
const BIG_BYTES: usize = 100_000;

fn big(generation: u8) -> Snapshot {
    snapshot((0..BIG).map(|i| {
        let any = Any {
            type_url: ADDRESS.into(),
            value: vec![generation; BIG_BYTES],
        };
        (ADDRESS, format!("big-{i:03}"), any)
    }))
}

#[tokio::test]
async fn a_proxy_that_does_not_read_gets_the_net_change_not_a_backlog() {
    const GENERATIONS: u8 = 16;
    let controller = Controller::start(big(0)).await;
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &BTreeMap::new()).await;
    controller
        .status_until("the first response", |l| {
            l.first()
                .is_some_and(|s| s.types.get(ADDRESS).is_some_and(|t| t.responses_sent == 1))
        })
        .await;

    // Each generation changes every resource (~10 MB per response) while the proxy reads
    // nothing. The server may compute a response only while its queue has room.
    let mut computed = 1;
    for generation in 1..=GENERATIONS {
        controller.publish(big(generation));
        let wanted = computed + 1;
        // Bounded wait: either the server computes one more response, or it is blocked.
        let progressed = tokio::time::timeout(
            QUIET,
            controller.status_until("", |l| l[0].types[ADDRESS].responses_sent >= wanted),
        )
        .await
        .is_ok();
        if progressed {
            computed = wanted;
        }
    }
    // The status is the truth; a response computed just after a window closed counts too.
    let computed = controller.server.connections()[0].types[ADDRESS].responses_sent;
    assert!(
        computed < u64::from(GENERATIONS) / 2,
        "the server kept computing responses for a proxy that reads nothing: {computed}"
    );

    // Now read: the proxy converges on the last generation in at most the queued responses
    // plus one net update.
    let mut held: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut received = 0;
    let want = vec![GENERATIONS; BIG_BYTES];
    while held.len() != BIG || held.values().any(|v| *v != want) {
        let r = proxy.recv().await;
        received += 1;
        proxy.ack(&r).await;
        for res in r.resources {
            held.insert(res.name, res.resource.unwrap().value);
        }
    }
    assert!(
        received <= computed + 1,
        "received {received} responses, computed {computed} before reading"
    );
    proxy.assert_quiet("converged").await;
}

#[tokio::test]
async fn streams_end_with_unavailable_when_the_controller_stops_publishing() {
    let controller =
        Controller::start(snapshot([(ADDRESS, "a".to_string(), address("a", 1))])).await;
    let mut proxy = controller.connect(Some(TOKEN)).await.unwrap();
    proxy.subscribe(ADDRESS, &[], &BTreeMap::new()).await;
    proxy.recv().await;
    let server = controller.stop_publishing();
    let err = proxy.end().await.expect_err("ends with a status");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.connections().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection still listed"
        );
        // Polling interval of a bounded "eventually", not synchronisation.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
