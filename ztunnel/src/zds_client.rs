//! ztunnel's side of ZDS: connect to the node agent, apply its requests to the pod
//! registry and answer each with an ACK or a NACK. Reconnects with backoff; pods keep
//! being proxied while the agent is away.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use inpod::zds::{Request, ZdsConnection, ZdsError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::pods::PodRegistry;
use crate::proxy::PodInfo;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How the pods' connections end when ztunnel stops.
#[derive(Debug, Clone)]
pub struct Drain {
    /// How long connections in flight may go on after `shutdown`.
    pub timeout: Duration,
    /// Every connection the proxies serve.
    pub connections: hbone::drain::Tracker,
    /// Turns true to end the drain at once (a second SIGTERM / SIGINT).
    pub cut_now: watch::Receiver<bool>,
}

/// After the deadline, how long the cut connections get to wind down (their access
/// lines) before ztunnel exits anyway.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`; then drains: every pod stops accepting (a new ztunnel
/// listening beside this one takes the new connections), the node agent is let go of,
/// and connections in flight go on until they finish or `drain.timeout` passes, when the
/// rest are closed. `snapshots` is bumped each time a full snapshot from the agent has
/// been applied (readiness, tests).
pub async fn run(
    path: PathBuf,
    mut registry: PodRegistry,
    snapshots: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
    drain: Drain,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let session = async {
            let conn = ZdsConnection::connect(&path).await?;
            info!(path = %path.display(), "connected to the node agent");
            serve(conn, &mut registry, &snapshots).await
        };
        let result = tokio::select! {
            r = session => r,
            () = crate::proxy::stopped(&mut shutdown) => break,
        };
        match result {
            Err(ZdsError::Closed) => {
                info!("node agent closed the ZDS connection; reconnecting");
                backoff = BACKOFF_START;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, retry_in = ?backoff, "ZDS connection failed")
            }
            Ok(()) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = crate::proxy::stopped(&mut shutdown) => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    let deadline = tokio::time::Instant::now() + drain.timeout;
    registry.drain().await;
    let active = drain.connections.active();
    info!(
        connections = active,
        deadline = ?drain.timeout,
        "draining: listeners closed in every pod; connections in flight may finish"
    );
    let mut cut_now = drain.cut_now.clone();
    tokio::select! {
        () = drain.connections.idle() => info!("drained: every connection has finished"),
        () = tokio::time::sleep_until(deadline) => warn!(
            connections = drain.connections.active(),
            "drain deadline passed; closing the remaining connections"
        ),
        () = async {
            // Without a way to cut it short (the sender gone), the drain just goes on.
            if cut_now.wait_for(|cut| *cut).await.is_err() {
                std::future::pending::<()>().await;
            }
        } => warn!(
            connections = drain.connections.active(),
            "drain cut short; closing the remaining connections"
        ),
    }
    registry.clear().await;
    let _ = tokio::time::timeout(CUT_GRACE, drain.connections.idle()).await;
}

async fn serve(
    mut conn: ZdsConnection,
    registry: &mut PodRegistry,
    snapshots: &watch::Sender<u64>,
) -> Result<(), ZdsError> {
    let mut in_snapshot: Option<HashSet<String>> = Some(HashSet::new());
    loop {
        let nack = match conn.recv_request().await {
            Ok(Request::Add { uid, info, netns }) => {
                if let Some(seen) = &mut in_snapshot {
                    seen.insert(uid.clone());
                }
                let pod = PodInfo {
                    uid: uid.clone(),
                    name: info.name,
                    namespace: info.namespace,
                    service_account: info.service_account,
                };
                registry.add(pod, netns).await.err().map(|e| e.to_string())
            }
            Ok(Request::Keep { uid }) => {
                if let Some(seen) = &mut in_snapshot {
                    seen.insert(uid.clone());
                }
                (!registry.contains(&uid))
                    .then(|| format!("keep for pod {uid}, which this ztunnel does not proxy"))
            }
            Ok(Request::Del { uid }) => {
                if let Some(seen) = &mut in_snapshot {
                    seen.remove(&uid);
                }
                registry.remove(&uid).await;
                info!(%uid, "pod removed");
                None
            }
            Ok(Request::SnapshotSent) => {
                if let Some(seen) = in_snapshot.take() {
                    registry.retain(&seen).await;
                }
                info!(pods = registry.len(), "node agent snapshot applied");
                snapshots.send_modify(|n| *n += 1);
                None
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = &nack {
            warn!(%reason, "NACK to the node agent");
        }
        conn.send_ack(nack.as_deref()).await?;
    }
}
