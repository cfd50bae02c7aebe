use std::path::Path;

use super::*;
use crate::manifest::parse_file;

const NAMESPACE: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
";

fn pod(name: &str, ip: &str, node: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: demo}}
spec:
  nodeName: {node}
  serviceAccountName: {name}
  containers: [{{name: app, image: demo-app}}]
status: {{podIP: {ip}}}
"
    )
}

fn applied(text: &str) -> Vec<SourceEvent> {
    let contents = parse_file(Path::new("test.yaml"), text);
    assert!(contents.errors.is_empty(), "{:?}", contents.errors);
    contents
        .objects
        .into_iter()
        .map(SourceEvent::Applied)
        .collect()
}

struct Harness {
    events: mpsc::Sender<SourceEvent>,
    published: watch::Receiver<Arc<Published>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

fn start() -> Harness {
    let (events, rx) = mpsc::channel(64);
    let (published_tx, published) = watch::channel(Arc::new(Published::default()));
    let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::builder().build()));
    tokio::spawn(run(
        rx,
        MeshOptions::default(),
        Debounce::default(),
        Outputs {
            published: published_tx,
            snapshots: snapshots_tx,
        },
    ));
    Harness {
        events,
        published,
        snapshots,
    }
}

impl Harness {
    async fn send(&self, events: Vec<SourceEvent>) {
        for e in events {
            self.events.send(e).await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_published_before_the_source_syncs() {
    let mut h = start();
    h.send(applied(NAMESPACE)).await;
    h.send(applied(&pod("a", "10.244.0.5", "node-0"))).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!h.published.has_changed().unwrap());
    assert!(!h.published.borrow().is_synced());
    h.send(vec![SourceEvent::Synced]).await;
    h.published.changed().await.unwrap();
    let published = h.published.borrow_and_update().clone();
    assert_eq!(published.generation, 1);
    assert_eq!(published.objects, 2);
    let snapshot = h.snapshots.borrow().clone();
    assert_eq!(snapshot.resources(api::ADDRESS_TYPE_URL).len(), 1);
    let a = SpiffeId::new("cluster.local", "demo", "a").unwrap();
    assert!(published.identities.may_sign("node-0", &a));
    assert!(!published.identities.may_sign("node-1", &a));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_is_one_publication() {
    let mut h = start();
    h.send(applied(NAMESPACE)).await;
    h.send(vec![SourceEvent::Synced]).await;
    h.published.changed().await.unwrap();
    h.published.borrow_and_update();
    let started = Instant::now();
    let mut first_push = None;
    // 60 changes, one every 20 ms: 1.2 s of churn, never 100 ms of quiet.
    for i in 0..60 {
        let pod = pod(&format!("p{i}"), &format!("10.244.1.{i}"), "node-1");
        h.send(applied(&pod)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if first_push.is_none() && h.published.has_changed().unwrap() {
            first_push = Some(started.elapsed());
            assert_eq!(h.published.borrow_and_update().generation, 2);
        }
    }
    // Only the 1 s cap released a push while changes kept coming...
    let first_push = first_push.expect("a push during the churn");
    assert!(
        first_push >= Duration::from_millis(980) && first_push <= Duration::from_millis(1020),
        "{first_push:?}"
    );
    // ...and the rest settles into one more publication after the quiet period.
    h.published.changed().await.unwrap();
    let last = h.published.borrow_and_update().clone();
    assert_eq!(last.generation, 3);
    assert_eq!(last.objects, 61);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!h.published.has_changed().unwrap(), "no change, no push");
}

#[tokio::test(start_paused = true)]
async fn problems_alone_are_republished() {
    let mut h = start();
    h.send(vec![SourceEvent::Synced]).await;
    h.published.changed().await.unwrap();
    assert!(h.published.borrow_and_update().problems.is_empty());
    let problem = ConfigError {
        file: "bad.yaml".into(),
        document: Some(1),
        object: None,
        field: None,
        message: "not valid YAML".into(),
    };
    h.send(vec![SourceEvent::Problems(vec![problem.clone()])])
        .await;
    h.published.changed().await.unwrap();
    assert_eq!(h.published.borrow_and_update().problems, vec![problem]);
}
