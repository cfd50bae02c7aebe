//! Waypoint opt-in, as Istio ambient does it: a Gateway of class `istio-waypoint`
//! declares a waypoint, and the label `istio.io/use-waypoint` on a Namespace, Service,
//! Pod or ServiceAccount sends that traffic through it. The result is the
//! `waypoint` field (a [`GatewayAddress`]) of `istio.workload.Service` and
//! `istio.workload.Workload`.
//!
//! What follows Istio (pilot's ambient index, `waypoints.go`):
//!
//! - `istio.io/use-waypoint: NAME` names a waypoint in the labelled object's namespace;
//!   `istio.io/use-waypoint-namespace: NS` on the same object moves the lookup to `NS`
//!   (the waypoint must then admit that namespace through its HBONE listener's
//!   `allowedRoutes.namespaces`: `Same` by default, `All`, or `Selector`).
//! - `istio.io/use-waypoint: none` opts out of a waypoint set at a wider scope. Istio
//!   reserves exactly `none` (a waypoint called `none` cannot be used). The spelling
//!   `#none` is not something Istio accepts, and Kubernetes would refuse it anyway: a label
//!   value must begin with a letter or digit, so such a manifest fails validation here.
//! - The most specific label wins, and is final: a label naming a waypoint that does not
//!   exist (or cannot be used) gives no waypoint; it does not fall back to the
//!   namespace's. Istio reports it ("waypoint is not ready"); so do we, and traffic goes
//!   straight to its destination instead of to a proxy that is not there.
//! - `istio.io/waypoint-for` on the Gateway says which traffic the waypoint takes:
//!   `service` (the default), `workload`, `all` or `none`. A Service uses a waypoint only
//!   if it takes service traffic, a workload only if it takes workload traffic.
//! - The waypoint's address is its Service's hostname (`NAME.NS.svc.<suffix>`: Istio
//!   deploys a Service named like the Gateway and publishes that hostname in the Gateway's
//!   `status.addresses`; istiod prefers the hostname over an IP, "hostnames are a more
//!   reliable lookup key"), with `hbone_mtls_port` 15008. Istio does not use a waypoint
//!   until that status exists; here, the manifests are the cluster, so a waypoint is in
//!   use once its Service is in them.
//! - A waypoint never gets a waypoint: not its pods (label
//!   `gateway.networking.k8s.io/gateway-name: NAME`, as Istio labels them; or
//!   `gateway.istio.io/managed: istio.io/mesh-controller`) nor its Service.
//!
//! Where we go beyond Istio: ServiceAccounts. Istio's `fetchWaypointForTarget` reads the
//! label only on the object itself and on its namespace (checked in its `waypoints.go`:
//! there is no ServiceAccount lookup). Our design also honours the label on a
//! ServiceAccount, for the workloads that run as it; it sits between the two, as the
//! scope sits: Pod over ServiceAccount over Namespace. A ServiceAccount label says
//! nothing about services.

use std::collections::BTreeMap;

use api::config::Gateway;
use api::workload::{GatewayAddress, NamespacedHostname, gateway_address};
use serde_json::Value;

use super::MeshOptions;
use super::labels::Labels;
use crate::manifest::{ConfigError, Parsed};
use crate::resource::{Kind, Resource};
use crate::store::Store;

pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// On the pods Istio deploys for a Gateway.
pub const GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";
/// On the objects Istio's waypoint controller creates.
pub const MANAGED: &str = "gateway.istio.io/managed";
pub const MANAGED_BY_MESH: &str = "istio.io/mesh-controller";
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The opt-out value of `istio.io/use-waypoint`.
pub const NONE: &str = "none";
/// The waypoint's listener: name, port and protocol.
pub const LISTENER_NAME: &str = "mesh";
pub const HBONE_PORT: u32 = 15008;
pub const HBONE_PROTOCOL: &str = "HBONE";

/// Which traffic a waypoint takes (`istio.io/waypoint-for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficType {
    Service,
    Workload,
    All,
    None,
}

