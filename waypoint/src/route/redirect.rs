//! `redirect` and `directResponse`: answers the waypoint gives itself.

use api::config::virtual_service::{HttpDirectResponse, HttpRedirect, RedirectPortSelection};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{HeaderValue, StatusCode};

use super::compile::Problems;
use super::matching::scheme;
use crate::context::authority;

/// A compiled `redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `uri`: replaces the whole path. The request's query is kept unless this holds a
    /// `?` (as Envoy's `path_redirect`).
    pub uri: Option<String>,
    /// `authority`: replaces the host (and port, if it has one).
    pub authority: Option<String>,
    /// `port` / `derivePort`.
    pub port: RedirectPort,
    /// `scheme`; default the request's.
    pub scheme: Option<String>,
    /// `redirectCode`; default 301.
    pub status: StatusCode,
}

/// The port of the `Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    /// Neither `port` nor `derivePort`: the authority's port is kept, except that a
    /// default port (80 for http, 443 for https) is dropped when the scheme changes.
    Keep,
    /// `port`.
    Fixed(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: no explicit port.
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`: the port the request was sent to.
    RequestPort,
}

/// Splits `host:port` (IPv6 literals in brackets) into host and optional port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let colon = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

impl Redirect {
    /// The `Location` for `req`; `request_port` is the port the request was sent to
    /// (`Destination::port`).
    pub fn location(&self, req: &Parts, request_port: u16) -> String {
        let old_scheme = scheme(req);
        let new_scheme = self.scheme.as_deref().unwrap_or(old_scheme);
        let original = self
            .authority
            .as_deref()
            .or_else(|| authority(req))
            .unwrap_or_default();
        let (host, port) = split_port(original);
        let port = match self.port {
            RedirectPort::Fixed(p) => Some(p.to_string()),
            RedirectPort::RequestPort => Some(request_port.to_string()),
            RedirectPort::ProtocolDefault => None,
            RedirectPort::Keep => port.map(str::to_owned).filter(|p| {
                let default_of_old =
                    matches!((old_scheme, p.as_str()), ("http", "80") | ("https", "443"));
                self.authority.is_some() || new_scheme == old_scheme || !default_of_old
            }),
        };
        let path = match &self.uri {
            Some(uri) if uri.contains('?') => uri.clone(),
            Some(uri) => match req.uri.query() {
                Some(q) => format!("{uri}?{q}"),
                None => uri.clone(),
            },
            None => req
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        };
        match port {
            Some(port) => format!("{new_scheme}://{host}:{port}{path}"),
            None => format!("{new_scheme}://{host}{path}"),
        }
    }

    /// The redirect response: the status and `Location`. A `Location` that is not a valid
    /// header value (a request path cannot make one) is left out.
    pub fn response(&self, req: &Parts, request_port: u16) -> http::Response<()> {
        let mut resp = http::Response::new(());
        *resp.status_mut() = self.status;
        if let Ok(v) = HeaderValue::from_str(&self.location(req, request_port)) {
            resp.headers_mut().insert(LOCATION, v);
        }
        resp
    }

    pub(super) fn compile(r: &HttpRedirect, p: &mut Problems, path: &str) -> Option<Redirect> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let port = match (r.port, r.derive_port) {
            (Some(port), _) => match u16::try_from(port) {
                Ok(port) if port != 0 => RedirectPort::Fixed(port),
                _ => return p.add(format!("{path}.port"), "not a port number"),
            },
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
                RedirectPort::ProtocolDefault
            }
            (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::RequestPort,
            (None, None) => RedirectPort::Keep,
        };
        let code = if r.redirect_code == 0 {
            301
        } else {
            r.redirect_code
        };
        let status = match u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(s) if s.is_redirection() => s,
            _ => return p.add(format!("{path}.redirectCode"), "not a 3xx status"),
        };
        Some(Redirect {
            uri: non_empty(&r.uri),
            authority: non_empty(&r.authority),
            port,
            scheme: non_empty(&r.scheme),
            status,
        })
    }
}

/// A compiled `directResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// `status`.
    pub status: StatusCode,
    /// `body.string`, or `body.bytes` decoded from base64; empty without a body.
    pub body: Bytes,
}

impl DirectResponse {
    /// The response. A non-empty body is sent as `text/plain` (as Envoy's direct
    /// responses are).
    pub fn response(&self) -> http::Response<Bytes> {
        let mut resp = http::Response::new(self.body.clone());
        *resp.status_mut() = self.status;
        if !self.body.is_empty() {
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        resp
    }

    pub(super) fn compile(
        d: &HttpDirectResponse,
        p: &mut Problems,
        path: &str,
    ) -> Option<DirectResponse> {
        let status = match u16::try_from(d.status)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(s) if (200..=599).contains(&s.as_u16()) => s,
            _ => return p.add(format!("{path}.status"), "not in 200..599"),
        };
        let body = match d.body.as_ref().map(|b| (&b.string, &b.bytes)) {
            None | Some((None, None)) => Bytes::new(),
            Some((Some(s), _)) => Bytes::from(s.clone()),
            Some((None, Some(b64))) => match decode_base64(b64) {
                Some(bytes) => Bytes::from(bytes),
                None => return p.add(format!("{path}.body.bytes"), "is not valid base64"),
            },
        };
        Some(DirectResponse { status, body })
    }
}

/// Decodes standard or URL-safe base64, padding optional (as protobuf-JSON readers do).
pub(super) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let sextet = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | sextet(c)?;
        }
        // A chunk of n sextets carries n*6 bits: 3, 2 or 1 whole bytes for 4, 3, 2.
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&(acc << 6).to_be_bytes()[1..3]),
            _ => out.push((acc >> 4) as u8),
        }
    }
    Some(out)
}
