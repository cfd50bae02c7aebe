//! Remote key sets: background fetches, unknown-kid refetches, and the real fetcher
//! against a local HTTP server and a file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// Serves documents from memory and counts fetches.
#[derive(Debug, Default)]
struct MemoryFetcher {
    docs: Mutex<HashMap<String, String>>,
    fetches: AtomicUsize,
}

impl MemoryFetcher {
    fn set(&self, uri: &str, doc: String) {
        self.docs.lock().unwrap().insert(uri.into(), doc);
    }
}

impl JwksFetcher for MemoryFetcher {
    fn fetch<'a>(&'a self, uri: &'a str) -> FetchFuture<'a> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let doc = self.docs.lock().unwrap().get(uri).cloned();
        Box::pin(async move { doc.ok_or_else(|| FetchError(format!("{uri}: 404"))) })
    }
}

const URI: &str = "https://issuer.example/jwks.json";

fn remote_rule(uri: &str) -> String {
    request_authentication(
        "waypoint",
        &format!("  - issuer: https://issuer.example\n    jwksUri: {uri}\n"),
    )
}

async fn next_update(rx: &mut tokio::sync::watch::Receiver<u64>) {
    rx.changed().await.expect("cache alive");
}

#[tokio::test(start_paused = true)]
async fn background_fetch_and_unknown_kid() {
    let k1 = Key::es256("k1");
    let k2 = Key::es256("k2");
    let fetcher = Arc::new(MemoryFetcher::default());
    fetcher.set(URI, jwks(&[&k1]));
    let cache = JwksCache::new(fetcher.clone());
    let mut updates = cache.updates();
    let auth = Authenticator::new(vec![compiled(&remote_rule(URI))], cache.clone());
    let request = |key: &Key| parts("/", &[("authorization", &bearer(&key.sign(&claims())))]);

    // Never fetched: fail closed, and a fetch starts.
    let got = run(&auth, &mut request(&k1)).await;
    assert!(
        matches!(got, Err(AuthError::KeysUnavailable { .. })),
        "{got:?}"
    );
    next_update(&mut updates).await;
    assert!(run(&auth, &mut request(&k1)).await.unwrap().is_some());
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);

    // A new key appears at the issuer: the unknown kid triggers one refetch...
    fetcher.set(URI, jwks(&[&k1, &k2]));
    tokio::time::advance(RETRY_INTERVAL).await;
    let got = run(&auth, &mut request(&k2)).await;
    assert!(
        matches!(got, Err(AuthError::NoMatchingKey { .. })),
        "{got:?}"
    );
    next_update(&mut updates).await;
    assert!(run(&auth, &mut request(&k2)).await.unwrap().is_some());
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);

    // ...but not more than once per RETRY_INTERVAL.
    let k3 = Key::es256("k3");
    assert!(run(&auth, &mut request(&k3)).await.is_err());
    tokio::task::yield_now().await;
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);

    // The periodic refresh, once REFRESH_INTERVAL has passed, keeps serving old keys.
    fetcher.set(URI, jwks(&[&k3]));
    tokio::time::advance(REFRESH_INTERVAL).await;
    assert!(run(&auth, &mut request(&k1)).await.unwrap().is_some());
    next_update(&mut updates).await;
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 3);
    assert!(run(&auth, &mut request(&k3)).await.unwrap().is_some());
    assert!(run(&auth, &mut request(&k1)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn failed_fetch_is_reported() {
    let fetcher = Arc::new(MemoryFetcher::default());
    let cache = JwksCache::new(fetcher.clone());
    let err = cache
        .refresh(URI, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.0.contains("404"), "{err}");
    assert_eq!(
        cache.state(URI),
        KeyState::Unavailable(Some(err.to_string()))
    );
    fetcher.set(URI, "{\"keys\": []}".into());
    let err = cache
        .refresh(URI, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.0.contains("no usable key"), "{err}");
}

#[tokio::test]
async fn fetches_from_a_local_http_server() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let key = Key::es256("k1");
    let doc = jwks(&[&key]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let doc = doc.clone();
            async move {
                let status = if req.uri().path() == "/jwks.json" {
                    200
                } else {
                    404
                };
                http::Response::builder()
                    .status(status)
                    .body(http_body_util::Full::new(bytes::Bytes::from(doc)))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
            .unwrap();
    });
    let uri = format!("http://{addr}/jwks.json");
    let cache = JwksCache::new(Arc::new(HttpFetcher::new()));
    let keys = cache.refresh(&uri, Duration::from_secs(5)).await.unwrap();
    assert_eq!(keys.keys.len(), 1);
    let auth = Authenticator::new(vec![compiled(&remote_rule(&uri))], cache);
    let mut p = parts("/", &[("authorization", &bearer(&key.sign(&claims())))]);
    assert!(run(&auth, &mut p).await.unwrap().is_some());
    server.abort();
}

#[tokio::test]
async fn fetches_from_a_file() {
    let key = Key::es256("k1");
    let path = std::env::temp_dir().join(format!(
        "waypoint-jwks-{}-{}.json",
        std::process::id(),
        now()
    ));
    std::fs::write(&path, jwks(&[&key])).unwrap();
    let cache = JwksCache::new(Arc::new(HttpFetcher::new()));
    let file_uri = format!("file://{}", path.display());
    let plain = cache
        .refresh(&path.display().to_string(), Duration::from_secs(5))
        .await;
    let file = cache.refresh(&file_uri, Duration::from_secs(5)).await;
    std::fs::remove_file(&path).unwrap();
    assert!(plain.is_ok(), "{plain:?}");
    let auth = Authenticator::new(vec![compiled(&remote_rule(&file_uri))], cache);
    assert!(file.is_ok(), "{file:?}");
    let mut p = parts("/", &[("authorization", &bearer(&key.sign(&claims())))]);
    assert!(run(&auth, &mut p).await.unwrap().is_some());
}