impl TrafficType {
    /// The label's value; an unset label means `service`, as in Istio.
    pub fn parse(value: Option<&str>) -> Result<TrafficType, String> {
        match value {
            None | Some("service") => Ok(TrafficType::Service),
            Some("workload") => Ok(TrafficType::Workload),
            Some("all") => Ok(TrafficType::All),
            Some("none") => Ok(TrafficType::None),
            Some(other) => Err(format!(
                "{other:?} is not a traffic type: use service (the default), workload, all or none"
            )),
        }
    }

    pub fn takes(self, traffic: Traffic) -> bool {
        matches!(
            (self, traffic),
            (TrafficType::All, _)
                | (TrafficType::Service, Traffic::Service)
                | (TrafficType::Workload, Traffic::Workload)
        )
    }

    fn name(self) -> &'static str {
        match self {
            TrafficType::Service => "service",
            TrafficType::Workload => "workload",
            TrafficType::All => "all",
            TrafficType::None => "none",
        }
    }
}

/// The two kinds of traffic a waypoint may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Addressed to a service (its VIP or hostname).
    Service,
    /// Addressed to a workload (a pod's IP).
    Workload,
}

impl Traffic {
    fn name(self) -> &'static str {
        match self {
            Traffic::Service => "service",
            Traffic::Workload => "workload",
        }
    }
}

/// What the labels of one object say about waypoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseWaypoint {
    /// No `istio.io/use-waypoint`: a wider scope decides.
    Unset,
    /// `istio.io/use-waypoint: none`: no waypoint, whatever a wider scope says.
    OptOut,
    /// The waypoint `namespace/name`.
    Named { namespace: String, name: String },
}

impl UseWaypoint {
    /// Reads the labels of an object in `namespace` (for a Namespace: its own name).
    pub fn of(labels: &Labels, namespace: &str) -> UseWaypoint {
        match labels.get(USE_WAYPOINT).map(String::as_str) {
            None => UseWaypoint::Unset,
            Some(NONE) => UseWaypoint::OptOut,
            Some(name) => UseWaypoint::Named {
                namespace: labels
                    .get(USE_WAYPOINT_NAMESPACE)
                    .cloned()
                    .unwrap_or_else(|| namespace.to_owned()),
                name: name.to_owned(),
            },
        }
    }
}

/// Where a label sits, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pod,
    Service,
    ServiceAccount,
    Namespace,
}

/// The label that decides: the first set one, most specific scope first (for a
/// workload: Pod, ServiceAccount, Namespace; for a service: Service, Namespace).
pub fn deciding<'a>(scopes: &[(Scope, &'a UseWaypoint)]) -> Option<(Scope, &'a UseWaypoint)> {
    scopes
        .iter()
        .find(|(_, u)| **u != UseWaypoint::Unset)
        .copied()
}

/// Which namespaces may use a waypoint (its HBONE listener's
/// `allowedRoutes.namespaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedNamespaces {
    Same,
    All,
    Selector(NamespaceSelector),
}

/// A label selector on namespaces: `matchLabels` and `matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceSelector {
    pub match_labels: Labels,
    pub expressions: Vec<Expression>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl NamespaceSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    Operator::In => value.is_some_and(|v| e.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// `allowedRoutes` of a listener as written; the error names the field below it.
pub fn allowed_namespaces(
    allowed_routes: Option<&Value>,
) -> Result<AllowedNamespaces, (String, String)> {
    let Some(namespaces) = allowed_routes.and_then(|r| r.get("namespaces")) else {
        return Ok(AllowedNamespaces::Same);
    };
    let from = match namespaces.get("from") {
        None => "Same",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err((
                "namespaces.from".into(),
                format!("{other} is not one of Same, All, Selector"),
            ));
        }
    };
    match from {
        "Same" => Ok(AllowedNamespaces::Same),
        "All" => Ok(AllowedNamespaces::All),
        "Selector" => selector(namespaces.get("selector")).map(AllowedNamespaces::Selector),
        other => Err((
            "namespaces.from".into(),
            format!("{other:?} is not one of Same, All, Selector"),
        )),
    }
}

