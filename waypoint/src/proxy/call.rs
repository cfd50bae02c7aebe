//! Sending a routed request upstream: the cluster (host, subset, port) and its
//! DestinationRule policy, admission by the connection pool, endpoint choice (outlier
//! ejections, load balancer, consistent hash), then attempts with Envoy's retry rules,
//! per-try timeouts and outlier bookkeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::state::{Service, TunnelProtocol, Workload, WorkloadState};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::Waypoint;
use super::body::RequestBody;
use super::resolved::{self, Resolved};
use crate::config::L7Config;
use crate::context::{Endpoint, Source};
use crate::forward::{Target, UpstreamError};
use crate::route::{AttemptOutcome, RetryPolicy};
use crate::upstream::{self, ClusterKey, HashOutcome, LbPolicy, Outcome, Pick};

/// Where a routed request goes.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A service's endpoints (optionally a subset), at one of its ports.
    Service {
        service: Arc<Service>,
        subset: Option<Arc<str>>,
        port: u16,
    },
    /// One workload, addressed directly (workload traffic without a route).
    Workload {
        workload: Arc<Workload>,
        addr: SocketAddr,
    },
}

/// A response from upstream and what produced it.
#[derive(Debug)]
pub struct Answer {
    pub response: Response<Incoming>,
    pub endpoint: Arc<Workload>,
    pub addr: SocketAddr,
    /// `addr` as text (for access lines).
    pub addr_text: Arc<str>,
    /// A `Set-Cookie` to add (a generated consistent-hash cookie).
    pub set_cookie: Option<HeaderValue>,
    /// The request's slot in the cluster's `http2MaxRequests`: hold it until the
    /// response is over.
    pub permit: upstream::RequestPermit,
}

/// Why there is no upstream response: the local reply and its response flag.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub body: &'static str,
    pub flag: &'static str,
    pub detail: String,
    /// The last endpoint tried, if any.
    pub endpoint: Option<(Arc<Workload>, SocketAddr)>,
}

impl Failure {
    fn new(status: StatusCode, body: &'static str, flag: &'static str, detail: String) -> Self {
        Failure {
            status,
            body,
            flag,
            detail,
            endpoint: None,
        }
    }
}

/// Everything one upstream call needs.
#[allow(missing_debug_implementations)]
pub struct Call<'a> {
    pub waypoint: &'a Waypoint,
    pub state: &'a Arc<WorkloadState>,
    pub config: &'a Arc<L7Config>,
    pub source: &'a Source,
    pub upstream: Upstream,
    pub retries: &'a RetryPolicy,
    pub per_try_timeout: Option<Duration>,
    /// When the whole request must be over (the route's timeout).
    pub deadline: Option<tokio::time::Instant>,
}

