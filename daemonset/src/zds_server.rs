//! The agent's side of ZDS: serve every ztunnel that connects, each in its own task.
//!
//! Level-triggered: the agent [`ZdsHub::publish`]es the set of pods ztunnel should
//! proxy; each connection first sends a full snapshot (`add` per pod, then
//! `snapshot_sent`), then converges its ztunnel to every newer set (`del` for pods that
//! left, `add` for pods that came), one request at a time, waiting for each ack. A NACKed
//! add is retried on the next change or after a backoff. During a ztunnel rolling upgrade
//! the old and the new ztunnel are both connected and both kept in step; the old one
//! leaves when it disconnects, never because the new one arrived.
//!
//! [`ZdsHub::delivered`] lets the agent wait until every connected ztunnel has been told
//! about a set, so that capture is removed only after ztunnel let go of the pod.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::zds::WorkloadInfo;
use inpod::Netns;
use inpod::zds::{ZdsConnection, ZdsError, ZdsListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{Instrument, debug, info, info_span, warn};

/// A pod ztunnel should proxy: what it needs to know, and the namespace to pass it.
#[derive(Debug, Clone)]
pub struct ZdsPod {
    pub info: WorkloadInfo,
    pub netns: Arc<Netns>,
}

/// Pods by uid. Ordered, so that snapshots are sent in a stable order.
pub type PodSet = BTreeMap<String, ZdsPod>;

/// Timeouts and backoff of the ZDS server.
#[derive(Debug, Clone)]
pub struct ZdsServerConfig {
    /// A client that does not say hello within this is dropped.
    pub hello_timeout: Duration,
    /// A ztunnel that does not answer a request within this is dropped: acks carry no
    /// id, so after a missed one the conversation cannot be trusted.
    pub ack_timeout: Duration,
    /// First delay before re-sending NACKed adds; doubles up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
}

impl Default for ZdsServerConfig {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(30),
        }
    }
}

/// Failure to set up the listening socket.
#[derive(Debug, thiserror::Error)]
pub enum ZdsServerError {
    #[error("cannot create the ZDS socket directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot listen on the ZDS socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

#[derive(Debug, Default)]
struct Desired {
    generation: u64,
    /// `None` until the agent knows the node's pods: a ztunnel must not get an empty
    /// snapshot meanwhile, it would drop every pod it proxies.
    pods: Option<Arc<PodSet>>,
}

/// Shared between the agent (publisher) and every ZDS connection.
#[derive(Debug, Clone)]
pub struct ZdsHub {
    desired: Arc<watch::Sender<Desired>>,
    connections: Arc<Mutex<Connections>>,
}

#[derive(Debug, Default)]
struct Connections {
    next_id: u64,
    /// Per connection (past hello): the newest generation it has fully processed.
    progress: HashMap<u64, watch::Receiver<u64>>,
}

impl Default for ZdsHub {
    fn default() -> Self {
        Self::new()
    }
}

impl ZdsHub {
    pub fn new() -> Self {
        Self {
            desired: Arc::new(watch::Sender::new(Desired::default())),
            connections: Arc::default(),
        }
    }

    /// Makes `pods` what every ztunnel should proxy; returns its generation.
    pub fn publish(&self, pods: PodSet) -> u64 {
        let mut generation = 0;
        self.desired.send_modify(|d| {
            d.generation += 1;
            d.pods = Some(Arc::new(pods));
            generation = d.generation;
        });
        generation
    }

    /// Whether anything was published yet.
    pub fn is_synced(&self) -> bool {
        self.desired.borrow().pods.is_some()
    }

    /// Resolves once every ztunnel connected now has processed `generation` (sent and
    /// got an answer for each request it implies), or has gone.
    pub async fn delivered(&self, generation: u64) {
        let waiting: Vec<_> = self.lock().progress.values().cloned().collect();
        for mut progress in waiting {
            // An error means the connection ended: nothing left to deliver to it.
            let _ = progress.wait_for(|g| *g >= generation).await;
        }
    }

    /// ztunnels connected (past hello).
    pub fn connections(&self) -> usize {
        self.lock().progress.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self) -> Registration {
        let (tx, rx) = watch::channel(0);
        let mut conns = self.lock();
        conns.next_id += 1;
        let id = conns.next_id;
        conns.progress.insert(id, rx);
        Registration {
            hub: self.clone(),
            id,
            progress: tx,
        }
    }
}

/// A connection's entry in the hub; removed when the connection ends.
struct Registration {
    hub: ZdsHub,
    id: u64,
    progress: watch::Sender<u64>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.lock().progress.remove(&self.id);
    }
}

