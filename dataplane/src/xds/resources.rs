//! The resources the client holds, by type and name, and how one delta response moves
//! them (and the state built from them) forward: all of the response or none of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::prost_types::Any;
use api::xds::DeltaDiscoveryResponse;

use super::convert::{self, AddressResource, ConvertError};
use crate::rbac::Policy;
use crate::state::{StateError, WorkloadState};

/// Why a response was refused (NACKed). The previous resources and state stay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("type {0:?} was not subscribed to")]
    UnknownType(String),
    #[error("{}", join(.0))]
    Invalid(Vec<ConvertError>),
    #[error("the update would leave an inconsistent state: {0}")]
    Inconsistent(#[from] StateError),
}

fn join(errors: &[ConvertError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One resource as last accepted. Values are shared so that trying a response on a copy
/// of the maps costs no deep clone.
#[derive(Debug)]
struct Held<T> {
    version: String,
    value: Arc<T>,
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        Held {
            version: self.version.clone(),
            value: self.value.clone(),
        }
    }
}

type ByName<T> = BTreeMap<String, Held<T>>;

/// What an accepted response changed, and the state to serve from now on.
#[derive(Debug)]
pub struct Applied {
    pub state: WorkloadState,
    pub updated: usize,
    pub removed: usize,
}

/// Every accepted resource of both subscribed types.
#[derive(Debug, Default)]
pub struct Resources {
    addresses: ByName<AddressResource>,
    policies: ByName<Policy>,
}

impl Resources {
    /// `name -> version` of what is held for `type_url`, for `initial_resource_versions`
    /// on a reconnect.
    pub fn versions(&self, type_url: &str) -> BTreeMap<String, String> {
        fn of<T>(map: &ByName<T>) -> BTreeMap<String, String> {
            map.iter()
                .map(|(name, held)| (name.clone(), held.version.clone()))
                .collect()
        }
        match type_url {
            api::ADDRESS_TYPE_URL => of(&self.addresses),
            api::AUTHORIZATION_TYPE_URL => of(&self.policies),
            _ => BTreeMap::new(),
        }
    }

    /// How many resources of `type_url` are held.
    pub fn count(&self, type_url: &str) -> usize {
        match type_url {
            api::ADDRESS_TYPE_URL => self.addresses.len(),
            api::AUTHORIZATION_TYPE_URL => self.policies.len(),
            _ => 0,
        }
    }

    /// Applies `response` to a copy of its type's resources, converts everything and
    /// rebuilds the whole state. Only if all of that succeeds is the copy kept.
    pub fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Result<Applied, Rejected> {
        match response.type_url.as_str() {
            api::ADDRESS_TYPE_URL => {
                let mut next = self.addresses.clone();
                let (updated, removed) = merge(&mut next, response, convert::address)?;
                let state = build(&next, &self.policies)?;
                self.addresses = next;
                Ok(Applied {
                    state,
                    updated,
                    removed,
                })
            }
            api::AUTHORIZATION_TYPE_URL => {
                let mut next = self.policies.clone();
                let (updated, removed) = merge(&mut next, response, convert::authorization)?;
                let state = build(&self.addresses, &next)?;
                self.policies = next;
                Ok(Applied {
                    state,
                    updated,
                    removed,
                })
            }
            other => Err(Rejected::UnknownType(other.to_owned())),
        }
    }
}

/// The resources of one more type a proxy subscribes to besides the workload API (the
/// waypoint's L7 config), held by name with their versions.
#[derive(Debug)]
pub struct TypedResources<T> {
    held: ByName<T>,
}

impl<T> Default for TypedResources<T> {
    fn default() -> Self {
        TypedResources {
            held: ByName::new(),
        }
    }
}

impl<T> TypedResources<T> {
    /// `name -> version`, for `initial_resource_versions` on a reconnect.
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.held
            .iter()
            .map(|(name, held)| (name.clone(), held.version.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Every resource held, by name.
    pub fn values(&self) -> impl Iterator<Item = (&str, &Arc<T>)> {
        self.held.iter().map(|(name, h)| (name.as_str(), &h.value))
    }

    /// Applies `response` (every resource converted by `convert`, or none of them) and
    /// returns `(updated, removed)`. On an error nothing changes.
    pub fn apply(
        &mut self,
        response: &DeltaDiscoveryResponse,
        convert: impl Fn(&str, Option<&Any>) -> Result<T, ConvertError>,
    ) -> Result<(usize, usize), Rejected> {
        let mut next = self.held.clone();
        let counts = merge(&mut next, response, convert)?;
        self.held = next;
        Ok(counts)
    }
}

/// Adds or replaces every resource of `response`, then drops the removed names (unknown
/// names are ignored). Returns `(updated, removed)`; every invalid resource is reported.
fn merge<T>(
    held: &mut ByName<T>,
    response: &DeltaDiscoveryResponse,
    convert: impl Fn(&str, Option<&Any>) -> Result<T, ConvertError>,
) -> Result<(usize, usize), Rejected> {
    let mut errors = Vec::new();
    for resource in &response.resources {
        let name = match (&resource.name, &resource.resource_name) {
            (name, Some(rn)) if name.is_empty() => &rn.name,
            (name, _) => name,
        };
        match convert(name, resource.resource.as_ref()) {
            Ok(value) => {
                let version = resource.version.clone();
                let value = Arc::new(value);
                held.insert(name.clone(), Held { version, value });
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Rejected::Invalid(errors));
    }
    let removed = response
        .removed_resources
        .iter()
        .chain(response.removed_resource_names.iter().map(|rn| &rn.name))
        .filter(|name| held.remove(name.as_str()).is_some())
        .count();
    Ok((response.resources.len(), removed))
}

fn build(
    addresses: &ByName<AddressResource>,
    policies: &ByName<Policy>,
) -> Result<WorkloadState, StateError> {
    let mut workloads = Vec::new();
    let mut services = Vec::new();
    for held in addresses.values() {
        match held.value.as_ref() {
            AddressResource::Workload(w) => workloads.push(w.as_ref().clone()),
            AddressResource::Service(s) => services.push(s.clone()),
        }
    }
    let policies = policies
        .values()
        .map(|h| h.value.as_ref().clone())
        .collect();
    WorkloadState::with_policies(workloads, services, policies)
}
