//! Istio's HTTP metrics, reported with `reporter="waypoint"` as Istio's waypoints do:
//!
//! | metric | what |
//! |---|---|
//! | `istio_requests_total` | requests answered (including those the waypoint answered itself: denials, faults, redirects) |
//! | `istio_request_duration_milliseconds` | time from the request's head to the end of the response body |
//! | `istio_request_bytes` | request body bytes |
//! | `istio_response_bytes` | response body bytes |
//!
//! Labels are Istio's standard set ([`RequestLabels`]); what the waypoint does not know is
//! `unknown`. Served with the process's other metrics on `0.0.0.0:15020`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use dataplane::state::{Service, Workload};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use dataplane::telemetry::TrafficLabels;
pub use dataplane::telemetry::UNKNOWN;

/// Istio's standard labels of the request metrics: the connection labels ztunnel uses
/// too, plus the response's status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub traffic: TrafficLabels,
    pub response_code: String,
    pub grpc_response_status: String,
}

impl Default for RequestLabels {
    fn default() -> Self {
        let u = || UNKNOWN.to_owned();
        RequestLabels {
            traffic: TrafficLabels {
                reporter: "waypoint".to_owned(),
                source_workload: u(),
                source_canonical_service: u(),
                source_canonical_revision: u(),
                source_workload_namespace: u(),
                source_principal: u(),
                source_app: u(),
                source_version: u(),
                source_cluster: u(),
                destination_service: u(),
                destination_service_namespace: u(),
                destination_service_name: u(),
                destination_workload: u(),
                destination_canonical_service: u(),
                destination_canonical_revision: u(),
                destination_workload_namespace: u(),
                destination_principal: u(),
                destination_app: u(),
                destination_version: u(),
                destination_cluster: u(),
                request_protocol: "http".to_owned(),
                response_flags: "-".to_owned(),
                connection_security_policy: "mutual_tls".to_owned(),
            },
            response_code: "0".to_owned(),
            grpc_response_status: String::new(),
        }
    }
}

/// The metric families, registered once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    request_bytes: Family<RequestLabels, Histogram>,
    response_bytes: Family<RequestLabels, Histogram>,
    /// The four series of each label set seen recently, by a key much cheaper to build
    /// and hash than the 25 labels (see [`RequestMetrics::record_cached`]).
    series: Arc<Mutex<HashMap<SeriesKey, Arc<Series>>>>,
}

/// What decides a request's label set, as cheap values: the source and upstream
/// workloads, the destination service and the source principal by allocation (each
/// remembered key holds those allocations), the response code, gRPC status, flags and
/// protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub source: usize,
    pub upstream: usize,
    pub service: usize,
    pub principal: usize,
    pub status: u16,
    pub grpc_status: Option<u32>,
    pub flags: Vec<&'static str>,
    pub grpc: bool,
}

/// The objects whose allocations a [`SeriesKey`] names: the source and upstream
/// workloads, the destination service and the source principal.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeriesObjects<'a> {
    pub source: Option<&'a Arc<Workload>>,
    pub upstream: Option<&'a Arc<Workload>>,
    pub service: Option<&'a Arc<Service>>,
    pub principal: Option<&'a Arc<str>>,
}

impl SeriesObjects<'_> {
    /// Their allocations' addresses (0 for none), for a [`SeriesKey`]: source, upstream,
    /// service, principal.
    pub fn addresses(&self) -> [usize; 4] {
        fn address<T: ?Sized>(object: Option<&Arc<T>>) -> usize {
            object.map_or(0, |o| Arc::as_ptr(o).cast::<()>() as usize)
        }
        [
            address(self.source),
            address(self.upstream),
            address(self.service),
            address(self.principal),
        ]
    }
}

