//! From the xDS resources (`istio.workload.Address`, `istio.security.Authorization`) to
//! ztunnel's own types. Everything is validated here, so a malformed resource is refused
//! with the resource's name and the offending field before it can reach the state.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use api::prost::Message;
use api::prost_types::Any;
use api::security::string_match::MatchType;
use api::workload::gateway_address;
use api::{security as sec, workload as wl};
use hbone::{DEFAULT_TRUST_DOMAIN, Identity};

use crate::rbac::{Action, Cidr, Match, Policy, Scope, ServiceAccountMatch, StringMatch};
use crate::state::{
    PortMap, Service, ServiceKey, TunnelProtocol, Waypoint, WaypointAddress, Workload,
};

/// Why one resource was refused. Messages name the resource type, its xDS name and the
/// field, so a NACK tells the control plane's operator exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{kind} resource without a name")]
    Unnamed { kind: &'static str },
    #[error("{kind} {name:?}: the resource has no body")]
    NoBody { kind: &'static str, name: String },
    #[error("{kind} {name:?}: carries a {type_url:?} where a {kind} was expected")]
    WrongType {
        kind: &'static str,
        name: String,
        type_url: String,
    },
    #[error("{kind} {name:?}: cannot decode: {reason}")]
    Decode {
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("{kind} {name:?}: {field}: {problem}")]
    Field {
        kind: &'static str,
        name: String,
        field: String,
        problem: String,
    },
}

/// A decoded `istio.workload.Address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressResource {
    Workload(Box<Workload>),
    Service(Service),
}

/// A field-level problem, before it is attributed to a resource.
struct Fault {
    field: String,
    problem: String,
}

fn fault(field: impl Into<String>, problem: impl Into<String>) -> Fault {
    Fault {
        field: field.into(),
        problem: problem.into(),
    }
}

const ADDRESS: &str = "Address";
const AUTHORIZATION: &str = "Authorization";

