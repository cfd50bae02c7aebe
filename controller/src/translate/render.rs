//! A stable, human-readable JSON view of a [`Translation`]: what golden tests compare and
//! what the admin endpoint shows. Field names are the protobuf JSON (camelCase) names,
//! IPs are text, enums are names. Scalars and the main lists are always shown so a
//! reader sees "none" explicitly; optional messages appear only when set.

use std::net::{Ipv4Addr, Ipv6Addr};

use api::security::string_match::MatchType;
use api::security::{self, Authorization, Match, StringMatch};
use api::workload::{
    self, ApplicationTunnel, GatewayAddress, IpFamilies, LoadBalancing, Locality, NetworkMode,
    Port, Service, TunnelProtocol, Workload, WorkloadStatus, WorkloadType, address,
    gateway_address, load_balancing,
};
use serde_json::{Map, Value, json};

use super::Translation;

/// The whole translation: `addresses`, `authorizations`, `l7` (when there are any; all
/// keyed by resource name) and `problems`.
pub fn render(t: &Translation) -> Value {
    let addresses: Map<String, Value> = t
        .addresses
        .iter()
        .map(|(k, a)| {
            let v = match &a.r#type {
                Some(address::Type::Workload(w)) => json!({ "workload": render_workload(w) }),
                Some(address::Type::Service(s)) => json!({ "service": render_service(s) }),
                None => json!({}),
            };
            (k.clone(), v)
        })
        .collect();
    let authorizations: Map<String, Value> = t
        .authorizations
        .iter()
        .map(|(k, a)| (k.clone(), render_authorization(a)))
        .collect();
    let problems: Vec<Value> = t
        .problems
        .iter()
        .map(|p| {
            let mut o = Map::new();
            o.insert("file".into(), json!(p.file.display().to_string()));
            put_opt(&mut o, "document", p.document.map(|d| json!(d)));
            put_opt(&mut o, "object", p.object.as_ref().map(|s| json!(s)));
            put_opt(&mut o, "field", p.field.as_ref().map(|s| json!(s)));
            o.insert("message".into(), json!(p.message));
            Value::Object(o)
        })
        .collect();
    let mut out = json!({
        "addresses": addresses,
        "authorizations": authorizations,
        "problems": problems,
    });
    if !t.l7.is_empty() {
        // What waypoints get: each object's JSON as sent.
        let l7: Map<String, Value> =
            t.l7.iter()
                .map(|(k, r)| {
                    let object = serde_json::from_slice(&r.json).unwrap_or(Value::Null);
                    (k.clone(), object)
                })
                .collect();
        out["l7"] = Value::Object(l7);
    }
    out
}

fn put_opt(o: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        o.insert(key.into(), v);
    }
}

fn put_list(o: &mut Map<String, Value>, key: &str, values: Vec<Value>) {
    if !values.is_empty() {
        o.insert(key.into(), Value::Array(values));
    }
}

/// An enum by name; a value this build does not know stays a number.
fn name<E: TryFrom<i32>>(value: i32, as_str: impl Fn(&E) -> &'static str) -> Value {
    E::try_from(value).map_or_else(|_| json!(value), |e| json!(as_str(&e)))
}

/// Raw workload-API address bytes as text; anything but 4 or 16 bytes as hex.
fn ip(bytes: &[u8]) -> Value {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return json!(Ipv4Addr::from(b).to_string());
    }
    if let Ok(b) = <[u8; 16]>::try_from(bytes) {
        return json!(Ipv6Addr::from(b).to_string());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    json!(format!("invalid:{hex}"))
}

