//! Calling the next service in the chain and reading its JSON. A failed hop becomes a
//! one-line reason that the caller embeds in its own answer, so a denied or broken link
//! is visible in the tour's output instead of failing the whole page.

use http::StatusCode;
use serde_json::{Map, Value};

use crate::client::{ClientError, HttpClient};
use crate::url::Url;

/// How much of an unexpected body goes into an error: enough to recognise a waypoint's
/// "RBAC: access denied", short enough for a summary line.
const SNIPPET: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Unreachable(#[from] ClientError),
    #[error("{service} answered {status}: {reason}")]
    Status {
        service: String,
        status: StatusCode,
        reason: String,
    },
    #[error("{service} answered with a body that is not a JSON object: {snippet}")]
    NotJson { service: String, snippet: String },
}

/// `GET url`, expecting a 2xx JSON object (what every demo role answers).
pub async fn get_json(client: &HttpClient, url: &Url) -> Result<Map<String, Value>, UpstreamError> {
    let exchange = client.get(url, &[]).await?;
    let service = url.host().to_string();
    let parsed = serde_json::from_slice::<Value>(&exchange.body).ok();
    if !exchange.status.is_success() {
        // Our own roles put the reason in "error"; anything else (a waypoint, a proxy)
        // is quoted as text.
        let reason = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_else(|| one_line(&String::from_utf8_lossy(&exchange.body)));
        return Err(UpstreamError::Status {
            service,
            status: exchange.status,
            reason,
        });
    }
    match parsed {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(UpstreamError::NotJson {
            service,
            snippet: one_line(&String::from_utf8_lossy(&exchange.body)),
        }),
    }
}

/// Collapses whitespace and shortens, so a reason fits in a summary line.
pub fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        return "(empty body)".to_string();
    }
    match joined.char_indices().nth(SNIPPET) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_and_shortens() {
        assert_eq!(one_line("RBAC: access\n denied\n"), "RBAC: access denied");
        assert_eq!(one_line("  \n"), "(empty body)");
        let long = "x".repeat(SNIPPET + 10);
        assert_eq!(one_line(&long), format!("{}...", "x".repeat(SNIPPET)));
    }
}
