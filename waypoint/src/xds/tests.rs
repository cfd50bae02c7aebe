use std::sync::Mutex;

use api::xds::Resource as XdsResource;

use super::*;

fn any(kind: &str, json: &str) -> Any {
    let resource = L7Resource {
        kind: kind.into(),
        namespace: "shop".into(),
        name: "web".into(),
        json: json.as_bytes().to_vec(),
    };
    Any {
        type_url: api::L7_RESOURCE_TYPE_URL.into(),
        value: resource.encode_to_vec(),
    }
}

const VS: &str = r#"{"metadata":{"name":"web","namespace":"shop"},
  "spec":{"hosts":["web"],"http":[{"route":[{"destination":{"host":"web"}}]}]}}"#;

#[test]
fn objects_decode_by_kind_and_are_validated_again() {
    let object = decode("VirtualService/shop/web", Some(&any("VirtualService", VS))).unwrap();
    let L7Object::VirtualService(vs) = object else {
        panic!("not a VirtualService: {object:?}");
    };
    assert_eq!(vs.spec.hosts, ["web"]);

    let cases = [
        (
            "Gateway",
            VS,
            "L7Resource \"x\": kind: unknown kind \"Gateway\"",
        ),
        (
            "VirtualService",
            "{",
            "L7Resource \"x\": json: VirtualService is not valid: EOF",
        ),
        (
            "VirtualService",
            r#"{"metadata":{"name":"web"},"spec":{"hosts":["web"],"http":[{}]}}"#,
            "L7Resource \"x\": json: VirtualService is not valid: spec.http[0]",
        ),
    ];
    for (kind, json, want) in cases {
        let err = decode("x", Some(&any(kind, json))).unwrap_err().to_string();
        assert!(err.starts_with(want), "{kind} {json}: got {err}");
    }
}

fn response(resources: Vec<(&str, Any)>, removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: api::L7_RESOURCE_TYPE_URL.into(),
        resources: resources
            .into_iter()
            .map(|(name, any)| XdsResource {
                name: name.into(),
                version: "1".into(),
                resource: Some(any),
                ..XdsResource::default()
            })
            .collect(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..DeltaDiscoveryResponse::default()
    }
}

#[test]
fn a_response_applies_whole_or_not_at_all() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut sub = L7Subscription::new(move |objects| {
        sink.lock()
            .unwrap()
            .push(objects.keys().cloned().collect::<Vec<_>>());
    });
    sub.apply(&response(
        vec![("VirtualService/shop/web", any("VirtualService", VS))],
        &[],
    ))
    .unwrap();
    let bad = response(
        vec![
            ("VirtualService/shop/other", any("VirtualService", VS)),
            ("VirtualService/shop/broken", any("VirtualService", "[]")),
        ],
        &[],
    );
    let err = sub.apply(&bad).unwrap_err();
    assert!(err.contains("VirtualService/shop/broken"), "{err}");
    assert_eq!(sub.count(), 1, "nothing of the refused response is kept");
    sub.apply(&response(vec![], &["VirtualService/shop/web"]))
        .unwrap();
    assert_eq!(sub.count(), 0);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec!["VirtualService/shop/web".to_owned()], vec![]]
    );
}
