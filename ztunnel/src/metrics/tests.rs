use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hbone::copy::Transferred;
use hbone::testing::TestCa;

use super::*;
use crate::access_log::{ConnectionLog, ResponseFlag};
use crate::cert::LocalCa;
use crate::pods::PodStatus;
use crate::proxy::Refusal;
use crate::rbac::{Denied, DenyReason};
use crate::state::{ResolveError, WorkloadState};
use crate::test_mesh::{CLIENT, SERVER, addr, id, pod, state};
use crate::xds::XdsTypeStatus;

/// client-0's outbound connection to `dst`, as the outbound proxy makes it.
fn outbound(state: &WorkloadState, dst: &str) -> ConnectionLog {
    let log = ConnectionLog::outbound(
        &pod("client-0", "client"),
        &id(CLIENT),
        addr("10.244.0.20:40000"),
        Some(addr(dst)),
    )
    .pod_workload(state.pod("mesh", "client-0").cloned());
    match state.resolve(addr(dst)) {
        Ok(upstream) => log.upstream(&upstream),
        Err(e) => log.unresolved(&e),
    }
}

/// A connection to server-0 from `src` (mutual TLS when `src_identity` is given).
fn inbound(state: &WorkloadState, src: &str, src_identity: Option<&str>) -> ConnectionLog {
    ConnectionLog::inbound(
        state,
        &pod("server-0", "server"),
        &id(SERVER),
        addr(src),
        src_identity.map(id).as_ref(),
        Some("10.244.1.5:8080".into()),
    )
    .pod_workload(state.pod("mesh", "server-0").cloned())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The labels as the exposition writes them, by name.
fn as_map(l: &TrafficLabels) -> BTreeMap<String, String> {
    let text = format!("{}", Sample(l));
    parse_labels(&text)
}

/// Encodes a label set alone (`a="x",b="y"`), through the same encoder as the page.
struct Sample<'a>(&'a TrafficLabels);

impl fmt::Display for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = Family::<TrafficLabels, Counter>::default();
        family.get_or_create(self.0).inc();
        let mut registry = Registry::default();
        registry.register("x", "x", family);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        let line = out
            .lines()
            .find(|l| l.starts_with("x_total{"))
            .ok_or(fmt::Error)?;
        let inner = &line["x_total{".len()..line.rfind('}').ok_or(fmt::Error)?];
        f.write_str(inner)
    }
}

