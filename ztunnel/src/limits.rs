//! Resource bounds on what the world can make ztunnel hold for a pod, and their metrics.
//!
//! - **Concurrent inbound connections per pod** ([`LimitsConfig::max_inbound_connections`],
//!   default [`DEFAULT_MAX_INBOUND_CONNECTIONS`]): HBONE CONNECT streams on 15008 and
//!   plaintext connections on 15006 together. Over the limit a CONNECT is answered `503`
//!   and a plaintext connection is reset; either way the access line carries `UO`, the
//!   refusal is counted (`ztunnel_connections_over_limit_total{reason="max_inbound_connections"}`)
//!   and logged at most once per second per pod (with how many more were refused since).
//!   The default: an idle tunnelled connection costs ztunnel about 5 KiB of heap (see the
//!   README), so a pod at the limit holds roughly 160 MiB plus socket buffers and one
//!   descriptor per connection (two for plaintext): high enough that only a flood or a leak
//!   reaches it, low enough that one pod cannot exhaust the node on its own.
//! - **TLS handshakes in flight per pod on 15008** ([`LimitsConfig::max_pending_handshakes`],
//!   default [`DEFAULT_MAX_PENDING_HANDSHAKES`]). When they are all taken, the pod's HBONE
//!   accept loop stops accepting until one finishes (or times out): new connections wait
//!   in the kernel's listen backlog, whose overflow the kernel handles (SYNs dropped, the
//!   client retransmits), so nothing queues in ztunnel. The wait is counted
//!   (`reason="max_pending_handshakes"`) and logged like a refusal. Per pod rather than per
//!   ztunnel: a handshake happens before the peer is known (port 15008 is reachable from
//!   outside the mesh), so a node-wide pool would let one pod's flood, or a few hundred
//!   silent TCP connections to any one pod, stall every pod's inbound mesh traffic; per pod
//!   only the targeted pod waits. A pending handshake costs at most its 64 KiB read-ahead
//!   and the TLS state, so the default bounds one pod's handshakes to about 10 MiB.
//!
//! [`Limits`] holds the configuration and the metric families (register them with
//! [`Limits::register`]); each pod's proxies get a [`PodLimits`] with its own counts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Default bound on a pod's concurrent inbound connections (15008 streams + 15006).
pub const DEFAULT_MAX_INBOUND_CONNECTIONS: usize = 32_768;
/// Default bound on a pod's TLS handshakes in flight on 15008.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 128;
/// A limit's warning is logged at most this often per pod.
const LOG_INTERVAL_MS: u64 = 1_000;

/// The `reason` label of `ztunnel_connections_over_limit_total`, refused connections.
pub const REASON_CONNECTIONS: &str = "max_inbound_connections";
/// The `reason` label of `ztunnel_connections_over_limit_total`, accept paused.
pub const REASON_HANDSHAKES: &str = "max_pending_handshakes";

/// The configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Concurrent inbound connections per pod: HBONE CONNECT streams plus plaintext.
    pub max_inbound_connections: usize,
    /// TLS handshakes in flight per pod on the HBONE port.
    pub max_pending_handshakes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_inbound_connections: DEFAULT_MAX_INBOUND_CONNECTIONS,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverLimitLabels {
    /// `namespace/name`.
    pod: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    pod: String,
}

/// The limits and the metric families every pod's counts feed.
#[derive(Debug, Default)]
pub struct Limits {
    config: LimitsConfig,
    over_limit: Family<OverLimitLabels, Counter>,
    inbound_connections: Family<PodLabels, Gauge>,
    pending_handshakes: Family<PodLabels, Gauge>,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Limits {
            config,
            ..Limits::default()
        }
    }

    pub fn config(&self) -> LimitsConfig {
        self.config
    }

    /// Registers the metrics:
    /// - `ztunnel_connections_over_limit_total{pod, reason}` (counter): inbound
    ///   connections refused because the pod was at its limit
    ///   (`reason="max_inbound_connections"`), and times the pod's HBONE accept loop
    ///   paused because all its handshake slots were taken (`reason="max_pending_handshakes"`);
    /// - `ztunnel_inbound_connections_active{pod}` (gauge): open inbound connections;
    /// - `ztunnel_pending_handshakes{pod}` (gauge): TLS handshakes in flight on 15008.
    ///
    /// A pod's series go away with its proxies.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ztunnel_connections_over_limit",
            "Inbound connections refused (max_inbound_connections) or HBONE accepts paused (max_pending_handshakes) because a pod was at a limit",
            self.over_limit.clone(),
        );
        registry.register(
            "ztunnel_inbound_connections_active",
            "Open inbound connections per pod (HBONE CONNECT streams and plaintext), counted against max_inbound_connections",
            self.inbound_connections.clone(),
        );
        registry.register(
            "ztunnel_pending_handshakes",
            "TLS handshakes in flight per pod on the HBONE port, counted against max_pending_handshakes",
            self.pending_handshakes.clone(),
        );
    }

    /// The counts of one pod (`pod`: `namespace/name`), for as long as its proxies run.
    pub fn pod(self: &Arc<Self>, pod: String) -> Arc<PodLimits> {
        let labels = PodLabels { pod: pod.clone() };
        let over = |reason| {
            self.over_limit
                .get_or_create(&OverLimitLabels {
                    pod: pod.clone(),
                    reason,
                })
                .clone()
        };
        Arc::new(PodLimits {
            refused: over(REASON_CONNECTIONS),
            handshake_waits: over(REASON_HANDSHAKES),
            active_gauge: self.inbound_connections.get_or_create(&labels).clone(),
            pending_gauge: self.pending_handshakes.get_or_create(&labels).clone(),
            limits: self.clone(),
            pod,
            active: AtomicUsize::new(0),
            handshakes: Arc::new(Semaphore::new(self.config.max_pending_handshakes)),
            refused_log: Throttle::default(),
            wait_log: Throttle::default(),
        })
    }
}

