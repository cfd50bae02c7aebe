//! L7 AuthorizationPolicy: [`compile`] turns a policy into a [`CompiledPolicy`];
//! [`Policies::evaluate`] decides a request with Istio's order:
//!
//! 1. a matching CUSTOM policy denies (external authorizers are not supported, so the
//!    waypoint fails safe: see [`DenyReason::CustomUnsupported`]);
//! 2. a matching DENY policy denies;
//! 3. with no ALLOW policy applying, the request is allowed;
//! 4. a matching ALLOW policy allows; otherwise the request is denied.
//!
//! AUDIT policies never change the decision: the ones that match are reported in the
//! [`Verdict`] for logging. Dry-run policies (`istio.io/dry-run: "true"`) are left out of
//! the decision and decided on their own, reported as [`DryRun`]. A policy with no rules
//! matches nothing (so a lone ALLOW policy without rules denies everything); a rule `{}`
//! matches everything. Only policies whose `targetRefs` name this waypoint or the
//! request's service apply ([`Binding`]).
//!
//! Request attributes: `source.ip` and `remote.ip` / `remoteIpBlocks` are both the
//! client IP the tunnel reports ([`context::Source::ip`], itself from the HBONE
//! `forwarded` header); `X-Forwarded-For` is not trusted. `connection.sni` never has a
//! value (the waypoint sees no client SNI). Paths are matched without the query, as
//! received (no normalisation here). Multi-valued headers match when any value matches.

mod binding;
mod compile;
mod eval;
mod matcher;

use std::sync::Arc;

pub use api::config::authorization_policy::Action;
pub use binding::{
    Binding, DEFAULT_ROOT_NAMESPACE, GATEWAY_GROUP, Target, Targets, WAYPOINT_GATEWAY_CLASS,
};
pub use compile::{CompileContext, CompiledPolicy, DRY_RUN_ANNOTATION, compile};
pub use matcher::{Cidr, HostMatch, PathMatch, StringMatch, TemplateSegment};

use crate::context::{Destination, Source};
use crate::jwt::AuthInfo;
use eval::Facts;

/// The body of the 403 answer to a denied request (Envoy's RBAC filter's).
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What authorization looks at in one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request head.
    pub parts: &'a http::request::Parts,
    /// Who sent it.
    pub source: &'a Source,
    /// Where it was going.
    pub destination: &'a Destination,
    /// The verified JWT, if any.
    pub auth: Option<&'a AuthInfo>,
}

/// Why a request is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A CUSTOM policy matched; external authorization is unsupported, so it denies.
    CustomUnsupported,
    /// A DENY policy matched.
    DenyPolicyMatched,
    /// ALLOW policies apply and none matched.
    NoAllowPolicyMatched,
}

/// The decision of the dry-run policies alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DryRun {
    /// No dry-run ALLOW, DENY or CUSTOM policy applies.
    #[default]
    NotApplicable,
    /// They would allow the request.
    WouldAllow,
    /// They would deny it.
    WouldDeny {
        /// `namespace/name` of the policy (or, for [`DenyReason::NoAllowPolicyMatched`],
        /// every applicable dry-run ALLOW policy, comma-separated).
        policy: String,
        /// Why.
        reason: DenyReason,
    },
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request.
    Allowed {
        /// `namespace/name` of each AUDIT policy that matched, sorted.
        audit: Vec<String>,
        /// What the dry-run policies would decide.
        dry_run: DryRun,
    },
    /// Answer 403 with [`DENIED_BODY`].
    Denied {
        /// `namespace/name` of the deciding policy (or, for
        /// [`DenyReason::NoAllowPolicyMatched`], every applicable ALLOW policy,
        /// comma-separated).
        policy: String,
        /// Why.
        reason: DenyReason,
        /// `namespace/name` of each AUDIT policy that matched, sorted.
        audit: Vec<String>,
        /// What the dry-run policies would decide.
        dry_run: DryRun,
    },
}

