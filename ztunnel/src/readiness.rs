//! Readiness: `GET /healthz/ready` on 15021 answers 200 `ready` once ztunnel can take over
//! pods with a complete picture of the mesh, 503 with what it still waits for before that.
//!
//! What is waited for is registered at start (see `app.rs`): the node agent's first ZDS
//! snapshot applied, the first xDS response of every subscribed type applied, or the
//! state file loaded. As with Istio's ztunnel, ready is for good once reached: a lost
//! controller or node agent later does not make ztunnel unready (it keeps serving what it
//! has). Only a graceful stop does: from SIGTERM on, ztunnel answers 503 `draining`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{serve_http, text};
use crate::xds::XdsStatus;

/// Default address of the readiness endpoint (every interface: the kubelet probes it).
pub const DEFAULT_READINESS_ADDRESS: &str = "0.0.0.0:15021";
/// The one page it serves.
pub const READY_PATH: &str = "/healthz/ready";

/// What one condition is still waiting for; `None` once it is met.
type Condition = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// The conditions ztunnel must meet to be ready. Cheap to clone; every clone sees the
/// same conditions.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    conditions: Mutex<Vec<Condition>>,
    /// Latched at the first check that finds every condition met.
    ready: AtomicBool,
    /// Set for good when the graceful stop begins.
    draining: AtomicBool,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.inner.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A condition met by a call to [`Gate::open`].
#[derive(Debug, Clone)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    pub fn open(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Readiness {
    /// Ready as soon as it is asked, until conditions are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition: `waiting_for` says what is still awaited, or `None` once met.
    /// Conditions belong before the endpoint serves: once ready, ready stays.
    pub fn require(&self, waiting_for: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.lock().push(Box::new(waiting_for));
    }

    /// A condition met when the returned gate is opened; `awaited` is the reason shown
    /// until then.
    pub fn gate(&self, awaited: impl Into<String>) -> Gate {
        let (gate, awaited) = (Gate(Arc::default()), awaited.into());
        let open = gate.0.clone();
        self.require(move || (!open.load(Ordering::Acquire)).then(|| awaited.clone()));
        gate
    }

    /// Waits for the node agent's first full snapshot: the ZDS client bumps `snapshots`
    /// each time it has applied one (`snapshot_sent`).
    pub fn require_zds_snapshot(&self, snapshots: watch::Receiver<u64>) {
        self.require(move || {
            (*snapshots.borrow() == 0).then(|| "waiting for the node agent's snapshot".to_owned())
        });
    }

    /// Waits until the xDS client has applied a first response of every type it
    /// subscribes to.
    pub fn require_xds_sync(&self, status: watch::Receiver<XdsStatus>) {
        self.require(move || {
            let status = status.borrow();
            if status.synced {
                return None;
            }
            let awaited = status.awaited_types().join(", ");
            Some(format!("waiting for the first xDS response ({awaited})"))
        });
    }

    /// `Ok` once every condition has been met (and from then on); otherwise what is still
    /// awaited, in the order the conditions were added.
    pub fn check(&self) -> Result<(), Vec<String>> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(vec!["draining".to_owned()]);
        }
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let waiting: Vec<String> = self.lock().iter().filter_map(|c| c()).collect();
        if !waiting.is_empty() {
            return Err(waiting);
        }
        if !self.inner.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("ztunnel ready");
        }
        Ok(())
    }

    /// The graceful stop has begun: not ready from now on, whatever the conditions say.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Condition>> {
        self.inner
            .conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves [`READY_PATH`] on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, readiness: Readiness, shutdown: watch::Receiver<bool>) {
    serve_http(
        "readiness",
        listener,
        move |request| respond(&readiness, request),
        shutdown,
    )
    .await
}

fn respond(readiness: &Readiness, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != READY_PATH {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found; readiness is at {READY_PATH}"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        response
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return response;
    }
    match readiness.check() {
        Ok(()) => text(StatusCode::OK, "ready"),
        Err(waiting) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", waiting.join("; ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::request;
    use std::time::Duration;

    #[test]
    fn draining_is_not_ready_even_when_every_condition_is_met() {
        let readiness = Readiness::new();
        assert_eq!(readiness.check(), Ok(()));
        readiness.set_draining();
        assert_eq!(readiness.check(), Err(vec!["draining".to_owned()]));
    }

    #[test]
    fn ready_once_every_condition_is_met_and_for_good() {
        let readiness = Readiness::new();
        assert_eq!(readiness.check(), Ok(()), "no conditions: ready");

        let readiness = Readiness::new();
        let (snapshots, rx) = watch::channel(0u64);
        readiness.require_zds_snapshot(rx);
        let (xds, rx) = watch::channel(XdsStatus::default());
        readiness.require_xds_sync(rx);
        let file = readiness.gate("waiting for the state file");
        assert_eq!(
            readiness.check(),
            Err(vec![
                "waiting for the node agent's snapshot".to_owned(),
                "waiting for the first xDS response (Address, Authorization)".to_owned(),
                "waiting for the state file".to_owned(),
            ])
        );
        xds.send_modify(|s| {
            s.types
                .entry(api::ADDRESS_TYPE_URL.into())
                .or_default()
                .applied = 1;
        });
        snapshots.send_replace(1);
        file.open();
        assert_eq!(
            readiness.check(),
            Err(vec![
                "waiting for the first xDS response (Authorization)".to_owned()
            ])
        );
        xds.send_modify(|s| s.synced = true);
        assert_eq!(readiness.check(), Ok(()));
        // Conditions that fail later (a new agent connection, a lost stream) do not
        // matter any more.
        xds.send_modify(|s| s.synced = false);
        snapshots.send_replace(0);
        assert_eq!(readiness.check(), Ok(()));
    }

    #[tokio::test]
    async fn the_endpoint_says_what_it_waits_for_then_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Readiness::new();
        let (snapshots, rx) = watch::channel(0u64);
        readiness.require_zds_snapshot(rx);
        let (xds, rx) = watch::channel(XdsStatus::default());
        readiness.require_xds_sync(rx);
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve(listener, readiness, shutdown));

        let reply = request(addr, "GET", READY_PATH).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(
            reply.body.trim(),
            "not ready: waiting for the node agent's snapshot; \
             waiting for the first xDS response (Address, Authorization)"
        );
        assert!(reply.head.contains("text/plain"), "{reply:?}");
        snapshots.send_replace(1);
        let reply = request(addr, "GET", READY_PATH).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(
            reply.body.trim(),
            "not ready: waiting for the first xDS response (Address, Authorization)"
        );
        xds.send_modify(|s| s.synced = true);
        let reply = request(addr, "GET", READY_PATH).await;
        assert_eq!((reply.status, reply.body.trim()), (200, "ready"));

        assert_eq!(request(addr, "GET", "/ready").await.status, 404);
        assert_eq!(request(addr, "POST", READY_PATH).await.status, 405);

        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the readiness server stops on shutdown")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }
}
