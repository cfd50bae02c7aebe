//! Pods and Services -> workloads and services: enrollment, naming, health, ports.

use api::workload::{NetworkMode, Port, Service, TunnelProtocol, WorkloadStatus, WorkloadType};

use super::*;

fn namespace(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n---\n"
    )
}

fn pod(name: &str, metadata: &str, spec: &str, status: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, {metadata}}}\n\
         spec: {{containers: [{{name: c, image: i}}], {spec}}}\nstatus: {{podIP: 10.0.0.1, {status}}}\n---\n"
    )
}

#[test]
fn enrollment_follows_namespace_and_pod_labels() {
    let ambient = "istio.io/dataplane-mode: ambient";
    let table = [
        // (namespace labels, pod labels, pod spec, tunnel, network mode)
        (
            ambient,
            "",
            "",
            TunnelProtocol::Hbone,
            NetworkMode::Standard,
        ),
        ("", "", "", TunnelProtocol::None, NetworkMode::Standard),
        (
            "",
            ambient,
            "",
            TunnelProtocol::Hbone,
            NetworkMode::Standard,
        ),
        (
            ambient,
            "istio.io/dataplane-mode: none",
            "",
            TunnelProtocol::None,
            NetworkMode::Standard,
        ),
        (
            ambient,
            "",
            "hostNetwork: true",
            TunnelProtocol::None,
            NetworkMode::HostNetwork,
        ),
        (
            "istio.io/dataplane-mode: none",
            "",
            "",
            TunnelProtocol::None,
            NetworkMode::Standard,
        ),
    ];
    for (ns_labels, pod_labels, spec, tunnel, mode) in table {
        let yaml = namespace("shop", ns_labels)
            + &pod("p", &format!("labels: {{{pod_labels}}}"), spec, "");
        let t = translated(&yaml);
        let w = workload(&t, "shop", "p").expect("workload");
        let case = format!("ns {{{ns_labels}}} pod {{{pod_labels}}} {spec}");
        assert_eq!(w.tunnel_protocol, tunnel as i32, "{case}");
        assert_eq!(w.network_mode, mode as i32, "{case}");
    }
}

#[test]
fn only_pods_with_an_ip_that_have_not_terminated_are_workloads() {
    let yaml = pod("running", "", "", "phase: Running")
        + &pod("pending", "", "", "phase: Pending")
        + &pod("done", "", "", "phase: Succeeded")
        + &pod("failed", "", "", "phase: Failed")
        + "apiVersion: v1\nkind: Pod\nmetadata: {name: no-ip, namespace: shop}\n";
    let t = translated(&yaml);
    let names: Vec<&str> = t.addresses.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Kubernetes//Pod/shop/pending",
            "Kubernetes//Pod/shop/running"
        ]
    );
}

#[test]
fn health_follows_readiness_and_phase() {
    let table = [
        ("", WorkloadStatus::Healthy),
        ("phase: Running", WorkloadStatus::Healthy),
        ("phase: Pending", WorkloadStatus::Unhealthy),
        (
            "phase: Running, conditions: [{type: Ready, status: 'True'}]",
            WorkloadStatus::Healthy,
        ),
        (
            "phase: Running, conditions: [{type: Ready, status: 'False'}]",
            WorkloadStatus::Unhealthy,
        ),
        (
            "conditions: [{type: PodScheduled, status: 'False'}]",
            WorkloadStatus::Healthy,
        ),
    ];
    for (status, want) in table {
        let t = translated(&pod("p", "", "", status));
        let w = workload(&t, "shop", "p").expect("workload");
        assert_eq!(w.status, want as i32, "{status}");
    }
}

#[test]
fn workload_name_and_type_come_from_the_owner() {
    let owner = |kind: &str, name: &str| {
        format!(
            "ownerReferences: [{{apiVersion: v1, kind: {kind}, name: {name}, uid: u, controller: true}}]"
        )
    };
    let table = [
        (String::new(), "p", WorkloadType::Pod),
        (
            owner("ReplicaSet", "web-7d4b9c") + ", labels: {pod-template-hash: 7d4b9c}",
            "web",
            WorkloadType::Deployment,
        ),
        // A ReplicaSet that is not a Deployment's: the pod itself.
        (owner("ReplicaSet", "web"), "p", WorkloadType::Pod),
        (owner("Job", "backup"), "backup", WorkloadType::Job),
        (
            owner("Job", "nightly-28901234"),
            "nightly",
            WorkloadType::Cronjob,
        ),
        (
            owner("Job", "batch-1234567"),
            "batch-1234567",
            WorkloadType::Job,
        ),
        (owner("StatefulSet", "db"), "p", WorkloadType::Pod),
    ];
    for (metadata, name, kind) in table {
        let t = translated(&pod("p", &metadata, "", ""));
        let w = workload(&t, "shop", "p").expect("workload");
        assert_eq!(
            (w.workload_name.as_str(), w.workload_type),
            (name, kind as i32),
            "{metadata}"
        );
    }
}

