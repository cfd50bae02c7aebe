//! [`Route`]: what happens to a request a rule selected.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::cors::Cors;
use super::fault::Fault;
use super::headers::HeaderOps;
use super::redirect::{DirectResponse, Redirect};
use super::retry::RetryPolicy;
use super::rewrite::Rewrite;

/// One compiled `http[]` rule's handling.
#[derive(Debug, Clone)]
pub struct Route {
    /// The rule's `name` (may be empty).
    pub name: String,
    /// How access lines name the rule: its `name`, else `NAMESPACE/VIRTUALSERVICE#INDEX`
    /// (the index among the VirtualService's mesh rules; set when the rule is kept).
    pub log_name: Arc<str>,
    /// Forward, redirect or answer directly.
    pub action: Action,
    /// Path / authority rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// `headers.request`, applied before forwarding (before the chosen destination's).
    pub request_headers: HeaderOps,
    /// `headers.response`, applied to the response (before the destination's).
    pub response_headers: HeaderOps,
    /// `timeout`; `None` when absent or `0s` (no timeout, Istio's default).
    pub timeout: Option<Duration>,
    /// `retries`; `None` when disabled (`attempts: 0`). Without `retries` in the config
    /// this is [`RetryPolicy::istio_default`].
    pub retries: Option<RetryPolicy>,
    /// `fault`.
    pub fault: Option<Fault>,
    /// `mirror` (with `mirrorPercentage` / `mirrorPercent`) or `mirrors[]`.
    pub mirrors: Vec<MirrorTarget>,
    /// `corsPolicy`.
    pub cors: Option<Cors>,
}

/// What the route does with the request.
#[derive(Debug, Clone)]
pub enum Action {
    /// `route`: forward to one of weighted destinations.
    Forward(Forward),
    /// `redirect`.
    Redirect(Redirect),
    /// `directResponse`.
    DirectResponse(DirectResponse),
}

/// Weighted destinations; at least one has a positive weight.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The destinations, in config order.
    pub destinations: Vec<WeightedDestination>,
}

/// A `route[]` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedDestination {
    /// The service FQDN (short names expanded).
    pub host: String,
    /// DestinationRule subset.
    pub subset: Option<Arc<str>>,
    /// Service port; `None`: the port the request was sent to.
    pub port: Option<u16>,
    /// Relative weight; a single destination without a weight has 100; 0 is never picked.
    pub weight: u32,
    /// Per-destination `headers.request`, applied after the route's.
    pub request_headers: HeaderOps,
    /// Per-destination `headers.response`, applied after the route's.
    pub response_headers: HeaderOps,
}

/// A destination requests are copied to (responses are discarded).
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorTarget {
    /// The service FQDN.
    pub host: String,
    /// DestinationRule subset.
    pub subset: Option<Arc<str>>,
    /// Service port; `None`: the port the request was sent to.
    pub port: Option<u16>,
    /// Share of requests mirrored, 0..=100 (default 100).
    pub percentage: f64,
}

/// Draws whether an event of probability `percentage` % happens.
pub(super) fn sample(rng: &mut impl Rng, percentage: f64) -> bool {
    percentage >= 100.0 || (percentage > 0.0 && rng.random::<f64>() * 100.0 < percentage)
}

impl Forward {
    /// Picks a destination with probability weight / total weight.
    pub fn pick(&self, rng: &mut impl Rng) -> &WeightedDestination {
        let total: u32 = self.destinations.iter().map(|d| d.weight).sum();
        if total > 0 {
            let mut point = rng.random_range(0..total);
            for d in &self.destinations {
                if point < d.weight {
                    return d;
                }
                point -= d.weight;
            }
        }
        &self.destinations[0]
    }
}

impl Route {
    /// Picks the destination to forward to; `None` for a redirect or direct response.
    pub fn pick(&self, rng: &mut impl Rng) -> Option<&WeightedDestination> {
        match &self.action {
            Action::Forward(f) => Some(f.pick(rng)),
            _ => None,
        }
    }

    /// The mirrors this request is copied to, each drawn by its percentage.
    pub fn mirrored<'a, R: Rng>(
        &'a self,
        rng: &'a mut R,
    ) -> impl Iterator<Item = &'a MirrorTarget> + 'a {
        self.mirrors
            .iter()
            .filter(move |m| sample(rng, m.percentage))
    }
}