/// The listening socket and its connections.
#[derive(Debug)]
pub struct ZdsServer {
    listener: ZdsListener,
    path: PathBuf,
    hub: ZdsHub,
    config: ZdsServerConfig,
}

impl ZdsServer {
    /// Listens on `path` (its directory is created; a stale socket is replaced).
    pub fn bind(
        path: impl Into<PathBuf>,
        hub: ZdsHub,
        config: ZdsServerConfig,
    ) -> Result<Self, ZdsServerError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ZdsServerError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        }
        let listener = ZdsListener::bind(&path).map_err(|source| ZdsServerError::Bind {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            listener,
            path,
            hub,
            config,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts ztunnels until `shutdown`; then closes every connection and removes the
    /// socket file (ztunnel keeps its pods and reconnects to the next agent).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!(path = %self.path.display(), "ZDS server listening");
        let mut sessions = JoinSet::new();
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => {
                        next_id += 1;
                        let span = info_span!("zds", conn = next_id);
                        sessions.spawn(
                            serve(conn, self.hub.clone(), self.config.clone()).instrument(span),
                        );
                    }
                    Err(e) => {
                        warn!(error = %e, "ZDS accept failed");
                        // Out of descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                () = crate::stopped(&mut shutdown) => break,
            }
        }
        sessions.shutdown().await;
        if let Err(e) = std::fs::remove_file(&self.path) {
            debug!(path = %self.path.display(), error = %e, "ZDS socket not removed");
        }
        info!("ZDS server stopped");
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error(transparent)]
    Zds(#[from] ZdsError),
    #[error("no answer to {request} within {timeout:?}")]
    AckTimeout { request: String, timeout: Duration },
    #[error("ztunnel sent a message without being asked")]
    Unsolicited,
    #[error("the agent stopped publishing")]
    AgentGone,
}

/// Serves one accepted connection until it ends. Public so that tests and embedders
/// can serve a socket pair.
pub async fn serve(mut conn: ZdsConnection, hub: ZdsHub, config: ZdsServerConfig) {
    match timeout(config.hello_timeout, conn.recv_hello()).await {
        Err(_) => {
            warn!(timeout = ?config.hello_timeout, "no ZDS hello from the client; closing the connection");
            return;
        }
        Ok(Err(e)) => {
            warn!(error = %e, "bad ZDS hello; closing the connection");
            return;
        }
        Ok(Ok(hello)) => info!(version = hello.version, "ztunnel connected"),
    }
    let registration = hub.register();
    let mut session = Session {
        conn,
        acked: BTreeMap::new(),
        nacked: BTreeSet::new(),
        backoff: config.retry_backoff,
        config,
    };
    let Err(end) = session.run(&hub, &registration.progress).await;
    match end {
        SessionEnd::Zds(ZdsError::Closed) => info!("ztunnel disconnected"),
        SessionEnd::AgentGone => info!("{end}; closing the connection"),
        _ => warn!(error = %end, "closing the ZDS connection"),
    }
}

struct Session {
    conn: ZdsConnection,
    /// What this ztunnel has acked: uid -> the namespace it got.
    acked: BTreeMap<String, Arc<Netns>>,
    /// Adds it refused, to retry.
    nacked: BTreeSet<String>,
    backoff: Duration,
    config: ZdsServerConfig,
}

impl Session {
    /// Serves until the connection ends; only ever returns why.
    async fn run(
        &mut self,
        hub: &ZdsHub,
        progress: &watch::Sender<u64>,
    ) -> Result<std::convert::Infallible, SessionEnd> {
        let mut desired = hub.desired.subscribe();
        // Wait until the agent knows the pods; meanwhile, watch for the client leaving.
        let (generation, pods) = loop {
            if let Some(latest) = latest(&mut desired) {
                break latest;
            }
            debug!("waiting for the pod list before sending the snapshot");
            self.idle(&mut desired, false).await?;
        };
        for (uid, pod) in pods.iter() {
            self.add(uid, pod).await?;
        }
        if let Err(reason) = self.request(Request::SnapshotSent).await? {
            warn!(%reason, "ztunnel NACKed snapshot_sent");
        }
        progress.send_replace(generation);
        info!(
            pods = pods.len(),
            refused = self.nacked.len(),
            ztunnels = hub.connections(),
            "snapshot delivered"
        );
        loop {
            let retry = !self.nacked.is_empty();
            let changed = self.idle(&mut desired, retry).await?;
            if changed {
                self.backoff = self.config.retry_backoff;
            } else {
                self.backoff = (self.backoff * 2).min(self.config.max_retry_backoff);
            }
            if let Some((generation, pods)) = latest(&mut desired) {
                self.converge(&pods).await?;
                progress.send_replace(generation);
            }
        }
    }

