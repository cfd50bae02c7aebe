//! What the controller keeps of a Pod. A parsed `k8s_openapi` Pod is kilobytes (every
//! optional field of the metadata, the spec and each container is inline), a mesh reads a
//! dozen of its fields, and the pods of one ReplicaSet share most of those: labels,
//! owner, containers, node, service account. Manifests are parsed (and their errors
//! reported) as full Pods, then reduced to this, with the shared parts taken from pools
//! ([`super::intern`]): at 10,000 pods that is the difference between hundreds of
//! megabytes and a few dozen.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use k8s_openapi::api::core::v1::{ContainerPort, Pod};

use super::intern::Pool;

/// Label keys to values.
pub type Labels = BTreeMap<String, String>;

/// The fields of a Pod the mesh reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodRecord {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; the manifest source fills in `default` when it is left out.
    pub namespace: Arc<str>,
    /// `metadata.labels` (shared between pods with the same labels).
    pub labels: Arc<Labels>,
    /// The managing controller among `metadata.ownerReferences` (the one marked
    /// `controller: true`, else the first: hand-written manifests often leave it out).
    pub owner: Option<Arc<Owner>>,
    /// `spec.nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<Arc<str>>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `spec.containers` (shared between pods of the same template).
    pub containers: Arc<[ContainerRecord]>,
    /// `status.phase`.
    pub phase: Option<Arc<str>>,
    /// Whether the `Ready` condition is `True`, when the status has one.
    pub ready: Option<bool>,
    /// `status.podIP`.
    pub pod_ip: Option<String>,
    /// `status.podIPs[].ip`.
    pub pod_ips: Vec<String>,
}

/// An owner reference: what telemetry names the workload after.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// The fields of a container the mesh (named target ports) and the local mesh (what to
/// run) read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ContainerRecord {
    pub name: String,
    pub ports: Vec<PortRecord>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `env[]` with literal values (`valueFrom` references read as empty).
    pub env: Vec<(String, String)>,
}

/// `spec.containers[].ports[]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortRecord {
    pub name: Option<String>,
    pub container_port: i32,
    /// `TCP` when left out.
    pub protocol: String,
}

/// Short strings many pods repeat: namespaces, node names, service accounts, phases.
static NAMES: LazyLock<Pool<str>> = LazyLock::new(Pool::default);
static LABELS: LazyLock<Pool<Labels>> = LazyLock::new(Pool::default);
static OWNERS: LazyLock<Pool<Owner>> = LazyLock::new(Pool::default);
static CONTAINERS: LazyLock<Pool<[ContainerRecord]>> = LazyLock::new(Pool::default);

/// A name from the shared pool.
pub fn shared_name(name: &str) -> Arc<str> {
    NAMES.str(name)
}

impl From<Pod> for PodRecord {
    fn from(pod: Pod) -> Self {
        let metadata = pod.metadata;
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let owners = metadata.owner_references.unwrap_or_default();
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| owners.first())
            .map(|o| {
                OWNERS.value(Owner {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                })
            });
        let containers: Vec<ContainerRecord> = spec
            .containers
            .into_iter()
            .map(|c| ContainerRecord {
                name: c.name,
                ports: exact(c.ports.into_iter().flatten().map(PortRecord::from)),
                command: c.command.unwrap_or_default(),
                args: c.args.unwrap_or_default(),
                env: exact(
                    c.env
                        .into_iter()
                        .flatten()
                        .map(|v| (v.name, v.value.unwrap_or_default())),
                ),
            })
            .collect();
        PodRecord {
            name: metadata.name.unwrap_or_default(),
            namespace: NAMES.str(metadata.namespace.as_deref().unwrap_or_default()),
            labels: LABELS.value(metadata.labels.unwrap_or_default()),
            owner,
            node_name: spec.node_name.as_deref().map(shared_name),
            service_account: spec.service_account_name.as_deref().map(shared_name),
            host_network: spec.host_network == Some(true),
            containers: CONTAINERS.slice(containers),
            phase: status.phase.as_deref().map(shared_name),
            ready: status
                .conditions
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status == "True"),
            pod_ip: status.pod_ip,
            pod_ips: exact(status.pod_ips.into_iter().flatten().map(|ip| ip.ip)),
        }
    }
}

