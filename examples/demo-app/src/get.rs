//! `demo-app get`: a tiny curl for pods, which have neither curl nor DNS. Its exit code
//! tells a script what happened: 0 for 2xx, 1 for any other status, 2 when no HTTP
//! answer came back at all (with the reason: refused, reset, timeout, no Service).

use std::io::{self, Write};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use crate::client::HttpClient;
use crate::discovery::Env;
use crate::url::Url;

/// Long enough for a first connection through a cold mesh.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub const EXIT_SUCCESS: u8 = 0;
pub const EXIT_HTTP_ERROR: u8 = 1;
pub const EXIT_NO_RESPONSE: u8 = 2;

#[derive(Debug, Clone)]
pub struct GetRequest {
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    /// Print the response headers between the status line and the body (`curl -i`).
    pub include_headers: bool,
}

impl GetRequest {
    pub fn new(url: Url) -> Self {
        Self {
            url,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            include_headers: false,
        }
    }
}

/// Performs the request, prints the answer to `out` and failures to `err`, and returns
/// the exit code.
pub async fn run(request: &GetRequest, env: Env, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let client = HttpClient::new(env, request.timeout);
    let exchange = match client.get(&request.url, &request.headers).await {
        Ok(exchange) => exchange,
        Err(e) => {
            let _ = writeln!(err, "demo-app get {}: {e}", request.url);
            return EXIT_NO_RESPONSE;
        }
    };
    let printed = print(request, &exchange, out);
    if let Err(e) = printed {
        let _ = writeln!(err, "demo-app get: cannot write the response: {e}");
    }
    if exchange.status.is_success() {
        EXIT_SUCCESS
    } else {
        EXIT_HTTP_ERROR
    }
}

fn print(
    request: &GetRequest,
    exchange: &crate::client::Exchange,
    out: &mut impl Write,
) -> io::Result<()> {
    let status = exchange.status;
    writeln!(
        out,
        "HTTP/1.1 {} {}",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )?;
    if request.include_headers {
        for (name, value) in &exchange.headers {
            writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
        }
        writeln!(out)?;
    }
    out.write_all(&exchange.body)?;
    if !exchange.body.ends_with(b"\n") && !exchange.body.is_empty() {
        writeln!(out)?;
    }
    out.flush()
}

/// `K:V` or `K: V`, as curl takes it.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header {text:?} is not NAME:VALUE"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("header name {:?} is not valid", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("header value {:?} is not valid", value.trim()))?;
    Ok((name, value))
}

/// `500ms`, `5s` or a bare number of seconds.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || format!("timeout {text:?} is not like 500ms, 5s or 5");
    let duration = if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().map_err(|_| bad())?)
    } else {
        let secs = text.strip_suffix('s').unwrap_or(text);
        Duration::from_secs(secs.parse().map_err(|_| bad())?)
    };
    if duration.is_zero() {
        return Err(format!("timeout {text:?} must be above zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_like_curl() {
        let (name, value) = parse_header("X-Test: a b").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-test", "a b"));
        let (name, value) = parse_header("host:reviews").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("host", "reviews")
        );
        for bad in ["no-colon", ": empty-name", "bad name: v", "x: bad\nvalue"] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_take_units() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("7"), Ok(Duration::from_secs(7)));
        for bad in ["0", "0ms", "fast", "-1s", "1.5s", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
