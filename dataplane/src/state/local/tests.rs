use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
workloads:
  - uid: default/echo-1
    name: echo-1
    namespace: default
    serviceAccount: echo
    node: node-1
    addresses: [10.244.1.2]
    tunnelProtocol: HBONE
    canonicalRevision: v1
    services:
      default/echo.default.svc.cluster.local: {80: 9090}
  - uid: default/plain
    name: plain
    namespace: default
    addresses: [10.244.2.9]
services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    vips: [10.96.0.10]
    ports: {80: 8080}
"#;

fn load(text: &str) -> Result<WorkloadState, LocalConfigError> {
    let path = Path::new("state.yaml");
    LocalConfig::parse(path, text)?.into_state(path)
}

#[test]
fn a_good_file_builds_the_state_with_defaults() {
    let state = load(GOOD).unwrap();
    let echo = state.workload("default/echo-1").unwrap();
    assert_eq!(
        echo.identity.to_string(),
        "spiffe://cluster.local/ns/default/sa/echo"
    );
    assert_eq!(echo.protocol, TunnelProtocol::Hbone);
    assert_eq!(
        (
            echo.canonical_name.as_str(),
            echo.canonical_revision.as_str()
        ),
        ("echo-1", "v1")
    );
    let plain = state.workload("default/plain").unwrap();
    assert_eq!(plain.protocol, TunnelProtocol::None);
    assert_eq!(plain.service_account, "default");
    assert!(plain.healthy);
    assert_eq!(state.services().count(), 1);
}

#[test]
fn the_config_round_trips_through_yaml_and_json() {
    let config = LocalConfig::parse(Path::new("x"), GOOD).unwrap();
    let yaml = serde_yaml_ng::to_string(&config).unwrap();
    assert_eq!(LocalConfig::parse(Path::new("x"), &yaml).unwrap(), config);
}

#[test]
fn bad_files_name_the_file_object_and_problem() {
    let cases: &[(&str, &str)] = &[
        (
            "workloads: [{uid: a, name: a, namespace: default, addresses: [not-an-ip]}]",
            "state.yaml",
        ),
        (
            "workloads: [{uid: a, name: a, namespace: 'Bad NS'}]",
            "workload \"a\"",
        ),
        (
            "workloads: [{uid: a, name: a, namespace: default, colour: red}]",
            "colour",
        ),
        (
            "workloads: [{uid: a, name: a, namespace: default, services: {nohost: {80: 80}}}]",
            "nohost",
        ),
        (
            "services: [{name: s, namespace: default, hostname: h, ports: {0: 80}}]",
            "service \"s\"",
        ),
        (
            "workloads: [{uid: a, name: a, namespace: d, addresses: [10.0.0.1]}, {uid: b, name: b, namespace: d, addresses: [10.0.0.1]}]",
            "10.0.0.1",
        ),
        (": : :", "state.yaml"),
    ];
    for (text, expected) in cases {
        let err = load(text).expect_err(text).to_string();
        assert!(
            err.contains(expected),
            "{text}: error {err:?} should mention {expected:?}"
        );
        assert!(err.contains("state.yaml"), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_watcher_applies_good_edits_and_keeps_the_last_good_state() {
    let dir = std::env::temp_dir().join(format!("ztunnel-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.yaml");
    std::fs::write(&path, "workloads: []").unwrap();
    let (stop, shutdown) = watch::channel(false);
    let (store, watcher) =
        load_and_watch(path.clone(), Duration::from_millis(10), shutdown).unwrap();
    let task = tokio::spawn(watcher);

    let replace = |text: &str| {
        let tmp = dir.join("state.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    replace(GOOD);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.snapshot().workload("default/echo-1").is_some());
    replace("workloads: [{uid: broken}]");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        store.snapshot().workload("default/echo-1").is_some(),
        "a bad file must not replace the state"
    );

    stop.send(true).unwrap();
    task.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
