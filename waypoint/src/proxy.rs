//! One HTTP request through the waypoint, in Envoy's filter order: request id, JWT
//! authentication (401), authorization (403 `RBAC: access denied`), the VirtualService
//! route (CORS preflight, faults, redirect, direct response, rewrite, headers), then the
//! upstream call ([`call`]: DestinationRule policy, load balancing, retries, timeouts) and
//! mirrors. Every request ends in Istio's metrics and an access line ([`telemetry`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::state::{Service, StateStore, Workload};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;

use crate::authz::{self, Binding, Verdict};
use crate::config::{ConfigStore, L7Config};
use crate::context::{Destination, Source};
use crate::forward::{Body, Upstreams};
use crate::metrics::RequestMetrics;
use crate::route::{Action, Matched, RetryPolicy};
use crate::upstream::Clusters;

pub mod body;
pub mod call;
mod resolved;
pub mod telemetry;

use body::{MAX_BUFFERED, Metered, RequestBody, ResponseBody, full};
use call::{Call, Upstream};
use telemetry::RequestRecord;

/// What every request through this waypoint shares.
#[derive(Debug)]
pub struct Waypoint {
    /// Which policies bind to this waypoint (its Gateway's namespace and name).
    pub binding: Binding,
    pub state: Arc<StateStore>,
    pub config: Arc<ConfigStore>,
    pub clusters: Arc<Clusters>,
    pub upstreams: Upstreams,
    pub metrics: RequestMetrics,
}

/// What the waypoint knows of one HBONE tunnel: who sent it, and where to.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub source: Source,
    pub source_workload: Option<Arc<Workload>>,
    pub destination: Destination,
    /// For service traffic: the service addressed.
    pub target_service: Option<Arc<Service>>,
    /// For workload traffic: the workload addressed.
    pub target_workload: Option<Arc<Workload>>,
    /// The source's identity as a URI (telemetry's `source_principal`), written once per
    /// tunnel.
    pub principal: Option<Arc<str>>,
    /// The client's IP as text (access lines' `src_addr`), written once per tunnel.
    pub source_addr: Option<Arc<str>>,
}

/// `x-request-id`, added when the client sent none (as Envoy does).
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Handles one request from `tunnel`. Never fails: problems become local replies.
pub async fn handle(
    waypoint: Arc<Waypoint>,
    tunnel: Arc<Tunnel>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (mut parts, body) = request.into_parts();
    let request_id = ensure_request_id(&mut parts);
    let mut record = RequestRecord {
        started: Instant::now(),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        host: parts.headers.get(http::header::HOST).cloned(),
        version: parts.version,
        request_id,
        request_bytes: 0,
        source_principal: tunnel.principal.clone(),
        source: tunnel.source_workload.clone(),
        source_addr: tunnel.source_addr.clone(),
        service: tunnel.target_service.clone(),
        upstream: None,
        upstream_addr: None,
        route: None,
        status: 0,
        grpc: is_grpc(&parts.headers),
        grpc_status: None,
        flags: Vec::new(),
        detail: None,
    };
    let response = process(&waypoint, &tunnel, parts, body, &mut record).await;
    Ok(finish(&waypoint, record, response))
}

/// Counts the response as it streams; the access line is written when it ends.
fn finish(
    waypoint: &Waypoint,
    mut record: RequestRecord,
    response: Response<ResponseBody>,
) -> Response<Body> {
    record.status = response.status().as_u16();
    if record.grpc_status.is_none() && is_grpc(response.headers()) {
        record.grpc_status = call::grpc_status(&response);
    }
    let grpc = record.grpc || is_grpc(response.headers());
    let metrics = waypoint.metrics.clone();
    let (parts, body) = response.into_parts();
    let body = Metered::new(body, move |bytes, trailers| {
        // A gRPC response that is not trailers-only ends with its status.
        if grpc && record.grpc_status.is_none() {
            record.grpc_status = trailers.and_then(call::grpc_status_in);
        }
        record.finish(&metrics, bytes)
    });
    Response::from_parts(parts, body.boxed_unsync())
}