fn render_workload(w: &Workload) -> Value {
    let mut services: Vec<(&String, &workload::PortList)> = w.services.iter().collect();
    services.sort_by(|a, b| a.0.cmp(b.0));
    let services: Map<String, Value> = services
        .into_iter()
        .map(|(k, list)| (k.clone(), json!({ "ports": render_ports(&list.ports) })))
        .collect();
    let mut o = Map::new();
    o.insert("uid".into(), json!(w.uid));
    o.insert("name".into(), json!(w.name));
    o.insert("namespace".into(), json!(w.namespace));
    o.insert(
        "addresses".into(),
        w.addresses.iter().map(|a| ip(a)).collect(),
    );
    if !w.hostname.is_empty() {
        o.insert("hostname".into(), json!(w.hostname));
    }
    o.insert("network".into(), json!(w.network));
    o.insert(
        "tunnelProtocol".into(),
        name(w.tunnel_protocol, TunnelProtocol::as_str_name),
    );
    o.insert("trustDomain".into(), json!(w.trust_domain));
    o.insert("serviceAccount".into(), json!(w.service_account));
    put_opt(&mut o, "waypoint", w.waypoint.as_ref().map(gateway));
    put_opt(
        &mut o,
        "networkGateway",
        w.network_gateway.as_ref().map(gateway),
    );
    o.insert("node".into(), json!(w.node));
    o.insert("canonicalName".into(), json!(w.canonical_name));
    o.insert("canonicalRevision".into(), json!(w.canonical_revision));
    o.insert(
        "workloadType".into(),
        name(w.workload_type, WorkloadType::as_str_name),
    );
    o.insert("workloadName".into(), json!(w.workload_name));
    if w.native_tunnel {
        o.insert("nativeTunnel".into(), json!(true));
    }
    put_opt(
        &mut o,
        "applicationTunnel",
        w.application_tunnel.as_ref().map(app_tunnel),
    );
    o.insert("services".into(), Value::Object(services));
    o.insert(
        "authorizationPolicies".into(),
        json!(w.authorization_policies),
    );
    o.insert("status".into(), name(w.status, WorkloadStatus::as_str_name));
    o.insert("clusterId".into(), json!(w.cluster_id));
    put_opt(&mut o, "locality", w.locality.as_ref().map(locality));
    o.insert(
        "networkMode".into(),
        name(w.network_mode, NetworkMode::as_str_name),
    );
    put_list(&mut o, "extensions", extensions(&w.extensions));
    put_opt(&mut o, "capacity", w.capacity.map(|c| json!(c)));
    if !w.labels.is_empty() {
        o.insert("labels".into(), json!(w.labels));
    }
    Value::Object(o)
}

fn render_service(s: &Service) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(s.name));
    o.insert("namespace".into(), json!(s.namespace));
    o.insert("hostname".into(), json!(s.hostname));
    o.insert(
        "addresses".into(),
        s.addresses
            .iter()
            .map(|a| json!({ "network": a.network, "address": ip(&a.address) }))
            .collect(),
    );
    o.insert("ports".into(), render_ports(&s.ports));
    put_list(
        &mut o,
        "subjectAltNames",
        s.subject_alt_names.iter().map(|n| json!(n)).collect(),
    );
    put_opt(&mut o, "waypoint", s.waypoint.as_ref().map(gateway));
    put_opt(&mut o, "loadBalancing", s.load_balancing.as_ref().map(lb));
    o.insert(
        "ipFamilies".into(),
        name(s.ip_families, IpFamilies::as_str_name),
    );
    put_list(&mut o, "extensions", extensions(&s.extensions));
    if s.canonical {
        o.insert("canonical".into(), json!(true));
    }
    Value::Object(o)
}

fn render_ports(ports: &[Port]) -> Value {
    ports
        .iter()
        .map(|p| json!({ "servicePort": p.service_port, "targetPort": p.target_port }))
        .collect()
}

fn gateway(g: &GatewayAddress) -> Value {
    let mut o = Map::new();
    match &g.destination {
        Some(gateway_address::Destination::Hostname(h)) => {
            o.insert(
                "hostname".into(),
                json!({ "namespace": h.namespace, "hostname": h.hostname }),
            );
        }
        Some(gateway_address::Destination::Address(a)) => {
            o.insert(
                "address".into(),
                json!({ "network": a.network, "address": ip(&a.address) }),
            );
        }
        None => {}
    }
    o.insert("hboneMtlsPort".into(), json!(g.hbone_mtls_port));
    Value::Object(o)
}

fn app_tunnel(t: &ApplicationTunnel) -> Value {
    use workload::application_tunnel::Protocol;
    json!({ "protocol": name(t.protocol, Protocol::as_str_name), "port": t.port })
}

