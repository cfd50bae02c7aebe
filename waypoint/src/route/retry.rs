//! `retries`: when a failed attempt is tried again.

use std::sync::LazyLock;
use std::time::Duration;

use api::config::parse_duration;
use api::config::virtual_service::HttpRetry;

use super::compile::Problems;

/// A compiled retry policy. A route without `retries` gets [`RetryPolicy::istio_default`];
/// `attempts: 0` (or `retries` without `attempts`, which is 0 in Istio's API) disables
/// retries (the route's `retries` is then `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries allowed after the first attempt. The caller counts attempts.
    pub attempts: u32,
    /// Timeout of each attempt; `None`: only the route timeout applies.
    pub per_try_timeout: Option<Duration>,
    /// The conditions retried.
    pub retry_on: RetryOn,
    /// Status codes retried under `retriable-status-codes` (numbers listed in `retryOn`).
    pub retriable_status_codes: Vec<u16>,
    /// Whether retries may go to other localities.
    pub retry_remote_localities: bool,
    /// Whether retries avoid endpoints already tried (Istio's default: yes).
    pub retry_ignore_previous_hosts: bool,
    /// Base interval between retries; `None`: Envoy's default of 25ms applies.
    pub backoff: Option<Duration>,
}

/// The `retryOn` conditions (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, and any failure without a response (connect failure,
    /// reset, refused stream, per-try timeout).
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504, and failures without a response.
    pub gateway_error: bool,
    /// `reset`: no response at all (connect failure, reset, refused stream, timeout).
    pub reset: bool,
    /// `reset-before-request`: the attempt failed before the request was sent (a connect
    /// failure).
    pub reset_before_request: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `refused-stream`: the upstream reset the stream with `REFUSED_STREAM`.
    pub refused_stream: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `retriable-status-codes`: the codes in [`RetryPolicy::retriable_status_codes`].
    pub retriable_status_codes: bool,
    /// `cancelled`: gRPC status 1.
    pub cancelled: bool,
    /// `deadline-exceeded`: gRPC status 4.
    pub deadline_exceeded: bool,
    /// `resource-exhausted`: gRPC status 8.
    pub resource_exhausted: bool,
    /// `internal`: gRPC status 13.
    pub internal: bool,
    /// `unavailable`: gRPC status 14.
    pub unavailable: bool,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response head arrived. `grpc_status` is its `grpc-status` header, if any.
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` in the response headers (trailers-only responses).
        grpc_status: Option<u32>,
    },
    /// No connection to the endpoint could be made.
    ConnectFailure,
    /// The connection or stream was reset before a response.
    Reset,
    /// The upstream refused the stream (HTTP/2 `REFUSED_STREAM`).
    RefusedStream,
    /// The attempt exceeded the per-try timeout.
    PerTryTimeout,
}

impl RetryOn {
    /// Parses `retryOn`: condition names and HTTP status codes (which imply
    /// `retriable-status-codes`, as Istio adds it). `envoy-ratelimited`,
    /// `retriable-headers` and `http3-post-connect-failure` are accepted and never fire:
    /// the waypoint has no rate limit headers, no retriable header list, no HTTP/3.
    fn parse(s: &str) -> Result<(RetryOn, Vec<u16>), String> {
        let mut on = RetryOn::default();
        let mut codes = Vec::new();
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let flag = match token {
                "5xx" => &mut on.server_error,
                "gateway-error" => &mut on.gateway_error,
                "reset" => &mut on.reset,
                "reset-before-request" => &mut on.reset_before_request,
                "connect-failure" => &mut on.connect_failure,
                "refused-stream" => &mut on.refused_stream,
                "retriable-4xx" => &mut on.retriable_4xx,
                "retriable-status-codes" => &mut on.retriable_status_codes,
                "cancelled" => &mut on.cancelled,
                "deadline-exceeded" => &mut on.deadline_exceeded,
                "resource-exhausted" => &mut on.resource_exhausted,
                "internal" => &mut on.internal,
                "unavailable" => &mut on.unavailable,
                "envoy-ratelimited" | "retriable-headers" | "http3-post-connect-failure" => {
                    continue;
                }
                _ => match token.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => {
                        codes.push(code);
                        &mut on.retriable_status_codes
                    }
                    _ => return Err(format!("{token:?} is not a retry condition or status code")),
                },
            };
            *flag = true;
        }
        Ok((on, codes))
    }
}

impl RetryPolicy {
    /// [`Self::istio_default`], made once.
    pub fn istio_default_ref() -> &'static RetryPolicy {
        static DEFAULT: LazyLock<RetryPolicy> = LazyLock::new(RetryPolicy::istio_default);
        &DEFAULT
    }

    /// No retries (`attempts: 0`), Istio's defaults otherwise; made once.
    pub fn none() -> &'static RetryPolicy {
        static NONE: LazyLock<RetryPolicy> = LazyLock::new(|| RetryPolicy {
            attempts: 0,
            ..RetryPolicy::istio_default()
        });
        &NONE
    }

    /// Istio's policy for routes without `retries`: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with
    /// 503 retriable, avoiding endpoints already tried.
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn {
                connect_failure: true,
                refused_stream: true,
                unavailable: true,
                cancelled: true,
                retriable_status_codes: true,
                ..RetryOn::default()
            },
            retriable_status_codes: vec![503],
            retry_remote_localities: false,
            retry_ignore_previous_hosts: true,
            backoff: None,
        }
    }

    /// Whether an attempt that ended with `outcome` is retried (attempts left aside).
    pub fn should_retry(&self, outcome: &AttemptOutcome) -> bool {
        let on = &self.retry_on;
        let no_response = on.server_error || on.gateway_error || on.reset;
        match *outcome {
            AttemptOutcome::ConnectFailure => {
                no_response || on.connect_failure || on.reset_before_request
            }
            AttemptOutcome::RefusedStream => no_response || on.refused_stream,
            AttemptOutcome::Reset | AttemptOutcome::PerTryTimeout => no_response,
            AttemptOutcome::Response {
                status,
                grpc_status,
            } => {
                (on.server_error && (500..=599).contains(&status))
                    || (on.gateway_error && matches!(status, 502..=504))
                    || (on.retriable_4xx && status == 409)
                    || (on.retriable_status_codes && self.retriable_status_codes.contains(&status))
                    || grpc_status.is_some_and(|g| match g {
                        1 => on.cancelled,
                        4 => on.deadline_exceeded,
                        8 => on.resource_exhausted,
                        13 => on.internal,
                        14 => on.unavailable,
                        _ => false,
                    })
            }
        }
    }

    /// The policy of a route: Istio's default without `retries`, `None` when disabled.
    /// As in Istio, an explicit policy starts from the default and overrides what it sets
    /// (`retryOn` replaces both the conditions and the status codes).
    pub(super) fn compile(
        r: Option<&HttpRetry>,
        p: &mut Problems,
        path: &str,
    ) -> Option<RetryPolicy> {
        let mut out = RetryPolicy::istio_default();
        let Some(r) = r else { return Some(out) };
        let attempts = u32::try_from(r.attempts.unwrap_or(0)).unwrap_or(0);
        let mut duration = |field: &str, v: &Option<String>| {
            v.as_deref().and_then(|s| {
                parse_duration(s)
                    .map_err(|e| p.add::<()>(format!("{path}.{field}"), e))
                    .ok()
            })
        };
        let per_try_timeout = duration("perTryTimeout", &r.per_try_timeout);
        let backoff = duration("backoff", &r.backoff);
        if !r.retry_on.trim().is_empty() {
            match RetryOn::parse(&r.retry_on) {
                Ok((on, codes)) => {
                    out.retry_on = on;
                    out.retriable_status_codes = codes;
                }
                Err(e) => return p.add(format!("{path}.retryOn"), e),
            }
        }
        if attempts == 0 {
            return None;
        }
        out.attempts = attempts;
        out.per_try_timeout = per_try_timeout.filter(|d| !d.is_zero());
        out.backoff = backoff;
        out.retry_remote_localities = r.retry_remote_localities.unwrap_or(false);
        out.retry_ignore_previous_hosts = r.retry_ignore_previous_hosts.unwrap_or(true);
        Some(out)
    }
}