async fn process(
    waypoint: &Arc<Waypoint>,
    tunnel: &Tunnel,
    mut parts: Parts,
    body: Incoming,
    record: &mut RequestRecord,
) -> Response<ResponseBody> {
    let config = waypoint.config.current();
    let dest = &tunnel.destination;
    // Authentication: a present but invalid token is refused; none is anonymous.
    let auth = match config
        .authenticator
        .authenticate(&waypoint.binding, dest, &mut parts)
        .await
    {
        Ok(auth) => auth,
        Err(e) => {
            record.detail = Some(e.to_string());
            return reply(e.status(), e.body());
        }
    };
    let verdict = config.policies.evaluate(
        &waypoint.binding,
        &authz::Request {
            parts: &parts,
            source: &tunnel.source,
            destination: dest,
            auth: auth.as_ref(),
        },
    );
    if let authz::DryRun::WouldDeny { policy, reason } = verdict.dry_run() {
        tracing::info!(target: "access", policy = %policy, reason = ?reason, request_id = %record.request_id(), "dry-run policy would deny this request (not enforced)");
    }
    if !verdict.audit().is_empty() {
        tracing::info!(target: "access", policies = ?verdict.audit(), request_id = %record.request_id(), "request audited");
    }
    if let Verdict::Denied { policy, reason, .. } = &verdict {
        record.detail = Some(format!("denied by {policy} ({reason:?})"));
        return reply(StatusCode::FORBIDDEN, authz::DENIED_BODY);
    }
    let matched = config.routes.route(dest, &parts, &tunnel.source);
    match matched {
        Some(matched) => routed(waypoint, tunnel, &config, matched, parts, body, record).await,
        None => {
            let upstream = match default_upstream(waypoint, tunnel) {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            let body = match read_body(body, record).await {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            let retries = RetryPolicy::istio_default_ref();
            forward(
                waypoint, tunnel, &config, upstream, retries, None, None, parts, body, record,
            )
            .await
        }
    }
}

/// The route without a VirtualService: the service addressed, or the workload.
#[allow(clippy::result_large_err)]
fn default_upstream(
    waypoint: &Waypoint,
    tunnel: &Tunnel,
) -> Result<Upstream, Response<ResponseBody>> {
    let dest = &tunnel.destination;
    if let Some(service) = &dest.service {
        let state = waypoint.state.snapshot();
        return match state.service_by_hostname(&service.hostname) {
            Some(s) => Ok(Upstream::Service {
                service: s.clone(),
                subset: None,
                port: dest.port(),
            }),
            None => Err(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream",
            )),
        };
    }
    match &tunnel.target_workload {
        Some(workload) => Ok(Upstream::Workload {
            workload: workload.clone(),
            addr: dest.target,
        }),
        None => Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn routed(
    waypoint: &Arc<Waypoint>,
    tunnel: &Tunnel,
    config: &Arc<L7Config>,
    matched: Matched<'_>,
    mut parts: Parts,
    body: Incoming,
    record: &mut RequestRecord,
) -> Response<ResponseBody> {
    let route = matched.route;
    record.route = Some(route.log_name.clone());
    if let Some(cors) = &route.cors
        && let Some(preflight) = cors.preflight(&parts)
    {
        return preflight.map(|()| full(Vec::new()).into());
    }
    if let Some(fault) = &route.fault {
        let decision = fault.decide(&mut rand::rng());
        if let Some(delay) = decision.delay {
            record.flags.push("DI");
            tokio::time::sleep(delay).await;
        }
        if let Some(abort) = decision.abort {
            record.flags.push("FI");
            record.detail = Some("fault filter abort".into());
            return abort.response().map(|()| full("fault filter abort").into());
        }
    }
    let destination = match &route.action {
        Action::Redirect(redirect) => {
            return redirect
                .response(&parts, tunnel.destination.port())
                .map(|()| full(Vec::new()).into());
        }
        Action::DirectResponse(direct) => return direct.response().map(|b| full(b).into()),
        Action::Forward(forward) => forward.pick(&mut rand::rng()),
    };
    if let Some(rewrite) = &route.rewrite
        && let Err(e) = rewrite.apply(&matched, &mut parts)
    {
        record.detail = Some(format!("rewrite failed: {e}"));
        return reply(
            StatusCode::BAD_REQUEST,
            "rewrite produced an invalid request",
        );
    }
    route.request_headers.apply(&mut parts.headers);
    destination.request_headers.apply(&mut parts.headers);
    let state = waypoint.state.snapshot();
    let Some(service) = state.service_by_hostname(&destination.host) else {
        record.flags.push("NC");
        record.detail = Some(format!("no service {}", destination.host));
        return reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    record.service = Some(service.clone());
    let upstream = Upstream::Service {
        service: service.clone(),
        subset: destination.subset.clone(),
        port: destination.port.unwrap_or(tunnel.destination.port()),
    };
    drop(state);
    let body = match read_body(body, record).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    // Mirrors get a copy at the same time; their answers are dropped.
    for mirror in route.mirrored(&mut rand::rng()) {
        mirror_request(waypoint, tunnel, config, mirror, &parts, &body);
    }
    // `None` means `attempts: 0` (an absent `retries` compiled to Istio's default).
    let retries = route.retries.as_ref().unwrap_or(RetryPolicy::none());
    let per_try = retries.per_try_timeout;
    let deadline = route.timeout.map(|t| tokio::time::Instant::now() + t);
    // What the response needs of the request, kept before the request goes.
    let origin = route
        .cors
        .as_ref()
        .and_then(|_| parts.headers.get(http::header::ORIGIN).cloned());
    let mut response = forward(
        waypoint, tunnel, config, upstream, retries, per_try, deadline, parts, body, record,
    )
    .await;
    route.response_headers.apply(response.headers_mut());
    destination.response_headers.apply(response.headers_mut());
    if let Some(cors) = &route.cors {
        cors.apply_response(origin.as_ref(), response.headers_mut());
    }
    response
}

/// Reads the request body (up to [`MAX_BUFFERED`] kept for retries and mirrors).
async fn read_body(
    body: Incoming,
    record: &mut RequestRecord,
) -> Result<RequestBody, Response<ResponseBody>> {
    match RequestBody::read(body, MAX_BUFFERED).await {
        Ok(b) => {
            record.request_bytes = b.len() as u64;
            Ok(b)
        }
        Err(e) => {
            record.detail = Some(format!("reading the request body: {e}"));
            Err(reply(StatusCode::BAD_REQUEST, "bad request body"))
        }
    }
}

/// Sends the request upstream and turns the outcome into the client's response.
#[allow(clippy::too_many_arguments)]
async fn forward(
    waypoint: &Waypoint,
    tunnel: &Tunnel,
    config: &Arc<L7Config>,
    upstream: Upstream,
    retries: &RetryPolicy,
    per_try_timeout: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
    parts: Parts,
    body: RequestBody,
    record: &mut RequestRecord,
) -> Response<ResponseBody> {
    let state = waypoint.state.snapshot();
    let call = Call {
        waypoint,
        state: &state,
        config,
        source: &tunnel.source,
        upstream,
        retries,
        per_try_timeout,
        deadline,
    };
    match call.send(parts, body).await {
        Ok(answer) => {
            record.upstream = Some(answer.endpoint);
            record.upstream_addr = Some(answer.addr_text);
            let (mut head, incoming) = answer.response.into_parts();
            if let Some(cookie) = answer.set_cookie {
                head.headers.append(http::header::SET_COOKIE, cookie);
            }
            let body = ResponseBody::Upstream {
                body: incoming,
                permit: answer.permit,
            };
            Response::from_parts(head, body)
        }
        Err(failure) => {
            record.flags.push(failure.flag);
            record.detail = Some(failure.detail);
            if let Some((workload, addr)) = failure.endpoint {
                record.upstream = Some(workload);
                record.upstream_addr = Some(addr.to_string().into());
            }
            reply(failure.status, failure.body)
        }
    }
}

/// Sends a copy of the request to `mirror` and forgets the answer: through the mirror's
/// own cluster (its DestinationRule subset, load balancing and pool), without retries.
/// Envoy appends `-shadow` to the authority of mirrored requests; so do we. A body too
/// large to have been kept is not mirrored.
fn mirror_request(
    waypoint: &Arc<Waypoint>,
    tunnel: &Tunnel,
    config: &Arc<L7Config>,
    mirror: &crate::route::MirrorTarget,
    parts: &Parts,
    body: &RequestBody,
) {
    let Some(copy) = body.copy() else {
        tracing::debug!(host = %mirror.host, "request body too large to mirror");
        return;
    };
    let state = waypoint.state.snapshot();
    let Some(service) = state.service_by_hostname(&mirror.host).cloned() else {
        tracing::debug!(host = %mirror.host, "mirror target is not a known service");
        return;
    };
    let mut parts = parts.clone();
    if let Some(authority) = crate::context::authority(&parts) {
        let shadow = format!("{authority}-shadow");
        if let Ok(value) = HeaderValue::from_str(&shadow) {
            parts.headers.insert(http::header::HOST, value);
        }
    }
    let upstream = Upstream::Service {
        service,
        subset: mirror.subset.clone(),
        port: mirror.port.unwrap_or(tunnel.destination.port()),
    };
    let (waypoint, config, source) = (waypoint.clone(), config.clone(), tunnel.source.clone());
    tokio::spawn(async move {
        let call = Call {
            waypoint: &waypoint,
            state: &state,
            config: &config,
            source: &source,
            upstream,
            retries: RetryPolicy::none(),
            per_try_timeout: None,
            deadline: Some(tokio::time::Instant::now() + MIRROR_TIMEOUT),
        };
        match call.send(parts, copy).await {
            // Read the answer to its end so the connection can be reused.
            Ok(answer) => drop(answer.response.into_body().collect().await),
            Err(e) => tracing::debug!(detail = %e.detail, "mirrored request failed"),
        }
    });
}

/// Bound on a mirrored request (Envoy gives shadows the route's timeout; a mirror must
/// never pile up behind a slow target).
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// A reply from the waypoint itself, `text/plain`.
pub fn local(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    response
}

/// [`local`], as the response the request path returns.
fn reply(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    local(status, body).map(ResponseBody::Local)
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The request's `x-request-id`, generated (a random UUID) when missing or not text.
fn ensure_request_id(parts: &mut Parts) -> HeaderValue {
    if let Some(id) = parts.headers.get(&REQUEST_ID)
        && id.to_str().is_ok()
    {
        return id.clone();
    }
    // Hex digits and dashes only: always a valid header value. Owned by its `Bytes`, so
    // the copy kept for the access line shares it.
    let id = new_request_id(rand::rng().random());
    let id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    parts.headers.insert(REQUEST_ID, id.clone());
    id
}

/// A UUID version 4 (variant 1) in its text form, from 128 random bits.
fn new_request_id(random: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (random & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        *slot = HEX[((bits >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    out
}

#[cfg(test)]
mod request_id_tests {
    use super::new_request_id;

    #[test]
    fn request_ids_are_uuid_v4_text() {
        let id = new_request_id(0);
        assert_eq!(&id, b"00000000-0000-4000-8000-000000000000");
        let id = new_request_id(u128::MAX);
        assert_eq!(&id, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = new_request_id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(&id, b"01234567-89ab-4def-8123-456789abcdef");
    }
}
