//! The hash input of consistent-hash load balancing, and the stable hash function.
//!
//! Hashes must agree across waypoint replicas and restarts (so that every replica sends a
//! session to the same endpoint), so they use a fixed function rather than std's
//! randomly keyed hasher: 64-bit FNV-1a over the bytes, finished with MurmurHash3's
//! 64-bit avalanche step (FNV-1a alone mixes its last bytes poorly).

use std::fmt::Write as _;

use http::HeaderValue;
use http::header::COOKIE;

use super::settings::{CookieKey, HashKey};
use crate::context::Source;

/// A stable 64-bit hash of the concatenation of `parts`.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What a request offers as a consistent-hash key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOutcome {
    /// Hash the request to this value.
    Key(u64),
    /// The request has no key (header, parameter or source IP missing; cookie missing and
    /// not generated). As Envoy, the load balancer then uses a random hash.
    Missing,
    /// The cookie was missing and the policy has a ttl: the request hashes to `key`, and
    /// the proxy adds `set_cookie` as a `Set-Cookie` header to the response, so the
    /// client's next requests carry the cookie and stick to the same endpoint.
    NewCookie {
        /// The hash of the generated cookie value (what the cookie will hash to).
        key: u64,
        /// The `Set-Cookie` value: `NAME="VALUE"; Max-Age=SECS; Path=PATH; HttpOnly`
        /// (`Max-Age` omitted for a zero ttl, `Path` when empty), then the attributes.
        set_cookie: HeaderValue,
    },
}

impl HashOutcome {
    /// The hash to pass to [`super::LoadBalancer::pick`].
    pub fn hash(&self) -> Option<u64> {
        match self {
            HashOutcome::Key(key) | HashOutcome::NewCookie { key, .. } => Some(*key),
            HashOutcome::Missing => None,
        }
    }
}

/// Computes the consistent-hash key of a request for `key` (from
/// [`super::ConsistentHash::key`]).
pub fn hash_key(key: &HashKey, parts: &http::request::Parts, src: &Source) -> HashOutcome {
    match key {
        HashKey::Header(name) => {
            let mut values = parts.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                return HashOutcome::Missing;
            }
            let mut joined = Vec::new();
            for (i, v) in values.enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(v.as_bytes());
            }
            HashOutcome::Key(stable_hash(&[&joined]))
        }
        HashKey::SourceIp => match src.ip {
            Some(ip) => HashOutcome::Key(stable_hash(&[ip.to_string().as_bytes()])),
            None => HashOutcome::Missing,
        },
        HashKey::QueryParameter(param) => parts
            .uri
            .query()
            .and_then(|q| {
                q.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == param).then_some(v)
                })
            })
            .map_or(HashOutcome::Missing, |v| {
                HashOutcome::Key(stable_hash(&[v.as_bytes()]))
            }),
        HashKey::Cookie(cookie) => match find_cookie(parts, &cookie.name) {
            Some(value) => HashOutcome::Key(stable_hash(&[value.as_bytes()])),
            None => generate_cookie(cookie, src),
        },
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, quotes removed.
fn find_cookie<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| {
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// Envoy's behaviour for a missing cookie with a ttl: generate a value derived from the
/// client's address (so one client keeps getting the same value) and set it.
fn generate_cookie(cookie: &CookieKey, src: &Source) -> HashOutcome {
    let Some(ttl) = cookie.ttl else {
        return HashOutcome::Missing;
    };
    let ip = src.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let value = format!(
        "{:016x}",
        stable_hash(&[ip.as_bytes(), b"\0", cookie.name.as_bytes()])
    );
    let mut header = format!("{}=\"{value}\"", cookie.name);
    if !ttl.is_zero() {
        let _ = write!(header, "; Max-Age={}", ttl.as_secs());
    }
    if !cookie.path.is_empty() {
        let _ = write!(header, "; Path={}", cookie.path);
    }
    header.push_str("; HttpOnly");
    for (name, val) in &cookie.attributes {
        if val.is_empty() {
            let _ = write!(header, "; {name}");
        } else {
            let _ = write!(header, "; {name}={val}");
        }
    }
    match HeaderValue::from_str(&header) {
        Ok(set_cookie) => HashOutcome::NewCookie {
            key: stable_hash(&[value.as_bytes()]),
            set_cookie,
        },
        // compile() rejects cookie names, paths and attributes that cannot be in a header.
        Err(_) => HashOutcome::Missing,
    }
}