fn selector(value: Option<&Value>) -> Result<NamespaceSelector, (String, String)> {
    let field = |f: &str| format!("namespaces.selector{f}");
    let Some(Value::Object(selector)) = value else {
        return Err((field(""), "required when from is Selector".into()));
    };
    let mut out = NamespaceSelector::default();
    for (key, v) in selector {
        match key.as_str() {
            "matchLabels" => {
                let Value::Object(labels) = v else {
                    return Err((field(".matchLabels"), "must be a map of labels".into()));
                };
                for (k, v) in labels {
                    let Value::String(v) = v else {
                        return Err((
                            field(&format!(".matchLabels.{k}")),
                            "must be a string".into(),
                        ));
                    };
                    out.match_labels.insert(k.clone(), v.clone());
                }
            }
            "matchExpressions" => {
                let Value::Array(list) = v else {
                    return Err((field(".matchExpressions"), "must be a list".into()));
                };
                for (i, e) in list.iter().enumerate() {
                    out.expressions.push(
                        expression(e)
                            .map_err(|(f, m)| (field(&format!(".matchExpressions[{i}]{f}")), m))?,
                    );
                }
            }
            other => {
                return Err((field(&format!(".{other}")), "unknown field".into()));
            }
        }
    }
    Ok(out)
}

fn expression(e: &Value) -> Result<Expression, (String, String)> {
    let text = |name: &str| match e.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err((format!(".{name}"), "required (a string)".to_owned())),
    };
    let key = text("key")?;
    let operator = match text("operator")?.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err((
                ".operator".into(),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ));
        }
    };
    let values: Vec<String> = match e.get("values") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| (".values".to_owned(), "must be a list of strings".to_owned()))?,
        Some(_) => return Err((".values".into(), "must be a list of strings".into())),
    };
    let needs_values = matches!(operator, Operator::In | Operator::NotIn);
    if needs_values == values.is_empty() {
        let why = if needs_values {
            "required for In and NotIn"
        } else {
            "must be empty for Exists and DoesNotExist"
        };
        return Err((".values".into(), why.into()));
    }
    Ok(Expression {
        key,
        operator,
        values,
    })
}

/// Whether `gateway` declares a waypoint.
pub fn is_waypoint(gateway: &Gateway) -> bool {
    gateway.spec.gateway_class_name == WAYPOINT_CLASS
}

/// What a waypoint Gateway must satisfy beyond the Gateway schema: a listener `mesh` on
/// port 15008 with protocol HBONE, a valid `istio.io/waypoint-for` and readable
/// `allowedRoutes` on that listener. (field, message) pairs; empty for other Gateways.
pub fn gateway_problems(gateway: &Gateway) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !is_waypoint(gateway) {
        return out;
    }
    let labels = gateway.metadata.labels.as_ref();
    if let Err(e) = TrafficType::parse(labels.and_then(|l| l.get(WAYPOINT_FOR)).map(|s| s.as_str()))
    {
        out.push((format!("metadata.labels.{WAYPOINT_FOR}"), e));
    }
    let listeners = &gateway.spec.listeners;
    let wanted = format!(
        "a waypoint ({WAYPOINT_CLASS}) needs a listener named {LISTENER_NAME:?} on port {HBONE_PORT} with protocol {HBONE_PROTOCOL}"
    );
    match listeners.iter().position(|l| l.name == LISTENER_NAME) {
        Some(i) => {
            let l = &listeners[i];
            if u32::try_from(l.port).ok() != Some(HBONE_PORT) {
                out.push((
                    format!("spec.listeners[{i}].port"),
                    format!("{} is not {HBONE_PORT}: {wanted}", l.port),
                ));
            }
            if l.protocol != HBONE_PROTOCOL {
                out.push((
                    format!("spec.listeners[{i}].protocol"),
                    format!("{:?} is not {HBONE_PROTOCOL}: {wanted}", l.protocol),
                ));
            }
            if let Err((field, message)) = allowed_namespaces(l.allowed_routes.as_ref()) {
                out.push((
                    format!("spec.listeners[{i}].allowedRoutes.{field}"),
                    message,
                ));
            }
        }
        None => match listeners.iter().position(|l| {
            u32::try_from(l.port).ok() == Some(HBONE_PORT) && l.protocol == HBONE_PROTOCOL
        }) {
            Some(i) => out.push((
                format!("spec.listeners[{i}].name"),
                format!("{:?} is not {LISTENER_NAME:?}: {wanted}", listeners[i].name),
            )),
            None => out.push(("spec.listeners".into(), wanted)),
        },
    }
    out
}

