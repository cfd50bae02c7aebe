//! Manifest directories for the controller benchmark: a mesh of a given number of pods,
//! laid out as a user of the directory source would keep it.
//!
//! Four namespaces enrolled in ambient and one that is not; apps of [`PODS_PER_APP`] pods
//! (two Deployment versions each, so every pod has an owner, `app`/`version` labels and a
//! `pod-template-hash`), one Service per app selecting its pods (a numbered and a named
//! target port), one ServiceAccount per app, [`PODS_PER_NODE`] pods per node, and two
//! AuthorizationPolicies per enrolled namespace (a namespace-wide ALLOW and a DENY that
//! selects `version: v2`). Pods are split over files of at most [`PODS_PER_FILE`].
//!
//! One pod, [`CHURN_POD`], lives alone in [`CHURN_FILE`]: the benchmark changes it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

pub const NAMESPACES: [&str; 5] = ["shop", "payments", "catalog", "identity", "legacy"];
/// The namespaces labelled `istio.io/dataplane-mode: ambient` (all but `legacy`).
pub const ENROLLED: usize = 4;
pub const PODS_PER_APP: usize = 10;
pub const PODS_PER_NODE: usize = 100;
pub const PODS_PER_FILE: usize = 1000;
/// The file holding only the pod the benchmark changes.
pub const CHURN_FILE: &str = "churn.yaml";
/// Namespace and name of the pod the benchmark changes (app 0, so it backs a service
/// and is selected by policies).
pub const CHURN_POD: (&str, &str) = ("shop", "app-0-churn");
/// Its workload's xDS resource name (uid).
pub const CHURN_UID: &str = "Kubernetes//Pod/shop/app-0-churn";
pub const POLICIES_PER_NAMESPACE: usize = 2;

/// What [`write`] put in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Every pod, [`CHURN_POD`] included.
    pub pods: usize,
    pub services: usize,
    pub policies: usize,
    pub nodes: usize,
    pub files: usize,
}

impl Layout {
    /// `istio.workload.Address` resources the controller serves: one per pod and service.
    pub fn addresses(&self) -> usize {
        self.pods + self.services
    }
}

/// The layout for `pods` pods (at least 1), without writing anything.
pub fn layout(pods: usize) -> Layout {
    let pods = pods.max(1);
    let apps = pods.div_ceil(PODS_PER_APP);
    let bulk_files: usize = (0..NAMESPACES.len())
        .map(|ns| pods_in_namespace(pods - 1, ns).div_ceil(PODS_PER_FILE))
        .sum();
    Layout {
        pods,
        services: apps,
        policies: ENROLLED * POLICIES_PER_NAMESPACE,
        nodes: pods.div_ceil(PODS_PER_NODE),
        // namespaces.yaml, services.yaml, policies.yaml, the churn file, the pod files.
        files: 4 + bulk_files,
    }
}

/// Writes the manifests for `pods` pods into `dir` (created if needed; existing
/// manifests there are not removed).
pub fn write(dir: &Path, pods: usize) -> Result<Layout> {
    let layout = layout(pods);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let put = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    put("namespaces.yaml", &namespaces())?;
    put("services.yaml", &services(layout.services))?;
    put("policies.yaml", &policies())?;
    put(CHURN_FILE, &churn_pod("v1", &layout))?;
    // Every pod but the churn pod, namespace by namespace, in files of PODS_PER_FILE.
    let bulk = layout.pods - 1;
    for (ns_index, ns) in NAMESPACES.iter().enumerate() {
        let pods: Vec<usize> = (0..bulk)
            .filter(|k| app_of(*k) % NAMESPACES.len() == ns_index)
            .collect();
        for (chunk, ks) in pods.chunks(PODS_PER_FILE).enumerate() {
            let mut text = String::new();
            for &k in ks {
                text += &pod(k, &layout);
            }
            put(&format!("pods-{ns}-{chunk}.yaml"), &text)?;
        }
    }
    Ok(layout)
}

/// The churn pod's manifest with `version` as its `version` label.
pub fn churn_pod(version: &str, layout: &Layout) -> String {
    let (namespace, name) = CHURN_POD;
    pod_manifest(&PodFields {
        name,
        namespace,
        app: 0,
        version,
        // The address after every bulk pod's.
        ip: pod_ip(layout.pods - 1),
        node: 0,
    })
}

fn app_of(k: usize) -> usize {
    k / PODS_PER_APP
}

fn namespace_of(app: usize) -> &'static str {
    NAMESPACES[app % NAMESPACES.len()]
}

/// How many of the first `bulk` pods are in namespace `ns_index`.
fn pods_in_namespace(bulk: usize, ns_index: usize) -> usize {
    (0..bulk)
        .filter(|k| app_of(*k) % NAMESPACES.len() == ns_index)
        .count()
}

fn namespaces() -> String {
    let mut out = String::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let labels = if i < ENROLLED {
            "\n  labels:\n    istio.io/dataplane-mode: ambient"
        } else {
            ""
        };
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}{labels}\n"
        );
    }
    out
}

