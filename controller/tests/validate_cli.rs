//! `controller validate DIR` as a CI pipeline would run it.

use std::path::{Path, PathBuf};
use std::process::Command;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("controller-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn validate(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["validate"])
        .arg(dir)
        .output()
        .expect("run controller");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exited"), text)
}

const GOOD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n";

#[test]
fn a_valid_directory_exits_zero() {
    let dir = TempDir::new("good");
    dir.write("app.yaml", GOOD);
    let (code, text) = validate(&dir.0);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 objects, all valid"), "{text}");
}

#[test]
fn each_problem_is_printed_with_file_object_and_field_and_exits_one() {
    let dir = TempDir::new("bad");
    dir.write("app.yaml", GOOD);
    dir.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec: {ports: [{port: 99999}]}\n",
    );
    let (code, text) = validate(&dir.0);
    assert_eq!(code, 1, "{text}");
    let line = format!(
        "{}/broken.yaml (document 1): Service shop/api: spec.ports[0].port: 99999 is not a port (1-65535)",
        dir.0.display()
    );
    assert!(text.contains(&line), "{text}");
    assert!(text.contains("1 problem (2 valid objects)"), "{text}");
}

#[test]
fn a_missing_directory_is_a_usage_error() {
    let (code, text) = validate(Path::new("/nonexistent/manifests"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is not a directory"), "{text}");
}

#[test]
fn an_l7_policy_bound_to_ztunnel_is_reported_with_file_object_and_field() {
    let dir = TempDir::new("l7");
    dir.write("app.yaml", GOOD);
    dir.write(
        "policy.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: get-only, namespace: shop}\n\
         spec: {rules: [{to: [{operation: {methods: [GET], ports: ['80']}}]}]}\n",
    );
    let (code, text) = validate(&dir.0);
    assert_eq!(code, 1, "{text}");
    let prefix = format!(
        "{}/policy.yaml (document 1): AuthorizationPolicy shop/get-only: \
         spec.rules[0].to[0].operation.methods: ",
        dir.0.display()
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"));
    assert!(line.contains("L7") && line.contains("ALLOW"), "{line}");
    assert!(line.contains("waypoint with targetRefs"), "{line}");
    assert!(text.contains("1 problem (3 valid objects)"), "{text}");
}

#[test]
fn bad_waypoint_config_is_reported_with_file_object_and_field() {
    let dir = TempDir::new("waypoint");
    dir.write("app.yaml", GOOD);
    dir.write(
        "waypoint.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: wp, namespace: shop, labels: {istio.io/waypoint-for: pods}}\n\
         spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15009, protocol: HBONE}]}\n\
         ---\n\
         apiVersion: v1\nkind: ServiceAccount\n\
         metadata: {name: app, namespace: shop, labels: {istio.io/use-waypoint: missing}}\n",
    );
    let (code, text) = validate(&dir.0);
    assert_eq!(code, 1, "{text}");
    let file = format!("{}/waypoint.yaml", dir.0.display());
    for line in [
        format!(
            "{file} (document 1): Gateway shop/wp: metadata.labels.istio.io/waypoint-for: \"pods\" is not a traffic type"
        ),
        format!("{file} (document 1): Gateway shop/wp: spec.listeners[0].port: 15009 is not 15008"),
        format!(
            "{file} (document 2): ServiceAccount shop/app: metadata.labels.istio.io/use-waypoint: there is no waypoint shop/missing"
        ),
    ] {
        assert!(text.contains(&line), "{line}\n---\n{text}");
    }
}
