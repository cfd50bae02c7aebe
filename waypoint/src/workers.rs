//! Thread-per-core serving. The HBONE connections the waypoint accepts are spread over
//! `--worker-threads` threads, each running its own single-threaded tokio runtime with
//! its own upstream HBONE pool: a request is read, routed, forwarded and answered without
//! leaving the thread its tunnel arrived on (no work stealing, no wake-ups across
//! threads), as Envoy's workers and nginx's worker processes do. What the workers share:
//! the L7 configuration, the workload state, the clusters (load balancing, outlier
//! detection, connection-pool limits), the metrics and the certificates.
//!
//! The process's own runtime runs the control plane (xDS, CA, admin, metrics, readiness)
//! and the accept loop, which hands each connection to the worker with the fewest live
//! connections. `waypoint_worker_connections_active{worker}` shows the spread.

use std::net::SocketAddr;
use std::time::Duration;

use hbone::TunnelServer;
use hbone::drain::Tracker;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::inbound::Inbound;

/// An accepted connection on its way to a worker.
type Handoff = (std::net::TcpStream, SocketAddr);

/// The worker threads.
pub struct Workers {
    workers: Vec<Worker>,
}

/// The label of the per-worker gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

struct Worker {
    connections: mpsc::UnboundedSender<Handoff>,
    /// Live HBONE connections on this worker (also served as a metric).
    load: Gauge,
    exit: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load: Vec<i64> = self.loads();
        f.debug_struct("Workers").field("load", &load).finish()
    }
}

impl Workers {
    /// Starts `servers.len()` worker threads, each serving the connections handed to it
    /// with its own server. Every connection is counted in `tracker` until it closes;
    /// `shutdown` turning true makes each send GOAWAY and finish its tunnels.
    pub fn start(
        servers: Vec<TunnelServer<Inbound>>,
        tracker: &Tracker,
        shutdown: &watch::Receiver<bool>,
        registry: &mut Registry,
    ) -> Result<Self, String> {
        let gauges = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "waypoint_worker_connections_active",
            "HBONE connections each worker thread is serving",
            gauges.clone(),
        );
        let mut workers = Vec::with_capacity(servers.len());
        for (index, server) in servers.into_iter().enumerate() {
            let (connections, handed) = mpsc::unbounded_channel();
            let (exit, exit_rx) = oneshot::channel();
            let load = gauges
                .get_or_create(&WorkerLabel {
                    worker: index.to_string(),
                })
                .clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start worker {index}'s runtime: {e}"))?;
            let worker = WorkerLoop {
                server,
                handed,
                exit: exit_rx,
                load: load.clone(),
                tracker: tracker.clone(),
                shutdown: shutdown.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("waypoint-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(worker.run());
                    // Dropping the runtime drops what is still open (past the drain
                    // deadline): those connections close.
                })
                .map_err(|e| format!("cannot start worker thread {index}: {e}"))?;
            workers.push(Worker {
                connections,
                load,
                exit,
                thread,
            });
        }
        Ok(Workers { workers })
    }

    /// Live connections per worker.
    pub fn loads(&self) -> Vec<i64> {
        self.workers.iter().map(|w| w.load.get()).collect()
    }

    /// Accepts HBONE connections on `listener` until `shutdown` turns true, handing each
    /// to the least loaded worker.
    pub async fn accept(&self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        let stopped = runtime::stopped(shutdown);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => self.hand_off(tcp, peer),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed on the HBONE listener");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut stopped => return,
            }
        }
    }

    fn hand_off(&self, tcp: TcpStream, peer: SocketAddr) {
        let mut handoff = match tcp.into_std() {
            Ok(std) => (std, peer),
            Err(e) => {
                warn!(%peer, error = %e, "cannot hand an accepted connection to a worker");
                return;
            }
        };
        // The least loaded first; a worker whose thread is gone hands the connection back.
        let mut order: Vec<&Worker> = self.workers.iter().collect();
        order.sort_by_key(|w| w.load.get());
        for worker in order {
            worker.load.inc();
            match worker.connections.send(handoff) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    worker.load.dec();
                    handoff = back;
                }
            }
        }
        warn!(%peer, "no worker thread left to serve a connection; dropped");
    }

    /// Ends the workers (what is still open is closed) and waits for their threads.
    pub fn stop(self) {
        for worker in self.workers {
            let _ = worker.exit.send(());
            drop(worker.connections);
            if worker.thread.join().is_err() {
                warn!("a worker thread panicked");
            }
        }
    }
}

/// What one worker thread runs.
struct WorkerLoop {
    server: TunnelServer<Inbound>,
    handed: mpsc::UnboundedReceiver<Handoff>,
    exit: oneshot::Receiver<()>,
    load: Gauge,
    tracker: Tracker,
    shutdown: watch::Receiver<bool>,
}

/// Takes a connection off its worker's count when it is over (or dropped at exit).
struct Live(Gauge);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl WorkerLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                handed = self.handed.recv() => match handed {
                    Some((std, peer)) => self.serve(std, peer),
                    // The accept loop is over: serve what is open until told to exit.
                    None => {
                        let _ = (&mut self.exit).await;
                        return;
                    }
                },
                _ = &mut self.exit => return,
            }
        }
    }

    fn serve(&self, std: std::net::TcpStream, peer: SocketAddr) {
        let live = Live(self.load.clone());
        let tcp = match TcpStream::from_std(std) {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!(%peer, error = %e, "a worker cannot take an accepted connection");
                return;
            }
        };
        let server = self.server.clone();
        let shutdown = self.shutdown.clone();
        let guard = self.tracker.guard();
        tokio::spawn(async move {
            let (_live, _guard) = (live, guard);
            if let Err(e) = server.serve_connection(tcp, peer, shutdown).await {
                debug!(error = %e, "tunnel connection ended with an error");
            }
        });
    }
}