impl Call<'_> {
    /// Sends `parts` + `body`, retrying as the policy allows while the body can be sent
    /// again.
    pub async fn send(&self, parts: Parts, body: RequestBody) -> Result<Answer, Failure> {
        let Resolved {
            endpoints,
            key: cluster_key,
            cluster,
        } = self.resolve()?;
        // Active until the response body is over (the permit travels with the answer).
        let permit = cluster.pool.try_request().map_err(overflowed)?;
        let hash = match cluster.load_balancer.policy() {
            LbPolicy::ConsistentHash(ch) => upstream::hash_key(&ch.key, &parts, self.source),
            _ => HashOutcome::Missing,
        };
        let set_cookie = match &hash {
            HashOutcome::NewCookie { set_cookie, .. } => Some(set_cookie.clone()),
            _ => None,
        };
        let version = parts.version;
        let mut parts = Some(parts);
        let mut body = Some(body);
        let mut attempt = 0;
        let mut _retry_permit = None;
        // Endpoints already tried, avoided by retries (`retryIgnorePreviousHosts`); filled
        // only when a retry follows, so a request answered at once allocates nothing here.
        let mut tried: Vec<Arc<str>> = Vec::new();
        loop {
            let mut healthy = match &cluster.outlier {
                Some(outlier) => {
                    outlier.set_hosts(&endpoints);
                    outlier.filter(&endpoints, Instant::now())
                }
                None => std::borrow::Cow::Borrowed(&endpoints[..]),
            };
            if self.retries.retry_ignore_previous_hosts
                && !tried.is_empty()
                && healthy.iter().any(|e| !tried.contains(&e.uid))
            {
                healthy = std::borrow::Cow::Owned(
                    healthy
                        .iter()
                        .filter(|e| !tried.contains(&e.uid))
                        .cloned()
                        .collect(),
                );
            }
            let pick = cluster
                .load_balancer
                .pick(&healthy, hash.hash(), &mut rand::rng());
            let (endpoint, addr, addr_text, _active) = match pick {
                Pick::Endpoint(i, active) => {
                    let e = &healthy[i];
                    (
                        e.workload.clone(),
                        e.addr,
                        e.addr_text.clone(),
                        Some(active),
                    )
                }
                Pick::Passthrough => match self.passthrough() {
                    Some((w, addr)) => (w, addr, addr.to_string().into(), None),
                    None => {
                        return Err(no_healthy(
                            "no original destination to pass through to".into(),
                        ));
                    }
                },
                Pick::None => {
                    return Err(no_healthy(format!(
                        "no healthy endpoint for {}",
                        describe(&cluster_key)
                    )));
                }
            };
            drop(healthy);
            let target = Target {
                addr,
                hbone: (endpoint.protocol == TunnelProtocol::Hbone)
                    .then(|| endpoint.identity.clone()),
            };
            // A buffered body can be sent again; a streamed one only once.
            let (this_body, can_retry) = match body.as_ref().and_then(RequestBody::replay) {
                Some(copy) => (copy, true),
                None => match body.take() {
                    Some(b) => (b.into_body(), false),
                    None => return Err(no_healthy("the request body was already sent".into())),
                },
            };
            // The last attempt the policy allows takes the head itself, earlier ones a copy.
            let last = !can_retry || attempt >= self.retries.attempts;
            let Some(head) = (if last { parts.take() } else { parts.clone() }) else {
                return Err(no_healthy("the request was already sent".into()));
            };
            let request = Request::from_parts(head, this_body);
            let outcome = self.attempt(&target, version, request, &cluster.pool).await;
            let (attempt_outcome, outlier_outcome) = match &outcome {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let grpc = grpc_status(response);
                    (
                        AttemptOutcome::Response {
                            status,
                            grpc_status: grpc,
                        },
                        Outcome::Response(status),
                    )
                }
                Err(AttemptError::Upstream(UpstreamError::Connect { .. })) => {
                    (AttemptOutcome::ConnectFailure, Outcome::LocalOriginFailure)
                }
                Err(AttemptError::Upstream(UpstreamError::Refused { .. })) => {
                    (AttemptOutcome::RefusedStream, Outcome::LocalOriginFailure)
                }
                Err(AttemptError::Upstream(UpstreamError::Reset { .. })) => {
                    (AttemptOutcome::Reset, Outcome::LocalOriginFailure)
                }
                Err(AttemptError::PerTryTimeout) => {
                    (AttemptOutcome::PerTryTimeout, Outcome::LocalOriginFailure)
                }
                Err(AttemptError::Upstream(UpstreamError::Overflow(overflow))) => {
                    // Not the endpoint's fault, and never retried (as in Envoy).
                    return Err(Failure {
                        endpoint: Some((endpoint, addr)),
                        ..overflowed(*overflow)
                    });
                }
                Err(AttemptError::Deadline) => {
                    return Err(Failure {
                        endpoint: Some((endpoint, addr)),
                        ..Failure::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream request timeout",
                            "UT",
                            "the route's timeout passed".into(),
                        )
                    });
                }
            };
            if let Some(outlier) = &cluster.outlier {
                if outcome.is_ok() {
                    // The connection worked (resets the local-origin count when split).
                    outlier.record(&endpoint.uid, Outcome::LocalOriginSuccess, Instant::now());
                }
                outlier.record(&endpoint.uid, outlier_outcome, Instant::now());
            }
            let retry = can_retry
                && attempt < self.retries.attempts
                && self.retries.should_retry(&attempt_outcome)
                && match cluster.pool.try_retry() {
                    Ok(permit) => {
                        _retry_permit = Some(permit);
                        true
                    }
                    Err(_) => false,
                };
            if retry {
                tried.push(Arc::from(endpoint.uid.as_str()));
                attempt += 1;
                tokio::time::sleep(backoff(self.retries.backoff, attempt)).await;
                continue;
            }
            return match outcome {
                Ok(response) => Ok(Answer {
                    response,
                    endpoint,
                    addr,
                    addr_text,
                    set_cookie,
                    permit,
                }),
                Err(e) => Err(Failure {
                    endpoint: Some((endpoint, addr)),
                    ..e.failure()
                }),
            };
        }
    }

    /// One attempt, bounded by the per-try timeout and the route's deadline (the earlier
    /// of the two; a per-try timeout that falls on the deadline counts as the per-try one).
    async fn attempt(
        &self,
        target: &Target,
        version: Version,
        request: Request<crate::forward::Body>,
        pool: &Arc<upstream::ConnectionPool>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let per_try = self
            .per_try_timeout
            .map(|t| (tokio::time::Instant::now() + t, AttemptError::PerTryTimeout));
        let route = self.deadline.map(|at| (at, AttemptError::Deadline));
        let limit = match (per_try, route) {
            (Some(per_try), Some(route)) if route.0 < per_try.0 => Some(route),
            (per_try, route) => per_try.or(route),
        };
        // The upstream call is built inside each `await`, never held in a local: an async
        // fn keeps a moved-from local's slot beside the future it was moved into, and this
        // future is most of a request's state (which is moved, and allocated, per request).
        let upstreams = &self.waypoint.upstreams;
        match limit {
            Some((at, expired)) => {
                tokio::time::timeout_at(at, upstreams.send(target, version, request, pool))
                    .await
                    .map_err(|_| expired)?
                    .map_err(AttemptError::Upstream)
            }
            None => upstreams
                .send(target, version, request, pool)
                .await
                .map_err(AttemptError::Upstream),
        }
    }

    /// The upstream's endpoints, cluster key and cluster: for a service, as this thread
    /// last resolved them under the same state and configuration.
    fn resolve(&self) -> Result<Resolved, Failure> {
        let resolve = || {
            let (endpoints, key, rule_host) = self.endpoints()?;
            let policy = rule_host
                .as_deref()
                .and_then(|host| self.config.destination_rules.lookup(host))
                .and_then(|rule| rule.traffic_policy(key.subset.as_deref(), key.port))
                .unwrap_or_default();
            let cluster = self.waypoint.clusters.get(&key, &policy, Instant::now());
            Ok(Resolved {
                endpoints: endpoints.into(),
                key: Arc::new(key),
                cluster,
            })
        };
        match &self.upstream {
            Upstream::Service {
                service,
                subset,
                port,
            } => {
                let against = (self.state, self.config, &self.waypoint.clusters);
                resolved::cached(against, service, subset.as_deref(), *port, resolve)
            }
            Upstream::Workload { .. } => resolve(),
        }
    }

    /// The cluster's endpoints (healthy, in the subset), its key, and the host whose
    /// DestinationRule applies.
    fn endpoints(&self) -> Result<(Vec<Endpoint>, ClusterKey, Option<String>), Failure> {
        match &self.upstream {
            Upstream::Workload { workload, addr } => {
                let endpoint = Endpoint::new(workload.clone(), *addr);
                let key = ClusterKey {
                    host: addr.ip().to_string(),
                    subset: None,
                    port: addr.port(),
                };
                Ok((vec![endpoint], key, None))
            }
            Upstream::Service {
                service,
                subset,
                port,
            } => {
                let host = service.hostname.clone();
                let labels = match subset {
                    Some(name) => {
                        let rule = self.config.destination_rules.lookup(&host);
                        match rule.and_then(|r| r.subset(name)) {
                            Some(s) => Some(s.labels().clone()),
                            None => {
                                return Err(Failure::new(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "no healthy upstream",
                                    "NC",
                                    format!("no DestinationRule defines subset {name:?} of {host}"),
                                ));
                            }
                        }
                    }
                    None => None,
                };
                let endpoints = self
                    .state
                    .endpoints(&service.key())
                    .iter()
                    .filter(|w| w.healthy && !w.addresses.is_empty())
                    .filter(|w| {
                        labels
                            .as_ref()
                            .is_none_or(|l| l.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
                    })
                    .filter_map(|w| {
                        let target = service.target_port(w, *port)?;
                        Some(Endpoint::new(
                            w.clone(),
                            SocketAddr::new(w.addresses[0], target),
                        ))
                    })
                    .collect();
                let key = ClusterKey {
                    host: host.clone(),
                    subset: subset.as_deref().map(str::to_owned),
                    port: *port,
                };
                Ok((endpoints, key, Some(host)))
            }
        }
    }

    /// PASSTHROUGH: the original destination when it was a workload.
    fn passthrough(&self) -> Option<(Arc<Workload>, SocketAddr)> {
        match &self.upstream {
            Upstream::Workload { workload, addr } => Some((workload.clone(), *addr)),
            Upstream::Service { .. } => None,
        }
    }
}

