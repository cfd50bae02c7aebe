//! Metrics: Prometheus / OpenMetrics text on `0.0.0.0:15020` (`--metrics-address`), at
//! `/metrics` and `/stats/prometheus` (the same page; Istio's ztunnel serves both).
//!
//! **Istio's TCP metrics**, counted per connection by the proxies' [`ConnectionLog`]s
//! (the access log gathers everything they need, in one place):
//!
//! | metric | counts |
//! |---|---|
//! | `istio_tcp_connections_opened_total` | connections established (accepted and routed), always with `response_flags="-"`; a refused connection is counted when it is refused |
//! | `istio_tcp_connections_closed_total` | connections over, with the final response flag (`DENY`, `UF`, `UH`, `NR`, or `-`) |
//! | `istio_tcp_received_bytes_total` | payload bytes from the client towards the server (the request direction), added at close |
//! | `istio_tcp_sent_bytes_total` | payload bytes from the server back to the client (the response direction), added at close |
//!
//! As in Istio, "received" and "sent" are seen from the server whichever side reports:
//! both reporters of one connection count the same bytes under the same names. Bytes
//! are application payload (for HBONE, inside the tunnel: no TLS or HTTP/2 framing).
//!
//! Labels ([`TrafficLabels`]), Istio's standard set: `reporter` (`source` outbound,
//! `destination` inbound); per side `*_workload` (the owner, e.g. the Deployment),
//! `*_canonical_service`, `*_canonical_revision`, `*_workload_namespace`, `*_principal`
//! (SPIFFE URI), `*_app`, `*_version`, `*_cluster`; `destination_service` (the hostname,
//! when a service was addressed), `destination_service_namespace`,
//! `destination_service_name`; `request_protocol` (`tcp`), `response_flags` and
//! `connection_security_policy` (`mutual_tls` for HBONE, else `unknown`). What ztunnel
//! does not know is `unknown`: a peer outside the state, a source principal without
//! mutual TLS.
//!
//! **ztunnel's own gauges**, read when scraped ([`Status`]):
//!
//! | metric | value |
//! |---|---|
//! | `ztunnel_active_connections{direction}` | connections open now, `outbound` or `inbound` |
//! | `ztunnel_pods{state}` | pods the node agent handed over: `running` (proxied) or `failed` (their proxies could not start) |
//! | `ztunnel_xds_connected` | 1 while the xDS stream to the controller is open |
//! | `ztunnel_xds_synced` | 1 once every subscribed type had a response applied |
//! | `ztunnel_xds_resources{type_url}` | resources held per type |
//! | `ztunnel_xds_acks_total{type_url}`, `ztunnel_xds_nacks_total{type_url}` | responses accepted (ACK sent) and refused (NACK sent) |
//! | `ztunnel_certificates{state}` | workload certificates by state: `available`, `expired`, `pending`, `failed` |
//! | `ztunnel_certificate_earliest_expiry_seconds` | seconds until the first held certificate expires (negative once expired); absent with none held |
//! | `ztunnel_certificate_expiration_timestamp_seconds{identity}` | each held certificate's expiry, Unix time |
//!
//! The xDS gauges are present only when workloads come from the controller.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access_log::{ConnectionLog, Kind, Peer, ResponseFlag, Security};
use crate::admin::{serve_http, text, with_type};
use crate::cert::{CertificateSource, CertificateState};
use crate::pods::{PodState, PodsView};
use crate::xds::{TYPE_URLS, XdsStatus};

/// Default address of the metrics endpoint (every interface: Prometheus scrapes it).
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:15020";
/// The paths it answers on, with the same page.
pub const PATHS: [&str; 2] = ["/metrics", "/stats/prometheus"];
/// What the page is: OpenMetrics text, which Prometheus asks for and reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub use dataplane::telemetry::{TrafficLabels, UNKNOWN, WorkloadLabels, cluster_id, value};

/// One side's labels.
struct Side {
    labels: WorkloadLabels,
    principal: String,
}

impl Side {
    /// `peer` as the labels name it. `principal_from_state`: with no verified identity,
    /// the state's identity of the workload stands in (Istio does so for destinations;
    /// a source principal is only ever the one mutual TLS proved).
    fn of(peer: &Peer, principal_from_state: bool) -> Side {
        let known = peer.known.as_deref();
        let mut labels = WorkloadLabels::of(known);
        if known.is_none() {
            labels.namespace = value(peer.namespace.as_deref());
        }
        let principal = peer
            .identity
            .as_ref()
            .or(known.filter(|_| principal_from_state).map(|w| &w.identity));
        Side {
            labels,
            principal: value(principal.map(ToString::to_string).as_deref()),
        }
    }
}

/// [`TrafficLabels`] of a connection, as ztunnel's access log describes it.
pub trait ConnectionLabels: Sized {
    /// The labels of the connection `log` describes, as it stands.
    fn of(log: &ConnectionLog) -> Self;
    /// The same labels without a response flag: how an open is counted.
    fn at_open(self) -> Self;
}

