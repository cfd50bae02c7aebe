//! The waypoint's own xDS type (`mesh.waypoint.v1.L7Resource`) on the shared delta ADS
//! stream: each resource is decoded into the typed Istio object it carries and validated
//! again (a controller of another version must not slip an object past our rules). A
//! response with an undecodable or invalid object is NACKed as a whole and the last good
//! set stays; every accepted set is handed to `on_change` (the config builder).

use std::collections::BTreeMap;
use std::sync::Arc;

use api::config::{
    AuthorizationPolicy, DestinationRule, RequestAuthentication, Resource, VirtualService,
};
use api::prost::Message;
use api::prost_types::Any;
use api::waypoint::L7Resource;
use api::xds::DeltaDiscoveryResponse;
use dataplane::xds::ExtraType;
use dataplane::xds::convert::ConvertError;
use dataplane::xds::resources::TypedResources;

/// One L7 object, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum L7Object {
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    RequestAuthentication(Box<RequestAuthentication>),
}

/// Every L7 object held, by xDS name (`KIND/NAMESPACE/NAME`).
pub type L7Objects = BTreeMap<String, Arc<L7Object>>;

const KIND: &str = "L7Resource";

/// Decodes and validates the L7Resource `name`.
pub fn decode(name: &str, body: Option<&Any>) -> Result<L7Object, ConvertError> {
    let field = |field: &str, problem: String| ConvertError::Field {
        kind: KIND,
        name: name.to_owned(),
        field: field.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(ConvertError::Unnamed { kind: KIND });
    }
    let Some(any) = body else {
        return Err(ConvertError::NoBody {
            kind: KIND,
            name: name.to_owned(),
        });
    };
    if any.type_url != api::L7_RESOURCE_TYPE_URL {
        return Err(ConvertError::WrongType {
            kind: KIND,
            name: name.to_owned(),
            type_url: any.type_url.clone(),
        });
    }
    let resource = L7Resource::decode(any.value.as_slice()).map_err(|e| ConvertError::Decode {
        kind: KIND,
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    fn typed<T: Resource>(json: &[u8]) -> Result<T, String> {
        let object: T = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let problems = object.validate();
        if problems.is_empty() {
            Ok(object)
        } else {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Err(problems.join("; "))
        }
    }
    let json = &resource.json;
    let object = match resource.kind.as_str() {
        "VirtualService" => typed(json).map(|o| L7Object::VirtualService(Box::new(o))),
        "DestinationRule" => typed(json).map(|o| L7Object::DestinationRule(Box::new(o))),
        "AuthorizationPolicy" => typed(json).map(|o| L7Object::AuthorizationPolicy(Box::new(o))),
        "RequestAuthentication" => {
            typed(json).map(|o| L7Object::RequestAuthentication(Box::new(o)))
        }
        other => return Err(field("kind", format!("unknown kind {other:?}"))),
    };
    object.map_err(|e| field("json", format!("{} is not valid: {e}", resource.kind)))
}

/// The [`ExtraType`] the waypoint adds to the xDS client.
pub struct L7Subscription {
    held: TypedResources<L7Object>,
    on_change: Box<dyn Fn(L7Objects) + Send>,
}

impl std::fmt::Debug for L7Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L7Subscription")
            .field("held", &self.held.len())
            .finish()
    }
}

impl L7Subscription {
    /// `on_change` gets the whole accepted set after every accepted response.
    pub fn new(on_change: impl Fn(L7Objects) + Send + 'static) -> Self {
        L7Subscription {
            held: TypedResources::default(),
            on_change: Box::new(on_change),
        }
    }
}

impl ExtraType for L7Subscription {
    fn type_url(&self) -> &'static str {
        api::L7_RESOURCE_TYPE_URL
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.held.versions()
    }

    fn count(&self) -> usize {
        self.held.len()
    }

    fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Result<(usize, usize), String> {
        let counts = self
            .held
            .apply(response, decode)
            .map_err(|e| e.to_string())?;
        let objects = self
            .held
            .values()
            .map(|(name, object)| (name.to_owned(), object.clone()))
            .collect();
        (self.on_change)(objects);
        Ok(counts)
    }
}

#[cfg(test)]
mod tests;
