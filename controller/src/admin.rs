//! The controller's admin endpoint: a small HTTP/1 server (localhost by default) whose
//! pages are JSON views of what the controller holds, so an operator can see why config
//! is not taking effect (`/debug/problems`), what the proxies were sent
//! (`/debug/config`), who is connected (`/debug/connections`) and whether the controller
//! is ready (`/ready`).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// A page: what it shows and how to render it now.
pub struct Page {
    pub path: &'static str,
    pub about: &'static str,
    pub render: Box<dyn Fn() -> (StatusCode, serde_json::Value) + Send + Sync>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page").field("path", &self.path).finish()
    }
}

impl Page {
    pub fn new(
        path: &'static str,
        about: &'static str,
        render: impl Fn() -> (StatusCode, serde_json::Value) + Send + Sync + 'static,
    ) -> Self {
        Page {
            path,
            about,
            render: Box::new(render),
        }
    }
}

/// Serves `pages` on `listener` until `shutdown` turns true. `/` lists the pages.
pub async fn serve(listener: TcpListener, pages: Vec<Page>, mut shutdown: watch::Receiver<bool>) {
    let pages = Arc::new(pages);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("admin endpoint: accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let pages = pages.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let pages = pages.clone();
                async move { Ok::<_, Infallible>(respond(&pages, &request)) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, "admin connection ended: {e}");
                    }
                }
                _ = stop.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn respond(pages: &[Page], request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "only GET is served"}),
        );
    }
    let path = request.uri().path();
    if path == "/" {
        let index: serde_json::Map<String, serde_json::Value> = pages
            .iter()
            .map(|p| (p.path.to_owned(), p.about.into()))
            .collect();
        return json(StatusCode::OK, &index.into());
    }
    match pages.iter().find(|p| p.path == path) {
        Some(page) => {
            let (status, body) = (page.render)();
            json(status, &body)
        }
        None => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no page {path}; see / for the list")}),
        ),
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_else(|e| e.to_string().into_bytes());
    text.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_pages_an_index_and_404s_then_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let pages = vec![Page::new("/ready", "readiness", || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"ready": false}),
            )
        })];
        let server = tokio::spawn(serve(listener, pages, shutdown));
        let ready = get(addr, "/ready").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("\"ready\": false"), "{ready}");
        let index = get(addr, "/").await;
        assert!(index.contains("\"/ready\": \"readiness\""), "{index}");
        let missing = get(addr, "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        stop.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("the admin server stops on shutdown")
            .unwrap();
    }
}
