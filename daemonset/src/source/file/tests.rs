use std::path::Path;
use std::time::Duration;

use super::*;
use crate::source::Labels;

const GOOD: &str = r#"{
  "namespaces": [
    {"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}},
    {"name": "plain"}
  ],
  "pods": [
    {"uid": "u1", "name": "a", "namespace": "default", "serviceAccount": "sa-a",
     "labels": {"app": "a"}, "ip": "10.244.1.2", "netns": "/proc/1234/fd/7", "hostNetwork": false},
    {"uid": "u2", "name": "b", "namespace": "plain", "ip": "", "netns": null},
    {"uid": "u3", "name": "c", "namespace": "default", "ip": "fd00::3", "netns": "/run/netns/c",
     "hostNetwork": true}
  ]
}"#;

fn p() -> &'static Path {
    Path::new("/lab/pods.json")
}

#[test]
fn parses_the_documented_shape_with_kubernetes_defaults() {
    let list = PodList::parse(p(), GOOD.as_bytes()).unwrap();
    assert_eq!(list.namespaces.len(), 2);
    assert_eq!(
        list.namespaces["default"]
            .labels
            .get("istio.io/dataplane-mode"),
        Some(&"ambient".to_owned())
    );
    assert!(list.namespaces["plain"].labels.is_empty());
    let a = &list.pods["u1"];
    assert_eq!((a.name.as_str(), a.namespace.as_str()), ("a", "default"));
    assert_eq!(a.service_account, "sa-a");
    assert_eq!(a.labels, Labels::from([("app".into(), "a".into())]));
    assert_eq!(a.ip, Some("10.244.1.2".parse().unwrap()));
    assert_eq!(a.netns.as_deref(), Some(Path::new("/proc/1234/fd/7")));
    assert!(!a.host_network);
    let b = &list.pods["u2"];
    assert_eq!(b.service_account, "default", "Kubernetes' default");
    assert_eq!(
        (b.ip, b.netns.as_deref()),
        (None, None),
        "empty and null are absent"
    );
    let c = &list.pods["u3"];
    assert_eq!(c.ip, Some("fd00::3".parse().unwrap()));
    assert!(c.host_network);
}

#[test]
fn an_empty_document_is_an_empty_list() {
    assert_eq!(PodList::parse(p(), b"{}").unwrap(), PodList::default());
}

/// Each malformed input must name the file, the offending field, and say what is wrong.
#[test]
fn malformed_files_name_the_file_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("{\"pods\": [", "pods", "EOF while parsing a list"),
        ("{} trailing", ".", "trailing characters"),
        (
            r#"{"pods": [{"uid": "u", "name": "a", "namespace": "n", "ip": "10.0.0.300"}]}"#,
            "pods[0].ip",
            "invalid IP address",
        ),
        (
            r#"{"pods": [{"uid": "u", "name": "a", "namespace": "n"},
                      {"uid": "v", "name": "b", "namespace": "n", "hostNetwork": "yes"}]}"#,
            "pods[1].hostNetwork",
            "expected a boolean",
        ),
        (
            r#"{"pods": [{"name": "a", "namespace": "n"}]}"#,
            "pods[0]",
            "missing field `uid`",
        ),
        (
            r#"{"pods": [{"uid": "u", "name": "a", "namespace": "n", "hostnetwork": true}]}"#,
            "pods[0].hostnetwork",
            "unknown field `hostnetwork`",
        ),
        (
            r#"{"namespaces": [{"name": "n", "labels": {"k": 1}}]}"#,
            "namespaces[0].labels.k",
            "expected a string",
        ),
        (r#"{"pod": []}"#, "pod", "unknown field `pod`"),
        (r#"{"pods": {}}"#, "pods", "expected a sequence"),
    ];
    for (input, field, what) in cases {
        let err = PodList::parse(p(), input.as_bytes()).unwrap_err();
        let text = err.to_string();
        match &err {
            PodListError::Malformed { field: got, .. } => {
                assert_eq!(got, field, "input {input}: {text}")
            }
            other => panic!("input {input}: expected Malformed, got {other}"),
        }
        assert!(text.contains("/lab/pods.json"), "{text}");
        assert!(text.contains(&format!("`{field}`")), "{text}");
        assert!(text.contains(what), "input {input}: {text}");
    }
}