#[derive(Debug)]
struct Series {
    /// The workloads, service and principal the key's addresses are: held (weakly: the
    /// allocation, not the object) so that no other object can be allocated at those
    /// addresses while the key is remembered.
    _workloads: [Option<Weak<Workload>>; 2],
    _service: Option<Weak<Service>>,
    _principal: Option<Weak<str>>,
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// Label sets remembered at most; beyond it the memory is dropped and rebuilt (the
/// series themselves stay in the families).
const MAX_CACHED_SERIES: usize = 4096;

fn duration_buckets() -> Histogram {
    // Istio's default buckets for request durations (ms).
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

fn size_buckets() -> Histogram {
    // 1 B to 1 GB in decades, as Istio's size buckets.
    Histogram::new(exponential_buckets(1.0, 10.0, 10))
}

impl RequestMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = RequestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_buckets),
            request_bytes: Family::new_with_constructor(size_buckets),
            response_bytes: Family::new_with_constructor(size_buckets),
            series: Arc::default(),
        };
        // prometheus-client adds `_total` to counters.
        let istio = registry.sub_registry_with_prefix("istio");
        istio.register("requests", "Requests answered", metrics.requests.clone());
        istio.register(
            "request_duration_milliseconds",
            "Request duration",
            metrics.duration.clone(),
        );
        istio.register(
            "request_bytes",
            "Request body size",
            metrics.request_bytes.clone(),
        );
        istio.register(
            "response_bytes",
            "Response body size",
            metrics.response_bytes.clone(),
        );
        metrics
    }

    /// Counts one request whose labels `labels()` would build, finding its series by
    /// `key` (the labels are built only the first time a key is seen).
    pub fn record_cached(
        &self,
        key: SeriesKey,
        objects: SeriesObjects<'_>,
        labels: impl FnOnce() -> RequestLabels,
        millis: f64,
        request: u64,
        response: u64,
    ) {
        let series = {
            let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some(series) => series.clone(),
                None => {
                    if cache.len() >= MAX_CACHED_SERIES {
                        cache.clear();
                    }
                    let labels = labels();
                    let series = Arc::new(Series {
                        _workloads: [objects.source, objects.upstream]
                            .map(|w| w.map(Arc::downgrade)),
                        _service: objects.service.map(Arc::downgrade),
                        _principal: objects.principal.map(Arc::downgrade),
                        requests: self.requests.get_or_create(&labels).clone(),
                        duration: self.duration.get_or_create(&labels).clone(),
                        request_bytes: self.request_bytes.get_or_create(&labels).clone(),
                        response_bytes: self.response_bytes.get_or_create(&labels).clone(),
                    });
                    cache.insert(key, series.clone());
                    series
                }
            }
        };
        series.requests.inc();
        series.duration.observe(millis);
        series.request_bytes.observe(request as f64);
        series.response_bytes.observe(response as f64);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn requests_are_exposed_with_istios_names_and_labels() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::register(&mut registry);
        let mut labels = RequestLabels {
            response_code: "503".into(),
            ..RequestLabels::default()
        };
        labels.traffic.destination_service = "reviews.bookinfo.svc.cluster.local".into();
        labels.traffic.response_flags = "UO".into();
        let key = SeriesKey {
            source: 0,
            upstream: 0,
            service: 0,
            principal: 0,
            status: 503,
            grpc_status: None,
            flags: vec!["UO"],
            grpc: false,
        };
        metrics.record_cached(
            key.clone(),
            SeriesObjects::default(),
            || labels.clone(),
            12.0,
            10,
            2_000,
        );
        metrics.record_cached(
            key,
            SeriesObjects::default(),
            || labels.clone(),
            700.0,
            0,
            0,
        );
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{out}"))
                .to_owned()
        };
        let total = line("istio_requests_total{");
        assert!(total.contains(r#"reporter="waypoint""#), "{total}");
        assert!(total.contains(r#"response_code="503""#), "{total}");
        assert!(total.contains(r#"response_flags="UO""#), "{total}");
        assert!(total.contains(r#"source_workload="unknown""#), "{total}");
        assert!(total.ends_with(" 2"), "{total}");
        assert!(line("istio_request_duration_milliseconds_sum{").ends_with(" 712.0"));
        let bucket = line("istio_request_duration_milliseconds_bucket{");
        assert!(bucket.contains(r#"le="0.5""#), "{bucket}");
        assert!(line("istio_response_bytes_sum{").ends_with(" 2000.0"));
    }

    #[test]
    fn cached_series_build_their_labels_once_per_key() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::register(&mut registry);
        let key = |status| SeriesKey {
            source: 0,
            upstream: 0,
            service: 0,
            principal: 0,
            status,
            grpc_status: None,
            flags: Vec::new(),
            grpc: false,
        };
        let built = std::cell::Cell::new(0);
        let labels = |code: &str| {
            built.set(built.get() + 1);
            RequestLabels {
                response_code: code.into(),
                ..RequestLabels::default()
            }
        };
        metrics.record_cached(
            key(200),
            SeriesObjects::default(),
            || labels("200"),
            1.0,
            0,
            0,
        );
        metrics.record_cached(
            key(200),
            SeriesObjects::default(),
            || labels("200"),
            1.0,
            0,
            0,
        );
        metrics.record_cached(
            key(503),
            SeriesObjects::default(),
            || labels("503"),
            1.0,
            0,
            0,
        );
        assert_eq!(built.get(), 2, "labels built once per key");
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        let total = |code: &str| {
            out.lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains(&format!("response_code=\"{code}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(total("200").as_deref(), Some("2"), "{out}");
        assert_eq!(total("503").as_deref(), Some("1"), "{out}");
    }
}
