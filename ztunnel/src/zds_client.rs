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

/// Runs until `shutdown`; then stops every pod's proxies. `snapshots` is bumped each
/// time a full snapshot from the agent has been applied (readiness, tests).
pub async fn run(
    path: PathBuf,
    mut registry: PodRegistry,
    snapshots: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
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
    registry.clear().await;
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
