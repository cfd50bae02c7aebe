//! Matching one request against compiled rules.

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::Value;

use super::Request;
use super::compile::{
    Attribute, CompiledPolicy, CompiledRule, ConditionMatch, OperationMatch, SourceMatch,
    ValueMatch,
};
use crate::context;

/// What a request carries that rules look at, computed once per request.
pub(crate) struct Facts<'a> {
    req: &'a Request<'a>,
    principal: Option<String>,
    authority: Option<&'a str>,
    /// False for opaque TCP: the request has no HTTP attributes (see [`Http`]).
    http: bool,
}

impl<'a> Facts<'a> {
    pub(crate) fn new(req: &'a Request<'a>) -> Self {
        Facts {
            req,
            principal: req.source.principal(),
            authority: context::authority(req.parts),
            http: true,
        }
    }

    /// An opaque TCP connection: `req.parts` is not looked at.
    pub(crate) fn tcp(req: &'a Request<'a>) -> Self {
        Facts {
            authority: None,
            http: false,
            ..Facts::new(req)
        }
    }
}

/// How fields that only HTTP has (hosts, methods, paths, headers, request principals and
/// JWT claims) match: on HTTP they are evaluated; on TCP, as Istio does, an ALLOW or
/// AUDIT rule that uses one does not match, and a DENY or CUSTOM rule ignores it (so it
/// denies more).
#[derive(Clone, Copy)]
enum Http {
    Evaluate,
    Fixed(bool),
}

impl Http {
    fn field<T>(self, field: &super::compile::Field<T>, matches: impl Fn(&T) -> bool) -> bool {
        match self {
            Http::Fixed(outcome) if !(field.any.is_empty() && field.none.is_empty()) => outcome,
            _ => field.holds(matches),
        }
    }
}

impl CompiledPolicy {
    /// Whether any rule matches (a policy without rules matches nothing).
    pub(crate) fn matches(&self, facts: &Facts<'_>) -> bool {
        let http = if facts.http {
            Http::Evaluate
        } else {
            Http::Fixed(matches!(
                self.action,
                super::Action::Deny | super::Action::Custom
            ))
        };
        self.rules.iter().any(|rule| rule.matches(facts, http))
    }
}

impl CompiledRule {
    /// Every present part matches; within a part, any entry.
    fn matches(&self, facts: &Facts<'_>, http: Http) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(facts, http)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(facts, http)))
            && self.when.iter().all(|c| c.matches(facts, http))
    }
}

impl SourceMatch {
    fn matches(&self, facts: &Facts<'_>, http: Http) -> bool {
        let source = facts.req.source;
        let principal = facts.principal.as_deref();
        let request_principal = facts.req.auth.map(|a| a.principal.as_str());
        let namespace = source.namespace();
        self.principals
            .holds(|m| principal.is_some_and(|p| m.matches(p)))
            && http.field(&self.request_principals, |m| {
                request_principal.is_some_and(|p| m.matches(p))
            })
            && self
                .namespaces
                .holds(|m| namespace.is_some_and(|ns| m.matches(ns)))
            && self.service_accounts.holds(|(ns, sa)| {
                source
                    .identity
                    .as_ref()
                    .is_some_and(|id| id.namespace() == ns && id.service_account() == sa)
            })
            && self
                .ip_blocks
                .holds(|c| source.ip.is_some_and(|ip| c.contains(ip)))
            && self
                .remote_ip_blocks
                .holds(|c| source.ip.is_some_and(|ip| c.contains(ip)))
    }
}

impl OperationMatch {
    fn matches(&self, facts: &Facts<'_>, http: Http) -> bool {
        let parts = facts.req.parts;
        let port = facts.req.destination.port();
        http.field(&self.hosts, |h| {
            facts.authority.is_some_and(|a| h.matches(a))
        }) && self.ports.holds(|p| *p == port)
            && http.field(&self.methods, |m| m.matches(parts.method.as_str()))
            && http.field(&self.paths, |p| p.matches(parts.uri.path()))
    }
}

/// The values of an attribute for one request.
enum Values<'a> {
    Strings(Vec<Cow<'a, str>>),
    Ip(Option<IpAddr>),
    Port(u16),
    /// The condition's outcome is fixed.
    Fixed(bool),
}

impl ConditionMatch {
    fn matches(&self, facts: &Facts<'_>, http: Http) -> bool {
        let http_only = matches!(
            self.attribute,
            Attribute::Header(_)
                | Attribute::AuthPrincipal
                | Attribute::AuthPresenter
                | Attribute::AuthAudiences
                | Attribute::AuthClaim(_)
        );
        if let (true, Http::Fixed(outcome)) = (http_only, http) {
            return outcome;
        }
        let values = self.attribute_values(facts);
        if let Values::Fixed(outcome) = values {
            return outcome;
        }
        self.values.holds(|v| match (v, &values) {
            (ValueMatch::String(m), Values::Strings(list)) => list.iter().any(|s| m.matches(s)),
            (ValueMatch::Ip(c), Values::Ip(ip)) => ip.is_some_and(|ip| c.contains(ip)),
            (ValueMatch::Port(p), Values::Port(port)) => p == port,
            _ => false,
        })
    }

    fn attribute_values<'a>(&self, facts: &'a Facts<'a>) -> Values<'a> {
        let req = facts.req;
        let auth = req.auth;
        let one = |v: Option<Cow<'a, str>>| Values::Strings(v.into_iter().collect());
        match &self.attribute {
            Attribute::Header(name) => Values::Strings(
                req.parts
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(Cow::Borrowed)
                    .collect(),
            ),
            Attribute::SourceIp | Attribute::RemoteIp => Values::Ip(req.source.ip),
            Attribute::DestinationIp => Values::Ip(Some(req.destination.target.ip())),
            Attribute::DestinationPort => Values::Port(req.destination.port()),
            Attribute::SourceNamespace => one(req.source.namespace().map(Cow::Borrowed)),
            Attribute::SourcePrincipal => one(facts.principal.as_deref().map(Cow::Borrowed)),
            Attribute::AuthPrincipal => one(auth.map(|a| Cow::Borrowed(a.principal.as_str()))),
            Attribute::AuthPresenter => {
                one(auth.and_then(|a| a.presenter.as_deref()).map(Cow::Borrowed))
            }
            Attribute::AuthAudiences => Values::Strings(
                auth.into_iter()
                    .flat_map(|a| a.audiences.iter())
                    .map(|s| Cow::Borrowed(s.as_str()))
                    .collect(),
            ),
            Attribute::AuthClaim(path) => {
                let claim = auth.and_then(|a| {
                    path.iter()
                        .try_fold(&a.claims, |value, key| value.get(key.as_str()))
                });
                Values::Strings(claim_strings(claim))
            }
            Attribute::ConnectionSni => Values::Strings(Vec::new()),
            Attribute::Unsupported(outcome) => Values::Fixed(*outcome),
        }
    }
}

/// A string claim, or every string of a string-array claim; nothing for other types.
fn claim_strings(claim: Option<&Value>) -> Vec<Cow<'_, str>> {
    match claim {
        Some(Value::String(s)) => vec![Cow::Borrowed(s.as_str())],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(Cow::Borrowed)
            .collect(),
        _ => Vec::new(),
    }
}
