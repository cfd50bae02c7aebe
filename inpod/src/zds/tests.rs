use std::os::fd::AsFd;

use super::*;

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        namespace: "default".into(),
        service_account: "sa".into(),
        windows_namespace: None,
    }
}

fn pair() -> (ZdsConnection, ZdsConnection) {
    let (a, b) = SeqPacket::pair().unwrap();
    (ZdsConnection::new(a), ZdsConnection::new(b))
}

#[tokio::test]
async fn add_carries_the_netns_and_acks_round_trip() {
    let (agent, mut ztunnel) = pair();
    let ns = Netns::current().unwrap();
    agent.send_add("uid-1", info("pod-a"), &ns).await.unwrap();
    match ztunnel.recv_request().await.unwrap() {
        Request::Add { uid, info, netns } => {
            assert_eq!(uid, "uid-1");
            assert_eq!(info.name, "pod-a");
            assert_eq!(netns, ns);
        }
        other => panic!("expected add, got {other:?}"),
    }
    ztunnel.send_ack(None).await.unwrap();
    let mut agent = agent;
    assert_eq!(agent.recv_ack().await.unwrap(), Ok(()));
    ztunnel.send_ack(Some("no room")).await.unwrap();
    assert_eq!(agent.recv_ack().await.unwrap(), Err("no room".to_owned()));
}

#[tokio::test]
async fn keep_del_and_snapshot_decode() {
    let (agent, mut ztunnel) = pair();
    agent.send_keep("k").await.unwrap();
    agent.send_del("d").await.unwrap();
    agent.send_snapshot_sent().await.unwrap();
    assert!(matches!(ztunnel.recv_request().await.unwrap(), Request::Keep { uid } if uid == "k"));
    assert!(matches!(ztunnel.recv_request().await.unwrap(), Request::Del { uid } if uid == "d"));
    assert!(matches!(
        ztunnel.recv_request().await.unwrap(),
        Request::SnapshotSent
    ));
}

#[tokio::test]
async fn garbage_is_a_per_message_error_and_the_connection_goes_on() {
    let (agent, mut ztunnel) = pair();
    agent
        .socket()
        .send(&[0xff, 0xff, 0xff, 0x0f], &[])
        .await
        .unwrap();
    let err = ztunnel.recv_request().await.unwrap_err();
    assert!(matches!(err, ZdsError::Decode { .. }), "{err}");
    assert!(!err.is_fatal());
    agent.send_del("after-garbage").await.unwrap();
    assert!(
        matches!(ztunnel.recv_request().await.unwrap(), Request::Del { uid } if uid == "after-garbage")
    );
}

#[tokio::test]
async fn add_without_fd_or_with_a_non_netns_fd_is_rejected() {
    let (agent, mut ztunnel) = pair();
    agent
        .send_request(ReqPayload::Add(AddWorkload {
            uid: "u".into(),
            workload_info: Some(info("p")),
        }))
        .await
        .unwrap();
    let err = ztunnel.recv_request().await.unwrap_err();
    assert!(
        matches!(err, ZdsError::MissingNetns { ref uid } if uid == "u"),
        "{err}"
    );

    let file = std::fs::File::open("/proc/self/status").unwrap();
    let req = WorkloadRequest {
        payload: Some(ReqPayload::Add(AddWorkload {
            uid: "v".into(),
            workload_info: Some(info("p")),
        })),
    };
    agent
        .socket()
        .send(&req.encode_to_vec(), &[file.as_fd()])
        .await
        .unwrap();
    let err = ztunnel.recv_request().await.unwrap_err();
    assert!(
        matches!(err, ZdsError::BadNetns { ref uid, .. } if uid == "v"),
        "{err}"
    );
    assert!(!err.is_fatal());
}

#[tokio::test]
async fn empty_payload_and_empty_uid_are_rejected() {
    let (agent, mut ztunnel) = pair();
    // An empty message encodes to zero bytes, which reads as end-of-stream on a
    // SEQPACKET socket; an unknown field (9, varint 1) gives a request with no payload.
    agent.socket().send(&[0x48, 0x01], &[]).await.unwrap();
    assert!(matches!(
        ztunnel.recv_request().await.unwrap_err(),
        ZdsError::Empty { .. }
    ));
    agent.send_del("").await.unwrap();
    assert!(matches!(
        ztunnel.recv_request().await.unwrap_err(),
        ZdsError::EmptyUid
    ));
}

#[tokio::test]
async fn hello_version_is_checked_and_close_is_fatal() {
    let (ztunnel, mut agent) = pair();
    ztunnel
        .socket()
        .send(&ZdsHello { version: 7 }.encode_to_vec(), &[])
        .await
        .unwrap();
    let err = agent.recv_hello().await.unwrap_err();
    assert!(
        matches!(err, ZdsError::Version(7)) && err.is_fatal(),
        "{err}"
    );
    drop(ztunnel);
    let err = agent.recv_ack().await.unwrap_err();
    assert!(matches!(err, ZdsError::Closed) && err.is_fatal(), "{err}");
}

#[tokio::test]
async fn listener_accepts_a_connecting_ztunnel() {
    let dir = std::env::temp_dir().join(format!("zds-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ztunnel.sock");
    let listener = ZdsListener::bind(&path).unwrap();
    let (client, server) = tokio::join!(ZdsConnection::connect(&path), listener.accept());
    let (_client, mut server) = (client.unwrap(), server.unwrap());
    assert_eq!(
        server.recv_hello().await.unwrap().version,
        Version::V1 as i32
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
