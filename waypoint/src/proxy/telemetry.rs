//! One request's telemetry: Istio's request metrics and one access line (target
//! `access`), written once the response is over.

use std::sync::Arc;
use std::time::Instant;

use dataplane::state::{Service, Workload};
use http::{HeaderValue, Method, Uri, Version};
use tracing::info;

use dataplane::telemetry::{TrafficLabels, WorkloadLabels, value};

use crate::metrics::{RequestLabels, RequestMetrics, SeriesKey, SeriesObjects, UNKNOWN};

/// What is known about a request as it goes through the waypoint. Cheap to fill in: the
/// request's parts are shared (`Bytes`) or reference-counted, and the texts of the access
/// line are only written out when it is.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub started: Instant,
    pub method: Method,
    /// The request target as received: path and query (and HTTP/2's authority).
    pub uri: Uri,
    /// The `Host` header as received (HTTP/1.1's authority).
    pub host: Option<HeaderValue>,
    pub version: Version,
    /// `x-request-id` (visible ASCII: it was checked or generated).
    pub request_id: HeaderValue,
    pub request_bytes: u64,
    /// The client's SPIFFE identity, as a URI.
    pub source_principal: Option<Arc<str>>,
    pub source: Option<Arc<Workload>>,
    /// The client's IP.
    pub source_addr: Option<Arc<str>>,
    /// The destination service.
    pub service: Option<Arc<Service>>,
    /// The endpoint the request went to.
    pub upstream: Option<Arc<Workload>>,
    /// The endpoint's `IP:port`.
    pub upstream_addr: Option<Arc<str>>,
    /// The rule's name in access lines ([`crate::route::Route::log_name`]).
    pub route: Option<Arc<str>>,
    pub status: u16,
    /// A gRPC request (`content-type: application/grpc...`): Istio's `request_protocol`.
    pub grpc: bool,
    /// From the response headers (trailers-only) or its trailers.
    pub grpc_status: Option<u32>,
    /// Envoy's response flags (`UO`, `UH`, `UF`, `UT`, `FI`, `DI`, `NC`), `-` for none.
    pub flags: Vec<&'static str>,
    /// Why the waypoint answered itself (denial, fault, no upstream), when it did.
    pub detail: Option<String>,
}

impl RequestRecord {
    /// Envoy's response flags, comma-separated; `-` for none.
    pub fn flags(&self) -> std::borrow::Cow<'static, str> {
        if self.flags.is_empty() {
            "-".into()
        } else {
            self.flags.join(",").into()
        }
    }

    /// The request's path and query (`/` when it had none).
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The request's authority: the URI's, else the `Host` header (`-` for none).
    pub fn authority(&self) -> &str {
        crate::context::authority_of(&self.uri, self.host.as_ref()).unwrap_or("-")
    }

    /// `x-request-id`.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    fn protocol(&self) -> &'static str {
        if self.grpc || self.grpc_status.is_some() {
            "grpc"
        } else {
            "http"
        }
    }

    pub fn labels(&self) -> RequestLabels {
        // The same workload labels ztunnel reports (`*_app`/`*_version`: canonical).
        let src = WorkloadLabels::of(self.source.as_deref());
        let dst = WorkloadLabels::of(self.upstream.as_deref());
        let defaults = RequestLabels::default();
        RequestLabels {
            traffic: TrafficLabels {
                source_app: src.canonical_service.clone(),
                source_version: src.canonical_revision.clone(),
                source_workload: src.workload,
                source_canonical_service: src.canonical_service,
                source_canonical_revision: src.canonical_revision,
                source_workload_namespace: src.namespace,
                source_principal: value(self.source_principal.as_deref()),
                source_cluster: src.cluster,
                destination_service: value(self.service.as_ref().map(|s| s.hostname.as_str())),
                destination_service_name: value(self.service.as_ref().map(|s| s.name.as_str())),
                destination_service_namespace: value(
                    self.service.as_ref().map(|s| s.namespace.as_str()),
                ),
                destination_app: dst.canonical_service.clone(),
                destination_version: dst.canonical_revision.clone(),
                destination_workload: dst.workload,
                destination_canonical_service: dst.canonical_service,
                destination_canonical_revision: dst.canonical_revision,
                destination_workload_namespace: dst.namespace,
                destination_principal: self
                    .upstream
                    .as_ref()
                    .map_or_else(|| UNKNOWN.to_owned(), |w| w.identity.to_string()),
                destination_cluster: dst.cluster,
                request_protocol: self.protocol().to_owned(),
                response_flags: self.flags().into_owned(),
                ..defaults.traffic
            },
            response_code: self.status.to_string(),
            grpc_response_status: self.grpc_status.map(|s| s.to_string()).unwrap_or_default(),
        }
    }

    /// Records the metrics and writes the access line; `response_bytes` is what the
    /// response body carried.
    pub fn finish(&self, metrics: &RequestMetrics, response_bytes: u64) {
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        let objects = SeriesObjects {
            source: self.source.as_ref(),
            upstream: self.upstream.as_ref(),
            service: self.service.as_ref(),
            principal: self.source_principal.as_ref(),
        };
        let [source, upstream, service, principal] = objects.addresses();
        let key = SeriesKey {
            source,
            upstream,
            service,
            principal,
            status: self.status,
            grpc_status: self.grpc_status,
            flags: self.flags.clone(),
            grpc: self.grpc,
        };
        metrics.record_cached(
            key,
            objects,
            || self.labels(),
            millis,
            self.request_bytes,
            response_bytes,
        );
        let version = match self.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let grpc_status = self.grpc_status.map(|s| s.to_string());
        info!(
            target: "access",
            method = %self.method,
            path = %self.path(),
            authority = %self.authority(),
            protocol = version,
            response_code = self.status,
            grpc_status = grpc_status.as_deref().unwrap_or("-"),
            response_flags = %self.flags(),
            duration_ms = (millis * 1000.0).round() / 1000.0,
            bytes_received = self.request_bytes,
            bytes_sent = response_bytes,
            request_id = %self.request_id(),
            route = self.route.as_deref().unwrap_or("default"),
            src_addr = self.source_addr.as_deref().unwrap_or("-"),
            src_identity = self.source_principal.as_deref().unwrap_or("-"),
            dst_service = self.service.as_ref().map_or("-", |s| s.hostname.as_str()),
            dst_workload = self.upstream.as_ref().map_or("-", |w| w.name.as_str()),
            upstream = self.upstream_addr.as_deref().unwrap_or("-"),
            detail = self.detail.as_deref().unwrap_or("-"),
            "request"
        );
    }
}