/// Envoy's wait before retry `n` (1-based): fully jittered exponential backoff from
/// `base` (the route's `retries.backoff`, else Envoy's 25 ms), capped at 10 x base.
fn backoff(base: Option<Duration>, n: u32) -> Duration {
    use rand::Rng as _;
    let base = base.unwrap_or(Duration::from_millis(25));
    let ceiling = base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(base.saturating_mul(10));
    let millis = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// A connection pool limit was hit: 503 with flag `UO`.
fn overflowed(overflow: upstream::Overflow) -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        upstream::Overflow::RESPONSE_FLAG,
        overflow.to_string(),
    )
}

fn no_healthy(detail: String) -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no healthy upstream",
        "UH",
        detail,
    )
}

fn describe(key: &ClusterKey) -> String {
    match &key.subset {
        Some(subset) => format!("{}:{} subset {subset}", key.host, key.port),
        None => format!("{}:{}", key.host, key.port),
    }
}

/// The `grpc-status` of a trailers-only gRPC response (in its headers).
pub fn grpc_status<B>(response: &Response<B>) -> Option<u32> {
    grpc_status_in(response.headers())
}

/// The `grpc-status` in response headers or trailers.
pub fn grpc_status_in(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

enum AttemptError {
    Upstream(UpstreamError),
    PerTryTimeout,
    Deadline,
}

impl AttemptError {
    fn failure(self) -> Failure {
        match self {
            AttemptError::Upstream(e @ UpstreamError::Connect { .. }) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                "UF",
                e.to_string(),
            ),
            AttemptError::Upstream(e) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                "UC",
                e.to_string(),
            ),
            AttemptError::PerTryTimeout | AttemptError::Deadline => Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream request timeout",
                "UT",
                "no response in time".into(),
            ),
        }
    }
}
