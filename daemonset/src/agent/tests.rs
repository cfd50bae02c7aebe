use std::io;
use std::sync::Mutex;

use inpod::zds::Request;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use crate::enrollment::DATAPLANE_MODE_LABEL;
use crate::rules::RulesError;
use crate::source::{ChannelSource, Namespace, PodEvent, PodListFile};
use crate::testing::{FakeZtunnel, LogCapture, bounded};
use crate::zds_server::ZdsServerConfig;

/// Records what was installed and removed; can be told to fail installs.
#[derive(Debug, Clone, Default)]
struct FakeCapture(Arc<Mutex<FakeState>>);

#[derive(Debug, Default)]
struct FakeState {
    log: Vec<&'static str>,
    failures_left: usize,
}

impl FakeCapture {
    fn log(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().log.clone()
    }

    fn fail_next(&self, n: usize) {
        self.0.lock().unwrap().failures_left = n;
    }

    async fn eventually(&self, want: &[&str]) {
        bounded("capture log", async {
            while self.log() != want {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }
}

impl Capture for FakeCapture {
    async fn install(&self, _netns: &Netns) -> Result<(), CaptureError> {
        let mut state = self.0.lock().unwrap();
        if state.failures_left > 0 {
            state.failures_left -= 1;
            return Err(CaptureError::Rules(RulesError::Io {
                nft: "fake-nft".into(),
                source: io::Error::other("injected failure"),
            }));
        }
        state.log.push("install");
        Ok(())
    }

    async fn remove(&self, _netns: &Netns) -> Result<(), CaptureError> {
        self.0.lock().unwrap().log.push("remove");
        Ok(())
    }
}

fn ambient_ns() -> PodEvent {
    PodEvent::NamespaceUpserted(Namespace {
        name: "default".into(),
        labels: [(DATAPLANE_MODE_LABEL.to_owned(), "ambient".to_owned())].into(),
    })
}

fn pod(uid: &str, netns: Option<&str>) -> Pod {
    Pod {
        uid: uid.into(),
        name: format!("pod-{uid}"),
        namespace: "default".into(),
        service_account: "sa".into(),
        labels: Default::default(),
        ip: Some("10.244.0.9".parse().unwrap()),
        netns: netns.map(Into::into),
        host_network: false,
    }
}

/// A namespace path every test may open, privileged or not.
const OWN_NETNS: &str = "/proc/self/ns/net";

struct Harness {
    events: mpsc::Sender<Vec<PodEvent>>,
    hub: ZdsHub,
    capture: FakeCapture,
    stop: watch::Sender<bool>,
    agent: JoinHandle<()>,
}

fn config() -> AgentConfig {
    AgentConfig {
        retry_interval: Duration::from_millis(10),
        delete_timeout: Duration::from_secs(5),
        cleanup_on_exit: false,
    }
}

impl Harness {
    fn start(config: AgentConfig) -> Self {
        let (events, source) = ChannelSource::new(8);
        let hub = ZdsHub::new();
        let capture = FakeCapture::default();
        let (stop, shutdown) = watch::channel(false);
        let agent = Agent::new(source, capture.clone(), hub.clone(), config);
        Self {
            events,
            hub,
            capture,
            stop,
            agent: tokio::spawn(agent.run(shutdown)),
        }
    }

    async fn send(&self, batch: Vec<PodEvent>) {
        self.events.send(batch).await.unwrap();
    }

    async fn ztunnel(&self) -> FakeZtunnel {
        FakeZtunnel::served(&self.hub, ZdsServerConfig::default()).await
    }

    async fn stop(self) -> FakeCapture {
        self.stop.send_replace(true);
        bounded("agent stop", self.agent).await.unwrap();
        self.capture
    }
}

#[tokio::test]
async fn capture_comes_before_add_and_del_comes_before_removal() {
    let h = Harness::start(config());
    h.send(vec![
        ambient_ns(),
        PodEvent::PodUpserted(pod("u1", Some(OWN_NETNS))),
    ])
    .await;
    let mut zt = h.ztunnel().await;
    match zt.recv().await {
        Request::Add { uid, info, .. } => {
            assert_eq!(uid, "u1");
            assert_eq!(
                (info.name.as_str(), info.service_account.as_str()),
                ("pod-u1", "sa")
            );
            assert_eq!(
                h.capture.log(),
                ["install"],
                "rules before ztunnel hears of the pod"
            );
        }
        other => panic!("expected add, got {other:?}"),
    }
    zt.ack().await;
    assert!(matches!(zt.recv().await, Request::SnapshotSent));
    zt.ack().await;

    // The pod opts out: ztunnel is told first, and capture goes only after its ack.
    let mut opted_out = pod("u1", Some(OWN_NETNS));
    opted_out
        .labels
        .insert(DATAPLANE_MODE_LABEL.into(), "none".into());
    h.send(vec![PodEvent::PodUpserted(opted_out)]).await;
    match zt.recv().await {
        Request::Del { uid } => assert_eq!(uid, "u1"),
        other => panic!("expected del, got {other:?}"),
    }
    assert_eq!(
        h.capture.log(),
        ["install"],
        "capture stays until ztunnel acks"
    );
    zt.ack().await;
    h.capture.eventually(&["install", "remove"]).await;

    // Stopping leaves capture alone by default.
    let capture = h.stop().await;
    assert_eq!(capture.log(), ["install", "remove"]);
}

#[tokio::test]
async fn a_pending_pod_is_captured_once_its_namespace_is_known() {
    let h = Harness::start(config());
    h.send(vec![ambient_ns(), PodEvent::PodUpserted(pod("u1", None))])
        .await;
    let mut zt = h.ztunnel().await;
    assert!(zt.snapshot().await.is_empty(), "pending pods are not sent");
    assert!(h.capture.log().is_empty());

    h.send(vec![PodEvent::PodUpserted(pod("u1", Some(OWN_NETNS)))])
        .await;
    assert_eq!(zt.added().await, "u1");
    assert_eq!(h.capture.log(), ["install"]);

    // Deleted from the source: del, then removal.
    h.send(vec![PodEvent::PodDeleted { uid: "u1".into() }])
        .await;
    assert_eq!(zt.deleted().await, "u1");
    h.capture.eventually(&["install", "remove"]).await;
}

#[tokio::test]
async fn a_failed_capture_is_logged_once_and_retried() {
    let logs = LogCapture::start();
    let h = Harness::start(config());
    h.capture.fail_next(3);
    h.send(vec![
        ambient_ns(),
        PodEvent::PodUpserted(pod("u1", Some(OWN_NETNS))),
    ])
    .await;
    let mut zt = h.ztunnel().await;
    // The snapshot may come before or after the retries succeed; either way the pod
    // reaches ztunnel only once captured.
    let mut added = zt.snapshot().await;
    if added.is_empty() {
        added.push(zt.added().await);
    }
    assert_eq!(added, ["u1"]);
    assert_eq!(h.capture.log(), ["install"]);
    let text = logs.contents();
    assert!(
        text.contains("pod default/pod-u1 (u1): cannot install capture")
            && text.contains("injected failure"),
        "{text}"
    );
    assert_eq!(text.matches("pod not captured").count(), 1, "{text}");
}

#[tokio::test]
async fn an_unopenable_namespace_names_the_pod_and_path() {
    let logs = LogCapture::start();
    let h = Harness::start(config());
    h.send(vec![
        ambient_ns(),
        PodEvent::PodUpserted(pod("u1", Some("/nonexistent/netns/u1"))),
    ])
    .await;
    let mut zt = h.ztunnel().await;
    assert!(zt.snapshot().await.is_empty());
    let text = logs.contents();
    assert!(
        text.contains(
            "pod default/pod-u1 (u1): cannot open its network namespace: /nonexistent/netns/u1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn stale_capture_is_swept_from_unenrolled_pods_at_startup() {
    let h = Harness::start(config());
    let mut outside = pod("u2", Some(OWN_NETNS));
    outside.namespace = "plain".into();
    let mut host = pod("u3", Some(OWN_NETNS));
    host.host_network = true;
    h.send(vec![
        ambient_ns(),
        PodEvent::PodUpserted(outside),
        PodEvent::PodUpserted(host),
    ])
    .await;
    let mut zt = h.ztunnel().await;
    assert!(zt.snapshot().await.is_empty());
    // Only the pod outside the mesh; a hostNetwork pod is the node's own namespace.
    h.capture.eventually(&["remove"]).await;
}

#[tokio::test]
async fn cleanup_on_exit_releases_every_pod() {
    let h = Harness::start(AgentConfig {
        cleanup_on_exit: true,
        ..config()
    });
    h.send(vec![
        ambient_ns(),
        PodEvent::PodUpserted(pod("u1", Some(OWN_NETNS))),
    ])
    .await;
    let mut zt = h.ztunnel().await;
    assert_eq!(zt.snapshot().await, ["u1"]);
    h.stop.send_replace(true);
    assert_eq!(zt.deleted().await, "u1");
    let capture = h.stop().await;
    assert_eq!(capture.log(), ["install", "remove"]);
}

#[tokio::test]
async fn a_malformed_pod_list_unenrolls_nobody() {
    let logs = LogCapture::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pods.json");
    let good = format!(
        r#"{{"namespaces": [{{"name": "default", "labels": {{"istio.io/dataplane-mode": "ambient"}}}}],
            "pods": [{{"uid": "u1", "name": "a", "namespace": "default", "ip": "10.0.0.1", "netns": "{OWN_NETNS}"}}]}}"#
    );
    std::fs::write(&path, &good).unwrap();
    let hub = ZdsHub::new();
    let capture = FakeCapture::default();
    let (_stop, shutdown) = watch::channel(false);
    let source = PodListFile::with_interval(&path, Duration::from_millis(5));
    tokio::spawn(Agent::new(source, capture.clone(), hub.clone(), config()).run(shutdown));
    let mut zt = FakeZtunnel::served(&hub, ZdsServerConfig::default()).await;
    assert_eq!(zt.snapshot().await, ["u1"]);

    let tmp = dir.path().join("pods.tmp");
    std::fs::write(
        &tmp,
        good.replace(r#""pods": [{"#, r#""pods": [{"ip": 7, "#),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    bounded("malformed file logged", async {
        while !logs.contents().contains("pods[0].ip") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;

    // Still captured; the next good version is diffed against the last good one.
    std::fs::write(&tmp, good.replace("\"u1\"", "\"u2\"")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(zt.deleted().await, "u1");
    assert_eq!(zt.added().await, "u2");
    assert_eq!(capture.log(), ["install", "remove", "install"]);
    let text = logs.contents();
    assert!(
        text.contains("pods.json") && text.contains("invalid type"),
        "{text}"
    );
}
