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

/// Every publication from now on: (time since `started`, generation, objects).
fn record(h: &Harness, started: Instant) -> Arc<std::sync::Mutex<Vec<(Duration, u64, usize)>>> {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut published = h.published.clone();
    published.borrow_and_update();
    let out = log.clone();
    tokio::spawn(async move {
        while published.changed().await.is_ok() {
            let p = published.borrow_and_update().clone();
            out.lock()
                .unwrap()
                .push((started.elapsed(), p.generation, p.objects));
        }
    });
    log
}

/// Sends the namespace and syncs; returns once the first publication is out.
async fn synced() -> Harness {
    let mut h = start();
    h.send(applied(NAMESPACE)).await;
    h.send(vec![SourceEvent::Synced]).await;
    h.published.changed().await.unwrap();
    assert_eq!(h.published.borrow_and_update().generation, 1);
    h
}

#[tokio::test(start_paused = true)]
async fn an_isolated_change_is_published_at_once() {
    let h = synced().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = Instant::now();
    let log = record(&h, started);
    // One scan of a file: its events arrive back to back, and are one publication.
    let mut scan = applied(&pod("a", "10.244.0.5", "node-0"));
    scan.extend(applied(&pod("b", "10.244.0.6", "node-0")));
    h.send(scan).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        *log.lock().unwrap(),
        [(Duration::ZERO, 2, 3)],
        "no quiet period waited"
    );
    assert!(
        h.snapshots.borrow().resources(api::ADDRESS_TYPE_URL).len() == 2,
        "both pods in the snapshot"
    );

    // A change right after a publication waits for the quiet period.
    h.send(applied(&pod("c", "10.244.0.7", "node-0"))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        log.lock().unwrap()[1..],
        [(Duration::from_millis(110), 3, 4)]
    );
    // Idle again: the next change goes out at once.
    let again = started.elapsed();
    h.send(applied(&pod("d", "10.244.0.8", "node-0"))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(log.lock().unwrap()[2..], [(again, 4, 5)]);
}

#[tokio::test(start_paused = true)]
async fn churn_is_published_at_least_once_a_second() {
    let h = synced().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = Instant::now();
    let log = record(&h, started);
    // 60 changes, one every 20 ms: 1.2 s of churn, never 100 ms of quiet.
    for i in 0..60 {
        let pod = pod(&format!("p{i}"), &format!("10.244.1.{i}"), "node-1");
        h.send(applied(&pod)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = log.lock().unwrap().clone();
    let times: Vec<Duration> = log.iter().map(|(t, _, _)| *t).collect();
    let generations: Vec<u64> = log.iter().map(|(_, g, _)| *g).collect();
    assert_eq!(generations, [2, 3, 4], "{log:?}");
    // The first change found the pipeline idle: out at once.
    assert_eq!(log[0], (Duration::ZERO, 2, 2));
    // The rest never had 100 ms of quiet: only the 1 s cap (counted from the first
    // batched change, at 20 ms) released them...
    assert_eq!(times[1], Duration::from_millis(1020), "{log:?}");
    // ...and what came after settled 100 ms after the last change (at 1180 ms).
    assert_eq!(log[2], (Duration::from_millis(1280), 4, 61));
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

#[tokio::test(start_paused = true)]
async fn a_certificate_request_waits_for_the_pod_to_be_published() {
    let h = start();
    h.send(applied(NAMESPACE)).await;
    h.send(vec![SourceEvent::Synced]).await;
    let authorizer = PublishedAuthorizer(h.published.clone());
    let late = SpiffeId::new("cluster.local", "demo", "late").unwrap();
    let never = SpiffeId::new("cluster.local", "demo", "never").unwrap();
    let patience = Duration::from_secs(2);

    // The pod arrives 300 ms after its node asked: the answer waits for it.
    let asked = Instant::now();
    let answer = authorizer.node_may_sign_within("node-0", &late, patience);
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.send(applied(&pod("late", "10.244.0.9", "node-0"))).await;
    };
    let (granted, ()) = tokio::join!(answer, send);
    assert!(granted);
    assert!(asked.elapsed() < patience, "{:?}", asked.elapsed());

    // Another node, or an identity nobody runs, is refused once patience runs out.
    let asked = Instant::now();
    assert!(
        !authorizer
            .node_may_sign_within("node-1", &late, patience)
            .await
    );
    assert!(
        !authorizer
            .node_may_sign_within("node-0", &never, patience)
            .await
    );
    assert!(asked.elapsed() >= 2 * patience);
}

fn objects(text: &str) -> Vec<crate::manifest::Parsed> {
    let contents = parse_file(Path::new("test.yaml"), text);
    assert!(contents.errors.is_empty(), "{:?}", contents.errors);
    contents.objects
}

fn labelled_pod(name: &str, ip: &str, version: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: demo, labels: {{app: web, version: {version}}}}}
spec:
  nodeName: node-0
  serviceAccountName: web
  containers: [{{name: app, image: demo-app, ports: [{{name: http, containerPort: 8080}}]}}]
status: {{podIP: {ip}}}
"
    )
}