/// One declared waypoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Waypoint {
    pub namespace: String,
    pub name: String,
    pub traffic: TrafficType,
    pub allowed: AllowedNamespaces,
    /// `None` while the waypoint's Service is not in the manifests: not usable yet.
    pub address: Option<GatewayAddress>,
}

impl Waypoint {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether objects in `namespace` (with `labels`) may use this waypoint.
    pub fn admits(&self, namespace: &str, labels: &Labels) -> bool {
        match &self.allowed {
            AllowedNamespaces::Same => namespace == self.namespace,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(s) => s.matches(labels),
        }
    }
}

/// Every waypoint in the store, by `(namespace, name)`, plus what a workload's or a
/// service's waypoint lookup reads.
#[derive(Debug, Default)]
pub struct Waypoints {
    waypoints: BTreeMap<(String, String), Waypoint>,
}

impl Waypoints {
    pub fn new(store: &Store, options: &MeshOptions) -> Self {
        let mut waypoints = BTreeMap::new();
        for parsed in store.of_kind(Kind::Gateway) {
            let Resource::Gateway(gateway) = parsed.resource.as_ref() else {
                continue;
            };
            if !is_waypoint(gateway) {
                continue;
            }
            // Invalid waypoints are rejected by validation; this only reads valid ones.
            let labels = gateway.metadata.labels.as_ref();
            let traffic =
                TrafficType::parse(labels.and_then(|l| l.get(WAYPOINT_FOR)).map(|s| s.as_str()))
                    .unwrap_or(TrafficType::None);
            let allowed = gateway
                .spec
                .listeners
                .iter()
                .find(|l| l.name == LISTENER_NAME)
                .and_then(|l| allowed_namespaces(l.allowed_routes.as_ref()).ok())
                .unwrap_or(AllowedNamespaces::Same);
            let namespace = parsed
                .key
                .namespace
                .as_deref()
                .unwrap_or_default()
                .to_owned();
            let name = parsed.key.name.to_string();
            let service_key =
                crate::resource::ResourceKey::new(Kind::Service, Some(&namespace), &name);
            let address = store.get(&service_key).map(|_| GatewayAddress {
                destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
                    namespace: namespace.clone(),
                    hostname: format!("{name}.{namespace}.svc.{}", options.domain_suffix),
                })),
                hbone_mtls_port: HBONE_PORT,
            });
            waypoints.insert(
                (namespace.clone(), name.clone()),
                Waypoint {
                    namespace,
                    name,
                    traffic,
                    allowed,
                    address,
                },
            );
        }
        Waypoints { waypoints }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Waypoint> {
        self.waypoints.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Whether the pod with `labels` in `namespace` is one of a waypoint's own.
    pub fn is_instance(&self, namespace: &str, labels: &Labels) -> bool {
        labels.get(MANAGED).map(String::as_str) == Some(MANAGED_BY_MESH)
            || labels
                .get(GATEWAY_NAME)
                .is_some_and(|name| self.get(namespace, name).is_some())
    }

    /// Whether the Service `namespace/name` (with `labels`) is a waypoint's own.
    pub fn is_own_service(&self, namespace: &str, name: &str, labels: &Labels) -> bool {
        labels.get(MANAGED).map(String::as_str) == Some(MANAGED_BY_MESH)
            || self.get(namespace, name).is_some()
    }

    /// The waypoint `label` names for `traffic` from an object in `namespace` (whose
    /// Namespace has `namespace_labels`), or why there is none.
    pub fn resolve(
        &self,
        label: &UseWaypoint,
        traffic: Traffic,
        namespace: &str,
        namespace_labels: &Labels,
    ) -> Result<Option<&GatewayAddress>, String> {
        let UseWaypoint::Named {
            namespace: wns,
            name,
        } = label
        else {
            return Ok(None);
        };
        let Some(w) = self.get(wns, name) else {
            return Err(format!(
                "there is no waypoint {wns}/{name} (a Gateway with gatewayClassName {WAYPOINT_CLASS}), so none is used"
            ));
        };
        if !w.admits(namespace, namespace_labels) {
            return Err(format!(
                "waypoint {} does not admit namespace {namespace} (its {LISTENER_NAME:?} listener's allowedRoutes.namespaces), so none is used",
                w.key()
            ));
        }
        if !w.traffic.takes(traffic) {
            return Err(format!(
                "waypoint {} takes {} traffic ({WAYPOINT_FOR}), not {} traffic, so none is used",
                w.key(),
                w.traffic.name(),
                traffic.name()
            ));
        }
        match &w.address {
            Some(address) => Ok(Some(address)),
            None => Err(format!(
                "waypoint {} has no Service {} yet (Istio fronts each waypoint with a Service named like its Gateway), so none is used",
                w.key(),
                w.key()
            )),
        }
    }

    /// The waypoint the deciding label of `scopes` gives for `traffic`; `None` when no
    /// label is set, on opt-out, and when the label cannot be honoured (no fallback to a
    /// wider scope, as in Istio).
    pub fn pick(
        &self,
        scopes: &[(Scope, &UseWaypoint)],
        traffic: Traffic,
        namespace: &str,
        namespace_labels: &Labels,
    ) -> Option<GatewayAddress> {
        let (_, label) = deciding(scopes)?;
        self.resolve(label, traffic, namespace, namespace_labels)
            .ok()
            .flatten()
            .cloned()
    }
}

