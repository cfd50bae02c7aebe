//! Outlier detection (passive health checking) for one cluster, after Envoy's
//! consecutive-error detectors. Evaluated lazily from the `now` passed in: nothing runs
//! on a timer.
//!
//! - A 5xx response counts towards `consecutive5xxErrors`; a 502/503/504 also towards
//!   `consecutiveGatewayErrors`; any other status resets both; a 5xx other than those
//!   three resets the gateway count.
//! - A local-origin failure (connect failure, reset, timeout) counts as a 503 unless
//!   `splitExternalLocalOriginErrors` is set; then it counts only towards
//!   `consecutiveLocalOriginFailures`, which a successful connection resets.
//! - Reaching a threshold ejects the host at once (and resets that counter), unless the
//!   ejected share of the cluster would then exceed `maxEjectionPercent` (Envoy's rule
//!   since 1.27: `100 * (ejected + 1) / hosts <= maxEjectionPercent`, no
//!   always-one-host exception).
//! - An ejection lasts `baseEjectionTime * k`, capped at the max ejection time, where `k`
//!   is incremented at each ejection and decremented at each analysis tick at which the
//!   host is not ejected (Envoy's `ejectTimeBackoff`). Ticks happen every `interval`
//!   from the detector's creation; a host is unejected at the first tick at which its
//!   ejection time has passed, and its counters are reset then.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::settings::OutlierConfig;
use crate::context::Endpoint;

/// What happened to a request sent to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Response(u16),
    /// The endpoint could not be reached or did not answer: connect failure, reset,
    /// timeout.
    LocalOriginFailure,
    /// A connection to the endpoint was established (resets the local-origin count in
    /// split mode; ignored otherwise).
    LocalOriginSuccess,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// The tick at which the current ejection ends.
    ejected_until: Option<Instant>,
    /// When the last ejection ended (for the backoff decay).
    unejected_at: Option<Instant>,
    backoff: u32,
}

/// The outlier detector of one cluster.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    start: Instant,
    hosts: Mutex<(HashMap<String, HostState>, usize)>,
    /// Hosts with an ejection not yet settled; lets `filter` skip the lock when zero.
    ejections: AtomicUsize,
}

impl OutlierDetector {
    /// A detector whose analysis ticks are `now + k * interval`.
    pub fn new(config: OutlierConfig, now: Instant) -> Self {
        OutlierDetector {
            config,
            start: now,
            hosts: Mutex::new((HashMap::new(), 0)),
            ejections: AtomicUsize::new(0),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Sets the cluster's membership (the base of `maxEjectionPercent`): state of hosts
    /// no longer present is dropped. Without a call, the hosts recorded so far count.
    pub fn set_hosts(&self, endpoints: &[Endpoint]) {
        let mut guard = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let (hosts, size) = &mut *guard;
        let before = hosts.values().filter(|h| h.ejected_until.is_some()).count();
        hosts.retain(|uid, _| endpoints.iter().any(|e| &*e.uid == uid));
        let after = hosts.values().filter(|h| h.ejected_until.is_some()).count();
        self.ejections.fetch_sub(before - after, Ordering::AcqRel);
        *size = endpoints.len();
    }

    /// Records the outcome of a request to the endpoint with `uid`. Returns whether it
    /// ejected the endpoint.
    pub fn record(&self, uid: &str, outcome: Outcome, now: Instant) -> bool {
        let c = &self.config;
        let mut guard = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let (hosts, _) = &mut *guard;
        let host = hosts.entry(uid.to_owned()).or_default();
        self.settle(host, now);
        let status = match (outcome, c.split_local_origin) {
            (Outcome::Response(s), _) => s,
            (Outcome::LocalOriginFailure, false) => 503,
            (Outcome::LocalOriginSuccess, false) => return false,
            (Outcome::LocalOriginFailure, true) => {
                host.consecutive_local += 1;
                if reached(host.consecutive_local, c.consecutive_local_origin) {
                    host.consecutive_local = 0;
                    return self.eject(&mut guard, uid, now);
                }
                return false;
            }
            (Outcome::LocalOriginSuccess, true) => {
                host.consecutive_local = 0;
                return false;
            }
        };
        if !(500..600).contains(&status) {
            host.consecutive_5xx = 0;
            host.consecutive_gateway = 0;
            return false;
        }
        if matches!(status, 502..=504) {
            host.consecutive_gateway += 1;
        } else {
            host.consecutive_gateway = 0;
        }
        host.consecutive_5xx += 1;
        let mut trigger = false;
        if reached(host.consecutive_gateway, c.consecutive_gateway) {
            host.consecutive_gateway = 0;
            trigger = true;
        }
        if reached(host.consecutive_5xx, c.consecutive_5xx) {
            host.consecutive_5xx = 0;
            trigger = true;
        }
        trigger && self.eject(&mut guard, uid, now)
    }

    /// Whether the endpoint with `uid` is ejected at `now`.
    pub fn is_ejected(&self, uid: &str, now: Instant) -> bool {
        if self.ejections.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut guard = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        match guard.0.get_mut(uid) {
            Some(host) => {
                self.settle(host, now);
                host.ejected_until.is_some()
            }
            None => false,
        }
    }

    /// `endpoints` without the ejected ones; all of them (panic mode) when fewer than
    /// `minHealthPercent` percent would remain. Borrows when nothing is removed.
    pub fn filter<'a>(&self, endpoints: &'a [Endpoint], now: Instant) -> Cow<'a, [Endpoint]> {
        if self.ejections.load(Ordering::Acquire) == 0 {
            return Cow::Borrowed(endpoints);
        }
        let mut guard = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let hosts = &mut guard.0;
        let healthy: Vec<Endpoint> = endpoints
            .iter()
            .filter(|e| match hosts.get_mut(&*e.uid) {
                Some(host) => {
                    self.settle(host, now);
                    host.ejected_until.is_none()
                }
                None => true,
            })
            .cloned()
            .collect();
        let panic = (healthy.len() as u64) * 100
            < u64::from(self.config.min_health_percent) * endpoints.len() as u64;
        if panic || healthy.len() == endpoints.len() {
            Cow::Borrowed(endpoints)
        } else {
            Cow::Owned(healthy)
        }
    }

