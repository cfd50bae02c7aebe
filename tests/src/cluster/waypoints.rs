//! The lab's stand-in for Istio's waypoint deployment controller: for every Gateway of
//! class `istio-waypoint` in the manifests, it writes what Istio would create in the API
//! server — a Service named like the Gateway (unless the manifests have one) and a pod
//! running the waypoint — into the lab's own manifest directory, which the controller
//! reads beside the user's (see [`ApiServer`]). The pod runs on node 0 with an address
//! the lab picks, is labelled `gateway.networking.k8s.io/gateway-name` (so the Service
//! selects it and it never gets a waypoint itself) and `istio.io/dataplane-mode: none`
//! (a waypoint does its own HBONE; ztunnel must not capture it). When the Gateway goes,
//! so do they.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use controller::resource::{Kind, Resource};
use controller::store::Store;
use controller::translate::waypoint::{GATEWAY_NAME, WAYPOINT_CLASS};

use crate::{node_ip, pod_cidr};

/// The directory the controller and the pod runner read: the user's manifests (a
/// symlink) and what the lab writes.
#[derive(Debug, Clone)]
pub struct ApiServer {
    pub root: PathBuf,
    /// `root/manifests`, a symlink to the user's directory.
    pub user_link: PathBuf,
    /// The user's directory as given.
    pub user_dir: PathBuf,
    /// `root/generated`: the lab's objects.
    pub generated: PathBuf,
}

impl ApiServer {
    /// Sets up `work_dir/apiserver` around `manifests`.
    pub fn create(work_dir: &Path, manifests: &Path) -> Result<Self> {
        let root = work_dir.join("apiserver");
        let user_link = root.join("manifests");
        let generated = root.join("generated");
        fs::create_dir_all(&generated)
            .with_context(|| format!("creating {}", generated.display()))?;
        let target = fs::canonicalize(manifests)
            .with_context(|| format!("resolving {}", manifests.display()))?;
        if fs::symlink_metadata(&user_link).is_ok() {
            fs::remove_file(&user_link)
                .with_context(|| format!("replacing {}", user_link.display()))?;
        }
        std::os::unix::fs::symlink(&target, &user_link)
            .with_context(|| format!("linking {} to {}", user_link.display(), target.display()))?;
        Ok(ApiServer {
            root,
            user_link,
            user_dir: manifests.to_owned(),
            generated,
        })
    }

    /// `text` with paths under the link shown under the user's directory.
    pub fn user_paths(&self, text: &str) -> String {
        text.replace(
            &self.user_link.display().to_string(),
            &self.user_dir.display().to_string(),
        )
    }
}

/// Where the waypoints' pods find the controller.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub xds_address: String,
    pub root_cert: PathBuf,
    /// Node 0's token (the waypoints run there).
    pub token_file: PathBuf,
}

/// First address tried for a waypoint pod on node 0, and for a waypoint Service.
const FIRST_POD_HOST: u8 = 200;
const SERVICE_NET: [u8; 3] = [10, 96, 200];

