//! `Gateway` (`gateway.networking.k8s.io`): listeners of a gateway (in
//! ambient mode, also a waypoint).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::FieldError;
use super::resource::resource;
use super::validate::{Errors, check_metadata, dns1123_subdomain, port_number};

resource! {
    /// A Gateway API gateway.
    Gateway(GatewaySpec),
    group = "gateway.networking.k8s.io",
    kind = "Gateway",
    versions = ["v1", "v1beta1"],
}

/// `spec` of a [`Gateway`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The GatewayClass (e.g. `istio-waypoint`). Required.
    #[serde(default)]
    pub gateway_class_name: String,
    /// Listeners, 1 to 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Requested addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    /// Labels, annotations and parameters for the generated infrastructure
    /// (stored as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<serde_json::Value>,
    /// Which ListenerSets may attach (experimental; stored as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<serde_json::Value>,
    /// Backend TLS client settings (experimental; stored as written).
    #[serde(
        rename = "backendTLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_tls: Option<serde_json::Value>,
    /// Gateway-wide TLS settings (stored as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
}

/// `listeners[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Name, unique in the Gateway. Required.
    #[serde(default)]
    pub name: String,
    /// Host name (may start with `*.`); none matches all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Port, 1..=65535. Required.
    #[serde(default)]
    pub port: i32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`, `HBONE`, ... Required.
    #[serde(default)]
    pub protocol: String,
    /// TLS settings (stored as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    /// Which routes may attach (stored as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<serde_json::Value>,
}

/// `addresses[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    /// `IPAddress` (default), `Hostname`, or implementation-specific.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// The address.
    #[serde(default)]
    pub value: String,
}

/// Protocols whose listeners terminate or pass through TLS and need `tls`.
const TLS_PROTOCOLS: &[&str] = &["HTTPS", "TLS"];
/// Protocols whose listeners must not have `tls`.
const PLAIN_PROTOCOLS: &[&str] = &["HTTP", "TCP", "UDP"];
/// Protocols whose listeners must not have a `hostname`.
const NO_HOSTNAME_PROTOCOLS: &[&str] = &["TCP", "UDP"];

impl Gateway {
    /// Checks: metadata; `gatewayClassName` set; 1..=64 listeners; listener
    /// names set, DNS-1123 subdomains and unique; ports 1..=65535; protocol
    /// set; hostname a (wildcard) DNS name, not an IP, and not on TCP/UDP;
    /// `tls` present for HTTPS/TLS and absent for HTTP/TCP/UDP; port +
    /// protocol + hostname unique; `IPAddress` addresses parse.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Errors::default();
        check_metadata(&self.metadata, &mut errs);
        let spec = &self.spec;
        if spec.gateway_class_name.is_empty() {
            errs.add("spec.gatewayClassName", "required");
        }
        if spec.listeners.is_empty() || spec.listeners.len() > 64 {
            errs.add("spec.listeners", "between 1 and 64 listeners are required");
        }
        let mut names = BTreeSet::new();
        let mut bindings = BTreeSet::new();
        for (i, l) in spec.listeners.iter().enumerate() {
            let path = format!("spec.listeners[{i}]");
            if l.name.is_empty() {
                errs.add(format!("{path}.name"), "required");
            } else if !names.insert(l.name.as_str()) {
                errs.add(
                    format!("{path}.name"),
                    format!("duplicate listener name {:?}", l.name),
                );
            } else {
                errs.check(format!("{path}.name"), dns1123_subdomain(&l.name));
            }
            match u32::try_from(l.port) {
                Ok(port) => errs.check(format!("{path}.port"), port_number(port)),
                Err(_) => errs.add(
                    format!("{path}.port"),
                    format!("port {} is not in 1..65535", l.port),
                ),
            }
            let protocol = l.protocol.as_str();
            if protocol.is_empty() {
                errs.add(format!("{path}.protocol"), "required");
            }
            if let Some(hostname) = &l.hostname {
                errs.check(format!("{path}.hostname"), listener_hostname(hostname));
                if NO_HOSTNAME_PROTOCOLS.contains(&protocol) {
                    errs.add(
                        format!("{path}.hostname"),
                        format!("not allowed for protocol {protocol}"),
                    );
                }
            }
            if TLS_PROTOCOLS.contains(&protocol) && l.tls.is_none() {
                errs.add(
                    format!("{path}.tls"),
                    format!("required for protocol {protocol}"),
                );
            }
            if PLAIN_PROTOCOLS.contains(&protocol) && l.tls.is_some() {
                errs.add(
                    format!("{path}.tls"),
                    format!("not allowed for protocol {protocol}"),
                );
            }
            if !bindings.insert((l.port, protocol, l.hostname.as_deref().unwrap_or(""))) {
                errs.add(
                    &*path,
                    "another listener has the same port, protocol and hostname",
                );
            }
        }
        for (i, address) in spec.addresses.iter().enumerate() {
            let at = format!("spec.addresses[{i}].value");
            if address.value.is_empty() {
                errs.add(at, "required");
            } else if address
                .address_type
                .as_deref()
                .is_none_or(|t| t == "IPAddress")
                && address.value.parse::<IpAddr>().is_err()
            {
                errs.add(at, format!("{:?} is not an IP address", address.value));
            }
        }
        errs.into_vec()
    }
}

/// A listener hostname: a lowercase DNS name, optionally `*.`-prefixed; not
/// an IP address.
fn listener_hostname(h: &str) -> Result<(), String> {
    if h.parse::<IpAddr>().is_ok() {
        return Err(format!("{h:?} is an IP address; a hostname is required"));
    }
    dns1123_subdomain(h.strip_prefix("*.").unwrap_or(h)).map_err(|_| {
        format!("{h:?} is not a hostname (lowercase DNS name, optionally prefixed by \"*.\")")
    })
}
