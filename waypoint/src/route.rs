//! VirtualService routing: [`compile`] turns a typed `VirtualService` into a
//! [`CompiledVirtualService`] (regexes compiled and anchored, durations parsed, hosts
//! expanded to FQDNs), a [`RouteTable`] indexes those by host, and
//! [`RouteTable::route`] picks the [`Route`] for one request.
//!
//! # Host selection
//!
//! For service traffic the destination service's FQDN is compared with the VirtualService
//! hosts: an exact host wins over a wildcard (`*.example.com`, matching any name ending in
//! `.example.com`), and among wildcards the longest suffix wins. Ties go to the
//! VirtualService first in `(namespace, name)` order. Exactly **one** VirtualService is
//! used per host and its rules are not merged with others (Istio does not merge
//! VirtualServices for mesh traffic either): when none of its rules match, the request
//! takes the default route to the service itself, even if another VirtualService with a
//! wildcard host would have matched. For workload traffic (a pod addressed by its IP) a
//! VirtualService applies when one of its hosts is that IP literal.
//!
//! Short hosts are expanded in the VirtualService's namespace: `reviews` is
//! `reviews.<ns>.svc.<suffix>`, `reviews.ns` is `reviews.ns.svc.<suffix>` and
//! `reviews.ns.svc` is `reviews.ns.svc.<suffix>`. A VirtualService *host* with two or three
//! labels also keeps its literal form (`example.com` matches a destination named exactly
//! that), since it may not be a short name at all; a *destination* host is always expanded
//! (the mesh only routes to Kubernetes services).
//!
//! # Rules
//!
//! The first `http[]` rule with a `match[]` entry that fully matches wins; a rule without
//! match entries matches every request. A match entry, or a whole VirtualService, whose
//! `gateways` list is non-empty and lacks `mesh` does not apply to the waypoint: such a
//! VirtualService compiles with [`CompiledVirtualService::applies_to_mesh`] false and
//! [`RouteTable::new`] leaves it out; a rule whose match entries all name other gateways is
//! dropped (it does not become a catch-all).
//!
//! What the waypoint does not apply is reported in [`CompiledVirtualService::warnings`]
//! rather than rejecting the object: `tcp` and `tls` routes (the waypoint routes HTTP
//! here) and `delegate` rules (resolving a delegate needs the other VirtualService; as in
//! Istio when the delegate cannot be found, the delegating rule is skipped).
//! `exportTo` is not evaluated here: visibility is decided by whoever hands the waypoint
//! its VirtualServices.

mod action;
mod compile;
mod cors;
mod fault;
mod headers;
mod matching;
mod redirect;
mod retry;
mod rewrite;
mod table;

pub use action::{Action, Forward, MirrorTarget, Route, WeightedDestination};
pub use compile::{CompileContext, compile};
pub use cors::Cors;
pub use fault::{Abort, Fault, FaultAbort, FaultDecision, FaultDelay};
pub use headers::HeaderOps;
pub use matching::{PathMatch, RequestMatch, StringMatcher};
pub use redirect::{DirectResponse, Redirect, RedirectPort};
pub use retry::{AttemptOutcome, RetryOn, RetryPolicy};
pub use rewrite::{Rewrite, RewriteError, UriRewrite};
pub use table::{CompiledVirtualService, HostPattern, Matched, RouteTable, Rule};

#[cfg(test)]
mod tests;
