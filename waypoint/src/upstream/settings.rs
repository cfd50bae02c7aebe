//! Compiled DestinationRule settings, with Istio's defaults for what a rule leaves unset.

use std::time::Duration;

/// How a cluster picks an endpoint (`loadBalancer`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// `ROUND_ROBIN`: endpoints in turn.
    RoundRobin,
    /// `LEAST_REQUEST` (and its deprecated alias `LEAST_CONN`): power of two choices over
    /// the requests in flight. The default, as in Istio since 1.14 (which replaced
    /// Envoy's `ROUND_ROBIN` default; `UNSPECIFIED` means this too).
    #[default]
    LeastRequest,
    /// `RANDOM`: a uniformly random endpoint.
    Random,
    /// `PASSTHROUGH`: no load balancing; forward to the original destination address.
    Passthrough,
    /// `consistentHash`: session affinity by a hash of part of the request.
    ConsistentHash(ConsistentHash),
}

/// `loadBalancer.consistentHash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistentHash {
    /// What to hash.
    pub key: HashKey,
    /// How hashes map to endpoints.
    pub table: HashTable,
}

/// The hash input of a consistent-hash policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `httpHeaderName`: the header's value (several values joined with `,`).
    Header(http::HeaderName),
    /// `httpCookie`: the cookie's value; generated when missing and a ttl is set.
    Cookie(CookieKey),
    /// `useSourceIp: true`: the client IP.
    SourceIp,
    /// `httpQueryParameterName`: the first value of the query parameter (raw, not
    /// percent-decoded).
    QueryParameter(String),
}

/// `consistentHash.httpCookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieKey {
    /// Cookie name.
    pub name: String,
    /// `Path` of a generated cookie (omitted when empty).
    pub path: String,
    /// `Max-Age` of a generated cookie. `None`: a missing cookie is not generated (the
    /// request hashes like one with no key). `Some(0)`: a session cookie is generated.
    pub ttl: Option<Duration>,
    /// Extra attributes of a generated cookie (`name=value`, or `name` when the value is
    /// empty).
    pub attributes: Vec<(String, String)>,
}

/// How consistent hashes map to endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashTable {
    /// Ring hash (Istio's default): each endpoint gets `ceil(minimum_size / n)` points on
    /// a 64-bit ring, rounded up to a power of two; a request goes to the first point at
    /// or after its hash. Removing an endpoint only moves the keys that were on its
    /// points (about 1/n of them), unless the per-endpoint count changes (see `table.rs`).
    Ring {
        /// `ringHash.minimumRingSize` (or the deprecated `minimumRingSize`); default 1024.
        minimum_size: u64,
    },
    /// Maglev: a lookup table of `table_size` (a prime, default 65537) slots filled from
    /// per-endpoint permutations.
    Maglev {
        /// `maglev.tableSize`.
        table_size: u64,
    },
}

/// Istio's (and Envoy's) default minimum ring size.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's maximum ring size.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev table size.
pub const DEFAULT_MAGLEV_SIZE: u64 = 65537;

/// Connection pool limits and connection settings of a cluster (`connectionPool`).
///
/// Istio disables Envoy's circuit breakers unless a rule sets them, by setting the
/// thresholds to 2^32-1; so do these defaults (Envoy's own would be 1024 connections,
/// pending and active requests, and 3 concurrent retries). As in Istio, a limit of 0 in a
/// rule means unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLimits {
    /// `tcp.maxConnections`: upstream connections open at once, over all endpoints.
    /// Upstream connections of the waypoint are HBONE `CONNECT` streams to the
    /// endpoints' ztunnels, each carrying one inner HTTP connection (as Envoy's internal
    /// upstream connections in an Istio waypoint); this limit counts those.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests queued waiting for a connection.
    pub max_pending_requests: u32,
    /// `http.http2MaxRequests`: requests in flight, HTTP/1 and HTTP/2.
    pub max_requests: u32,
    /// `http.maxRetries`: retries in flight.
    pub max_retries: u32,
    /// `http.maxRequestsPerConnection`: `None` is unlimited; 1 disables keep-alive.
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxConcurrentStreams` per HTTP/2 connection; `None`: the peer's limit.
    pub max_concurrent_streams: Option<u32>,
    /// `http.idleTimeout`: close an upstream HTTP connection idle this long (default 1h,
    /// Envoy's; zero disables).
    pub idle_timeout: Duration,
    /// `tcp.idleTimeout`: for TCP proxying (default 1h; zero disables).
    pub tcp_idle_timeout: Duration,
    /// `tcp.connectTimeout` (default 10s, Istio's mesh default).
    pub connect_timeout: Duration,
    /// `tcp.maxConnectionDuration`: `None` is unlimited.
    pub max_connection_duration: Option<Duration>,
    /// `tcp.tcpKeepalive`; `None`: the OS defaults.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `http.h2UpgradePolicy` / `http.useClientProtocol`.
    pub protocol: UpstreamProtocol,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
            max_requests_per_connection: None,
            max_concurrent_streams: None,
            idle_timeout: Duration::from_secs(3600),
            tcp_idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(10),
            max_connection_duration: None,
            tcp_keepalive: None,
            protocol: UpstreamProtocol::Default,
        }
    }
}

/// `tcp.tcpKeepalive`: `None` fields keep the OS default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
}

/// Which HTTP version to speak to the upstream application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// The mesh default (the service port's protocol).
    #[default]
    Default,
    /// `h2UpgradePolicy: UPGRADE`: HTTP/1.1 requests go upstream as HTTP/2.
    Upgrade,
    /// `h2UpgradePolicy: DO_NOT_UPGRADE`.
    DoNotUpgrade,
    /// `useClientProtocol: true`: the downstream request's version.
    ClientProtocol,
}

/// Outlier detection settings of a cluster (`outlierDetection`), with Istio's mapping to
/// Envoy and Envoy's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// `consecutive5xxErrors`: eject after this many 5xx in a row. Unset: 5 (Envoy's
    /// default, which Istio keeps); 0 disables (`None`). The deprecated
    /// `consecutiveErrors` disables it (Istio maps that field to gateway errors only).
    pub consecutive_5xx: Option<u32>,
    /// `consecutiveGatewayErrors` (or the deprecated `consecutiveErrors`): eject after
    /// this many 502/503/504 (and connect failures, unless split) in a row. Unset or 0:
    /// disabled.
    pub consecutive_gateway: Option<u32>,
    /// `splitExternalLocalOriginErrors`: count failures to reach the endpoint (connect
    /// failures, resets, timeouts) apart from the responses it sends.
    pub split_local_origin: bool,
    /// `consecutiveLocalOriginFailures` (only with the split): default 5, 0 disables.
    pub consecutive_local_origin: Option<u32>,
    /// `interval`: the analysis tick; unejections happen on ticks (default 10s).
    pub interval: Duration,
    /// `baseEjectionTime` (default 30s); an ejection lasts this times the number of
    /// recent ejections of the host.
    pub base_ejection_time: Duration,
    /// Cap of an ejection: Envoy's `max_ejection_time` default, the larger of 300s and
    /// the base ejection time (Istio does not set it).
    pub max_ejection_time: Duration,
    /// `maxEjectionPercent` (default 10): an ejection happens only if the ejected share
    /// after it is at most this (Envoy's current rule; so with fewer than 10 endpoints
    /// the default ejects none).
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (default 0): when fewer than this percentage of endpoints are
    /// healthy, ejections are ignored and all endpoints are used (Envoy's panic mode).
    pub min_health_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: Some(5),
            consecutive_gateway: None,
            split_local_origin: false,
            consecutive_local_origin: Some(5),
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}
