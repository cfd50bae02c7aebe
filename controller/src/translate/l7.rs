//! The objects waypoints apply, as `mesh.waypoint.v1.L7Resource`s: every VirtualService
//! and DestinationRule, the AuthorizationPolicies bound by `targetRefs` (those ztunnel
//! leaves to waypoints) and every RequestAuthentication. Each travels as the validated
//! object's JSON (`metadata` + `spec`); the waypoint decides which ones bind to it, as
//! an Envoy waypoint's xDS would only carry those. ztunnel never subscribes to the type.

use api::waypoint::L7Resource;
use serde::Serialize;

use crate::resource::{Kind, Resource};
use crate::store::Store;

/// The kinds sent, in the order their resources are listed.
const KINDS: [Kind; 4] = [
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::AuthorizationPolicy,
    Kind::RequestAuthentication,
];

/// Every L7 resource with its xDS name, `KIND/NAMESPACE/NAME`.
pub fn resources(store: &Store) -> Vec<(String, L7Resource)> {
    let mut out = Vec::new();
    for kind in KINDS {
        for parsed in store.of_kind(kind) {
            let json = match parsed.resource.as_ref() {
                Resource::VirtualService(o) => object_json(&o.metadata, &o.spec),
                Resource::DestinationRule(o) => object_json(&o.metadata, &o.spec),
                Resource::AuthorizationPolicy(o)
                    if o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty() =>
                {
                    object_json(&o.metadata, &o.spec)
                }
                Resource::RequestAuthentication(o) => object_json(&o.metadata, &o.spec),
                _ => continue,
            };
            let namespace = parsed.key.namespace.as_deref().unwrap_or_default();
            let kind = kind.name();
            let name = format!("{kind}/{namespace}/{}", parsed.key.name);
            out.push((
                name,
                L7Resource {
                    kind: kind.to_owned(),
                    namespace: namespace.to_owned(),
                    name: parsed.key.name.to_string(),
                    json,
                },
            ));
        }
    }
    out
}

fn object_json(metadata: &api::config::ObjectMeta, spec: &impl Serialize) -> Vec<u8> {
    #[derive(Serialize)]
    struct Object<'a, S> {
        metadata: &'a api::config::ObjectMeta,
        spec: &'a S,
    }
    // Serializing these plain data types cannot fail.
    serde_json::to_vec(&Object { metadata, spec }).unwrap_or_default()
}
