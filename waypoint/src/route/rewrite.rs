//! `rewrite`: path and authority changes before forwarding.

use api::config::virtual_service::HttpRewrite;
use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Uri};
use regex::Regex;

use super::compile::Problems;
use super::matching::PathMatch;
use super::table::Matched;

/// A compiled `rewrite` (plus a `headers.request.set[:authority]`, which Istio also turns
/// into an authority rewrite).
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// How the path changes.
    pub uri: Option<UriRewrite>,
    /// The new authority.
    pub authority: Option<Authority>,
}

/// How the path changes; the query string is kept.
#[derive(Debug, Clone)]
pub enum UriRewrite {
    /// `uri`: replaces the matched prefix, or the whole path after an exact or regex
    /// match (as Envoy's `prefix_rewrite`).
    Prefix(String),
    /// `uriRegexRewrite`: every match of `pattern` in the path (not anchored, as Envoy's
    /// `regex_rewrite`) is replaced by `substitution`, in which `\N` is capture group N.
    Regex {
        /// `match`.
        pattern: Regex,
        /// `rewrite`, translated to the `regex` crate's `${N}` syntax.
        substitution: String,
    },
}

/// A rewrite produced something that is not a valid request target.
#[derive(Debug, thiserror::Error)]
#[error("rewrite produced an invalid URI: {0}")]
pub struct RewriteError(#[from] http::Error);

impl Rewrite {
    /// Rewrites `parts` for the route `matched` selected. The authority goes to the `Host`
    /// header and to the URI when the URI has one (HTTP/2, absolute form); `Host` is also
    /// set when the URI has none.
    pub fn apply(&self, matched: &Matched<'_>, parts: &mut Parts) -> Result<(), RewriteError> {
        let mut uri = parts.uri.clone().into_parts();
        if let Some(rewrite) = &self.uri {
            let path = parts.uri.path();
            let new_path = match rewrite {
                UriRewrite::Prefix(prefix) => match matched.path {
                    PathMatch::Prefix(n) => format!("{prefix}{}", path.get(n..).unwrap_or("")),
                    PathMatch::Whole => prefix.clone(),
                },
                UriRewrite::Regex {
                    pattern,
                    substitution,
                } => pattern
                    .replace_all(path, substitution.as_str())
                    .into_owned(),
            };
            let pq = match parts.uri.query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            uri.path_and_query =
                Some(PathAndQuery::try_from(pq).map_err(|e| RewriteError(e.into()))?);
        }
        if let Some(authority) = &self.authority {
            let had_authority = uri.authority.is_some();
            if had_authority {
                uri.authority = Some(authority.clone());
            }
            if !had_authority || parts.headers.contains_key(HOST) {
                let value = HeaderValue::from_str(authority.as_str())
                    .map_err(|e| RewriteError(e.into()))?;
                parts.headers.insert(HOST, value);
            }
        }
        parts.uri = Uri::from_parts(uri).map_err(|e| RewriteError(e.into()))?;
        Ok(())
    }

    /// Compiles `rewrite` and the `:authority` header override (`rewrite.authority` wins).
    pub(super) fn compile(
        r: Option<&HttpRewrite>,
        authority_header: Option<&str>,
        p: &mut Problems,
        route_path: &str,
    ) -> Option<Rewrite> {
        let path = format!("{route_path}.rewrite");
        let uri = match r {
            Some(r) if !r.uri.is_empty() => {
                if PathAndQuery::try_from(r.uri.as_str()).is_err() {
                    return p.add(format!("{path}.uri"), "not a valid URI path");
                }
                Some(UriRewrite::Prefix(r.uri.clone()))
            }
            Some(HttpRewrite {
                uri_regex_rewrite: Some(rr),
                ..
            }) => {
                let at = format!("{path}.uriRegexRewrite");
                let pattern = match Regex::new(&rr.pattern) {
                    Ok(re) => re,
                    Err(e) => return p.add(format!("{at}.match"), format!("invalid regex: {e}")),
                };
                Some(UriRewrite::Regex {
                    pattern,
                    substitution: envoy_substitution(&rr.rewrite),
                })
            }
            _ => None,
        };
        let (authority, field) = match r.filter(|r| !r.authority.is_empty()) {
            Some(r) => (Some(r.authority.as_str()), format!("{path}.authority")),
            None => (
                authority_header,
                format!("{route_path}.headers.request.set[:authority]"),
            ),
        };
        let authority = match authority.map(Authority::try_from) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => return p.add(field, format!("invalid authority: {e}")),
        };
        (uri.is_some() || authority.is_some()).then_some(Rewrite { uri, authority })
    }
}

/// Translates an RE2 substitution (`\1`, `\\`) to the `regex` crate's (`${1}`, `$$`).
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str(&format!("${{{d}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    out
}
