//! [`FieldError`], the collector used while validating, and the syntax checks
//! shared by every resource (Kubernetes names and labels, hosts, IPs, ports,
//! header names, durations, `exportTo`).
//!
//! The `fn(&str) -> Result<(), String>` checks return a message without the
//! field; callers attach the path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::duration::parse_duration;

/// One problem found by a resource's `validate()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the resource root, e.g.
    /// `spec.rules[0].from[0].source.principals[1]`; map entries are
    /// `[key]`, e.g. `spec.selector.matchLabels[app]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Collects [`FieldError`]s during one `validate()`.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records `result`'s message, if any, against `field`.
    pub(crate) fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(field, message);
        }
    }

    pub(crate) fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// `metadata.name` is required (a DNS-1123 subdomain); `metadata.namespace`,
/// when set, is a DNS-1123 label.
pub(crate) fn check_metadata(meta: &ObjectMeta, errs: &mut Errors) {
    match meta.name.as_deref() {
        None | Some("") => errs.add("metadata.name", "required"),
        Some(name) => errs.check("metadata.name", dns1123_subdomain(name)),
    }
    if let Some(ns) = meta.namespace.as_deref() {
        errs.check("metadata.namespace", dns1123_label(ns));
    }
}

fn is_dns_label(s: &str, upper_ok: bool) -> bool {
    let ok_byte = |b: u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'-'
            || (upper_ok && b.is_ascii_uppercase())
    };
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(ok_byte)
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 label as Kubernetes uses it: at most 63 lowercase letters, digits
/// and `-`, starting and ending with a letter or digit.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if is_dns_label(s, false) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS-1123 label (at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit)"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, false)) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS-1123 subdomain (dot-separated lowercase labels, \
             at most 253 characters)"
        ))
    }
}

/// A host as Istio accepts it in `hosts` and `destination.host`: DNS labels
/// (letters, digits, `-`), the first of which may be `*` or start with `*`.
pub(crate) fn wildcard_host(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("host must not be empty".into());
    }
    if s.len() > 255 {
        return Err(format!("host {s:?} is longer than 255 characters"));
    }
    let (first, rest) = match s.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (s, None),
    };
    let first_ok = first == "*"
        || is_dns_label(first, true)
        || first
            .strip_prefix('*')
            .is_some_and(|l| is_dns_label(l, true));
    let rest_ok = rest.is_none_or(|r| r.split('.').all(|l| is_dns_label(l, true)));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid host (DNS labels of letters, digits and '-'; \
             only the first label may be or start with '*')"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let inner = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(inner)
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes label key: `[prefix/]name`, prefix a DNS-1123 subdomain, name
/// at most 63 characters of `[A-Za-z0-9_.-]` starting and ending
/// alphanumeric.
pub fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, k),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || dns1123_subdomain(prefix).is_err())
    {
        return Err(format!(
            "label key {k:?}: prefix must be a DNS-1123 subdomain"
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "label key {k:?} is invalid (name part: at most 63 characters of [A-Za-z0-9_.-], \
             starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or at most 63 characters of
/// `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err(format!(
            "label value {v:?} is invalid (at most 63 characters of [A-Za-z0-9_.-], \
             starting and ending with a letter or digit)"
        ))
    }
}

/// Checks every key and value of a label map; errors are reported at
/// `path[key]`.
pub(crate) fn check_labels(errs: &mut Errors, path: &str, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let at = format!("{path}[{key}]");
        errs.check(at.clone(), label_key(key));
        errs.check(at, label_value(value));
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn ip_or_cidr(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not an IP address or CIDR block");
    match s.split_once('/') {
        None => s.parse::<IpAddr>().map(|_| ()).map_err(|_| bad()),
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len_ok = !len.is_empty()
                && len.bytes().all(|b| b.is_ascii_digit())
                && len.parse::<u32>().is_ok_and(|l| l <= max);
            if len_ok { Ok(()) } else { Err(bad()) }
        }
    }
}

/// A port number, 1..=65535.
pub(crate) fn port_number(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port {port} is not in 1..65535"))
    }
}

/// A port written as a decimal string (AuthorizationPolicy `ports`), 1..=65535.
pub(crate) fn port_string(s: &str) -> Result<(), String> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<u32>() {
        Ok(port) if digits && port_number(port).is_ok() => Ok(()),
        _ => Err(format!("{s:?} is not a port number (1..65535)")),
    }
}

/// An HTTP header name: a non-empty RFC 7230 token.
pub(crate) fn header_name(s: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !s.is_empty() && s.bytes().all(token) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid HTTP header name"))
    }
}

/// An HTTP header value: no CR, LF or NUL.
pub(crate) fn header_value(s: &str) -> Result<(), String> {
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        Err("header value must not contain CR, LF or NUL".into())
    } else {
        Ok(())
    }
}

/// A duration [`parse_duration`] accepts.
pub(crate) fn duration(s: &str) -> Result<(), String> {
    parse_duration(s).map(|_| ())
}

/// A percentage, 0..=100.
pub(crate) fn percentage(v: f64) -> Result<(), String> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{v} is not a percentage in 0..100"))
    }
}

/// Every entry of a string list must be non-empty.
pub(crate) fn check_non_empty_entries(errs: &mut Errors, path: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            errs.add(format!("{path}[{i}]"), "must not be empty");
        }
    }
}

/// A gateway reference in `gateways`: `mesh`, `<namespace>/<name>` or `<name>`
/// (a legacy fully qualified name is a subdomain, so it passes too).
pub(crate) fn gateway_name(s: &str) -> Result<(), String> {
    if s == "mesh" {
        return Ok(());
    }
    let ok = match s.split_once('/') {
        Some((ns, name)) => dns1123_label(ns).is_ok() && dns1123_subdomain(name).is_ok(),
        None => dns1123_subdomain(s).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a gateway name (\"mesh\", \"<namespace>/<name>\" or \"<name>\")"
        ))
    }
}

/// `exportTo`: each entry is `.` (own namespace), `*` (all) or a namespace;
/// no duplicates (`.` counts as the own namespace); `*` only alone. With
/// `selector_scoped` (a DestinationRule with `workloadSelector`) only the own
/// namespace is allowed.
pub(crate) fn check_export_to(
    errs: &mut Errors,
    path: &str,
    export_to: &[String],
    namespace: Option<&str>,
    selector_scoped: bool,
) {
    let mut seen = BTreeSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let key = match (entry.as_str(), namespace) {
            (".", Some(ns)) => ns,
            (e, _) => e,
        };
        if !seen.insert(key) {
            errs.add(at, format!("duplicate entry {entry:?}"));
            continue;
        }
        if entry != "." && entry != "*" {
            errs.check(at.clone(), dns1123_label(entry));
        }
        if selector_scoped && key != "." && Some(key) != namespace {
            errs.add(
                at,
                "a DestinationRule with workloadSelector can only be exported to its own namespace",
            );
        }
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "*") {
        errs.add(
            path,
            "\"*\" (all namespaces) cannot be combined with other entries",
        );
    }
}