    /// Waits for a newer set (`true`) or, if `retry`, the backoff (`false`). A message
    /// from ztunnel meanwhile ends the connection: it only ever answers.
    async fn idle(
        &mut self,
        desired: &mut watch::Receiver<Desired>,
        retry: bool,
    ) -> Result<bool, SessionEnd> {
        tokio::select! {
            changed = desired.changed() => {
                changed.map_err(|_| SessionEnd::AgentGone)?;
                Ok(true)
            }
            () = tokio::time::sleep(self.backoff), if retry => Ok(false),
            unsolicited = self.conn.recv_ack() => Err(match unsolicited {
                Err(e) => SessionEnd::Zds(e),
                Ok(_) => SessionEnd::Unsolicited,
            }),
        }
    }

    /// Brings ztunnel from what it acked to `pods`: deletes first, then adds.
    async fn converge(&mut self, pods: &PodSet) -> Result<(), SessionEnd> {
        let leaving: Vec<String> = self
            .acked
            .keys()
            .filter(|uid| !pods.contains_key(*uid))
            .cloned()
            .collect();
        for uid in leaving {
            if let Err(reason) = self.request(Request::Del(&uid)).await? {
                // ztunnel refuses a del only for a pod it does not know; re-sending
                // would not change its mind.
                warn!(%uid, %reason, "ztunnel NACKed del; considering the pod gone");
            } else {
                info!(%uid, "pod deleted from ztunnel");
            }
            self.acked.remove(&uid);
        }
        self.nacked.retain(|uid| pods.contains_key(uid));
        for (uid, pod) in pods {
            let current = self.acked.get(uid).is_some_and(|ns| **ns == *pod.netns);
            if !current {
                self.add(uid, pod).await?;
            }
        }
        Ok(())
    }

    async fn add(&mut self, uid: &str, pod: &ZdsPod) -> Result<(), SessionEnd> {
        match self.request(Request::Add(uid, pod)).await? {
            Ok(()) => {
                debug!(%uid, "pod added to ztunnel");
                self.acked.insert(uid.to_owned(), pod.netns.clone());
                self.nacked.remove(uid);
            }
            Err(reason) => {
                warn!(
                    %uid, pod = %pod.info.name, namespace = %pod.info.namespace, %reason,
                    "ztunnel NACKed add; will retry"
                );
                self.nacked.insert(uid.to_owned());
            }
        }
        Ok(())
    }

    /// Sends one request and waits for its answer: `Ok(Err(reason))` is a NACK.
    async fn request(&mut self, req: Request<'_>) -> Result<Result<(), String>, SessionEnd> {
        match &req {
            Request::Add(uid, pod) => {
                self.conn
                    .send_add(uid, pod.info.clone(), &pod.netns)
                    .await?
            }
            Request::Del(uid) => self.conn.send_del(uid).await?,
            Request::SnapshotSent => self.conn.send_snapshot_sent().await?,
        }
        match timeout(self.config.ack_timeout, self.conn.recv_ack()).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(SessionEnd::AckTimeout {
                request: req.to_string(),
                timeout: self.config.ack_timeout,
            }),
        }
    }
}

enum Request<'a> {
    Add(&'a str, &'a ZdsPod),
    Del(&'a str),
    SnapshotSent,
}

impl std::fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Add(uid, _) => write!(f, "add for pod {uid}"),
            Self::Del(uid) => write!(f, "del for pod {uid}"),
            Self::SnapshotSent => f.write_str("snapshot_sent"),
        }
    }
}

/// The newest published set, marking it seen.
fn latest(desired: &mut watch::Receiver<Desired>) -> Option<(u64, Arc<PodSet>)> {
    let d = desired.borrow_and_update();
    d.pods.clone().map(|pods| (d.generation, pods))
}

#[cfg(test)]
mod tests;