fn decode<T: Message + Default>(
    kind: &'static str,
    type_url: &str,
    name: &str,
    body: Option<&Any>,
) -> Result<T, ConvertError> {
    if name.is_empty() {
        return Err(ConvertError::Unnamed { kind });
    }
    let Some(any) = body else {
        return Err(ConvertError::NoBody {
            kind,
            name: name.to_owned(),
        });
    };
    if any.type_url != type_url {
        return Err(ConvertError::WrongType {
            kind,
            name: name.to_owned(),
            type_url: any.type_url.clone(),
        });
    }
    T::decode(any.value.as_slice()).map_err(|e| ConvertError::Decode {
        kind,
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

fn attribute(kind: &'static str, name: &str) -> impl FnOnce(Fault) -> ConvertError {
    move |f| ConvertError::Field {
        kind,
        name: name.to_owned(),
        field: f.field,
        problem: f.problem,
    }
}

/// Decodes and validates the Address resource `name`.
pub fn address(name: &str, body: Option<&Any>) -> Result<AddressResource, ConvertError> {
    let address: wl::Address = decode(ADDRESS, api::ADDRESS_TYPE_URL, name, body)?;
    match address.r#type {
        Some(wl::address::Type::Workload(w)) => {
            workload(name, w).map(|w| AddressResource::Workload(Box::new(w)))
        }
        Some(wl::address::Type::Service(s)) => service(name, s).map(AddressResource::Service),
        None => Err(attribute(ADDRESS, name)(fault(
            "type",
            "neither a workload nor a service",
        ))),
    }
}

/// Decodes and validates the Authorization resource `name`.
pub fn authorization(name: &str, body: Option<&Any>) -> Result<Policy, ConvertError> {
    let resource: sec::Authorization =
        decode(AUTHORIZATION, api::AUTHORIZATION_TYPE_URL, name, body)?;
    policy(name, resource)
}

pub fn workload(name: &str, w: wl::Workload) -> Result<Workload, ConvertError> {
    convert_workload(w).map_err(attribute(ADDRESS, name))
}

pub fn service(name: &str, s: wl::Service) -> Result<Service, ConvertError> {
    convert_service(s).map_err(attribute(ADDRESS, name))
}

pub fn policy(name: &str, a: sec::Authorization) -> Result<Policy, ConvertError> {
    convert_policy(a).map_err(attribute(AUTHORIZATION, name))
}

fn required(field: &str, value: String) -> Result<String, Fault> {
    if value.is_empty() {
        Err(fault(field, "is empty"))
    } else {
        Ok(value)
    }
}

fn non_empty_or(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value
    }
}

fn convert_workload(w: wl::Workload) -> Result<Workload, Fault> {
    let uid = required("uid", w.uid)?;
    let name = required("name", w.name)?;
    let addresses = w
        .addresses
        .iter()
        .enumerate()
        .map(|(i, bytes)| ip(bytes).map_err(|p| fault(format!("addresses[{i}]"), p)))
        .collect::<Result<Vec<_>, _>>()?;
    let protocol = match wl::TunnelProtocol::try_from(w.tunnel_protocol) {
        Ok(wl::TunnelProtocol::None) => TunnelProtocol::None,
        Ok(wl::TunnelProtocol::Hbone) => TunnelProtocol::Hbone,
        Err(_) => return Err(unknown_enum("tunnel_protocol", w.tunnel_protocol)),
    };
    let healthy = match wl::WorkloadStatus::try_from(w.status) {
        Ok(wl::WorkloadStatus::Healthy) => true,
        Ok(wl::WorkloadStatus::Unhealthy) => false,
        Err(_) => return Err(unknown_enum("status", w.status)),
    };
    let trust_domain = non_empty_or(w.trust_domain, DEFAULT_TRUST_DOMAIN);
    let service_account = non_empty_or(w.service_account, "default");
    let identity = Identity::new(&trust_domain, &w.namespace, &service_account)
        .map_err(|e| fault("trust_domain/namespace/service_account", e.to_string()))?;
    let services = w
        .services
        .into_iter()
        .map(|(key, list)| {
            let field = format!("services[{key:?}]");
            let parsed = ServiceKey::parse(&key)
                .ok_or_else(|| fault(field.as_str(), "the key is not \"namespace/hostname\""))?;
            Ok((parsed, port_map(&field, &list.ports)?))
        })
        .collect::<Result<BTreeMap<_, _>, Fault>>()?;
    Ok(Workload {
        canonical_name: non_empty_or(w.canonical_name, &name),
        canonical_revision: non_empty_or(w.canonical_revision, "latest"),
        workload_name: non_empty_or(w.workload_name, &name),
        uid,
        name,
        namespace: w.namespace,
        service_account,
        trust_domain,
        node: w.node,
        addresses,
        protocol,
        services,
        healthy,
        authorization_policies: w.authorization_policies,
        identity,
        waypoint: waypoint(w.waypoint)?,
        labels: Arc::new(w.labels),
    })
}

fn convert_service(s: wl::Service) -> Result<Service, Fault> {
    let name = required("name", s.name)?;
    let namespace = required("namespace", s.namespace)?;
    let hostname = required("hostname", s.hostname)?;
    let vips = s
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| ip(&a.address).map_err(|p| fault(format!("addresses[{i}].address"), p)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Service {
        name,
        namespace,
        hostname,
        vips,
        ports: port_map("", &s.ports)?,
        waypoint: waypoint(s.waypoint)?,
    })
}

/// The `waypoint` field: a service hostname or an address, and the HBONE port.
fn waypoint(address: Option<wl::GatewayAddress>) -> Result<Option<Waypoint>, Fault> {
    let Some(address) = address else {
        return Ok(None);
    };
    let hbone_port = u16::try_from(address.hbone_mtls_port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| {
            fault(
                "waypoint.hbone_mtls_port",
                format!("{} is not a port", address.hbone_mtls_port),
            )
        })?;
    let address = match address.destination {
        Some(gateway_address::Destination::Hostname(h)) => {
            if h.namespace.is_empty() || h.hostname.is_empty() || h.hostname.contains('/') {
                return Err(fault(
                    "waypoint.hostname",
                    "needs a namespace and a hostname without '/'",
                ));
            }
            WaypointAddress::Service(ServiceKey {
                namespace: h.namespace,
                hostname: h.hostname,
            })
        }
        Some(gateway_address::Destination::Address(a)) => {
            WaypointAddress::Ip(ip(&a.address).map_err(|p| fault("waypoint.address.address", p))?)
        }
        None => return Err(fault("waypoint", "neither a hostname nor an address")),
    };
    Ok(Some(Waypoint {
        address,
        hbone_port,
    }))
}

fn ip(bytes: &[u8]) -> Result<IpAddr, String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(Ipv4Addr::from(v4).into())
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(Ipv6Addr::from(v6).into())
    } else {
        Err(format!(
            "{} bytes is neither an IPv4 (4 bytes) nor an IPv6 (16 bytes) address",
            bytes.len()
        ))
    }
}

fn unknown_enum(field: &str, value: i32) -> Fault {
    fault(field, format!("unknown value {value}"))
}