impl From<ContainerPort> for PortRecord {
    fn from(port: ContainerPort) -> Self {
        PortRecord {
            name: port.name,
            container_port: port.container_port,
            protocol: port.protocol.unwrap_or_else(|| "TCP".into()),
        }
    }
}

/// Collects into a vector of exactly the items' size. A plain `collect` from a vector of
/// k8s structs reuses that vector's allocation (in-place iteration), and a k8s
/// `EnvVar` or `Container` is several times the size of what is kept of it.
fn exact<T>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.shrink_to_fit();
    v
}

impl PodRecord {
    /// The container port called `name` with `protocol`, if the pod has one.
    pub fn container_port(&self, name: &str, protocol: &str) -> Option<&PortRecord> {
        self.containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  managedFields: [{manager: kubectl}]
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: other, uid: a}
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, uid: b, controller: true}
spec:
  nodeName: node-1
  serviceAccountName: web
  containers:
  - name: app
    image: web
    command: [web]
    args: [--port, '80']
    env: [{name: A, value: b}, {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}]
    ports: [{name: http, containerPort: 80}]
status:
  phase: Running
  conditions: [{type: Ready, status: 'False'}]
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]
";

    #[test]
    fn keeps_what_the_mesh_reads_and_is_a_fraction_of_the_size() {
        let pod: Pod = serde_yaml_ng::from_str(POD).unwrap();
        let record = PodRecord::from(pod);
        assert_eq!(record.name, "web");

        assert_eq!(&*record.namespace, "shop");
        assert_eq!(record.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(record.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            record.owner.as_ref().map(|o| o.name.as_str()),
            Some("web-5d8f")
        );
        assert_eq!(record.service_account.as_deref(), Some("web"));
        assert!(!record.host_network);
        assert_eq!(record.phase.as_deref(), Some("Running"));
        assert_eq!(record.ready, Some(false));
        assert_eq!(record.pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(record.pod_ips, ["10.0.0.1", "fd00::1"]);
        let app = &record.containers[0];
        assert_eq!(
            (app.command.as_slice(), app.args.as_slice()),
            (
                &["web".to_owned()][..],
                &["--port".to_owned(), "80".to_owned()][..]
            )
        );
        assert_eq!(
            app.env,
            [
                ("A".into(), "b".into()),
                ("FROM_SECRET".into(), String::new())
            ]
        );
        assert_eq!(
            record
                .container_port("http", "TCP")
                .map(|p| p.container_port),
            Some(80)
        );
        assert!(record.container_port("http", "UDP").is_none());
        // A second replica of the same template shares what they have in common.
        let mut replica: Pod = serde_yaml_ng::from_str(
            &POD.replace("name: web\n", "name: web-2\n")
                .replace("podIP: 10.0.0.1", "podIP: 10.0.0.2"),
        )
        .unwrap();
        let second = PodRecord::from(replica.clone());
        assert!(Arc::ptr_eq(&record.labels, &second.labels));
        assert!(Arc::ptr_eq(&record.containers, &second.containers));
        assert!(Arc::ptr_eq(
            record.owner.as_ref().unwrap(),
            second.owner.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            record.node_name.as_ref().unwrap(),
            second.node_name.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&record.namespace, &second.namespace));
        // ... and nothing it does not have in common.
        replica.metadata.labels = Some([("app".to_owned(), "api".to_owned())].into());
        let other = PodRecord::from(replica);
        assert_eq!(other.labels.get("app").map(String::as_str), Some("api"));
        assert_eq!(record.labels.get("app").map(String::as_str), Some("web"));
        assert!(
            std::mem::size_of::<PodRecord>() * 4 < std::mem::size_of::<Pod>(),
            "{} vs {}",
            std::mem::size_of::<PodRecord>(),
            std::mem::size_of::<Pod>()
        );
    }
}