/// `a="x",b="y"` -> {a: x, b: y} (values here have no quotes or commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once("=\"").unwrap();
            (k.to_owned(), v.trim_end_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn an_outbound_connection_through_a_service_has_every_label_known() {
    let state = state();
    let log = outbound(&state, "10.96.0.10:80");
    let l = TrafficLabels::of(&log);
    assert_eq!(
        as_map(&l),
        labels(&[
            ("reporter", "source"),
            ("source_workload", "client-deploy"),
            ("source_canonical_service", "client"),
            ("source_canonical_revision", "v1"),
            ("source_workload_namespace", "mesh"),
            ("source_principal", CLIENT),
            ("source_app", "client"),
            ("source_version", "v1"),
            ("source_cluster", "east"),
            ("destination_service", "echo.mesh.svc.cluster.local"),
            ("destination_service_namespace", "mesh"),
            ("destination_service_name", "echo"),
            ("destination_workload", "server-deploy"),
            ("destination_canonical_service", "server"),
            ("destination_canonical_revision", "v1"),
            ("destination_workload_namespace", "mesh"),
            ("destination_principal", SERVER),
            ("destination_app", "server"),
            ("destination_version", "v1"),
            ("destination_cluster", "east"),
            ("request_protocol", "tcp"),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
        ])
    );
    // Istio's order, reporter first.
    let text = format!("{}", Sample(&l));
    assert!(
        text.starts_with("reporter=\"source\",source_workload="),
        "{text}"
    );
    assert!(
        text.ends_with("response_flags=\"-\",connection_security_policy=\"mutual_tls\""),
        "{text}"
    );
}

#[test]
fn a_pod_dialled_directly_has_no_service() {
    let state = state();
    let l = TrafficLabels::of(&outbound(&state, "10.244.1.5:8080"));
    assert_eq!(l.destination_workload, "server-deploy");
    assert_eq!(l.destination_principal, SERVER);
    for service in [
        &l.destination_service,
        &l.destination_service_name,
        &l.destination_service_namespace,
    ] {
        assert_eq!(service, UNKNOWN);
    }
}

#[test]
fn destinations_outside_the_mesh_are_unknown_and_not_mutual_tls() {
    let state = state();
    // Not in the state at all: passed through in plaintext.
    let l = TrafficLabels::of(&outbound(&state, "192.0.2.7:443"));
    assert_eq!(l.connection_security_policy, UNKNOWN);
    assert_eq!(l.source_workload, "client-deploy");
    for v in [
        &l.destination_workload,
        &l.destination_canonical_service,
        &l.destination_canonical_revision,
        &l.destination_workload_namespace,
        &l.destination_principal,
        &l.destination_app,
        &l.destination_version,
        &l.destination_cluster,
        &l.destination_service,
    ] {
        assert_eq!(v, UNKNOWN, "{l:?}");
    }
    // Known but not in the mesh: named, its identity from the state (as Istio does for
    // destinations), plaintext; its uid names no cluster.
    let l = TrafficLabels::of(&outbound(&state, "10.244.0.30:5432"));
    assert_eq!(l.destination_workload, "legacy");
    assert_eq!(
        l.destination_principal,
        "spiffe://cluster.local/ns/mesh/sa/legacy"
    );
    assert_eq!(l.destination_cluster, UNKNOWN);
    assert_eq!(l.connection_security_policy, UNKNOWN);
}

#[test]
fn inbound_sources_are_named_by_mutual_tls_or_not_at_all() {
    let state = state();
    let l = TrafficLabels::of(&inbound(&state, "10.244.0.20:40000", Some(CLIENT)));
    assert_eq!(l.reporter, "destination");
    assert_eq!(l.source_workload, "client-deploy");
    assert_eq!(l.source_principal, CLIENT);
    assert_eq!(l.source_cluster, "east");
    assert_eq!(l.destination_workload, "server-deploy");
    assert_eq!(l.destination_principal, SERVER);
    assert_eq!(l.connection_security_policy, "mutual_tls");
    assert_eq!(l.destination_service, UNKNOWN, "no service was addressed");

    // Plaintext from a pod the state knows: named by IP, but no principal without TLS.
    let l = TrafficLabels::of(&inbound(&state, "10.244.0.20:40000", None));
    assert_eq!(l.source_workload, "client-deploy");
    assert_eq!(l.source_principal, UNKNOWN);
    assert_eq!(l.connection_security_policy, UNKNOWN);

    // Plaintext from nobody the state knows.
    let l = TrafficLabels::of(&inbound(&state, "198.51.100.9:5000", None));
    for v in [
        &l.source_workload,
        &l.source_canonical_service,
        &l.source_canonical_revision,
        &l.source_workload_namespace,
        &l.source_principal,
        &l.source_app,
        &l.source_version,
        &l.source_cluster,
    ] {
        assert_eq!(v, UNKNOWN, "{l:?}");
    }
    assert_eq!(l.destination_workload, "server-deploy");
}

#[test]
fn inbound_names_the_service_the_client_addressed() {
    let state = state();
    let log = inbound(&state, "10.244.0.20:40000", Some(CLIENT))
        .addressed(&state, Some("echo.mesh.svc.cluster.local".into()));
    let l = TrafficLabels::of(&log);
    assert_eq!(l.destination_service, "echo.mesh.svc.cluster.local");
    assert_eq!(l.destination_service_name, "echo");
    assert_eq!(l.destination_service_namespace, "mesh");
    // A hostname the state does not have: the Kubernetes form still gives the name.
    let log = inbound(&state, "10.244.0.20:40000", Some(CLIENT))
        .addressed(&state, Some("gone.other.svc.cluster.local".into()));
    let l = TrafficLabels::of(&log);
    assert_eq!(l.destination_service, "gone.other.svc.cluster.local");
    assert_eq!(l.destination_service_name, "gone");
    assert_eq!(l.destination_service_namespace, UNKNOWN);
}

#[test]
fn response_flags_name_why_a_connection_failed() {
    let state = state();
    let denied =
        inbound(&state, "10.244.0.20:40000", Some(CLIENT)).refused(&Refusal::Denied(Denied {
            policy: "mesh/deny-client".into(),
            reason: DenyReason::DenyPolicyMatched,
        }));
    assert_eq!(TrafficLabels::of(&denied).response_flags, "DENY");
    let no_route = inbound(&state, "10.244.0.20:40000", None).refused(&Refusal::NotThisPod);
    assert_eq!(TrafficLabels::of(&no_route).response_flags, "NR");

    let no_port = outbound(&state, "10.96.0.10:81");
    let l = TrafficLabels::of(&no_port);
    assert_eq!(l.response_flags, "NR");
    assert_eq!(l.destination_service, "echo.mesh.svc.cluster.local");
    assert_eq!(l.destination_service_name, "echo");
    assert_eq!(l.destination_service_namespace, "mesh");
    assert_eq!(l.destination_workload, UNKNOWN);

    let no_endpoint = outbound(&state, "10.96.0.11:80");
    assert_eq!(TrafficLabels::of(&no_endpoint).response_flags, "UH");
    let unreachable = outbound(&state, "10.244.1.5:8080")
        .failed(ResponseFlag::UpstreamFailure, "connection refused");
    assert_eq!(TrafficLabels::of(&unreachable).response_flags, "UF");
    assert!(matches!(
        state.resolve(addr("10.96.0.11:80")),
        Err(ResolveError::NoHealthyEndpoints { .. })
    ));
}

/// Every sample of the page: `(name, labels) -> value`.
fn samples(page: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            ((name.to_owned(), labels), value.parse().unwrap())
        })
        .collect()
}

