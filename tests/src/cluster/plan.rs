//! What the manifests ask the local mesh to run: which pods on which node with which
//! address, what their containers execute, and what kubelet would put in their
//! environment. A pure function of the controller's store, so it sees exactly the
//! objects the controller sees (an invalid edit keeps the last good version in both).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use controller::resource::{ContainerRecord, Kind, PodRecord, Resource};
use controller::store::Store;
use controller::translate::labels::{self, Labels};
use k8s_openapi::api::core::v1::Service;

use crate::pod_cidr;

/// `namespace/name` of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One pod as the lab runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    pub key: PodKey,
    pub node: usize,
    pub ip: Ipv4Addr,
    pub service_account: String,
    pub labels: Labels,
    pub containers: Vec<ContainerPlan>,
    /// Captured by ztunnel (the node agent decides the same way).
    pub enrolled: bool,
    /// What kubelet gives every container of the pod (and `lab exec` too): `HOSTNAME`,
    /// `POD_NAME`, `POD_NAMESPACE` and the service links of the pod's namespace, fixed
    /// when the pod starts.
    pub env: Vec<(String, String)>,
}

impl PodPlan {
    /// Whether `other` can be had from `self` by relabelling alone; anything else means
    /// a new sandbox, as in Kubernetes where a pod's placement and containers are fixed.
    /// Environments are not compared: like kubelet's, they are set once at start.
    pub fn same_sandbox(&self, other: &PodPlan) -> bool {
        let commands = |p: &PodPlan| -> Vec<(String, Vec<String>)> {
            p.containers
                .iter()
                .map(|c| (c.name.clone(), c.argv.clone()))
                .collect()
        };
        (&self.key, self.node, self.ip, &self.service_account)
            == (&other.key, other.node, other.ip, &other.service_account)
            && commands(self) == commands(other)
    }
}

/// A container: the command line the lab executes inside the pod, and its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPlan {
    pub name: String,
    /// `command` followed by `args`; the first word is looked up on `PATH`, except
    /// `demo-app`, which is this repository's demo (see `examples/demo-app`).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// What the manifests ask for, and why some of it cannot be run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: BTreeMap<PodKey, PodPlan>,
    /// One line per pod or container the lab cannot run as written.
    pub problems: Vec<String>,
}

/// The node index of `node-N`.
pub fn node_index(name: &str, nodes: usize) -> Option<usize> {
    let n: usize = name.strip_prefix("node-")?.parse().ok()?;
    (n < nodes && name == format!("node-{n}")).then_some(n)
}

/// Builds the plan for a lab of `nodes` nodes.
pub fn plan(store: &Store, nodes: usize) -> Plan {
    let mut plan = Plan::default();
    for parsed in store.of_kind(Kind::Namespace) {
        let labels = parsed.resource.labels().cloned().unwrap_or_default();
        plan.namespaces.insert(parsed.key.name.to_string(), labels);
    }
    let services: Vec<&Service> = store
        .of_kind(Kind::Service)
        .filter_map(|p| match p.resource.as_ref() {
            Resource::Service(s) => Some(s.as_ref()),
            _ => None,
        })
        .collect();
    for parsed in store.of_kind(Kind::Pod) {
        let Resource::Pod(pod) = parsed.resource.as_ref() else {
            continue;
        };
        let key = PodKey {
            namespace: parsed
                .key
                .namespace
                .as_deref()
                .unwrap_or_default()
                .to_owned(),
            name: parsed.key.name.to_string(),
        };
        match pod_plan(&key, pod, nodes, &plan.namespaces, &services) {
            Ok((pod_plan, problems)) => {
                plan.problems.extend(problems);
                plan.pods.insert(key, pod_plan);
            }
            Err(problem) => plan
                .problems
                .push(format!("pod {key}: {problem}; not started")),
        }
    }
    plan
}

