//! Which policies a waypoint enforces: those whose `targetRefs` name it.
//!
//! Rules implemented (Istio ambient, policy attachment):
//! - `kind: Gateway` (group `gateway.networking.k8s.io`) named like the waypoint, with the
//!   policy in the waypoint's namespace: applies to every request through the waypoint.
//! - `kind: Service` (core group, written `""`) named like the request's destination
//!   service, with the policy in that service's namespace: applies to requests to that
//!   service only (never to workload-addressed traffic, which has no service).
//! - `kind: GatewayClass` (group `gateway.networking.k8s.io`) named `istio-waypoint`, with
//!   the policy in the root namespace: applies to every waypoint of that class.
//! - Anything else (`ServiceEntry`, other groups or kinds, a `namespace` other than the
//!   policy's) never applies here. A policy with a `selector`, or with neither selector
//!   nor target references (namespace- or mesh-wide), is enforced by ztunnel or
//!   sidecars, not by waypoints, so it does not apply either.

use api::config::selector::PolicyTargetReference;

use crate::context::Destination;

/// Gateway API group of `Gateway` and `GatewayClass`.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The `GatewayClass` of Istio waypoints.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";
/// Istio's default root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The waypoint's own identity as a policy target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Namespace of the waypoint's `Gateway`.
    pub waypoint_namespace: String,
    /// Name of the waypoint's `Gateway`.
    pub waypoint_name: String,
    /// The mesh root namespace (`istio-system` unless configured otherwise).
    pub root_namespace: String,
}

/// One compiled target reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `Gateway` by name.
    Gateway(String),
    /// A core `Service` by name.
    Service(String),
    /// A `GatewayClass` by name.
    GatewayClass(String),
    /// A kind waypoints do not bind to (e.g. `ServiceEntry`), or a reference to another
    /// namespace.
    Unsupported,
}

/// Where a policy attaches: its namespace and its target references.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// The policy's namespace.
    pub namespace: String,
    /// `targetRef` and `targetRefs`, compiled. Empty: a selector or namespace-wide
    /// policy, which waypoints do not enforce.
    pub refs: Vec<Target>,
}

impl Targets {
    /// Compiles a policy's `targetRef` / `targetRefs`.
    pub fn new(
        namespace: &str,
        target_ref: Option<&PolicyTargetReference>,
        target_refs: &[PolicyTargetReference],
    ) -> Self {
        let refs = target_ref
            .into_iter()
            .chain(target_refs)
            .map(|r| Target::of(namespace, r))
            .collect();
        Targets {
            namespace: namespace.to_owned(),
            refs,
        }
    }
}

impl Target {
    fn of(namespace: &str, r: &PolicyTargetReference) -> Self {
        if !r.namespace.is_empty() && r.namespace != namespace {
            return Target::Unsupported;
        }
        match (r.group.as_str(), r.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => Target::Gateway(r.name.clone()),
            (GATEWAY_GROUP, "GatewayClass") => Target::GatewayClass(r.name.clone()),
            ("" | "core", "Service") => Target::Service(r.name.clone()),
            _ => Target::Unsupported,
        }
    }
}

impl Binding {
    /// A binding for the waypoint `namespace/name` with the default root namespace.
    pub fn new(waypoint_namespace: &str, waypoint_name: &str) -> Self {
        Binding {
            waypoint_namespace: waypoint_namespace.to_owned(),
            waypoint_name: waypoint_name.to_owned(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
        }
    }

    /// Whether a policy attached to `targets` applies to a request to `dest` through
    /// this waypoint (see the module docs for the rules).
    pub fn applies(&self, targets: &Targets, dest: &Destination) -> bool {
        targets.refs.iter().any(|target| match target {
            Target::Gateway(name) => {
                targets.namespace == self.waypoint_namespace && *name == self.waypoint_name
            }
            Target::Service(name) => dest
                .service
                .as_ref()
                .is_some_and(|svc| svc.namespace == targets.namespace && svc.name == *name),
            Target::GatewayClass(name) => {
                targets.namespace == self.root_namespace && name == WAYPOINT_GATEWAY_CLASS
            }
            Target::Unsupported => false,
        })
    }
}