fn value(page: &str, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
    samples(page)
        .get(&(name.to_owned(), labels.clone()))
        .copied()
}

fn active(page: &str, direction: &str) -> Option<f64> {
    value(
        page,
        "ztunnel_active_connections",
        &[("direction".to_owned(), direction.to_owned())].into(),
    )
}

/// The four TCP counters of one connection: opened (under `opened`'s labels), then
/// closed, received and sent bytes (under `closed`'s).
fn tcp_counts(
    page: &str,
    opened: &BTreeMap<String, String>,
    closed: &BTreeMap<String, String>,
) -> [Option<f64>; 4] {
    [
        value(page, "istio_tcp_connections_opened_total", opened),
        value(page, "istio_tcp_connections_closed_total", closed),
        value(page, "istio_tcp_received_bytes_total", closed),
        value(page, "istio_tcp_sent_bytes_total", closed),
    ]
}

#[test]
fn a_connection_is_counted_open_then_closed_with_its_bytes() {
    let metrics = Metrics::new();
    let state = state();
    let page = metrics.encode();
    assert!(page.ends_with("# EOF\n"), "{page}");
    assert_eq!(active(&page, "outbound"), Some(0.0));
    assert_eq!(active(&page, "inbound"), Some(0.0));

    let log = outbound(&state, "10.96.0.10:80")
        .recorded_in(metrics.tcp())
        .opened();
    let l = as_map(&TrafficLabels::of(&log));
    let page = metrics.encode();
    assert!(
        page.contains("# TYPE istio_tcp_connections_opened counter"),
        "{page}"
    );
    assert_eq!(
        value(&page, "istio_tcp_connections_opened_total", &l),
        Some(1.0)
    );
    assert_eq!(value(&page, "istio_tcp_connections_closed_total", &l), None);
    assert_eq!(active(&page, "outbound"), Some(1.0));

    let log = log
        .transferred(Transferred {
            a_to_b: 5,
            b_to_a: 490,
        })
        .lasted(Some(Duration::from_millis(3)));
    log.emit();
    drop(log);
    let page = metrics.encode();
    // Opened once (not counted twice); received: from the client (the request); sent:
    // back to it.
    assert_eq!(
        tcp_counts(&page, &l, &l),
        [Some(1.0), Some(1.0), Some(5.0), Some(490.0)]
    );
    assert_eq!(active(&page, "outbound"), Some(0.0));

    // The destination's side of the same bytes counts them the same way.
    let log = inbound(&state, "10.244.0.20:40000", Some(CLIENT))
        .recorded_in(metrics.tcp())
        .opened();
    assert_eq!(active(&metrics.encode(), "inbound"), Some(1.0));
    let open = log.open();
    drop(log);
    assert_eq!(
        active(&metrics.encode(), "inbound"),
        Some(1.0),
        "active while its open is held"
    );
    let closing = inbound(&state, "10.244.0.20:40000", Some(CLIENT))
        .recorded_in(metrics.tcp())
        .was_opened(true)
        .transferred(Transferred {
            a_to_b: 5,
            b_to_a: 490,
        });
    closing.emit();
    drop(open);
    let l = as_map(&TrafficLabels::of(&closing));
    assert_eq!(l["reporter"], "destination");
    let page = metrics.encode();
    assert_eq!(
        tcp_counts(&page, &l, &l),
        [Some(1.0), Some(1.0), Some(5.0), Some(490.0)]
    );
    assert_eq!(active(&page, "inbound"), Some(0.0));
}

