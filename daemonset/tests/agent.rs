//! The whole agent, for real: a pod list file, capture in a fresh namespace, and a
//! ztunnel (fake, speaking real ZDS over the socket) that checks the order of
//! operations from its side. Needs root; fails, never skips, without it.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use common::*;
use daemonset::{Agent, AgentConfig, NftCapture, PodListFile, ZdsHub, ZdsServer, ZdsServerConfig};
use inpod::Netns;
use inpod::zds::{Request, ZdsConnection};
use tokio::sync::watch;
use tokio::time::timeout;

fn pod_list(netns: &str, pod_mode: Option<&str>) -> String {
    let labels = pod_mode
        .map(|m| format!(r#", "labels": {{"istio.io/dataplane-mode": "{m}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"namespaces": [{{"name": "default", "labels": {{"istio.io/dataplane-mode": "ambient"}}}}],
            "pods": [{{"uid": "uid-1", "name": "app", "namespace": "default", "serviceAccount": "app-sa",
                      "ip": "10.244.0.5", "netns": "{netns}"{labels}}}]}}"#
    )
}

fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn recv(zt: &mut ZdsConnection) -> Request {
    timeout(BOUND, zt.recv_request())
        .await
        .expect("a ZDS request in time")
        .expect("a valid ZDS request")
}

fn has_table(ns: &Netns) -> bool {
    nft(ns, &["list", "tables"]).contains("istio-ambient")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_captured_then_handed_over_and_released_in_order() {
    let pod = pod_netns("the pod").await;
    // The way the lab names a pod's namespace: a descriptor path of a live process.
    let netns_path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        pod.as_fd().as_raw_fd()
    );
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.json");
    let socket = dir.path().join("ztunnel.sock");
    write_atomically(&pods, &pod_list(&netns_path, None));

    let hub = ZdsHub::new();
    let (stop, shutdown) = watch::channel(false);
    let server = ZdsServer::bind(&socket, hub.clone(), ZdsServerConfig::default()).unwrap();
    let server = tokio::spawn(server.run(shutdown.clone()));
    let agent = Agent::new(
        PodListFile::with_interval(&pods, Duration::from_millis(10)),
        NftCapture::default(),
        hub,
        AgentConfig::default(),
    );
    let agent = tokio::spawn(agent.run(shutdown));

    let mut zt = timeout(BOUND, ZdsConnection::connect(&socket))
        .await
        .unwrap()
        .expect("connect to the agent");
    match recv(&mut zt).await {
        Request::Add { uid, info, netns } => {
            assert_eq!(uid, "uid-1");
            assert_eq!(
                (
                    info.name.as_str(),
                    info.namespace.as_str(),
                    info.service_account.as_str()
                ),
                ("app", "default", "app-sa")
            );
            assert_eq!(netns, pod, "the pod's own namespace is handed over");
            assert!(
                has_table(&pod),
                "capture is installed before ztunnel is told"
            );
            assert_eq!(our_rules(&netlink(&pod)).await.len(), 2);
        }
        other => panic!("expected add, got {other:?}"),
    }
    zt.send_ack(None).await.unwrap();
    assert!(matches!(recv(&mut zt).await, Request::SnapshotSent));
    zt.send_ack(None).await.unwrap();

    // The pod opts out: del first, capture removed only after ztunnel's ack.
    write_atomically(&pods, &pod_list(&netns_path, Some("none")));
    match recv(&mut zt).await {
        Request::Del { uid } => assert_eq!(uid, "uid-1"),
        other => panic!("expected del, got {other:?}"),
    }
    assert!(
        has_table(&pod),
        "capture stays until ztunnel let go of the pod"
    );
    zt.send_ack(None).await.unwrap();
    // The nft table goes first, policy routing right after: wait for all of it.
    timeout(BOUND, async {
        let nl = netlink(&pod);
        while has_table(&pod)
            || !our_rules(&nl).await.is_empty()
            || !table_100(&nl).await.is_empty()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("capture removed after the del was acked");
    assert_eq!(nft(&pod, &["list", "ruleset"]), "");

    // Back in the mesh, then the agent stops: capture stays for the next agent.
    write_atomically(&pods, &pod_list(&netns_path, Some("ambient")));
    assert!(matches!(recv(&mut zt).await, Request::Add { .. }));
    zt.send_ack(None).await.unwrap();
    stop.send_replace(true);
    timeout(BOUND, agent).await.unwrap().unwrap();
    timeout(BOUND, server).await.unwrap().unwrap();
    assert!(
        has_table(&pod),
        "stopping the agent leaves capture in place"
    );
    assert!(!socket.exists());
}
