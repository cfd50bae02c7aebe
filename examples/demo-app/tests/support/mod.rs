//! Shared fixtures: roles served in-process on 127.0.0.1 ephemeral ports, and a bound on
//! every wait so a broken test fails instead of hanging.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use demo_app::{Env, HttpClient, PodInfo, ProductPage, Reviews, ReviewsVersion, Role, Url};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Failure threshold for any single test step, not a delay.
pub const BOUND: Duration = Duration::from_secs(10);

pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {BOUND:?}"))
}

/// A role serving on its own listener; the listener is bound before the task starts,
/// so connections made right away queue in the backlog rather than racing.
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn start(pod: &str, version: &str, role: Role) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(demo_app::serve(
            listener,
            PodInfo::new(pod, version),
            role,
            shutdown,
        ));
        Self { addr, stop, task }
    }

    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).unwrap()
    }

    /// Signals shutdown; the returned handle ends when the server has drained.
    pub fn shut_down(self) -> JoinHandle<()> {
        let _ = self.stop.send(());
        self.task
    }
}

pub fn client(timeout: Duration) -> HttpClient {
    HttpClient::new(Env::from_pairs::<&str, &str>([]), timeout)
}

pub fn reviews(version: ReviewsVersion, ratings: Url) -> Role {
    Role::Reviews(Reviews {
        version,
        ratings,
        client: client(Duration::from_secs(2)),
    })
}

pub fn productpage(reviews: Url, client: HttpClient) -> Role {
    Role::ProductPage(ProductPage { reviews, client })
}

/// A URL on 127.0.0.1 where nothing listens (the port was just released).
pub async fn closed_url() -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Url::parse(&format!("http://{addr}")).unwrap()
}

pub fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}
