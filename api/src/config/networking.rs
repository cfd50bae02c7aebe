//! Small types shared by the `networking.istio.io` resources.

use serde::{Deserialize, Serialize};

use super::validate::{Errors, percentage, port_number};

/// A string matcher: exactly one of `exact`, `prefix` (non-empty) or `regex`
/// (RE2 syntax). Where Istio allows it (header and query parameter matches)
/// an empty matcher `{}` means "present".
///
/// Only the regex's presence is checked here; it is compiled (and a bad one
/// rejected) where matching happens, in the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Matches exactly this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Matches strings starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Matches strings the RE2 regex fully matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The single condition a valid [`StringMatch`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchValue<'a> {
    /// `exact`.
    Exact(&'a str),
    /// `prefix`.
    Prefix(&'a str),
    /// `regex`.
    Regex(&'a str),
}

/// Where a [`StringMatch`] is used, which decides what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchUse {
    /// Exactly one of exact / prefix / regex.
    Value,
    /// Also `{}` for presence (header matches).
    Presence,
    /// Presence, exact or regex, no prefix (query parameters).
    PresenceNoPrefix,
}

impl StringMatch {
    /// The condition, or `None` when zero or several are set.
    pub fn value(&self) -> Option<MatchValue<'_>> {
        match (&self.exact, &self.prefix, &self.regex) {
            (Some(e), None, None) => Some(MatchValue::Exact(e)),
            (None, Some(p), None) => Some(MatchValue::Prefix(p)),
            (None, None, Some(r)) => Some(MatchValue::Regex(r)),
            _ => None,
        }
    }

    pub(crate) fn check(&self, errs: &mut Errors, path: &str, usage: MatchUse) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            errs.add(path, "only one of exact, prefix or regex may be set");
        } else if set == 0 && usage == MatchUse::Value {
            errs.add(path, "exactly one of exact, prefix or regex is required");
        }
        if let Some(prefix) = &self.prefix {
            if usage == MatchUse::PresenceNoPrefix {
                errs.add(
                    format!("{path}.prefix"),
                    "prefix matching is not supported here",
                );
            } else if prefix.is_empty() {
                errs.add(format!("{path}.prefix"), "must not be empty");
            }
        }
        if self.regex.as_deref() == Some("") {
            errs.add(format!("{path}.regex"), "must not be empty");
        }
    }
}

/// `port: {number: N}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number, 1..=65535.
    #[serde(default)]
    pub number: u32,
}

impl PortSelector {
    pub(crate) fn check(&self, errs: &mut Errors, path: &str) {
        errs.check(format!("{path}.number"), port_number(self.number));
    }
}

/// `percentage: {value: X}`, X in 0..=100.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// Percentage, 0..=100.
    #[serde(default)]
    pub value: f64,
}

impl Percent {
    pub(crate) fn check(&self, errs: &mut Errors, path: &str) {
        errs.check(format!("{path}.value"), percentage(self.value));
    }
}