/// Brings `generated` in line with the Gateways in `store`; true if a file changed.
pub fn sync(store: &Store, api: &ApiServer, control_plane: &ControlPlane) -> Result<bool> {
    let wanted = manifests(store, &api.generated, control_plane);
    let mut changed = false;
    let existing: BTreeSet<PathBuf> = fs::read_dir(&api.generated)
        .with_context(|| format!("listing {}", api.generated.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    for path in &existing {
        if !wanted.contains_key(path) {
            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            changed = true;
        }
    }
    for (path, text) in wanted {
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            let tmp = path.with_extension("yaml.tmp");
            fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
            fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// The file of each waypoint Gateway, by path.
fn manifests(store: &Store, generated: &Path, cp: &ControlPlane) -> BTreeMap<PathBuf, String> {
    let is_generated = |origin: &Path| origin.starts_with(generated);
    let mut used_pod_ips = BTreeSet::new();
    let mut used_vips = BTreeSet::new();
    // What generated objects hold now, so each keeps its addresses.
    let mut kept_pod_ip = BTreeMap::new();
    let mut kept_vip = BTreeMap::new();
    let mut user_services = BTreeSet::new();
    for parsed in store.of_kind(Kind::Pod) {
        let Resource::Pod(pod) = parsed.resource.as_ref() else {
            continue;
        };
        let Some(ip) = pod
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let key = (pod.namespace.to_string(), parsed.key.name.to_string());
        if is_generated(&parsed.origin.file) {
            kept_pod_ip.insert(key, ip);
        } else {
            used_pod_ips.insert(ip);
        }
    }
    for parsed in store.of_kind(Kind::Service) {
        let Resource::Service(service) = parsed.resource.as_ref() else {
            continue;
        };
        let ip = service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let key = (
            parsed
                .key
                .namespace
                .as_deref()
                .unwrap_or_default()
                .to_owned(),
            parsed.key.name.to_string(),
        );
        if is_generated(&parsed.origin.file) {
            if let Some(ip) = ip {
                kept_vip.insert(key, ip);
            }
        } else {
            used_vips.extend(ip);
            user_services.insert(key);
        }
    }
    let mut out = BTreeMap::new();
    for parsed in store.of_kind(Kind::Gateway) {
        let Resource::Gateway(gateway) = parsed.resource.as_ref() else {
            continue;
        };
        if gateway.spec.gateway_class_name != WAYPOINT_CLASS {
            continue;
        }
        let namespace = parsed
            .key
            .namespace
            .as_deref()
            .unwrap_or("default")
            .to_owned();
        let name = parsed.key.name.to_string();
        let pod_name = format!("{name}-0");
        let pod_ip = kept_pod_ip
            .get(&(namespace.clone(), pod_name.clone()))
            .copied()
            .filter(|ip| !used_pod_ips.contains(ip))
            .or_else(|| free_pod_ip(&used_pod_ips));
        let Some(pod_ip) = pod_ip else { continue };
        used_pod_ips.insert(pod_ip);
        let mut text = format!(
            "# Written by the lab for Gateway {namespace}/{name}, as Istio's waypoint controller\n\
             # would create them. Do not edit: it is rewritten, and deleted with the Gateway.\n"
        );
        let service_key = (namespace.clone(), name.clone());
        if !user_services.contains(&service_key) {
            let vip = kept_vip
                .get(&service_key)
                .copied()
                .filter(|ip| !used_vips.contains(ip))
                .or_else(|| free_vip(&used_vips));
            if let Some(vip) = vip {
                used_vips.insert(vip);
                let _ = write!(
                    text,
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
                     labels: {{{GATEWAY_NAME}: {name}}}\nspec:\n  clusterIP: {vip}\n  \
                     selector: {{{GATEWAY_NAME}: {name}}}\n  ports:\n  - {{name: mesh, port: 15008}}\n---\n"
                );
            }
        }
        let env = [
            ("WAYPOINT_NAME", name.clone()),
            ("POD_IP", pod_ip.to_string()),
            ("NODE_NAME", "node-0".to_owned()),
            ("WAYPOINT_XDS_ADDRESS", cp.xds_address.clone()),
            ("WAYPOINT_ROOT_CERT", cp.root_cert.display().to_string()),
            ("WAYPOINT_TOKEN_FILE", cp.token_file.display().to_string()),
        ];
        let env: String = env
            .iter()
            .map(|(k, v)| format!("    - {{name: {k}, value: {v:?}}}\n"))
            .collect();
        let _ = write!(
            text,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod_name}\n  namespace: {namespace}\n  \
             labels: {{{GATEWAY_NAME}: {name}, istio.io/dataplane-mode: none}}\nspec:\n  \
             nodeName: node-0\n  serviceAccountName: {name}\n  containers:\n  - name: istio-proxy\n    \
             image: waypoint\n    command: [waypoint]\n    env:\n{env}status:\n  podIP: {pod_ip}\n"
        );
        out.insert(
            generated.join(format!("waypoint.{namespace}.{name}.yaml")),
            text,
        );
    }
    out
}

/// The first free address on node 0 from `.200` up.
fn free_pod_ip(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let [a, b, c, _] = pod_cidr(0).addr.octets();
    (FIRST_POD_HOST..=250)
        .map(|host| Ipv4Addr::new(a, b, c, host))
        .find(|ip| !used.contains(ip) && *ip != node_ip(0))
}

fn free_vip(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let [a, b, c] = SERVICE_NET;
    (1..=254)
        .map(|host| Ipv4Addr::new(a, b, c, host))
        .find(|ip| !used.contains(ip))
}
