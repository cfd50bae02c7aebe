//! Finding tokens in a request and writing the verified results back into it.

use http::HeaderValue;
use http::request::Parts;
use serde_json::Value;

use super::compile::{JwtProvider, Location};
use super::token::Token;

/// The tokens at `location`, in header-value order.
pub(crate) fn find(parts: &Parts, location: &Location) -> Vec<String> {
    match location {
        Location::Header { name, prefix } => parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| strip_prefix_ignore_case(v, prefix))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        Location::Param(param) => parts
            .uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, v)| k == param && !v.is_empty())
            .map(|(_, v)| v.to_owned())
            .collect(),
        Location::Cookie(cookie) => parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| k == cookie)
            .map(|(_, v)| v.trim_matches('"').to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// Applies `provider`'s outputs for a token verified at `location`: drops the token's
/// header unless `forwardOriginalToken`, and sets the payload and claim headers. Query
/// parameters and cookies carrying a token are left in place.
pub(crate) fn apply(parts: &mut Parts, provider: &JwtProvider, location: &Location, token: &Token) {
    if !provider.forward_original_token
        && let Location::Header { name, .. } = location
    {
        parts.headers.remove(name);
    }
    if let Some(name) = &provider.payload_header
        && let Ok(value) = HeaderValue::from_str(&token.payload_b64)
    {
        parts.headers.insert(name.clone(), value);
    }
    for (name, path) in &provider.claim_headers {
        let mut claim = path.iter().map(String::as_str);
        let first = claim.next().and_then(|k| token.claims.get(k));
        let value = claim.try_fold(first, |v, k| Some(v?.get(k)));
        if let Some(text) = value.flatten().and_then(claim_text)
            && let Ok(value) = HeaderValue::from_str(&text)
        {
            parts.headers.insert(name.clone(), value);
        }
    }
}

/// A claim as header text: strings as they are, numbers and booleans printed, arrays of
/// those joined with `,`; objects and nulls have none.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    Value::Array(_) => None,
                    v => claim_text(v),
                })
                .collect();
            texts.map(|t| t.join(","))
        }
        Value::Object(_) | Value::Null => None,
    }
}