impl Verdict {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }

    /// The AUDIT policies that matched.
    pub fn audit(&self) -> &[String] {
        match self {
            Verdict::Allowed { audit, .. } | Verdict::Denied { audit, .. } => audit,
        }
    }

    /// The dry-run outcome.
    pub fn dry_run(&self) -> &DryRun {
        match self {
            Verdict::Allowed { dry_run, .. } | Verdict::Denied { dry_run, .. } => dry_run,
        }
    }
}

/// Every compiled policy the waypoint knows, in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    policies: Vec<Arc<CompiledPolicy>>,
}

impl Policies {
    /// Holds `policies`, sorted by `namespace/name` so reports are stable.
    pub fn new(mut policies: Vec<Arc<CompiledPolicy>>) -> Self {
        policies.sort_by_key(|p| p.key());
        Policies { policies }
    }

    /// Every policy.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.policies.iter()
    }

    /// Decides `req` with the policies that apply to it through `binding`.
    pub fn evaluate(&self, binding: &Binding, req: &Request<'_>) -> Verdict {
        self.decide_with(binding, req, || Facts::new(req))
    }

    /// Decides an opaque TCP connection from `source` to `destination`: rules that need
    /// HTTP attributes do not match in ALLOW and AUDIT policies and are ignored (match)
    /// in DENY and CUSTOM ones, as Istio evaluates TCP traffic.
    pub fn evaluate_tcp(
        &self,
        binding: &Binding,
        source: &Source,
        destination: &Destination,
    ) -> Verdict {
        let (parts, ()) = http::Request::new(()).into_parts();
        let req = Request {
            parts: &parts,
            source,
            destination,
            auth: None,
        };
        self.decide_with(binding, &req, || Facts::tcp(&req))
    }

    /// `facts` are worked out only when some policy applies.
    fn decide_with<'r>(
        &self,
        binding: &Binding,
        req: &'r Request<'r>,
        facts: impl FnOnce() -> Facts<'r>,
    ) -> Verdict {
        let applicable: Vec<&CompiledPolicy> = self
            .policies
            .iter()
            .map(Arc::as_ref)
            .filter(|p| binding.applies(&p.targets, req.destination))
            .collect();
        if applicable.is_empty() {
            return Verdict::Allowed {
                audit: Vec::new(),
                dry_run: DryRun::NotApplicable,
            };
        }
        let facts = &facts();
        let audit: Vec<String> = applicable
            .iter()
            .filter(|p| p.action == Action::Audit && !p.dry_run && p.matches(facts))
            .map(|p| p.key())
            .collect();
        let deciding = |dry_run: bool| {
            applicable
                .iter()
                .copied()
                .filter(move |p| p.dry_run == dry_run && p.action != Action::Audit)
        };
        let dry_run = if deciding(true).next().is_none() {
            DryRun::NotApplicable
        } else {
            match decide(deciding(true), facts) {
                Ok(()) => DryRun::WouldAllow,
                Err((policy, reason)) => DryRun::WouldDeny { policy, reason },
            }
        };
        match decide(deciding(false), facts) {
            Ok(()) => Verdict::Allowed { audit, dry_run },
            Err((policy, reason)) => Verdict::Denied {
                policy,
                reason,
                audit,
                dry_run,
            },
        }
    }
}

/// Istio's order over ALLOW, DENY and CUSTOM policies.
fn decide<'a>(
    policies: impl Iterator<Item = &'a CompiledPolicy>,
    facts: &Facts<'_>,
) -> Result<(), (String, DenyReason)> {
    let policies: Vec<&CompiledPolicy> = policies.collect();
    for (action, reason) in [
        (Action::Custom, DenyReason::CustomUnsupported),
        (Action::Deny, DenyReason::DenyPolicyMatched),
    ] {
        if let Some(p) = policies
            .iter()
            .find(|p| p.action == action && p.matches(facts))
        {
            return Err((p.key(), reason));
        }
    }
    let allows: Vec<&&CompiledPolicy> = policies
        .iter()
        .filter(|p| p.action == Action::Allow)
        .collect();
    if allows.is_empty() || allows.iter().any(|p| p.matches(facts)) {
        return Ok(());
    }
    let names: Vec<String> = allows.iter().map(|p| p.key()).collect();
    Err((names.join(", "), DenyReason::NoAllowPolicyMatched))
}

#[cfg(test)]
mod tests;