/// `prefix` is the path to the port list's owner ("" for a service's own ports).
fn port_map(prefix: &str, ports: &[wl::Port]) -> Result<PortMap, Fault> {
    let mut map = PortMap::new();
    for (i, p) in ports.iter().enumerate() {
        let field = || {
            if prefix.is_empty() {
                format!("ports[{i}]")
            } else {
                format!("{prefix}.ports[{i}]")
            }
        };
        let service_port = u16::try_from(p.service_port)
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| {
                fault(
                    field(),
                    format!("service port {} is not a port", p.service_port),
                )
            })?;
        let target_port = u16::try_from(p.target_port).map_err(|_| {
            fault(
                field(),
                format!("target port {} is not a port", p.target_port),
            )
        })?;
        // Kubernetes lets one port number serve TCP and UDP (DNS: 53 twice), and the
        // workload API carries no protocol: identical entries are one port. Different
        // targets for the same port leave no way to know which one TCP means.
        match map.insert(service_port, target_port) {
            Some(previous) if previous != target_port => {
                return Err(fault(
                    field(),
                    format!(
                        "service port {service_port} appears twice, with target ports {previous} and {target_port}"
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(map)
}

fn convert_policy(a: sec::Authorization) -> Result<Policy, Fault> {
    let name = required("name", a.name)?;
    let namespace = required("namespace", a.namespace)?;
    let scope = match sec::Scope::try_from(a.scope) {
        Ok(sec::Scope::Global) => Scope::Global,
        Ok(sec::Scope::Namespace) => Scope::Namespace,
        Ok(sec::Scope::WorkloadSelector) => Scope::WorkloadSelector,
        Err(_) => return Err(unknown_enum("scope", a.scope)),
    };
    let action = match sec::Action::try_from(a.action) {
        Ok(sec::Action::Allow) => Action::Allow,
        Ok(sec::Action::Deny) => Action::Deny,
        Ok(sec::Action::Audit) => Action::Audit,
        Err(_) => return Err(unknown_enum("action", a.action)),
    };
    let mut groups = Vec::with_capacity(a.groups.len());
    for (g, group) in a.groups.iter().enumerate() {
        let mut rules = Vec::with_capacity(group.rules.len());
        for (r, rule) in group.rules.iter().enumerate() {
            let matches = rule.matches.iter().enumerate().map(|(m, pb)| {
                convert_match(pb).map_err(|f| {
                    let field = format!("groups[{g}].rules[{r}].matches[{m}].{}", f.field);
                    fault(field, f.problem)
                })
            });
            rules.push(matches.collect::<Result<Vec<_>, _>>()?);
        }
        groups.push(rules);
    }
    Ok(Policy {
        name,
        namespace,
        scope,
        action,
        groups,
        dry_run: a.dry_run,
    })
}

/// Converts each element of one repeated field, naming `field[i]` on failure.
fn each<T, U>(
    field: &str,
    items: &[T],
    convert: impl Fn(&T) -> Result<U, String>,
) -> Result<Vec<U>, Fault> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| convert(item).map_err(|p| fault(format!("{field}[{i}]"), p)))
        .collect()
}

fn convert_match(m: &sec::Match) -> Result<Match, Fault> {
    Ok(Match {
        namespaces: each("namespaces", &m.namespaces, string_match)?,
        not_namespaces: each("not_namespaces", &m.not_namespaces, string_match)?,
        principals: each("principals", &m.principals, string_match)?,
        not_principals: each("not_principals", &m.not_principals, string_match)?,
        service_accounts: each("service_accounts", &m.service_accounts, sa_match)?,
        not_service_accounts: each("not_service_accounts", &m.not_service_accounts, sa_match)?,
        source_ips: each("source_ips", &m.source_ips, cidr)?,
        not_source_ips: each("not_source_ips", &m.not_source_ips, cidr)?,
        destination_ips: each("destination_ips", &m.destination_ips, cidr)?,
        not_destination_ips: each("not_destination_ips", &m.not_destination_ips, cidr)?,
        destination_ports: each("destination_ports", &m.destination_ports, port)?,
        not_destination_ports: each("not_destination_ports", &m.not_destination_ports, port)?,
    })
}

fn string_match(m: &sec::StringMatch) -> Result<StringMatch, String> {
    match &m.match_type {
        Some(MatchType::Exact(s)) => Ok(StringMatch::Exact(s.clone())),
        Some(MatchType::Prefix(s)) => Ok(StringMatch::Prefix(s.clone())),
        Some(MatchType::Suffix(s)) => Ok(StringMatch::Suffix(s.clone())),
        Some(MatchType::Presence(())) => Ok(StringMatch::Presence),
        None => Err("no exact, prefix, suffix or presence set".into()),
    }
}

fn sa_match(m: &sec::ServiceAccountMatch) -> Result<ServiceAccountMatch, String> {
    if m.namespace.is_empty() || m.service_account.is_empty() {
        return Err("namespace and serviceAccount are both required".into());
    }
    Ok(ServiceAccountMatch {
        namespace: m.namespace.clone(),
        service_account: m.service_account.clone(),
    })
}

fn cidr(a: &sec::Address) -> Result<Cidr, String> {
    let addr = ip(&a.address)?;
    u8::try_from(a.length)
        .ok()
        .and_then(|len| Cidr::new(addr, len))
        .ok_or_else(|| format!("prefix length {} is too long for {addr}", a.length))
}

fn port(p: &u32) -> Result<u16, String> {
    u16::try_from(*p).map_err(|_| format!("{p} is not a port"))
}
