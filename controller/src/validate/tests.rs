use super::*;

#[test]
fn names_follow_kubernetes_syntax() {
    for ok in ["a", "web-1", "x".repeat(63).as_str()] {
        assert!(dns1123_label(ok).is_ok(), "{ok}");
    }
    for bad in ["", "Web", "-a", "a-", "a.b", "x".repeat(64).as_str()] {
        assert!(dns1123_label(bad).is_err(), "{bad}");
    }
    assert!(dns1123_subdomain("reviews.v1").is_ok());
    assert!(dns1123_subdomain("reviews..v1").is_err());
    for ok in [
        "app",
        "app.kubernetes.io/name",
        "istio.io/dataplane-mode",
        "A_b.c",
    ] {
        assert!(label_key(ok).is_ok(), "{ok}");
    }
    for bad in ["", "/name", "Bad_Prefix/x", "a/", "-a", "a b"] {
        assert!(label_key(bad).is_err(), "{bad}");
    }
    assert!(label_value("").is_ok());
    assert!(label_value("v1.2_rc-3").is_ok());
    assert!(label_value("v1!").is_err());
    assert!(label_value(&"x".repeat(64)).is_err());
    for ok in ["http", "grpc-web", "h2c", "a1"] {
        assert!(port_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "123", "HTTP", "a--b", "-a", "a-", "sixteen-chars-xx"] {
        assert!(port_name(bad).is_err(), "{bad}");
    }
}

fn problems(yaml: &str) -> Vec<(String, String)> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let kind = value["kind"].as_str().unwrap().to_owned();
    let r = match kind.as_str() {
        "Pod" => Resource::Pod(Box::new(PodRecord::from(
            serde_yaml_ng::from_value::<k8s_openapi::api::core::v1::Pod>(value).unwrap(),
        ))),
        "Service" => Resource::Service(Box::new(serde_yaml_ng::from_value(value).unwrap())),
        "Namespace" => Resource::Namespace(Box::new(serde_yaml_ng::from_value(value).unwrap())),
        other => panic!("{other}"),
    };
    resource(&r)
        .into_iter()
        .map(|p| (p.field, p.message))
        .collect()
}

fn fields(yaml: &str) -> Vec<String> {
    problems(yaml).into_iter().map(|(f, _)| f).collect()
}

#[test]
fn a_valid_pod_and_service_have_no_problems() {
    assert!(fields(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, labels: {app: web}}\n\
         spec: {serviceAccountName: web, containers: []}\nstatus: {podIP: 'fd00::5', podIPs: [{ip: 'fd00::5'}]}\n"
    )
    .is_empty());
    assert!(fields(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {clusterIP: None, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}, {name: grpc, port: 90, targetPort: 9090, protocol: TCP}]}\n"
    )
    .is_empty());
}

#[test]
fn pod_problems_name_their_field() {
    assert_eq!(
        fields(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name, labels: {'a b': x}}\n\
             spec: {serviceAccountName: 'no way', containers: []}\nstatus: {podIP: 10.0.0, podIPs: [{ip: x}]}\n"
        ),
        [
            "metadata.name",
            "spec.serviceAccountName",
            "status.podIP",
            "status.podIPs[0].ip",
            "metadata.labels.a b",
        ]
    );
}

#[test]
fn service_problems_name_their_field() {
    let got = fields(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {clusterIP: 10.0.0.300, selector: {app: 'bad value!'}, ports: [\
         {port: 0, targetPort: 70000, protocol: HTTP}, {name: http, port: 80, targetPort: 'Not-A-Name'}, {name: http, port: 81}]}\n",
    );
    assert_eq!(
        got,
        [
            "spec.clusterIP",
            "spec.selector.app",
            "spec.ports[0].port",
            "spec.ports[0].targetPort",
            "spec.ports[0].protocol",
            "spec.ports[0].name",
            "spec.ports[1].targetPort",
            "spec.ports[2].name",
        ]
    );
    let messages: Vec<String> = problems(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{name: a, port: 1}, {name: a, port: 2}]}\n",
    )
    .into_iter()
    .map(|(_, m)| m)
    .collect();
    assert_eq!(messages, ["\"a\" is used by another port"]);
    let messages: Vec<String> = problems(
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec: {ports: [\
         {name: a, port: 53}, {name: b, port: 53, protocol: UDP}, {name: c, port: 53, protocol: TCP}]}\n",
    )
    .into_iter()
    .map(|(f, m)| format!("{f}: {m}"))
    .collect();
    assert_eq!(
        messages,
        ["spec.ports[2].port: 53 is already used by another TCP port"],
        "TCP and UDP may share a number, two TCP ports may not"
    );
}

#[test]
fn namespace_names_are_dns_labels() {
    assert_eq!(
        fields("apiVersion: v1\nkind: Namespace\nmetadata: {name: my.ns}\n"),
        ["metadata.name"]
    );
}
