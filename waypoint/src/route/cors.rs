//! `corsPolicy`, evaluated as Envoy's CORS filter does.

use api::config::parse_duration;
use api::config::virtual_service::{CorsPolicy, UnmatchedPreflights};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::compile::{Problems, string_matcher};
use super::matching::StringMatcher;

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    /// `allowOrigins`, else the deprecated `allowOrigin` as exact matches. A matcher that
    /// matches the literal `*` allows every origin (as in Envoy).
    pub allow_origins: Vec<StringMatcher>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    /// `allowCredentials`.
    pub allow_credentials: bool,
    /// `unmatchedPreflights: IGNORE`: answer preflights from other origins without CORS
    /// headers instead of forwarding them (the default, `FORWARD`).
    pub ignore_unmatched_preflights: bool,
}

impl Cors {
    /// Whether `origin` is allowed.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Origin` and a non-empty
    /// `Access-Control-Request-Method`): `200` with the `Access-Control-Allow-*` headers
    /// when the origin is allowed; for another origin `None` (forward it) or, with
    /// `unmatchedPreflights: IGNORE`, `200` without CORS headers. `None` for any other
    /// request.
    pub fn preflight(&self, req: &Parts) -> Option<http::Response<()>> {
        if req.method != Method::OPTIONS {
            return None;
        }
        let origin = req.headers.get(ORIGIN)?;
        let requested = req.headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        if requested.is_empty() {
            return None;
        }
        let mut resp = http::Response::new(());
        *resp.status_mut() = StatusCode::OK;
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return self.ignore_unmatched_preflights.then_some(resp);
        }
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        for (name, value) in [
            (ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ] {
            if let Some(v) = value {
                h.insert(name, v.clone());
            }
        }
        Some(resp)
    }

    /// Adds `Access-Control-Allow-Origin` (the request's origin), `-Allow-Credentials`
    /// and `-Expose-Headers` to the response of a request from an allowed origin
    /// (`origin`: the request's `Origin` header).
    pub fn apply_response(&self, origin: Option<&HeaderValue>, resp_headers: &mut HeaderMap) {
        let Some(origin) = origin else {
            return;
        };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return;
        }
        resp_headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            resp_headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_headers {
            resp_headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }

    pub(super) fn compile(c: &CorsPolicy, p: &mut Problems, path: &str) -> Option<Cors> {
        let allow_origins = if c.allow_origins.is_empty() {
            c.allow_origin
                .iter()
                .map(|o| StringMatcher::Exact(o.clone()))
                .collect()
        } else {
            let mut out = Vec::new();
            for (i, m) in c.allow_origins.iter().enumerate() {
                out.push(string_matcher(m, p, &format!("{path}.allowOrigins[{i}]"))?);
            }
            out
        };
        let mut joined = |field: &str, list: &[String]| {
            if list.is_empty() {
                return None;
            }
            HeaderValue::from_str(&list.join(","))
                .map_err(|e| p.add::<()>(format!("{path}.{field}"), e.to_string()))
                .ok()
        };
        let allow_methods = joined("allowMethods", &c.allow_methods);
        let allow_headers = joined("allowHeaders", &c.allow_headers);
        let expose_headers = joined("exposeHeaders", &c.expose_headers);
        let max_age = match c.max_age.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) => Some(HeaderValue::from(d.as_secs())),
            Some(Err(e)) => return p.add(format!("{path}.maxAge"), e),
        };
        Some(Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials: c.allow_credentials.unwrap_or(false),
            ignore_unmatched_preflights: c.unmatched_preflights
                == Some(UnmatchedPreflights::Ignore),
        })
    }
}