#[test]
fn a_refused_connection_is_opened_unflagged_and_closed_with_its_flag() {
    let metrics = Metrics::new();
    let state = state();
    let log = inbound(&state, "10.244.0.20:40000", Some(CLIENT))
        .recorded_in(metrics.tcp())
        .refused(&Refusal::Denied(Denied {
            policy: "mesh/deny-client".into(),
            reason: DenyReason::DenyPolicyMatched,
        }));
    log.emit();
    let closed = as_map(&TrafficLabels::of(&log));
    assert_eq!(closed["response_flags"], "DENY");
    let mut opened = closed.clone();
    opened.insert("response_flags".into(), "-".into());
    let page = metrics.encode();
    assert_eq!(
        tcp_counts(&page, &opened, &closed),
        [Some(1.0), Some(1.0), Some(0.0), Some(0.0)],
        "{page}"
    );
    assert_eq!(active(&page, "inbound"), Some(0.0), "never active");
    // A log that is not counted anywhere adds nothing.
    let before = metrics.encode();
    outbound(&state, "10.96.0.10:80").opened().emit();
    assert_eq!(metrics.encode(), before);
}

fn single(label: &str, value: &str) -> BTreeMap<String, String> {
    [(label.to_owned(), value.to_owned())].into()
}

/// Metrics with every gauge present: a certificate held, one pod running and one
/// failed, an xDS client with both types applied (the Authorization type once refused).
async fn with_status() -> (Metrics, watch::Sender<XdsStatus>) {
    let certs = Arc::new(LocalCa::new(TestCa::new()));
    certs.certificate(&id(SERVER)).await.unwrap();
    let pods = PodsView::default();
    let running = PodState::Running {
        identity: id(SERVER),
        listeners: Vec::new(),
    };
    let failed = PodState::Failed {
        error: "no certificate".into(),
    };
    for (uid, state) in [("a", running), ("b", failed)] {
        let status = PodStatus {
            info: pod(uid, "server"),
            netns: "net:[1]".into(),
            state,
            since: SystemTime::now(),
        };
        pods.insert(uid, status);
    }
    let (xds, rx) = watch::channel(XdsStatus::default());
    xds.send_modify(|s| {
        s.connected = true;
        s.synced = true;
        s.types.insert(
            api::ADDRESS_TYPE_URL.into(),
            XdsTypeStatus {
                applied: 3,
                resources: 7,
                ..XdsTypeStatus::default()
            },
        );
        s.types.insert(
            api::AUTHORIZATION_TYPE_URL.into(),
            XdsTypeStatus {
                applied: 1,
                rejected: 2,
                resources: 1,
                ..XdsTypeStatus::default()
            },
        );
    });
    let metrics = Metrics::new().with_status(Status {
        xds: Some(rx),
        certs,
        pods,
    });
    (metrics, xds)
}

