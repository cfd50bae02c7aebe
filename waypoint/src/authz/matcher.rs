//! Value matchers of compiled policies: strings with Istio's `*` wildcards and IP blocks
//! (the L4 [`dataplane::rbac`] types), paths (wildcards and `{*}` / `{**}` templates)
//! and hosts.

pub use dataplane::rbac::{Cidr, StringMatch};

/// A `paths` entry: a [`StringMatch`], or a path template with `{*}` (one segment) and
/// `{**}` (one or more segments; at most once, and no `{*}` after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Istio's `*` wildcards.
    Wildcard(StringMatch),
    /// A template, split at `/`: the segments before `{**}`, and (when the template has
    /// `{**}`) the literal segments after it.
    Template {
        /// Segments before `{**}` (or all of them).
        head: Vec<TemplateSegment>,
        /// `Some(tail)` when the template has `{**}`: literal segments after it.
        tail: Option<Vec<String>>,
    },
}

/// A segment of a path template (before `{**}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    /// A literal segment.
    Literal(String),
    /// `{*}`: exactly one non-empty segment.
    One,
}

impl PathMatch {
    /// Parses a `paths` entry.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.contains(['{', '}']) {
            return Ok(PathMatch::Wildcard(StringMatch::parse(pattern)));
        }
        let rest = pattern
            .strip_prefix('/')
            .ok_or_else(|| format!("path template {pattern:?} must start with '/'"))?;
        let mut head = Vec::new();
        let mut tail: Option<Vec<String>> = None;
        for segment in rest.split('/') {
            match segment {
                "{**}" if tail.is_none() => tail = Some(Vec::new()),
                "{**}" => return Err(format!("{pattern:?} may use {{**}} only once")),
                "{*}" if tail.is_some() => {
                    return Err(format!("{pattern:?}: {{**}} must be the last operator"));
                }
                "{*}" => head.push(TemplateSegment::One),
                _ if segment.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "{pattern:?}: segment {segment:?} is not a literal, {{*}} or {{**}}"
                    ));
                }
                literal => match &mut tail {
                    Some(tail) => tail.push(literal.to_owned()),
                    None => head.push(TemplateSegment::Literal(literal.to_owned())),
                },
            }
        }
        Ok(PathMatch::Template { head, tail })
    }

    /// Whether `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Wildcard(m) => m.matches(path),
            PathMatch::Template { head, tail } => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let segments: Vec<&str> = rest.split('/').collect();
                let head_ok = |segs: &[&str]| {
                    head.iter().zip(segs).all(|(t, s)| match t {
                        TemplateSegment::Literal(l) => l == s,
                        TemplateSegment::One => !s.is_empty(),
                    })
                };
                match tail {
                    None => segments.len() == head.len() && head_ok(&segments),
                    Some(tail) => {
                        let fixed = head.len() + tail.len();
                        if segments.len() < fixed + 1 {
                            return false;
                        }
                        let middle = &segments[head.len()..segments.len() - tail.len()];
                        head_ok(&segments)
                            && middle.iter().all(|s| !s.is_empty())
                            && segments[segments.len() - tail.len()..]
                                .iter()
                                .zip(tail)
                                .all(|(s, t)| s == t)
                    }
                }
            }
        }
    }
}

/// A `hosts` entry, matched case-insensitively against the request authority: a pattern
/// without a port also matches the authority without its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch(StringMatch);

impl HostMatch {
    /// Parses a `hosts` entry.
    pub fn parse(pattern: &str) -> Self {
        HostMatch(StringMatch::parse_lowercase(pattern))
    }

    /// Whether `authority` matches.
    pub fn matches(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        self.0.matches(&authority) || strip_port(&authority).is_some_and(|h| self.0.matches(h))
    }
}

/// `host` of `host:port` (also `[v6]:port`); `None` when there is no port.
pub fn strip_port(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    let bracketed_ok = !host.contains(':') || (host.starts_with('[') && host.ends_with(']'));
    (bracketed_ok && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(host)
}
