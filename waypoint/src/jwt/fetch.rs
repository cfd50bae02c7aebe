//! Getting a JWKS document from its `jwksUri`: the [`JwksFetcher`] trait and
//! [`HttpFetcher`], which reads `file://` URIs and plain paths from disk and fetches
//! `http://` (hyper) and `https://` (rustls, Mozilla's roots from `webpki-roots`). Redirects
//! are not followed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a JWKS could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// A fetch in progress.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<String, FetchError>> + Send + 'a>>;

/// Gets the JWKS document at a URI. The cache applies the timeout around it.
pub trait JwksFetcher: Send + Sync + fmt::Debug {
    /// The document at `uri`.
    fn fetch<'a>(&'a self, uri: &'a str) -> FetchFuture<'a>;
}

/// Fetches from files, `http://` and `https://`.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    tls: Arc<rustls::ClientConfig>,
}

impl Default for HttpFetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpFetcher {
    /// A fetcher that trusts the Mozilla root CAs for https.
    pub fn new() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        HttpFetcher { tls: Arc::new(tls) }
    }

    /// A fetcher with its own TLS client configuration (e.g. private roots).
    pub fn with_tls(tls: Arc<rustls::ClientConfig>) -> Self {
        HttpFetcher { tls }
    }

    async fn get(&self, uri: &str) -> Result<String, FetchError> {
        let err = |e: &dyn fmt::Display| FetchError(format!("{uri}: {e}"));
        if let Some(path) = uri
            .strip_prefix("file://")
            .or(uri.starts_with('/').then_some(uri))
        {
            return tokio::fs::read_to_string(path).await.map_err(|e| err(&e));
        }
        let parsed: http::Uri = uri.parse().map_err(|e| err(&e))?;
        let host = parsed.host().ok_or_else(|| err(&"no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = match parsed.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(err(&"not a file://, http:// or https:// URI")),
        };
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| err(&e))?;
        if !https {
            return request(tcp, &parsed).await.map_err(|e| err(&e));
        }
        let name = ServerName::try_from(host).map_err(|e| err(&e))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| err(&e))?;
        request(tls, &parsed).await.map_err(|e| err(&e))
    }
}

impl JwksFetcher for HttpFetcher {
    fn fetch<'a>(&'a self, uri: &'a str) -> FetchFuture<'a> {
        Box::pin(self.get(uri))
    }
}

/// One HTTP/1.1 GET over `io`.
async fn request<I>(io: I, uri: &http::Uri) -> Result<String, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("JWKS fetch connection: {e}");
        }
    });
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the JWKS is not UTF-8".to_owned())
}