const SERVICE: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
";

#[test]
fn the_translator_matches_a_full_translation_as_the_store_changes() {
    let options = MeshOptions::default();
    let mut store = Store::default();
    let mut translator = Translator::new(options.clone());
    let mut previous = Arc::new(Snapshot::default());
    let mut step = |store: &Store, what: &str| {
        let full = snapshot_of(
            &crate::translate::translate(store, &options),
            Arc::new(Snapshot::default()),
        );
        let translated = translator.translate(store, previous.clone());
        assert_eq!(translated.snapshot, full, "{what}");
        let fresh =
            Translator::new(options.clone()).translate(store, Arc::new(Snapshot::default()));
        assert_eq!(translated.identities, fresh.identities, "{what}");
        let pods = translated.translated_pods;
        let next = Arc::new(translated.snapshot);
        let kept = std::mem::replace(&mut previous, next.clone());
        (kept, next, translated.identities, pods)
    };
    let apply = |store: &mut Store, text: &str| {
        for parsed in objects(text) {
            store.apply(SourceEvent::Applied(parsed));
        }
    };
    let entry = |s: &Snapshot, name: &str| {
        s.resources(api::ADDRESS_TYPE_URL)
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let (a, b) = ("Kubernetes//Pod/demo/a", "Kubernetes//Pod/demo/b");

    apply(&mut store, NAMESPACE);
    apply(&mut store, SERVICE);
    apply(&mut store, &labelled_pod("a", "10.244.0.5", "v1"));
    apply(&mut store, &labelled_pod("b", "10.244.0.6", "v1"));
    assert_eq!(step(&store, "initial").3, 2);

    // One pod changes: only it is translated, and only its entry is new.
    apply(&mut store, &labelled_pod("a", "10.244.0.5", "v2"));
    let (before, after, _, translated) = step(&store, "a pod's label");
    assert_eq!(translated, 1);
    assert!(!Arc::ptr_eq(&entry(&before, a), &entry(&after, a)));
    assert!(Arc::ptr_eq(&entry(&before, b), &entry(&after, b)));

    // Something every workload depends on changes: every pod is translated again, and
    // a pod whose workload comes out the same keeps its entry.
    apply(
        &mut store,
        &SERVICE.replace("targetPort: http", "targetPort: 9090"),
    );
    let (before, after, _, translated) = step(&store, "the service");
    assert_eq!(translated, 2, "every pod");
    assert!(
        !Arc::ptr_eq(&entry(&before, b), &entry(&after, b)),
        "ports changed"
    );
    apply(
        &mut store,
        &NAMESPACE.replace(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {team: x}",
        ),
    );
    step(&store, "the namespace leaves the mesh");
    apply(
        &mut store,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: demo}\n",
    );
    let (before, after, _, _) = step(&store, "an unrelated object");
    assert!(Arc::ptr_eq(&entry(&before, a), &entry(&after, a)));

    // A PeerAuthentication changes what workloads list: every pod is translated again,
    // and the policies it becomes are published alongside.
    apply(
        &mut store,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: web, namespace: demo}\n\
         spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, \
         portLevelMtls: {8080: {mode: PERMISSIVE}}}\n",
    );
    let (before, after, _, translated) = step(&store, "a PeerAuthentication");
    assert_eq!(translated, 2, "every pod");
    assert!(!Arc::ptr_eq(&entry(&before, a), &entry(&after, a)));
    let policies = after.resources(api::AUTHORIZATION_TYPE_URL);
    assert!(
        policies
            .get("demo/converted_peer_authentication_web")
            .is_some()
    );
    assert!(
        policies
            .get("istio-system/istio_converted_static_strict")
            .is_some()
    );

    // A pod moves to another node: its node may no longer sign for it.
    apply(
        &mut store,
        &labelled_pod("a", "10.244.0.5", "v2").replace("node-0", "node-1"),
    );
    let (_, _, moved, _) = step(&store, "a pod on another node");
    let web = SpiffeId::new("cluster.local", "demo", "web").unwrap();
    assert!(moved.may_sign("node-1", &web));
    assert!(moved.may_sign("node-0", &web), "b is still there");
    // A pod that goes away, and one without an IP.
    store.apply(SourceEvent::Deleted(
        objects(&labelled_pod("b", "10.244.0.6", "v1"))[0]
            .key
            .clone(),
    ));
    apply(
        &mut store,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: demo}\nspec: {containers: [{name: app, image: x}]}\n",
    );
    let (_, after, gone, _) = step(&store, "a pod deleted, one pending");
    assert!(after.resources(api::ADDRESS_TYPE_URL).get(b).is_none());
    assert!(
        !gone.may_sign("node-0", &web),
        "b was the last web pod on node-0"
    );
}

