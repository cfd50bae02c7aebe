//! `fault`: delay and abort injection.

use std::time::Duration;

use api::config::parse_duration;
use api::config::virtual_service::{HttpFaultInjection, grpc_status_code};
use http::{HeaderValue, StatusCode};
use rand::Rng;

use super::action::sample;
use super::compile::Problems;

/// Compiled fault injection. Each part is drawn independently per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// `fault.delay`.
    pub delay: Option<FaultDelay>,
    /// `fault.abort`.
    pub abort: Option<FaultAbort>,
}

/// Delay `delay` for `percentage` % of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    /// `fixedDelay`.
    pub delay: Duration,
    /// 0..=100; `percentage.value`, else the deprecated `percent`, else 100.
    pub percentage: f64,
}

/// Abort `percentage` % of requests with `abort`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    /// The answer.
    pub abort: Abort,
    /// 0..=100; `percentage.value`, else 100.
    pub percentage: f64,
}

/// How a request is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// `httpStatus`: answer with this HTTP status.
    Http(u16),
    /// `grpcStatus`: answer with this gRPC status code (the name mapped to its number).
    Grpc(u32),
}

impl Abort {
    /// The local reply: the HTTP status, or for gRPC a trailers-only response (HTTP 200,
    /// `content-type: application/grpc`, `grpc-status`).
    pub fn response(&self) -> http::Response<()> {
        let mut resp = http::Response::new(());
        match *self {
            Abort::Http(code) => {
                *resp.status_mut() =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            }
            Abort::Grpc(code) => {
                let headers = resp.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert("grpc-status", HeaderValue::from(code));
            }
        }
        resp
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultDecision {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Then answer with this instead of forwarding.
    pub abort: Option<Abort>,
}

impl Fault {
    /// Draws the delay and the abort for one request.
    pub fn decide(&self, rng: &mut impl Rng) -> FaultDecision {
        FaultDecision {
            delay: self
                .delay
                .as_ref()
                .filter(|d| sample(rng, d.percentage))
                .map(|d| d.delay),
            abort: self
                .abort
                .as_ref()
                .filter(|a| sample(rng, a.percentage))
                .map(|a| a.abort),
        }
    }

    pub(super) fn compile(f: &HttpFaultInjection, p: &mut Problems, path: &str) -> Option<Fault> {
        let delay = match &f.delay {
            None => None,
            Some(d) => {
                let at = format!("{path}.delay.fixedDelay");
                let fixed = d.fixed_delay.as_deref().unwrap_or_default();
                let delay = parse_duration(fixed).map_err(|e| p.add::<()>(at, e)).ok()?;
                let percentage = d
                    .percentage
                    .as_ref()
                    .map(|pc| pc.value)
                    .or(d.percent.map(f64::from))
                    .unwrap_or(100.0);
                Some(FaultDelay { delay, percentage })
            }
        };
        let abort = match &f.abort {
            None => None,
            Some(a) => {
                let abort = match (a.http_status, &a.grpc_status) {
                    (Some(code), _) => match u16::try_from(code) {
                        Ok(code) if (200..=599).contains(&code) => Abort::Http(code),
                        _ => return p.add(format!("{path}.abort.httpStatus"), "not in 200..599"),
                    },
                    (None, Some(name)) => match grpc_code(name) {
                        Some(code) => Abort::Grpc(code),
                        None => {
                            return p.add(
                                format!("{path}.abort.grpcStatus"),
                                format!("{name:?} is not a gRPC status name"),
                            );
                        }
                    },
                    (None, None) => {
                        return p.add(format!("{path}.abort"), "httpStatus or grpcStatus required");
                    }
                };
                let percentage = a.percentage.as_ref().map_or(100.0, |pc| pc.value);
                Some(FaultAbort { abort, percentage })
            }
        };
        Some(Fault { delay, abort })
    }
}

/// The gRPC status code of a status name (`UNAVAILABLE` -> 14), in any case; a decimal
/// number is accepted too.
pub(super) fn grpc_code(name: &str) -> Option<u32> {
    grpc_status_code(&name.to_ascii_uppercase())
        .or_else(|| name.parse::<u32>().ok().filter(|c| *c <= 16))
}