fn locality(l: &Locality) -> Value {
    json!({ "region": l.region, "zone": l.zone, "subzone": l.subzone })
}

fn lb(l: &LoadBalancing) -> Value {
    use load_balancing::{DnsConnectStrategy, HealthPolicy, Mode, Scope};
    json!({
        "routingPreference": l
            .routing_preference
            .iter()
            .map(|s| name(*s, Scope::as_str_name))
            .collect::<Vec<_>>(),
        "mode": name(l.mode, Mode::as_str_name),
        "healthPolicy": name(l.health_policy, HealthPolicy::as_str_name),
        "dnsConnectStrategy": name(l.dns_connect_strategy, DnsConnectStrategy::as_str_name),
    })
}

fn extensions(list: &[workload::Extension]) -> Vec<Value> {
    list.iter()
        .map(|e| {
            let type_url = e.config.as_ref().map(|c| c.type_url.clone());
            json!({ "name": e.name, "typeUrl": type_url })
        })
        .collect()
}

fn render_authorization(a: &Authorization) -> Value {
    let groups: Vec<Value> = a
        .groups
        .iter()
        .map(|g| {
            let rules: Vec<Value> = g
                .rules
                .iter()
                .map(|r| json!({ "matches": r.matches.iter().map(render_match).collect::<Vec<_>>() }))
                .collect();
            json!({ "rules": rules })
        })
        .collect();
    let mut out = json!({
        "name": a.name,
        "namespace": a.namespace,
        "scope": name(a.scope, security::Scope::as_str_name),
        "action": name(a.action, security::Action::as_str_name),
        "groups": groups,
    });
    if a.dry_run {
        out["dryRun"] = json!(true); // only when set, like the other extensions
    }
    out
}

/// Only the fields a match sets: an unset field places no constraint.
fn render_match(m: &Match) -> Value {
    let strings = |l: &[StringMatch]| l.iter().map(string_match).collect::<Vec<_>>();
    let prefixes = |l: &[security::Address]| {
        l.iter()
            .map(|a| match ip(&a.address) {
                Value::String(s) => json!(format!("{s}/{}", a.length)),
                other => other,
            })
            .collect::<Vec<_>>()
    };
    let accounts = |l: &[security::ServiceAccountMatch]| {
        l.iter()
            .map(|s| json!({ "namespace": s.namespace, "serviceAccount": s.service_account }))
            .collect::<Vec<_>>()
    };
    let numbers = |l: &[u32]| l.iter().map(|p| json!(p)).collect::<Vec<_>>();
    let mut o = Map::new();
    put_list(&mut o, "namespaces", strings(&m.namespaces));
    put_list(&mut o, "notNamespaces", strings(&m.not_namespaces));
    put_list(&mut o, "serviceAccounts", accounts(&m.service_accounts));
    put_list(
        &mut o,
        "notServiceAccounts",
        accounts(&m.not_service_accounts),
    );
    put_list(&mut o, "principals", strings(&m.principals));
    put_list(&mut o, "notPrincipals", strings(&m.not_principals));
    put_list(&mut o, "sourceIps", prefixes(&m.source_ips));
    put_list(&mut o, "notSourceIps", prefixes(&m.not_source_ips));
    put_list(&mut o, "destinationIps", prefixes(&m.destination_ips));
    put_list(
        &mut o,
        "notDestinationIps",
        prefixes(&m.not_destination_ips),
    );
    put_list(&mut o, "destinationPorts", numbers(&m.destination_ports));
    put_list(
        &mut o,
        "notDestinationPorts",
        numbers(&m.not_destination_ports),
    );
    Value::Object(o)
}

fn string_match(s: &StringMatch) -> Value {
    match &s.match_type {
        Some(MatchType::Exact(v)) => json!({ "exact": v }),
        Some(MatchType::Prefix(v)) => json!({ "prefix": v }),
        Some(MatchType::Suffix(v)) => json!({ "suffix": v }),
        Some(MatchType::Presence(())) => json!({ "presence": {} }),
        None => json!({}),
    }
}