#[tokio::test]
async fn gauges_show_xds_certificates_and_pods_when_scraped() {
    let (metrics, xds) = with_status().await;
    let page = metrics.encode();
    let v = |name: &str, labels: BTreeMap<String, String>| value(&page, name, &labels);
    assert_eq!(v("ztunnel_pods", single("state", "running")), Some(1.0));
    assert_eq!(v("ztunnel_pods", single("state", "failed")), Some(1.0));
    assert_eq!(v("ztunnel_xds_connected", BTreeMap::new()), Some(1.0));
    assert_eq!(v("ztunnel_xds_synced", BTreeMap::new()), Some(1.0));
    let address = single("type_url", api::ADDRESS_TYPE_URL);
    let authorization = single("type_url", api::AUTHORIZATION_TYPE_URL);
    assert_eq!(v("ztunnel_xds_resources", address.clone()), Some(7.0));
    assert_eq!(v("ztunnel_xds_acks_total", address.clone()), Some(3.0));
    assert_eq!(v("ztunnel_xds_nacks_total", address), Some(0.0));
    assert_eq!(
        v("ztunnel_xds_nacks_total", authorization.clone()),
        Some(2.0)
    );
    assert_eq!(v("ztunnel_xds_resources", authorization), Some(1.0));
    assert!(page.contains("# TYPE ztunnel_xds_acks counter"), "{page}");

    assert_eq!(
        v("ztunnel_certificates", single("state", "available")),
        Some(1.0)
    );
    assert_eq!(
        v("ztunnel_certificates", single("state", "pending")),
        Some(0.0)
    );
    let expires = v(
        "ztunnel_certificate_expiration_timestamp_seconds",
        single("identity", SERVER),
    )
    .expect("the held certificate's expiry");
    let left = v(
        "ztunnel_certificate_earliest_expiry_seconds",
        BTreeMap::new(),
    )
    .expect("the earliest expiry");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(left > 0.0, "a fresh certificate: {left}");
    assert!(
        (now + left - expires).abs() <= 2.0,
        "{now} + {left} vs {expires}"
    );

    // Read at scrape time: a lost stream shows at once.
    xds.send_modify(|s| s.connected = false);
    assert_eq!(
        value(&metrics.encode(), "ztunnel_xds_connected", &BTreeMap::new()),
        Some(0.0)
    );
}

#[tokio::test]
async fn without_a_controller_there_are_no_xds_gauges() {
    let metrics = Metrics::new().with_status(Status {
        xds: None,
        certs: Arc::new(LocalCa::new(TestCa::new())),
        pods: PodsView::default(),
    });
    let page = metrics.encode();
    assert!(!page.contains("ztunnel_xds"), "{page}");
    assert!(
        !page.contains("ztunnel_certificate_earliest_expiry_seconds "),
        "no certificate held: {page}"
    );
    assert_eq!(
        value(&page, "ztunnel_pods", &single("state", "running")),
        Some(0.0)
    );
}

/// Every metric name (series names, `_total` included) the page has samples of, and
/// every label name.
fn exposed(page: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let samples = samples(page);
    let names = samples.keys().map(|(n, _)| n.clone()).collect();
    let labels = samples
        .keys()
        .flat_map(|(_, l)| l.keys().cloned())
        .collect();
    (names, labels)
}

/// The metric names and label names a PromQL expression uses: identifiers that start
/// with `istio_` or `ztunnel_`, and those in `by (...)` / `without (...)` clauses and
/// `{...}` matchers.
fn used_in(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut words = Vec::new();
    while i < chars.len() {
        if ident(chars[i]) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            words.push((chars[start..i].iter().collect::<String>(), start, i));
        } else {
            i += 1;
        }
    }
    for (word, _, end) in &words {
        if word.starts_with("istio_") || word.starts_with("ztunnel_") {
            names.insert(word.clone());
        }
        // A label matcher: `name=`, `name!=`, `name=~`, `name!~` inside braces.
        let rest: String = chars[*end..].iter().take(2).collect();
        if rest.starts_with('=') && !rest.starts_with("==")
            || rest.starts_with("!=")
            || rest.starts_with("!~")
        {
            labels.insert(word.clone());
        }
    }
    // `by (a, b)` and `without (a, b)`.
    for keyword in ["by", "without"] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(&format!("{keyword} (")) {
            let open = from + at + keyword.len() + 1;
            let close = open + expr[open..].find(')').expect("closed clause");
            for label in expr[open + 1..close].split(',') {
                labels.insert(label.trim().to_owned());
            }
            from = close;
        }
    }
    (names, labels)
}