fn services(apps: usize) -> String {
    let mut out = String::new();
    for app in 0..apps {
        let ns = namespace_of(app);
        let _ = write!(
            out,
            "---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app-{app}
  namespace: {ns}
---
apiVersion: v1
kind: Service
metadata:
  name: app-{app}
  namespace: {ns}
spec:
  clusterIP: 10.96.{}.{}
  selector:
    app: app-{app}
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: grpc
    port: 9090
    targetPort: grpc
",
            (app + 1) / 256,
            (app + 1) % 256
        );
    }
    out
}

fn policies() -> String {
    let mut out = String::new();
    for ns in &NAMESPACES[..ENROLLED] {
        let _ = write!(
            out,
            "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-in-namespace
  namespace: {ns}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: [{ns}]
    to:
    - operation:
        ports: [\"8080\", \"9090\"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-debug-port
  namespace: {ns}
spec:
  selector:
    matchLabels:
      version: v2
  action: DENY
  rules:
  - to:
    - operation:
        ports: [\"9999\"]
"
        );
    }
    out
}

/// Pod `k` of the bulk: pod `k % PODS_PER_APP` of its app, versions alternating.
fn pod(k: usize, layout: &Layout) -> String {
    let app = app_of(k);
    let version = if k.is_multiple_of(2) { "v1" } else { "v2" };
    let name = format!(
        "app-{app}-{version}-{}-{}",
        template_hash(app, version),
        k % PODS_PER_APP
    );
    pod_manifest(&PodFields {
        name: &name,
        namespace: namespace_of(app),
        app,
        version,
        ip: pod_ip(k),
        node: k % layout.nodes,
    })
}

struct PodFields<'a> {
    name: &'a str,
    namespace: &'a str,
    app: usize,
    version: &'a str,
    ip: String,
    node: usize,
}

fn pod_manifest(p: &PodFields<'_>) -> String {
    let PodFields {
        name,
        namespace,
        app,
        version,
        ip,
        node,
    } = p;
    let hash = template_hash(*app, version);
    format!(
        "---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app: app-{app}
    version: {version}
    pod-template-hash: {hash}
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: app-{app}-{version}-{hash}
    uid: 00000000-0000-4000-8000-{app:012}
    controller: true
spec:
  nodeName: node-{node}
  serviceAccountName: app-{app}
  containers:
  - name: app
    image: registry.example/app-{app}:{version}
    ports:
    - name: http
      containerPort: 8080
    - name: grpc
      containerPort: 9090
status:
  phase: Running
  conditions:
  - type: Ready
    status: \"True\"
  podIP: {ip}
  podIPs:
  - ip: {ip}
"
    )
}

/// A stable stand-in for a ReplicaSet's pod-template-hash, in the alphabet Kubernetes
/// uses (no vowels, so never all digits: YAML would read that as a number).
fn template_hash(app: usize, version: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let v = if version == "v1" { 1 } else { 2 };
    let mut n = (app * 2 + v).wrapping_mul(2_654_435_761);
    (0..9)
        .map(|i| {
            // The first character is a letter.
            let base = if i == 0 { 20 } else { ALPHABET.len() };
            let c = ALPHABET[n % base] as char;
            n /= base;
            c
        })
        .collect()
}

/// Pod addresses from 10.16.0.1 upwards.
fn pod_ip(k: usize) -> String {
    let n = k + 1;
    format!("10.{}.{}.{}", 16 + n / 65_536, n / 256 % 256, n % 256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller::translate::{MeshOptions, translate};

    #[test]
    fn the_mesh_is_valid_and_translates_to_the_expected_resources() {
        let dir = std::env::temp_dir().join(format!("bench-manifests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for pods in [1, 25, 2_345] {
            let sub = dir.join(pods.to_string());
            let layout = write(&sub, pods).unwrap();
            assert_eq!(layout, super::layout(pods));
            let files = std::fs::read_dir(&sub).unwrap().count();
            assert_eq!(files, layout.files, "{pods} pods");
            let store = controller::app::load_once(&sub);
            assert!(store.problems().is_empty(), "{:?}", store.problems());
            let translation = translate(&store, &MeshOptions::default());
            assert!(
                translation.problems.is_empty(),
                "{:?}",
                translation.problems
            );
            assert_eq!(
                translation.addresses.len(),
                layout.addresses(),
                "{pods} pods"
            );
            assert_eq!(translation.authorizations.len(), layout.policies);
            let churn = &translation.addresses[CHURN_UID];
            let Some(api::workload::address::Type::Workload(w)) = &churn.r#type else {
                panic!("{CHURN_UID} is not a workload: {churn:?}");
            };
            assert_eq!(w.services.len(), 1, "backs app-0's service: {w:?}");
            assert_eq!(w.canonical_revision, "v1");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pod_addresses_are_distinct() {
        let ips: std::collections::BTreeSet<String> = (0..70_000).map(pod_ip).collect();
        assert_eq!(ips.len(), 70_000);
    }
}
