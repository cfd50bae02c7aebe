//! Policy values (strings as users write them) -> the typed matches ztunnel compares.

use std::net::IpAddr;

use api::security::string_match::MatchType;
use api::security::{Address, ServiceAccountMatch, StringMatch};

use crate::translate::service::ip_bytes;

/// `*` is presence, `foo*` a prefix, `*foo` a suffix, anything else exact. ztunnel
/// compares principals without their `spiffe://` scheme, so a principal written with it
/// is normalised rather than silently never matching.
pub fn string_matches(values: &[String], principal: bool) -> Vec<StringMatch> {
    values
        .iter()
        .map(|v| {
            let v = if principal {
                v.strip_prefix("spiffe://").unwrap_or(v)
            } else {
                v
            };
            let match_type = if v == "*" {
                MatchType::Presence(())
            } else if let Some(suffix) = v.strip_prefix('*') {
                MatchType::Suffix(suffix.to_owned())
            } else if let Some(prefix) = v.strip_suffix('*') {
                MatchType::Prefix(prefix.to_owned())
            } else {
                MatchType::Exact(v.to_owned())
            };
            StringMatch {
                match_type: Some(match_type),
            }
        })
        .collect()
}

/// IPs and CIDRs as prefixes; a plain IP is a full-length prefix. The address is kept
/// as written (not masked), as Istio sends it. Unparseable entries (rejected by
/// validation before translation) are skipped.
pub fn ip_prefixes(values: &[String]) -> Vec<Address> {
    values.iter().filter_map(|v| ip_prefix(v)).collect()
}

pub fn ip_prefix(value: &str) -> Option<Address> {
    let (ip, length) = match value.split_once('/') {
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let len: u32 = len.parse().ok()?;
            (ip, len)
        }
        None => {
            let ip: IpAddr = value.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (length <= max).then(|| Address {
        address: ip_bytes(ip),
        length,
    })
}

/// Decimal port strings; anything else (rejected by validation) is skipped.
pub fn ports(values: &[String]) -> Vec<u32> {
    values
        .iter()
        .filter_map(|v| v.parse::<u32>().ok())
        .filter(|p| (1..=65535).contains(p))
        .collect()
}

/// `namespace/name` service accounts; a bare name is in the policy's namespace.
pub fn service_accounts(values: &[String], policy_namespace: &str) -> Vec<ServiceAccountMatch> {
    values
        .iter()
        .map(|v| {
            let (namespace, name) = v.split_once('/').unwrap_or((policy_namespace, v));
            ServiceAccountMatch {
                namespace: namespace.to_owned(),
                service_account: name.to_owned(),
            }
        })
        .collect()
}
