//! What the controller keeps of a Pod. A parsed `k8s_openapi` Pod is about 5 KiB before
//! any of its strings (every optional field of the spec and of each container is inline),
//! and a mesh reads a dozen of them; at 10,000 pods the difference is most of the
//! controller's memory. Manifests are parsed (and their errors reported) as full Pods,
//! then reduced to this.

use k8s_openapi::api::core::v1::{ContainerPort, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The fields of a Pod the mesh reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodRecord {
    /// Without `managedFields` (server-side apply bookkeeping, often the largest part).
    pub metadata: ObjectMeta,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `spec.containers`.
    pub containers: Vec<ContainerRecord>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// Whether the `Ready` condition is `True`, when the status has one.
    pub ready: Option<bool>,
    /// `status.podIP`.
    pub pod_ip: Option<String>,
    /// `status.podIPs[].ip`.
    pub pod_ips: Vec<String>,
}

/// The fields of a container the mesh (named target ports) and the local mesh (what to
/// run) read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerRecord {
    pub name: String,
    pub ports: Vec<ContainerPort>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `env[]` with literal values (`valueFrom` references read as empty).
    pub env: Vec<(String, String)>,
}

impl From<Pod> for PodRecord {
    fn from(pod: Pod) -> Self {
        let mut metadata = pod.metadata;
        metadata.managed_fields = None;
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        PodRecord {
            metadata,
            node_name: spec.node_name,
            service_account: spec.service_account_name,
            host_network: spec.host_network == Some(true),
            containers: spec
                .containers
                .into_iter()
                .map(|c| ContainerRecord {
                    name: c.name,
                    ports: c.ports.unwrap_or_default(),
                    command: c.command.unwrap_or_default(),
                    args: c.args.unwrap_or_default(),
                    env: c
                        .env
                        .into_iter()
                        .flatten()
                        .map(|v| (v.name, v.value.unwrap_or_default()))
                        .collect(),
                })
                .collect(),
            phase: status.phase,
            ready: status
                .conditions
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status == "True"),
            pod_ip: status.pod_ip,
            pod_ips: status
                .pod_ips
                .into_iter()
                .flatten()
                .map(|ip| ip.ip)
                .collect(),
        }
    }
}

impl PodRecord {
    /// The container port called `name` with `protocol`, if the pod has one.
    pub fn container_port(&self, name: &str, protocol: &str) -> Option<&ContainerPort> {
        self.containers.iter().flat_map(|c| &c.ports).find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_the_mesh_reads_and_is_a_fraction_of_the_size() {
        let pod: Pod = serde_yaml_ng::from_str(
            "
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  managedFields: [{manager: kubectl}]
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
",
        )
        .unwrap();
        let record = PodRecord::from(pod);
        assert_eq!(record.metadata.name.as_deref(), Some("web"));
        assert!(record.metadata.managed_fields.is_none());
        assert_eq!(record.node_name.as_deref(), Some("node-1"));
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
        assert!(
            std::mem::size_of::<PodRecord>() * 4 < std::mem::size_of::<Pod>(),
            "{} vs {}",
            std::mem::size_of::<PodRecord>(),
            std::mem::size_of::<Pod>()
        );
    }
}
