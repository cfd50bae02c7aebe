//! One request's telemetry: Istio's request metrics and one access line (target
//! `access`), written once the response is over.

use std::sync::Arc;
use std::time::Instant;

use dataplane::state::Workload;
use http::Version;
use tracing::info;

use dataplane::telemetry::{TrafficLabels, WorkloadLabels, value};

use crate::metrics::{RequestLabels, RequestMetrics, SeriesKey, UNKNOWN};

/// What is known about a request as it goes through the waypoint.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub started: Instant,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub version: Version,
    pub request_id: String,
    pub request_bytes: u64,
    pub source_principal: Option<String>,
    pub source: Option<Arc<Workload>>,
    pub source_addr: Option<String>,
    /// The destination service's hostname, name and namespace.
    pub service: Option<(String, String, String)>,
    /// The endpoint the request went to.
    pub upstream: Option<Arc<Workload>>,
    pub upstream_addr: Option<String>,
    pub route: Option<String>,
    pub status: u16,
    /// A gRPC request (`content-type: application/grpc...`): Istio's `request_protocol`.
    pub grpc: bool,
    /// From the response headers (trailers-only) or its trailers.
    pub grpc_status: Option<String>,
    /// Envoy's response flags (`UO`, `UH`, `UF`, `UT`, `FI`, `DI`, `NC`), `-` for none.
    pub flags: Vec<&'static str>,
    /// Why the waypoint answered itself (denial, fault, no upstream), when it did.
    pub detail: Option<String>,
}

impl RequestRecord {
    pub fn flags(&self) -> String {
        if self.flags.is_empty() {
            "-".to_owned()
        } else {
            self.flags.join(",")
        }
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
                destination_service: value(self.service.as_ref().map(|s| s.0.as_str())),
                destination_service_name: value(self.service.as_ref().map(|s| s.1.as_str())),
                destination_service_namespace: value(self.service.as_ref().map(|s| s.2.as_str())),
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
                response_flags: self.flags(),
                ..defaults.traffic
            },
            response_code: self.status.to_string(),
            grpc_response_status: self.grpc_status.clone().unwrap_or_default(),
        }
    }

    /// Records the metrics and writes the access line; `response_bytes` is what the
    /// response body carried.
    pub fn finish(&self, metrics: &RequestMetrics, response_bytes: u64) {
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        let key = SeriesKey {
            source: self.source.as_ref().map_or(0, |w| Arc::as_ptr(w) as usize),
            upstream: self
                .upstream
                .as_ref()
                .map_or(0, |w| Arc::as_ptr(w) as usize),
            principal: self.source_principal.clone(),
            service: self.service.as_ref().map(|s| s.0.clone()),
            status: self.status,
            grpc_status: self.grpc_status.clone(),
            flags: self.flags.clone(),
            grpc: self.grpc,
        };
        metrics.record_cached(
            key,
            [self.source.as_ref(), self.upstream.as_ref()],
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
        info!(
            target: "access",
            method = %self.method,
            path = %self.path,
            authority = %self.authority,
            protocol = version,
            response_code = self.status,
            grpc_status = self.grpc_status.as_deref().unwrap_or("-"),
            response_flags = %self.flags(),
            duration_ms = (millis * 1000.0).round() / 1000.0,
            bytes_received = self.request_bytes,
            bytes_sent = response_bytes,
            request_id = %self.request_id,
            route = self.route.as_deref().unwrap_or("default"),
            src_addr = self.source_addr.as_deref().unwrap_or("-"),
            src_identity = self.source_principal.as_deref().unwrap_or("-"),
            dst_service = self.service.as_ref().map_or("-", |s| s.0.as_str()),
            dst_workload = self.upstream.as_ref().map_or("-", |w| w.name.as_str()),
            upstream = self.upstream_addr.as_deref().unwrap_or("-"),
            detail = self.detail.as_deref().unwrap_or("-"),
            "request"
        );
    }
}