/// One pod's inbound connections and handshakes, against the limits.
#[derive(Debug)]
pub struct PodLimits {
    limits: Arc<Limits>,
    pod: String,
    active: AtomicUsize,
    handshakes: Arc<Semaphore>,
    refused: Counter,
    handshake_waits: Counter,
    active_gauge: Gauge,
    pending_gauge: Gauge,
    refused_log: Throttle,
    wait_log: Throttle,
}

impl PodLimits {
    /// A slot for one more inbound connection, held for its life; `None` (counted and
    /// logged) when the pod is at its limit: the caller refuses the connection (`UO`).
    /// `protocol` (`HBONE` or `TCP`) is only for the log.
    pub fn try_connection(self: &Arc<Self>, protocol: &'static str) -> Option<ConnectionSlot> {
        let max = self.limits.config.max_inbound_connections;
        let taken = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            self.refused.inc();
            if let Some(suppressed) = self.refused_log.due() {
                warn!(
                    pod = %self.pod,
                    limit = max,
                    protocol,
                    refused_since_last_message = suppressed,
                    response_flags = "UO",
                    "inbound connection refused: the pod is at its limit of concurrent inbound connections (--max-inbound-connections)"
                );
            }
            return None;
        }
        self.active_gauge.inc();
        Some(ConnectionSlot { pod: self.clone() })
    }

    /// Open inbound connections.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// A handshake slot, held from accepting a connection on 15008 until its TLS and
    /// HTTP/2 handshakes are over. When none is free, waits (counted and logged) for
    /// one: the caller, the accept loop, takes it *before* accepting, so connections
    /// wait in the kernel's backlog, not in ztunnel.
    pub async fn handshake_slot(&self) -> HandshakeSlot {
        let permit = match self.handshakes.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.handshake_waits.inc();
                if let Some(suppressed) = self.wait_log.due() {
                    warn!(
                        pod = %self.pod,
                        limit = self.limits.config.max_pending_handshakes,
                        paused_since_last_message = suppressed,
                        "HBONE accept paused: the pod has its limit of TLS handshakes in flight (--max-pending-handshakes); new connections wait in the kernel's listen backlog"
                    );
                }
                // The semaphore is never closed, so this only waits.
                match self.handshakes.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => std::future::pending().await,
                }
            }
        };
        self.pending_gauge.inc();
        HandshakeSlot {
            _permit: permit,
            gauge: self.pending_gauge.clone(),
        }
    }

    /// Handshakes in flight.
    pub fn pending_handshakes(&self) -> usize {
        self.limits.config.max_pending_handshakes - self.handshakes.available_permits()
    }

    /// Inbound connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Times the HBONE accept loop had to wait for a handshake slot.
    pub fn handshake_waits(&self) -> u64 {
        self.handshake_waits.get()
    }
}

/// The HBONE server's accept loop waits on this before each accept.
impl hbone::HandshakeLimit for PodLimits {
    fn acquire(&self) -> BoxFuture<'_, Box<dyn Send>> {
        Box::pin(async move { Box::new(self.handshake_slot().await) as Box<dyn Send> })
    }
}

impl Drop for PodLimits {
    fn drop(&mut self) {
        let labels = PodLabels {
            pod: self.pod.clone(),
        };
        self.limits.inbound_connections.remove(&labels);
        self.limits.pending_handshakes.remove(&labels);
        for reason in [REASON_CONNECTIONS, REASON_HANDSHAKES] {
            self.limits.over_limit.remove(&OverLimitLabels {
                pod: self.pod.clone(),
                reason,
            });
        }
    }
}

/// One inbound connection counted against its pod's limit; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    pod: Arc<PodLimits>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.pod.active.fetch_sub(1, Ordering::AcqRel);
        self.pod.active_gauge.dec();
    }
}

/// One TLS handshake in flight; released on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Lets a message through at most once per [`LOG_INTERVAL_MS`], counting the rest.
#[derive(Debug, Default)]
struct Throttle {
    /// Milliseconds since [`epoch`] (plus one: zero means never) of the last message.
    last: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    /// `Some(n)` when a message is due now, `n` being those suppressed since the last.
    fn due(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.due_at(now)
    }

    fn due_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Acquire);
        let quiet = last == 0 || now.saturating_sub(last) >= LOG_INTERVAL_MS;
        if quiet
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests;