impl ConnectionLabels for TrafficLabels {
    fn of(log: &ConnectionLog) -> Self {
        let src = Side::of(&log.src, false);
        let dst = Side::of(&log.dst, true);
        TrafficLabels {
            reporter: match log.kind {
                Kind::Outbound => "source",
                Kind::Inbound | Kind::InboundPlaintext => "destination",
            }
            .to_owned(),
            source_app: src.labels.canonical_service.clone(),
            source_version: src.labels.canonical_revision.clone(),
            source_workload: src.labels.workload,
            source_canonical_service: src.labels.canonical_service,
            source_canonical_revision: src.labels.canonical_revision,
            source_workload_namespace: src.labels.namespace,
            source_principal: src.principal,
            source_cluster: src.labels.cluster,
            destination_service: value(log.dst_service.as_deref()),
            destination_service_namespace: value(log.dst_service_namespace.as_deref()),
            destination_service_name: value(log.dst_service_name.as_deref()),
            destination_app: dst.labels.canonical_service.clone(),
            destination_version: dst.labels.canonical_revision.clone(),
            destination_workload: dst.labels.workload,
            destination_canonical_service: dst.labels.canonical_service,
            destination_canonical_revision: dst.labels.canonical_revision,
            destination_workload_namespace: dst.labels.namespace,
            destination_principal: dst.principal,
            destination_cluster: dst.labels.cluster,
            request_protocol: "tcp".to_owned(),
            response_flags: match log.flag {
                ResponseFlag::None => "-",
                flag => flag.as_str(),
            }
            .to_owned(),
            connection_security_policy: match log.security {
                Security::MutualTls => "mutual_tls",
                Security::None => UNKNOWN,
            }
            .to_owned(),
        }
    }

    fn at_open(mut self) -> Self {
        self.response_flags = "-".to_owned();
        self
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The per-connection metrics, shared by every pod's proxies. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct TcpMetrics {
    opened: Family<TrafficLabels, Counter>,
    closed: Family<TrafficLabels, Counter>,
    received_bytes: Family<TrafficLabels, Counter>,
    sent_bytes: Family<TrafficLabels, Counter>,
    active: Family<DirectionLabels, Gauge>,
}

impl TcpMetrics {
    fn register(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters' names.
        registry.register(
            "istio_tcp_connections_opened",
            "The total number of TCP connections opened",
            self.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "The total number of TCP connections closed",
            self.closed.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            self.received_bytes.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            self.sent_bytes.clone(),
        );
        for direction in ["outbound", "inbound"] {
            let _ = self.active.get_or_create(&DirectionLabels { direction });
        }
        registry.register(
            "ztunnel_active_connections",
            "Connections open now, by direction (outbound: the pods' own; inbound: to the pods, HBONE or plaintext)",
            self.active.clone(),
        );
    }

    /// Counts `log`'s connection as opened and active; it stays active until the
    /// returned handle and its clones are dropped.
    pub(crate) fn open(&self, log: &ConnectionLog) -> Opened {
        let labels = TrafficLabels::of(log).at_open();
        self.opened.get_or_create(&labels).inc();
        let direction = direction(log.kind);
        self.active
            .get_or_create(&DirectionLabels { direction })
            .inc();
        Opened {
            _active: Arc::new(OpenConnection {
                metrics: self.clone(),
                direction,
            }),
        }
    }

    /// Counts `log`'s connection as closed, with its bytes; as opened too, unless
    /// `open_counted` says that was done already.
    pub(crate) fn close(&self, log: &ConnectionLog, open_counted: bool) {
        let labels = TrafficLabels::of(log);
        if !open_counted {
            self.opened.get_or_create(&labels.clone().at_open()).inc();
        }
        self.closed.get_or_create(&labels).inc();
        self.received_bytes
            .get_or_create(&labels)
            .inc_by(log.bytes_recv);
        self.sent_bytes
            .get_or_create(&labels)
            .inc_by(log.bytes_sent);
    }
}

fn direction(kind: Kind) -> &'static str {
    match kind {
        Kind::Outbound => "outbound",
        Kind::Inbound | Kind::InboundPlaintext => "inbound",
    }
}

/// A connection counted as opened: active until the last clone goes.
#[derive(Clone, Debug)]
pub struct Opened {
    _active: Arc<OpenConnection>,
}

#[derive(Debug)]
struct OpenConnection {
    metrics: TcpMetrics,
    direction: &'static str,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let direction = self.direction;
        self.metrics
            .active
            .get_or_create(&DirectionLabels { direction })
            .dec();
    }
}

/// What ztunnel's own gauges are read from, at scrape time.
#[derive(Clone)]
pub struct Status {
    /// Set when workloads come from the controller.
    pub xds: Option<watch::Receiver<XdsStatus>>,
    pub certs: Arc<dyn CertificateSource>,
    pub pods: PodsView,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("xds", &self.xds.is_some())
            .finish_non_exhaustive()
    }
}