fn pod_plan(
    key: &PodKey,
    pod: &PodRecord,
    nodes: usize,
    namespaces: &BTreeMap<String, Labels>,
    services: &[&Service],
) -> Result<(PodPlan, Vec<String>), String> {
    let node_name = pod
        .node_name
        .as_deref()
        .ok_or("spec.nodeName is required (the lab has no scheduler): node-0 ... node-N")?;
    let node = node_index(node_name, nodes).ok_or_else(|| {
        format!(
            "spec.nodeName {node_name:?} is not a node of this lab (node-0 to node-{})",
            nodes - 1
        )
    })?;
    let ip_text = pod
        .pod_ip
        .as_deref()
        .ok_or("status.podIP is required (the lab assigns the address the manifest says)")?;
    let ip: Ipv4Addr = ip_text
        .parse()
        .map_err(|_| format!("status.podIP {ip_text:?} is not an IPv4 address"))?;
    let cidr = pod_cidr(node);
    if !cidr.contains(ip) {
        return Err(format!(
            "status.podIP {ip} is outside {node_name}'s pod CIDR {cidr}"
        ));
    }
    if pod.host_network {
        return Err("hostNetwork pods are not supported by the lab".into());
    }
    let pod_labels = (*pod.labels).clone();
    let enrolled = labels::enrolled(
        &pod_labels,
        namespaces.get(&key.namespace).unwrap_or(&Labels::new()),
        false,
    );
    // kubelet's order: the pod's identity, then service links, then each container's
    // own variables (which win).
    let mut env = vec![
        ("HOSTNAME".to_owned(), key.name.clone()),
        ("POD_NAME".to_owned(), key.name.clone()),
        ("POD_NAMESPACE".to_owned(), key.namespace.clone()),
    ];
    env.extend(service_env(&key.namespace, services));
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    for (i, container) in pod.containers.iter().enumerate() {
        match container_plan(container, &env) {
            Some(c) => containers.push(c),
            None => problems.push(format!(
                "pod {key}: containers[{i}] ({}) has no command; the lab runs commands, not \
                 images, so it is not started",
                container.name
            )),
        }
    }
    let plan = PodPlan {
        key: key.clone(),
        node,
        ip,
        service_account: pod
            .service_account
            .as_deref()
            .unwrap_or("default")
            .to_owned(),
        labels: pod_labels,
        containers,
        enrolled,
        env,
    };
    Ok((plan, problems))
}

fn container_plan(
    container: &ContainerRecord,
    pod_env: &[(String, String)],
) -> Option<ContainerPlan> {
    let mut argv = container.command.clone();
    if argv.is_empty() {
        return None;
    }
    argv.extend(container.args.iter().cloned());
    let mut env = pod_env.to_vec();
    for (name, value) in &container.env {
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), value.clone()));
    }
    Some(ContainerPlan {
        name: container.name.clone(),
        argv,
        env,
    })
}

