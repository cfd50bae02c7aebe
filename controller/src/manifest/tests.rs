use super::*;
use crate::resource::Kind;

fn parse(text: &str) -> FileContents {
    parse_file(Path::new("m.yaml"), text)
}

fn only_error(contents: &FileContents) -> &ConfigError {
    assert_eq!(contents.errors.len(), 1, "errors: {:#?}", contents.errors);
    &contents.errors[0]
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reviews
  namespace: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-abc
  namespace: shop
  labels: {app: reviews, version: v1}
spec:
  nodeName: node-0
  serviceAccountName: reviews
  containers: [{name: app, image: reviews, ports: [{name: http, containerPort: 9080}]}]
status:
  podIP: 10.0.0.5
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: http}]
---
"#;

#[test]
fn reads_every_document_of_a_file() {
    let c = parse(APP);
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    let keys: Vec<String> = c.objects.iter().map(|p| p.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "Namespace shop",
            "ServiceAccount shop/reviews",
            "Pod shop/reviews-v1-abc",
            "Service shop/reviews"
        ]
    );
    assert_eq!(c.objects[2].origin.document, 3);
    let Resource::Pod(pod) = &*c.objects[2].resource else {
        panic!("not a pod")
    };
    assert_eq!(pod.pod_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(pod.node_name.as_deref(), Some("node-0"));
}

#[test]
fn a_missing_namespace_is_default_and_written_into_the_object() {
    let c = parse("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n");
    assert_eq!(c.objects[0].key.namespace.as_deref(), Some("default"));
    assert_eq!(c.objects[0].resource.namespace(), Some("default"));
    assert_eq!(c.objects[0].key.kind, Kind::ServiceAccount);
}

#[test]
fn a_yaml_syntax_error_makes_the_file_unreadable() {
    let c = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: a\n");
    assert!(c.unreadable);
    let e = only_error(&c);
    assert!(e.message.starts_with("not valid YAML"), "{e}");
    assert_eq!(e.document, Some(1));
}

#[test]
fn an_unknown_kind_is_named_with_what_is_supported() {
    let c = parse("apiVersion: example.com/v1\nkind: Frobnicator\nmetadata: {name: x}\n");
    let e = only_error(&c);
    assert_eq!(e.object.as_deref(), Some("Frobnicator x"));
    assert_eq!(e.field.as_deref(), Some("kind"));
    assert!(e.message.contains("unknown kind Frobnicator"), "{e}");
    assert!(
        e.message.contains("VirtualService.networking.istio.io"),
        "{e}"
    );
    assert!(!c.unreadable);
}

#[test]
fn an_unserved_version_says_which_are() {
    let c =
        parse("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\n");
    let e = only_error(&c);
    assert!(e.message.contains("networking.istio.io/v1alpha3"), "{e}");
}

#[test]
fn a_wrong_field_type_names_the_object_and_the_field() {
    let c = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {ports: [{port: eighty}]}\n",
    );
    let e = only_error(&c);
    assert_eq!(e.object.as_deref(), Some("Service shop/web"));
    assert_eq!(e.field.as_deref(), Some("spec.ports[0].port"));
    assert_eq!(
        c.rejected.len(),
        1,
        "the object is known, so its old version can stay"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("m.yaml (document 1): Service shop/web: spec.ports[0].port: "),
        "{text}"
    );
}

#[test]
fn an_unknown_field_in_an_istio_policy_is_an_error() {
    let c = parse(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: strict, namespace: shop}\nspec: {mtl: {mode: STRICT}}\n",
    );
    let e = only_error(&c);
    assert!(e.message.contains("mtl"), "{e}");
    assert_eq!(e.object.as_deref(), Some("PeerAuthentication shop/strict"));
}

#[test]
fn semantic_problems_reject_the_object() {
    let c = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {ports: [{port: 80, targetPort: 70000}]}\n",
    );
    let e = only_error(&c);
    assert_eq!(e.field.as_deref(), Some("spec.ports[0].targetPort"));
    assert!(c.objects.is_empty());
}

#[test]
fn objects_without_a_name_or_kind_are_reported() {
    let c = parse("apiVersion: v1\nkind: Pod\nmetadata: {}\n---\nkind: Pod\n---\n- a list\n");
    assert_eq!(c.errors.len(), 3, "{:#?}", c.errors);
    assert_eq!(c.errors[0].field.as_deref(), Some("metadata.name"));
    assert_eq!(c.errors[1].field.as_deref(), Some("apiVersion"));
    assert!(c.errors[2].message.contains("expected a Kubernetes object"));
    assert_eq!(c.errors[2].document, Some(3));
}