/// Reports a label that cannot be honoured, on the object that carries it.
pub fn report(parsed: &Parsed, message: String, problems: &mut Vec<ConfigError>) {
    problems.push(ConfigError {
        file: parsed.origin.file.to_path_buf(),
        document: Some(parsed.origin.document),
        object: Some(parsed.key.to_string()),
        field: Some(format!("metadata.labels.{USE_WAYPOINT}")),
        message,
    });
}

/// The problems of labels on Namespaces and ServiceAccounts (reported once for the
/// object, not for each workload it covers). A Namespace's label is reported when it
/// cannot serve any traffic from there; a ServiceAccount's when it cannot serve
/// workload traffic (all a ServiceAccount label is about).
pub fn scope_problems(
    store: &Store,
    waypoints: &Waypoints,
    namespace_labels: impl Fn(&str) -> Labels,
    problems: &mut Vec<ConfigError>,
) {
    for parsed in store.of_kind(Kind::Namespace) {
        let Some(labels) = parsed.resource.labels() else {
            continue;
        };
        let ns = &*parsed.key.name;
        let label = UseWaypoint::of(labels, ns);
        let service = waypoints.resolve(&label, Traffic::Service, ns, labels);
        let workload = waypoints.resolve(&label, Traffic::Workload, ns, labels);
        // A namespace's label serves both kinds of traffic: a problem only when
        // neither can use it. Say why for the traffic the waypoint takes.
        let (Err(service), Err(workload)) = (service, workload) else {
            continue;
        };
        let waypoint = match &label {
            UseWaypoint::Named { namespace, name } => waypoints.get(namespace, name),
            _ => None,
        };
        let message = match waypoint {
            Some(w) if w.traffic == TrafficType::None => format!(
                "waypoint {} takes no traffic ({WAYPOINT_FOR}: none), so none is used",
                w.key()
            ),
            Some(w) if w.traffic.takes(Traffic::Workload) => workload,
            _ => service,
        };
        report(parsed, message, problems);
    }
    for parsed in store.of_kind(Kind::ServiceAccount) {
        let Some(labels) = parsed.resource.labels() else {
            continue;
        };
        let ns = parsed.key.namespace.as_deref().unwrap_or_default();
        let label = UseWaypoint::of(labels, ns);
        if let Err(e) = waypoints.resolve(&label, Traffic::Workload, ns, &namespace_labels(ns)) {
            report(parsed, e, problems);
        }
    }
}