/// kubelet's service links: `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT` (the first port)
/// and `NAME_SERVICE_PORT_PORTNAME` for every Service with a cluster IP in the pod's
/// namespace.
pub fn service_env(namespace: &str, services: &[&Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for service in services {
        if service.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let Some(name) = &service.metadata.name else {
            continue;
        };
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let ports = spec.ports.iter().flatten();
        for (i, port) in ports.enumerate() {
            if i == 0 {
                env.push((format!("{prefix}_SERVICE_PORT"), port.port.to_string()));
            }
            if let Some(port_name) = &port.name {
                let suffix = port_name.to_ascii_uppercase().replace('-', "_");
                env.push((
                    format!("{prefix}_SERVICE_PORT_{suffix}"),
                    port.port.to_string(),
                ));
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use controller::manifest::parse_file;
    use controller::source::SourceEvent;

    use super::*;

    fn store(yaml: &str) -> Store {
        let contents = parse_file(Path::new("m.yaml"), yaml);
        assert!(contents.errors.is_empty(), "{:?}", contents.errors);
        let mut store = Store::default();
        for object in contents.objects {
            store.apply(SourceEvent::Applied(object));
        }
        store
    }

    const MANIFESTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: ratings-api, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: ratings}
  ports: [{name: http-web, port: 9080}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: other}
spec: {clusterIP: 10.96.0.30, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-1
  serviceAccountName: web
  containers:
  - name: app
    command: [demo-app, productpage]
    args: [--port, '9080']
    env: [{name: POD_NAME, value: overridden}, {name: EXTRA, value: x}]
  - {name: sidecar-like, image: busybox}
status: {podIP: 10.244.1.20}
---
apiVersion: v1
kind: Pod
metadata: {name: lost, namespace: shop}
spec: {nodeName: node-7, containers: []}
status: {podIP: 10.244.7.5}
---
apiVersion: v1
kind: Pod
metadata: {name: misplaced, namespace: shop}
spec: {nodeName: node-0, containers: []}
status: {podIP: 10.244.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: out, namespace: shop, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-0, containers: []}
status: {podIP: 10.244.0.5}
";

    #[test]
    fn pods_get_their_node_address_command_and_kubelet_environment() {
        let plan = plan(&store(MANIFESTS), 2);
        let web = &plan.pods[&PodKey {
            namespace: "shop".into(),
            name: "web".into(),
        }];
        assert_eq!(web.node, 1);
        assert_eq!(web.ip, Ipv4Addr::new(10, 244, 1, 20));
        assert_eq!(web.service_account, "web");
        assert!(web.enrolled);
        assert_eq!(web.containers.len(), 1);
        let app = &web.containers[0];
        assert_eq!(app.argv, ["demo-app", "productpage", "--port", "9080"]);
        let env: BTreeMap<_, _> = app.env.iter().cloned().collect();
        assert_eq!(env["HOSTNAME"], "web");
        assert_eq!(env["POD_NAME"], "overridden");
        assert_eq!(env["EXTRA"], "x");
        assert_eq!(env["RATINGS_API_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["RATINGS_API_SERVICE_PORT"], "9080");
        assert_eq!(env["RATINGS_API_SERVICE_PORT_HTTP_WEB"], "9080");
        assert_eq!(env["RATINGS_API_SERVICE_PORT_GRPC"], "9090");
        assert!(
            !env.contains_key("ELSEWHERE_SERVICE_HOST"),
            "other namespace"
        );

        let out = &plan.pods[&PodKey {
            namespace: "shop".into(),
            name: "out".into(),
        }];
        assert!(!out.enrolled);
    }

    #[test]
    fn what_cannot_run_is_named() {
        let plan = plan(&store(MANIFESTS), 2);
        assert_eq!(plan.pods.len(), 2, "{:?}", plan.pods.keys());
        let problems = plan.problems.join("\n");
        for expected in [
            "pod shop/lost: spec.nodeName \"node-7\" is not a node of this lab (node-0 to node-1)",
            "pod shop/misplaced: status.podIP 10.244.1.5 is outside node-0's pod CIDR",
            "pod shop/web: containers[1] (sidecar-like) has no command",
        ] {
            assert!(problems.contains(expected), "{expected}\nin\n{problems}");
        }
    }

    #[test]
    fn node_names() {
        assert_eq!(node_index("node-0", 2), Some(0));
        assert_eq!(node_index("node-1", 2), Some(1));
        assert_eq!(node_index("node-2", 2), None);
        assert_eq!(node_index("node-01", 2), None);
        assert_eq!(node_index("worker-0", 2), None);
    }

    #[test]
    fn relabelling_keeps_the_sandbox() {
        let plan = plan(&store(MANIFESTS), 2);
        let web = plan.pods.values().next().unwrap().clone();
        let mut relabelled = web.clone();
        relabelled.labels.insert("version".into(), "v2".into());
        assert!(web.same_sandbox(&relabelled));
        relabelled
            .env
            .push(("NEW_SERVICE_HOST".into(), "10.96.0.99".into()));
        assert!(web.same_sandbox(&relabelled), "env is fixed at start");
        let mut moved = web.clone();
        moved.node += 1;
        assert!(!web.same_sandbox(&moved));
        let mut recommanded = web.clone();
        recommanded.containers.push(ContainerPlan {
            name: "extra".into(),
            argv: vec!["sleep".into(), "1".into()],
            env: vec![],
        });
        assert!(!web.same_sandbox(&recommanded));
    }
}
