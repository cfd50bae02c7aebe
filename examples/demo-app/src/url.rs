//! The URLs the demo calls: plain `http://` with a host that may be a Service name, which
//! is why the host is kept as text and resolved at call time, not parsed into an address.

use std::fmt;

use http::Uri;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad URL {url:?}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

/// An `http://host[:port][/path]` URL whose host is resolved at call time, so a Service
/// defined after startup (or removed) is seen by the next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    host: String,
    port: Option<u16>,
    path_and_query: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let bad = |reason: &str| UrlError {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = text.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported: the mesh encrypts, call http://",
                ));
            }
            _ => return Err(bad("expected http://HOST[:PORT][/PATH]")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(Self {
            host: host.to_string(),
            port: uri.port_u16(),
            path_and_query: path_and_query.to_string(),
        })
    }

    /// The same host with another path, for calling an upstream's API below its base URL.
    pub fn with_path(&self, path_and_query: &str) -> Self {
        Self {
            path_and_query: path_and_query.to_string(),
            ..self.clone()
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, if the URL has one (a Service name may take its port from the
    /// environment instead).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The `Host` header a browser would send, so waypoints can route on the Service name.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_and_literal_urls() {
        let cases = [
            ("http://ratings:9080", "ratings", Some(9080), "/"),
            ("http://ratings", "ratings", None, "/"),
            (
                "http://reviews:9080/reviews/0?x=1",
                "reviews",
                Some(9080),
                "/reviews/0?x=1",
            ),
            ("http://[::1]:80/a", "::1", Some(80), "/a"),
            ("http://10.0.0.1/", "10.0.0.1", None, "/"),
        ];
        for (text, host, port, path) in cases {
            let url = Url::parse(text).unwrap();
            assert_eq!(
                (url.host(), url.port, url.path_and_query.as_str()),
                (host, port, path)
            );
        }
        assert_eq!(
            Url::parse("http://[::1]:80/a").unwrap().to_string(),
            "http://[::1]:80/a"
        );
        assert_eq!(
            Url::parse("http://ratings:9080")
                .unwrap()
                .with_path("/ratings/7")
                .to_string(),
            "http://ratings:9080/ratings/7"
        );
    }

    #[test]
    fn rejects_what_it_cannot_call() {
        for text in [
            "https://ratings",
            "ratings:9080",
            "/ratings",
            "ftp://x",
            "http://",
            "a b",
        ] {
            assert!(matches!(Url::parse(text), Err(UrlError { .. })), "{text}");
        }
    }
}