#[test]
fn semantic_errors_name_the_object() {
    let dup = r#"{"pods": [{"uid": "u", "name": "a", "namespace": "n"},
                           {"uid": "u", "name": "b", "namespace": "n"}]}"#;
    let err = PodList::parse(p(), dup.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, PodListError::DuplicatePod { uid, first: 0, second: 1, .. } if uid == "u"),
        "{err}"
    );
    let dup_ns = r#"{"namespaces": [{"name": "n"}, {"name": "n"}]}"#;
    let err = PodList::parse(p(), dup_ns.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, PodListError::DuplicateNamespace { name, .. } if name == "n"),
        "{err}"
    );
    let empty = r#"{"pods": [{"uid": "u", "name": "", "namespace": "n"}]}"#;
    let err = PodList::parse(p(), empty.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, PodListError::Empty { field, .. } if field == "pods[0].name"),
        "{err}"
    );
    assert!(err.to_string().contains("/lab/pods.json"), "{err}");
}

#[test]
fn diff_reports_only_what_changed() {
    let old = PodList::parse(p(), GOOD.as_bytes()).unwrap();
    assert!(old.diff(&old).is_empty());

    let mut new = old.clone();
    new.pods.remove("u2");
    new.pods.get_mut("u1").unwrap().netns = Some("/proc/99/ns/net".into());
    new.namespaces.remove("plain");
    new.namespaces
        .get_mut("default")
        .unwrap()
        .labels
        .insert("istio.io/dataplane-mode".into(), "none".into());
    let events = old.diff(&new);
    assert_eq!(
        events,
        vec![
            PodEvent::PodDeleted { uid: "u2".into() },
            PodEvent::NamespaceDeleted {
                name: "plain".into()
            },
            PodEvent::NamespaceUpserted(new.namespaces["default"].clone()),
            PodEvent::PodUpserted(new.pods["u1"].clone()),
        ]
    );

    let from_empty = PodList::default().diff(&old);
    assert_eq!(from_empty.len(), 5, "2 namespaces + 3 pods: {from_empty:?}");
}

/// Writes `content` the way the lab does: a temporary file renamed over the target.
fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn next(source: &mut PodListFile) -> Result<Option<Vec<PodEvent>>, PodListError> {
    tokio::time::timeout(Duration::from_secs(5), source.next_batch())
        .await
        .expect("no batch within 5 s")
}

#[tokio::test]
async fn watching_a_file_keeps_the_last_good_list_through_malformed_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pods.json");
    let mut source = PodListFile::with_interval(&path, Duration::from_millis(5));

    // Not written yet: one error, naming the file.
    let err = source.poll_once().unwrap_err();
    assert!(matches!(err, PodListError::Read { .. }), "{err}");
    assert!(err.to_string().contains("pods.json"), "{err}");
    assert!(
        source.poll_once().unwrap().is_none(),
        "reported once, not per poll"
    );

    write_atomically(&path, r#"{"namespaces": [], "pods": []}"#);
    let first = next(&mut source).await.unwrap().unwrap();
    assert!(
        first.is_empty(),
        "the first good version is a batch, even empty"
    );

    write_atomically(&path, GOOD);
    let batch = next(&mut source).await.unwrap().unwrap();
    assert_eq!(batch.len(), 5);

    // Malformed: an error naming file and field; the good list stays.
    write_atomically(&path, &GOOD.replace("10.244.1.2", "10.244.1"));
    let err = next(&mut source).await.unwrap_err();
    assert!(
        matches!(&err, PodListError::Malformed { field, .. } if field == "pods[0].ip"),
        "{err}"
    );
    assert_eq!(source.current().pods.len(), 3);
    assert!(
        source.poll_once().unwrap().is_none(),
        "a bad version is reported once"
    );

    // The next good version is diffed against the last *good* one.
    let fixed = GOOD.replace(
        r#""name": "plain""#,
        r#""name": "plain", "labels": {"x": "y"}"#,
    );
    write_atomically(&path, &fixed);
    let batch = next(&mut source).await.unwrap().unwrap();
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert!(matches!(&batch[0], PodEvent::NamespaceUpserted(ns) if ns.name == "plain"));

    // Same content rewritten: quiet.
    write_atomically(&path, &fixed);
    assert!(source.poll_once().unwrap().is_none());
}