#[test]
fn canonical_names_prefer_istio_labels_then_kubernetes_then_app() {
    let table = [
        ("", "p", "latest"),
        ("app: a, version: v1", "a", "v1"),
        (
            "app: a, app.kubernetes.io/name: k, version: v1, app.kubernetes.io/version: kv",
            "k",
            "kv",
        ),
        (
            "app: a, service.istio.io/canonical-name: c, service.istio.io/canonical-revision: cr, version: v1",
            "c",
            "cr",
        ),
    ];
    for (labels, name, revision) in table {
        let t = translated(&pod("p", &format!("labels: {{{labels}}}"), "", ""));
        let w = workload(&t, "shop", "p").expect("workload");
        assert_eq!(
            (w.canonical_name.as_str(), w.canonical_revision.as_str()),
            (name, revision),
            "{labels}"
        );
    }
}

#[test]
fn identity_addresses_and_node_come_from_the_pod() {
    let t = translated(&pod(
        "p",
        "",
        "nodeName: node-1, serviceAccountName: api",
        "podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]",
    ));
    let w = workload(&t, "shop", "p").expect("workload");
    assert_eq!(w.service_account, "api");
    assert_eq!(w.node, "node-1");
    assert_eq!(w.trust_domain, "cluster.local");
    let mut v6 = vec![0xfd, 0];
    v6.extend([0; 13]);
    v6.push(1);
    assert_eq!(
        w.addresses,
        [vec![10, 0, 0, 1], v6],
        "podIP once, then the other family"
    );

    let t = translated(&pod("q", "", "", ""));
    assert_eq!(
        workload(&t, "shop", "q").expect("workload").service_account,
        "default"
    );
}

const SERVICE: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, 'fd00::10']
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9000, targetPort: 9090}
  - {name: plain, port: 7000}
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
---
";

#[test]
fn service_ports_keep_numbers_and_defer_names_to_workloads() {
    let t = translated(SERVICE);
    let Some(address::Type::Service(s)) = &t.addresses["shop/web.shop.svc.cluster.local"].r#type
    else {
        panic!("no service");
    };
    let Service {
        hostname,
        addresses,
        ports,
        ..
    } = s;
    assert_eq!(hostname, "web.shop.svc.cluster.local");
    let vips: Vec<usize> = addresses.iter().map(|a| a.address.len()).collect();
    assert_eq!(vips, [4, 16], "clusterIP once, then the IPv6 VIP");
    let got: Vec<(u32, u32)> = ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(got, [(80, 0), (9000, 9090), (7000, 7000), (53, 0)]);
}

#[test]
fn named_target_ports_resolve_per_pod() {
    let table: [(&str, &[(u32, u32)]); 4] = [
        (
            "[{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]",
            &[(80, 8080), (9000, 9090), (7000, 7000), (53, 5353)],
        ),
        // Unresolvable names leave their port out for this pod only.
        ("[]", &[(9000, 9090), (7000, 7000)]),
        // The protocol must match too, as in Kubernetes.
        (
            "[{name: http, containerPort: 8081}, {name: dns, containerPort: 53}]",
            &[(80, 8081), (9000, 9090), (7000, 7000)],
        ),
        (
            "[{name: http, containerPort: 8082, protocol: TCP}]",
            &[(80, 8082), (9000, 9090), (7000, 7000)],
        ),
    ];
    for (container_ports, want) in table {
        let yaml = SERVICE.to_owned()
            + &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: shop, labels: {{app: web}}}}\n\
                 spec: {{containers: [{{name: c, image: i, ports: {container_ports}}}]}}\n\
                 status: {{podIP: 10.0.0.1}}\n"
            );
        let t = translated(&yaml);
        let w = workload(&t, "shop", "p").expect("workload");
        let want: Vec<Port> = want
            .iter()
            .map(|&(service_port, target_port)| Port {
                service_port,
                target_port,
            })
            .collect();
        assert_eq!(w.services.len(), 1, "{container_ports}");
        assert_eq!(
            w.services["shop/web.shop.svc.cluster.local"].ports, want,
            "{container_ports}"
        );
    }
}

#[test]
fn services_select_pods_in_their_namespace_by_non_empty_selector() {
    let yaml = SERVICE.to_owned()
        + "apiVersion: v1\nkind: Service\nmetadata: {name: manual, namespace: shop}\nspec: {ports: [{port: 80}]}\n---\n\
           apiVersion: v1\nkind: Service\nmetadata: {name: alias, namespace: shop}\n\
           spec: {type: ExternalName, externalName: example.com, selector: {app: web}}\n---\n\
           apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: other, labels: {app: web}}\nstatus: {podIP: 10.0.0.2}\n---\n"
        + &pod("q", "labels: {app: web, extra: x}", "", "")
        + &pod("r", "labels: {app: db}", "", "");
    let t = translated(&yaml);
    let keys = |ns, name| {
        let w = workload(&t, ns, name).expect("workload");
        let mut k: Vec<String> = w.services.keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys("shop", "q"), ["shop/web.shop.svc.cluster.local"]);
    assert!(keys("other", "p").is_empty(), "other namespace");
    assert!(keys("shop", "r").is_empty(), "labels differ");
    assert!(
        t.addresses
            .contains_key("shop/manual.shop.svc.cluster.local")
    );
    assert!(
        !t.addresses
            .contains_key("shop/alias.shop.svc.cluster.local"),
        "ExternalName services have no VIP to capture"
    );
}
