use api::prost::Message;
use api::zds::ZdsHello;
use inpod::SeqPacket;
use inpod::zds::Request;

use super::*;
use crate::testing::{FakeZtunnel, LogCapture, bounded};

fn pod(name: &str) -> ZdsPod {
    ZdsPod {
        info: WorkloadInfo {
            name: name.into(),
            namespace: "default".into(),
            service_account: "sa".into(),
            windows_namespace: None,
        },
        netns: Arc::new(Netns::current().unwrap()),
    }
}

fn set(uids: &[&str]) -> PodSet {
    uids.iter()
        .map(|uid| (uid.to_string(), pod(&format!("pod-{uid}"))))
        .collect()
}

fn fast() -> ZdsServerConfig {
    ZdsServerConfig {
        hello_timeout: Duration::from_secs(5),
        ack_timeout: Duration::from_secs(5),
        retry_backoff: Duration::from_millis(10),
        max_retry_backoff: Duration::from_millis(50),
    }
}

/// Waits until the hub has `n` connections past hello.
async fn connected(hub: &ZdsHub, n: usize) {
    bounded("ztunnel registration", async {
        while hub.connections() != n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn snapshot_on_connect_then_add_and_del_follow_changes() {
    let hub = ZdsHub::new();
    hub.publish(set(&["b", "a"]));
    let mut zt = FakeZtunnel::served(&hub, fast()).await;

    // The snapshot: one add per pod (with its namespace and identity), then snapshot_sent.
    match zt.recv().await {
        Request::Add { uid, info, netns } => {
            assert_eq!(uid, "a", "snapshots go in uid order");
            assert_eq!(info.name, "pod-a");
            assert_eq!(info.namespace, "default");
            assert_eq!(info.service_account, "sa");
            assert_eq!(netns, Netns::current().unwrap());
        }
        other => panic!("expected add, got {other:?}"),
    }
    zt.ack().await;
    assert_eq!(zt.snapshot().await, ["b"]);

    // Changes: dels first, then adds.
    let generation = hub.publish(set(&["a", "c"]));
    assert_eq!(zt.deleted().await, "b");
    assert_eq!(zt.added().await, "c");
    bounded("delivered", hub.delivered(generation)).await;

    // Publishing the same set again sends nothing; a new pod does.
    hub.publish(set(&["a", "c"]));
    hub.publish(set(&["a", "c", "d"]));
    assert_eq!(zt.added().await, "d");
}

#[tokio::test]
async fn a_pod_with_a_new_namespace_is_added_again() {
    let hub = ZdsHub::new();
    hub.publish(set(&["a"]));
    let mut zt = FakeZtunnel::served(&hub, fast()).await;
    assert_eq!(zt.snapshot().await, ["a"]);

    let Ok(other) = Netns::create() else {
        // Without CAP_SYS_ADMIN there is no second namespace to tell apart; the
        // namespace-dependent half of this test lives in tests/ (which requires root).
        return;
    };
    let mut pods = set(&["a"]);
    pods.get_mut("a").unwrap().netns = Arc::new(other.try_clone().unwrap());
    hub.publish(pods);
    match zt.recv().await {
        Request::Add { uid, netns, .. } => {
            assert_eq!(uid, "a");
            assert_eq!(netns, other);
        }
        other => panic!("expected a second add, got {other:?}"),
    }
}

#[tokio::test]
async fn no_snapshot_before_the_agent_knows_the_pods() {
    let hub = ZdsHub::new();
    let mut zt = FakeZtunnel::served(&hub, fast()).await;
    connected(&hub, 1).await;
    // The connection is up and waiting; an empty snapshot now would make ztunnel drop
    // every pod. The first message must belong to the first published set.
    hub.publish(set(&["a"]));
    assert_eq!(zt.snapshot().await, ["a"]);
}

#[tokio::test]
async fn a_nacked_add_is_logged_and_retried() {
    let logs = LogCapture::start();
    let hub = ZdsHub::new();
    hub.publish(set(&["a"]));
    let mut zt = FakeZtunnel::served(&hub, fast()).await;
    assert!(matches!(zt.recv().await, Request::Add { uid, .. } if uid == "a"));
    zt.nack("no room for pod a").await;
    assert!(matches!(zt.recv().await, Request::SnapshotSent));
    zt.ack().await;
    // Retried after the backoff, with nothing else changing.
    assert_eq!(zt.added().await, "a");
    let text = logs.contents();
    assert!(text.contains("ztunnel NACKed add"), "{text}");
    assert!(
        text.contains("uid=a") && text.contains("no room for pod a"),
        "{text}"
    );
}

#[tokio::test]
async fn reconnect_gets_the_full_snapshot_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/ztunnel.sock");
    let hub = ZdsHub::new();
    hub.publish(set(&["a", "b"]));
    let server = ZdsServer::bind(&path, hub.clone(), fast()).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(server.run(shutdown));

    let mut zt = FakeZtunnel::connect(&path).await;
    assert_eq!(zt.snapshot().await, ["a", "b"]);
    hub.publish(set(&["a"]));
    assert_eq!(zt.deleted().await, "b");
    drop(zt);
    connected(&hub, 0).await;

    let mut zt = FakeZtunnel::connect(&path).await;
    assert_eq!(
        zt.snapshot().await,
        ["a"],
        "a full snapshot of the current set"
    );

    stop.send_replace(true);
    bounded("server stop", server).await.unwrap();
    // Closed, or reset if the last ack was still unread: ztunnel reconnects either way.
    zt.closed().await;
    assert!(!path.exists(), "the socket file is removed on shutdown");
}

#[tokio::test]
async fn garbage_is_logged_and_the_server_keeps_serving() {
    let logs = LogCapture::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let hub = ZdsHub::new();
    hub.publish(set(&["a"]));
    let server = ZdsServer::bind(&path, hub.clone(), fast()).unwrap();
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(server.run(shutdown));

    let mut buf = [0u8; 64];
    // Undecodable hello.
    let raw = SeqPacket::connect(&path).unwrap();
    raw.send(&[0xff, 0xff, 0xff, 0x0f], &[]).await.unwrap();
    let got = bounded("close after garbage", raw.recv(&mut buf))
        .await
        .unwrap();
    assert_eq!((got.len, got.fds.len()), (0, 0), "closed by the agent");
    // A hello from the future.
    let raw = SeqPacket::connect(&path).unwrap();
    raw.send(&ZdsHello { version: 7 }.encode_to_vec(), &[])
        .await
        .unwrap();
    let got = bounded("close after bad version", raw.recv(&mut buf))
        .await
        .unwrap();
    assert_eq!((got.len, got.fds.len()), (0, 0), "closed by the agent");

    // A good ztunnel is still served.
    let mut zt = FakeZtunnel::connect(&path).await;
    assert_eq!(zt.snapshot().await, ["a"]);
    // Speaking out of turn (an ack nobody asked for) ends that connection.
    zt.ack().await;
    zt.closed().await;

    let text = logs.contents();
    assert!(text.contains("bad ZDS hello"), "{text}");
    assert!(text.contains("undecodable ZDS hello"), "{text}");
    assert!(text.contains("unsupported ZDS version 7"), "{text}");
    assert!(text.contains("without being asked"), "{text}");
}

#[tokio::test]
async fn both_ztunnels_of_a_rolling_upgrade_are_kept_in_step() {
    let hub = ZdsHub::new();
    hub.publish(set(&["a", "b"]));
    let mut old = FakeZtunnel::served(&hub, fast()).await;
    assert_eq!(old.snapshot().await, ["a", "b"]);
    let mut new = FakeZtunnel::served(&hub, fast()).await;
    assert_eq!(new.snapshot().await, ["a", "b"]);
    assert_eq!(hub.connections(), 2);

    let generation = hub.publish(set(&["a"]));
    let delivered = hub.delivered(generation);
    tokio::pin!(delivered);
    assert_eq!(old.deleted().await, "b");
    // Not delivered until the new ztunnel let go of the pod too.
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut delivered)
            .await
            .is_err()
    );
    match new.recv().await {
        Request::Del { uid } => assert_eq!(uid, "b"),
        other => panic!("expected del, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut delivered)
            .await
            .is_err(),
        "not before the ack"
    );
    new.ack().await;
    bounded("delivered", delivered).await;

    // The old one leaves; the new one goes on alone.
    drop(old);
    connected(&hub, 1).await;
    hub.publish(set(&["a", "c"]));
    assert_eq!(new.added().await, "c");
}

#[tokio::test]
async fn a_silent_ztunnel_is_dropped_after_the_ack_timeout() {
    let logs = LogCapture::start();
    let hub = ZdsHub::new();
    hub.publish(set(&["a"]));
    let config = ZdsServerConfig {
        ack_timeout: Duration::from_millis(50),
        ..fast()
    };
    let mut zt = FakeZtunnel::served(&hub, config).await;
    assert!(matches!(zt.recv().await, Request::Add { .. }));
    // No ack: the agent gives up on this connection, and delivery does not wait for it.
    zt.closed().await;
    connected(&hub, 0).await;
    bounded("delivered", hub.delivered(hub.publish(set(&[])))).await;
    assert!(logs.contents().contains("no answer to add for pod a"));
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_dropped() {
    let hub = ZdsHub::new();
    let (ours, theirs) = SeqPacket::pair().unwrap();
    let config = ZdsServerConfig {
        hello_timeout: Duration::from_millis(20),
        ..fast()
    };
    bounded(
        "serve",
        serve(ZdsConnection::new(theirs), hub.clone(), config),
    )
    .await;
    let mut buf = [0u8; 8];
    assert_eq!(ours.recv(&mut buf).await.unwrap().len, 0);
    assert_eq!(hub.connections(), 0);
}