/// Encodes one gauge sample per `(labels, value)`.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(metric)
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whole seconds from `from` to `to`, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

impl Collector for Status {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let pods = self.pods.list();
        let running = pods
            .iter()
            .filter(|p| matches!(p.state, PodState::Running { .. }))
            .count();
        gauges(
            &mut encoder,
            "ztunnel_pods",
            "Pods the node agent handed over, by state: running (proxied) or failed (proxies could not start)",
            [
                ([("state", "running")], count(running)),
                ([("state", "failed")], count(pods.len() - running)),
            ],
        )?;

        let now = SystemTime::now();
        let certs = self.certs.certificates();
        let (mut available, mut expired, mut pending, mut failed) = (0, 0, 0, 0);
        let mut expiries = Vec::new();
        for cert in &certs {
            match &cert.state {
                CertificateState::Available { not_after, .. } => {
                    if *not_after <= now {
                        expired += 1;
                    } else {
                        available += 1;
                    }
                    expiries.push((cert.identity.to_string(), *not_after));
                }
                CertificateState::Pending => pending += 1,
                CertificateState::Failed { .. } => failed += 1,
            }
        }
        gauges(
            &mut encoder,
            "ztunnel_certificates",
            "Workload certificates held, by state: available, expired, pending (first request in flight), failed",
            [
                ([("state", "available")], available),
                ([("state", "expired")], expired),
                ([("state", "pending")], pending),
                ([("state", "failed")], failed),
            ],
        )?;
        if let Some(earliest) = expiries.iter().map(|(_, t)| *t).min() {
            gauge(
                &mut encoder,
                "ztunnel_certificate_earliest_expiry_seconds",
                "Seconds until the first held workload certificate expires (negative once expired)",
                seconds_between(now, earliest),
            )?;
        }
        gauges(
            &mut encoder,
            "ztunnel_certificate_expiration_timestamp_seconds",
            "When each held workload certificate expires, Unix time in seconds",
            expiries.iter().map(|(identity, t)| {
                (
                    [("identity", identity.as_str())],
                    seconds_between(UNIX_EPOCH, *t),
                )
            }),
        )?;

        let Some(xds) = &self.xds else {
            return Ok(());
        };
        let status = xds.borrow().clone();
        gauge(
            &mut encoder,
            "ztunnel_xds_connected",
            "1 while the xDS stream to the controller is open, else 0",
            i64::from(status.connected),
        )?;
        gauge(
            &mut encoder,
            "ztunnel_xds_synced",
            "1 once every subscribed xDS type had a response applied, else 0",
            i64::from(status.synced),
        )?;
        let of_type = |t: &str| status.types.get(t).cloned().unwrap_or_default();
        gauges(
            &mut encoder,
            "ztunnel_xds_resources",
            "xDS resources held, by type URL",
            TYPE_URLS
                .iter()
                .map(|t| ([("type_url", *t)], count(of_type(t).resources))),
        )?;
        counters(
            &mut encoder,
            "ztunnel_xds_acks",
            "xDS responses applied (answered with an ACK), by type URL",
            TYPE_URLS
                .iter()
                .map(|t| ([("type_url", *t)], of_type(t).applied)),
        )?;
        counters(
            &mut encoder,
            "ztunnel_xds_nacks",
            "xDS responses refused (answered with a NACK), by type URL",
            TYPE_URLS
                .iter()
                .map(|t| ([("type_url", *t)], of_type(t).rejected)),
        )
    }
}

/// The registry behind the endpoint: the TCP metrics and, once added, the gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Registry,
    tcp: TcpMetrics,
}

impl Metrics {
    /// The TCP metrics, registered (the gauges come with [`Self::with_status`]).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tcp = TcpMetrics::default();
        tcp.register(&mut registry);
        Metrics { registry, tcp }
    }

    /// Adds ztunnel's own gauges, read from `status` at each scrape.
    pub fn with_status(mut self, status: Status) -> Self {
        self.registry.register_collector(Box::new(status));
        self
    }

    /// Lets another part of ztunnel register its own metrics (e.g. [`crate::limits`]).
    pub fn with(mut self, register: impl FnOnce(&mut Registry)) -> Self {
        register(&mut self.registry);
        self
    }

    /// What the proxies count connections in.
    pub fn tcp(&self) -> &TcpMetrics {
        &self.tcp
    }

    /// The exposition, in OpenMetrics text (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => out,
            // Writing to a String does not fail; a metric that cannot be encoded does.
            Err(fmt::Error) => format!("# metrics could not be encoded\n{out}"),
        }
    }
}

/// Serves [`PATHS`] on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) {
    serve_http(
        "metrics",
        listener,
        move |request| respond(&metrics, request),
        shutdown,
    )
    .await
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !PATHS.contains(&path) {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found; metrics are at {}", PATHS.join(" and ")),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    with_type(StatusCode::OK, metrics.encode().into_bytes(), CONTENT_TYPE)
}

#[cfg(test)]
mod tests;