    /// Applies the ticks up to `now`: ends an expired ejection (resetting the counters)
    /// and decays the backoff by the ticks the host has since spent not ejected.
    fn settle(&self, host: &mut HostState, now: Instant) {
        if let Some(until) = host.ejected_until
            && until <= now
        {
            host.ejected_until = None;
            host.unejected_at = Some(until);
            host.consecutive_5xx = 0;
            host.consecutive_gateway = 0;
            host.consecutive_local = 0;
            self.ejections.fetch_sub(1, Ordering::AcqRel);
        }
        if host.ejected_until.is_none()
            && let Some(since) = host.unejected_at
        {
            let ticks = now.saturating_duration_since(since).as_nanos()
                / self.config.interval.as_nanos().max(1);
            let ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
            if ticks > 0 {
                host.backoff = host.backoff.saturating_sub(ticks);
                // Later decay counts from the last tick applied.
                host.unejected_at = Some(since + self.config.interval * ticks);
            }
        }
    }

    fn eject(
        &self,
        guard: &mut (HashMap<String, HostState>, usize),
        uid: &str,
        now: Instant,
    ) -> bool {
        let c = &self.config;
        let (hosts, size) = guard;
        let total = (*size).max(hosts.len()) as u64;
        let ejected = hosts
            .values()
            .filter(|h| h.ejected_until.is_some_and(|t| t > now))
            .count() as u64;
        let Some(host) = hosts.get_mut(uid) else {
            return false;
        };
        if host.ejected_until.is_some() {
            return false;
        }
        if 100 * (ejected + 1) > u64::from(c.max_ejection_percent) * total {
            return false;
        }
        if c.base_ejection_time * host.backoff < c.max_ejection_time {
            host.backoff += 1;
        }
        let duration = (c.base_ejection_time * host.backoff).min(c.max_ejection_time);
        host.ejected_until = Some(self.next_tick(now + duration));
        host.unejected_at = None;
        self.ejections.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The first analysis tick at or after `t`.
    fn next_tick(&self, t: Instant) -> Instant {
        let interval = self.config.interval.as_nanos().max(1);
        let since = t.saturating_duration_since(self.start).as_nanos();
        let ticks = since.div_ceil(interval);
        let nanos = u64::try_from(ticks * interval).unwrap_or(u64::MAX);
        self.start + Duration::from_nanos(nanos)
    }
}

fn reached(count: u32, threshold: Option<u32>) -> bool {
    threshold.is_some_and(|t| count >= t)
}
