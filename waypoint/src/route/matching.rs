//! Compiled `http[].match[]` conditions and their evaluation against a request.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::HeaderName;
use http::request::Parts;
use regex::Regex;

use crate::context::{Destination, Source, authority};

/// A compiled `StringMatch`.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// `exact`.
    Exact(String),
    /// `prefix`.
    Prefix(String),
    /// `regex`, anchored at both ends (RE2 full-match semantics, as Envoy uses).
    Regex(Regex),
    /// `{}`: the header or query parameter is present (any value).
    Present,
}

impl StringMatcher {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(e) => value == e,
            StringMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StringMatcher::Regex(r) => r.is_match(value),
            StringMatcher::Present => true,
        }
    }
}

/// Compiles `pattern` so that it must match the whole input.
pub(super) fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex: {e}"))
}

/// Which header a header condition reads. Pseudo-headers read the request head; `host`
/// reads the authority too (HTTP/2 carries it in `:authority`, not in a `Host` header).
#[derive(Debug, Clone)]
pub(super) enum HeaderKey {
    Authority,
    Method,
    Path,
    Scheme,
    Named(HeaderName),
}

impl HeaderKey {
    pub(super) fn parse(name: &str) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            ":authority" | "host" => HeaderKey::Authority,
            ":method" => HeaderKey::Method,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            _ => HeaderKey::Named(
                HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|e| format!("invalid header name: {e}"))?,
            ),
        })
    }

    /// The header's value; several values of one header are joined with `,` (as Envoy
    /// matches them). Values that are not UTF-8 are read lossily.
    fn value<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, str>> {
        match self {
            HeaderKey::Authority => authority(parts).map(Cow::Borrowed),
            HeaderKey::Method => Some(Cow::Borrowed(parts.method.as_str())),
            HeaderKey::Path => Some(Cow::Borrowed(
                parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            )),
            HeaderKey::Scheme => Some(Cow::Borrowed(scheme(parts))),
            HeaderKey::Named(name) => {
                let mut values = parts.headers.get_all(name).iter();
                let first = values.next()?;
                let mut out = String::from_utf8_lossy(first.as_bytes());
                for v in values {
                    let s = out.to_mut();
                    s.push(',');
                    s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                Some(out)
            }
        }
    }
}

/// The request scheme: the URI's, else `http` (HBONE carries plaintext HTTP).
pub(super) fn scheme(parts: &Parts) -> &str {
    parts.uri.scheme_str().unwrap_or("http")
}

/// How the path matched, which a prefix rewrite needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// The first `n` bytes of the path matched a prefix. A match entry without a `uri`
    /// condition (and a rule without match entries) counts as prefix `/`, as Istio
    /// generates it.
    Prefix(usize),
    /// The whole path matched (`exact` or `regex`).
    Whole,
}

/// One compiled `http[].match[]` entry: every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    /// The entry's `name`.
    pub name: String,
    pub(super) uri: Option<StringMatcher>,
    pub(super) ignore_uri_case: bool,
    pub(super) scheme: Option<StringMatcher>,
    pub(super) method: Option<StringMatcher>,
    pub(super) authority: Option<StringMatcher>,
    pub(super) headers: Vec<(HeaderKey, StringMatcher)>,
    pub(super) without_headers: Vec<(HeaderKey, StringMatcher)>,
    pub(super) query_params: Vec<(String, StringMatcher)>,
    pub(super) port: Option<u16>,
    pub(super) source_labels: BTreeMap<String, String>,
    pub(super) source_namespace: Option<String>,
}

/// What a match is evaluated against.
#[derive(Debug)]
pub(super) struct MatchInput<'a> {
    pub(super) parts: &'a Parts,
    pub(super) dest: &'a Destination,
    pub(super) src: &'a Source,
}

impl<'a> MatchInput<'a> {
    pub(super) fn new(dest: &'a Destination, parts: &'a Parts, src: &'a Source) -> Self {
        MatchInput { parts, dest, src }
    }

    /// The value of the query parameter `name`'s first occurrence (as Envoy matches),
    /// percent-decoded. The query is walked for each lookup instead of collected: a
    /// request has few parameters and a rule few `queryParams`, so walking costs less
    /// than allocating a list per request.
    fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        query_param(self.parts.uri.query()?, name)
    }
}

impl RequestMatch {
    /// Whether the request matches; on a match, how its path matched.
    pub(super) fn evaluate(&self, input: &MatchInput<'_>) -> Option<PathMatch> {
        let parts = input.parts;
        let path_match = self.match_path(parts.uri.path())?;
        let holds = |m: &Option<StringMatcher>, v: Option<&str>| match m {
            None => true,
            Some(m) => v.is_some_and(|v| m.matches(v)),
        };
        if !holds(&self.scheme, Some(scheme(parts)))
            || !holds(&self.method, Some(parts.method.as_str()))
            || !holds(&self.authority, authority(parts))
        {
            return None;
        }
        if self.port.is_some_and(|p| p != input.dest.port()) {
            return None;
        }
        if let Some(ns) = &self.source_namespace
            && input.src.namespace() != Some(ns.as_str())
        {
            return None;
        }
        if !self.source_labels.is_empty() {
            let labels = input.src.workload.as_ref().map(|w| &*w.labels);
            let subset = labels.is_some_and(|labels| {
                self.source_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            });
            if !subset {
                return None;
            }
        }
        let header_holds =
            |(key, m): &(HeaderKey, StringMatcher)| key.value(parts).is_some_and(|v| m.matches(&v));
        if !self.headers.iter().all(header_holds) || self.without_headers.iter().any(header_holds) {
            return None;
        }
        let query_holds = |(name, m): &(String, StringMatcher)| {
            input.query_param(name).is_some_and(|v| m.matches(&v))
        };
        if !self.query_params.iter().all(query_holds) {
            return None;
        }
        Some(path_match)
    }

    /// `ignoreUriCase` applies to exact and prefix matches only (as Istio documents).
    fn match_path(&self, path: &str) -> Option<PathMatch> {
        match &self.uri {
            None => Some(PathMatch::Prefix(usize::from(path.starts_with('/')))),
            Some(StringMatcher::Exact(e)) => {
                let eq = if self.ignore_uri_case {
                    path.eq_ignore_ascii_case(e)
                } else {
                    path == e
                };
                eq.then_some(PathMatch::Whole)
            }
            Some(StringMatcher::Prefix(p)) => {
                let head = path.get(..p.len())?;
                let eq = if self.ignore_uri_case {
                    head.eq_ignore_ascii_case(p)
                } else {
                    head == p
                };
                eq.then_some(PathMatch::Prefix(p.len()))
            }
            Some(m) => m.matches(path).then_some(PathMatch::Whole),
        }
    }
}

/// The percent-decoded value of the first parameter of `query` whose percent-decoded
/// name is `name`. `+` is kept as is (Envoy does not treat it as a space either); a
/// parameter without `=` has an empty value. Only the matching value is decoded.
fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').filter(|kv| !kv.is_empty()).find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes; malformed escapes are kept literally. Most paths have none:
/// those are borrowed as they are.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Both digits are < 16, so the byte cannot overflow.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}