#[test]
fn waypoint_labels_on_service_accounts_namespaces_and_gateways_reach_the_pods() {
    let options = MeshOptions::default();
    let mut store = Store::default();
    let mut translator = Translator::new(options.clone());
    let mut previous = Arc::new(Snapshot::default());
    let apply = |store: &mut Store, text: &str| {
        for parsed in objects(text) {
            store.apply(SourceEvent::Applied(parsed));
        }
    };
    // Translates incrementally, checks it against a full translation (problems too)
    // and returns the waypoint hostname of pod a.
    let mut step = |store: &Store, what: &str| {
        let full = crate::translate::translate(store, &options);
        let translated = translator.translate(store, previous.clone());
        assert_eq!(
            translated.snapshot,
            snapshot_of(&full, Arc::new(Snapshot::default())),
            "{what}"
        );
        assert_eq!(translated.problems, full.problems, "{what}");
        previous = Arc::new(translated.snapshot);
        let entry = previous
            .resources(api::ADDRESS_TYPE_URL)
            .get("Kubernetes//Pod/demo/a")
            .cloned()
            .expect("pod a");
        let Ok(Address {
            r#type: Some(address::Type::Workload(w)),
        }) = Address::decode(entry.value.as_slice())
        else {
            panic!("not a workload");
        };
        let waypoint = w.waypoint.map(|g| match g.destination {
            Some(api::workload::gateway_address::Destination::Hostname(h)) => h.hostname,
            other => panic!("{other:?}"),
        });
        (waypoint, translated.problems.len())
    };
    let gateway = |waypoint_for: &str| {
        format!(
            "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: demo, labels: {{istio.io/waypoint-for: {waypoint_for}}}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: wp, namespace: demo}}
spec: {{clusterIP: 10.96.0.99, ports: [{{port: 15008}}]}}
"
        )
    };
    let account = |label: &str| {
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: web, namespace: demo, labels: {{{label}}}}}\n"
        )
    };
    let wp = Some("wp.demo.svc.cluster.local".to_owned());

    apply(&mut store, NAMESPACE);
    apply(&mut store, &labelled_pod("a", "10.244.0.5", "v1"));
    apply(&mut store, &gateway("workload"));
    apply(&mut store, &account("x: y"));
    assert_eq!(step(&store, "no label"), (None, 0));

    apply(&mut store, &account("istio.io/use-waypoint: wp"));
    assert_eq!(step(&store, "service account label"), (wp.clone(), 0));

    // The Gateway changes to service traffic only: the pod loses it, the label is reported.
    apply(&mut store, &gateway("service"));
    assert_eq!(step(&store, "gateway traffic type"), (None, 1));

    apply(&mut store, &gateway("all"));
    apply(
        &mut store,
        &NAMESPACE.replace(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}",
        ),
    );
    apply(&mut store, &account("x: y"));
    assert_eq!(step(&store, "namespace label"), (wp.clone(), 0));

    // Only the pod changes: its own bad label is reported without a context change.
    apply(
        &mut store,
        &labelled_pod("a", "10.244.0.5", "v1").replace(
            "version: v1}",
            "version: v1, istio.io/use-waypoint: nowhere}",
        ),
    );
    assert_eq!(step(&store, "pod label"), (None, 1));
    apply(&mut store, &labelled_pod("a", "10.244.0.5", "v1"));
    assert_eq!(step(&store, "pod label removed"), (wp, 0));
}