#[test]
fn the_promql_scanner_finds_names_and_labels() {
    let (names, labels) = used_in(
        "sum by (source_workload, destination_workload) (rate(istio_tcp_sent_bytes_total{reporter=\"source\", response_flags!=\"-\"}[5m])) / ztunnel_pods",
    );
    assert_eq!(
        names,
        ["istio_tcp_sent_bytes_total", "ztunnel_pods"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        labels,
        [
            "destination_workload",
            "reporter",
            "response_flags",
            "source_workload"
        ]
        .map(str::to_owned)
        .into()
    );
}

/// Every PromQL `expr` of a Grafana dashboard, panels nested in rows included.
fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboard_uses_only_metrics_and_labels_ztunnel_exposes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/ztunnel.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 6, "the dashboard's queries: {all:?}");

    // Every series ztunnel can have: a connection counted, every gauge present.
    let (metrics, _xds) = with_status().await;
    let state = state();
    outbound(&state, "10.96.0.10:80")
        .recorded_in(metrics.tcp())
        .opened()
        .emit();
    let (names, labels) = exposed(&metrics.encode());

    let mut used_names = BTreeSet::new();
    for expr in &all {
        let (n, l) = used_in(expr);
        assert!(!n.is_empty(), "a query of no ztunnel metric: {expr}");
        for name in &n {
            assert!(
                names.contains(name),
                "the dashboard queries {name}, which ztunnel does not expose (it has {names:?}): {expr}"
            );
        }
        for label in &l {
            assert!(
                labels.contains(label) || label == "instance" || label == "job",
                "the dashboard uses the label {label}, which ztunnel's metrics do not have: {expr}"
            );
        }
        used_names.extend(n);
    }
    // The panels the dashboard promises.
    for name in [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "ztunnel_xds_connected",
        "ztunnel_certificate_earliest_expiry_seconds",
    ] {
        assert!(used_names.contains(name), "no panel shows {name}");
    }
}

#[tokio::test]
async fn the_endpoint_serves_the_page_on_both_paths() {
    use crate::admin::testing::request;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let state = state();
    outbound(&state, "10.96.0.10:80")
        .recorded_in(metrics.tcp())
        .transferred(Transferred {
            a_to_b: 11,
            b_to_a: 22,
        })
        .emit();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(serve(listener, metrics.clone(), shutdown));

    let a = request(addr, "GET", "/metrics").await;
    let b = request(addr, "GET", "/stats/prometheus").await;
    for reply in [&a, &b] {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            reply
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{reply:?}"
        );
    }
    assert_eq!(a.body, b.body);
    assert!(
        a.body
            .contains("istio_tcp_received_bytes_total{reporter=\"source\""),
        "{}",
        a.body
    );
    assert_eq!(request(addr, "GET", "/stats").await.status, 404);
    assert_eq!(request(addr, "POST", "/metrics").await.status, 405);

    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the metrics server stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = crate::admin::bind(addr, "metrics").await.unwrap_err();
    assert!(
        error.starts_with(&format!("cannot listen on {addr} for the metrics endpoint")),
        "{error}"
    );
}

#[test]
fn the_limits_metrics_are_served_with_the_rest() {
    use crate::limits::{Limits, LimitsConfig};
    let limits = Arc::new(Limits::new(LimitsConfig {
        max_inbound_connections: 1,
        max_pending_handshakes: 1,
    }));
    let metrics = Metrics::new().with(|registry| limits.register(registry));
    let pod = limits.pod("mesh/server".into());
    let _held = pod.try_connection("HBONE").expect("room for one");
    assert!(pod.try_connection("HBONE").is_none(), "over the limit");
    let page = metrics.encode();
    let over = BTreeMap::from([
        ("pod".to_owned(), "mesh/server".to_owned()),
        ("reason".to_owned(), "max_inbound_connections".to_owned()),
    ]);
    assert_eq!(
        value(&page, "ztunnel_connections_over_limit_total", &over),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "ztunnel_inbound_connections_active",
            &single("pod", "mesh/server")
        ),
        Some(1.0),
        "{page}"
    );
    assert!(page.contains("ztunnel_active_connections"), "{page}");
}
