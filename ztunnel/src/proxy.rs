//! The proxies ztunnel runs for each pod: outbound (15001), inbound HBONE (15008) and
//! inbound plaintext (15006), all listening inside the pod's network namespace and all
//! sharing one workload state and one certificate source.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hbone::{Identity, Pool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::cert::CertificateSource;
use crate::rbac::{ConnectionInfo, Denied};
use crate::socket::PodSockets;
use crate::state::{StateStore, Workload, WorkloadState};

mod dialer;
mod inbound;
mod inbound_plain;
mod outbound;

pub use dialer::PodDialer;

/// Outbound capture port: the pod's redirected outgoing TCP.
pub const OUTBOUND_PORT: u16 = 15001;
/// Inbound plaintext port: redirected incoming TCP from outside the mesh.
pub const INBOUND_PLAIN_PORT: u16 = 15006;
/// Inbound HBONE port.
pub const HBONE_PORT: u16 = 15008;

/// What every pod's proxies share.
#[derive(Clone)]
pub struct ProxyInputs {
    pub state: Arc<StateStore>,
    pub certs: Arc<dyn CertificateSource>,
    /// Trust domain for pods the state does not know yet.
    pub trust_domain: String,
    pub pool: hbone::PoolConfig,
    /// Istio's TCP metrics, which every connection's access log counts itself in.
    pub metrics: crate::metrics::TcpMetrics,
    /// Every connection the proxies serve (outbound, plaintext, HBONE), counted so that
    /// a graceful stop knows when the last one has finished.
    pub connections: hbone::drain::Tracker,
    /// Per-pod bounds on inbound connections and handshakes ([`crate::limits`]).
    pub limits: Arc<crate::limits::Limits>,
}

impl std::fmt::Debug for ProxyInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyInputs")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// The pod as ZDS described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a pod's proxies could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("pod {pod}: no valid identity: {source}")]
    Identity {
        pod: String,
        source: hbone::IdentityError,
    },
    #[error("pod {pod}: cannot get a certificate for {identity}: {source}")]
    Certificate {
        pod: String,
        identity: Identity,
        source: crate::cert::CertError,
    },
    #[error("pod {pod}: cannot listen on port {port} inside the pod: {source}")]
    Listen {
        pod: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("pod {pod}: TLS setup failed: {source}")]
    Tls {
        pod: String,
        source: hbone::tls::TlsError,
    },
}

/// One pod's proxy context, shared by its three proxies and their connections.
#[derive(Debug)]
pub struct PodContext {
    pub info: PodInfo,
    pub identity: Identity,
    pub sockets: PodSockets,
    pub inputs: ProxyInputs,
    pub pool: Pool,
    /// This pod's inbound connections and handshakes, against the limits.
    pub limits: Arc<crate::limits::PodLimits>,
    /// Turns true when the pod's connections must end (the pod is gone, or the drain
    /// deadline passed).
    cut: watch::Receiver<bool>,
}

impl PodContext {
    /// Resolves once the pod's connections must end.
    pub(crate) async fn cut(&self) {
        stopped(&mut self.cut.clone()).await;
    }

    /// This pod's workload in the current state, if the state knows it yet.
    pub fn workload(&self) -> Option<Arc<Workload>> {
        self.inputs
            .state
            .snapshot()
            .pod(&self.info.namespace, &self.info.name)
            .cloned()
    }

    /// Decides an inbound connection against the current state (see [`admit`]).
    pub(crate) fn admit(
        &self,
        src_ip: IpAddr,
        src_identity: Option<&Identity>,
        dst: SocketAddr,
    ) -> Result<(), Refusal> {
        let state = self.inputs.state.snapshot();
        let verdict = admit(&state, &self.info, src_ip, src_identity, dst);
        if !matches!(verdict, Err(Refusal::NotThisPod)) {
            self.log_observed(&state, src_ip, src_identity, dst);
        }
        verdict
    }

    /// Logs what the policies that enforce nothing make of a new connection: the AUDIT
    /// policies it matches, and a dry-run verdict that would refuse it.
    fn log_observed(
        &self,
        state: &WorkloadState,
        src_ip: IpAddr,
        src_identity: Option<&Identity>,
        dst: SocketAddr,
    ) {
        let Some(workload) = state.pod(&self.info.namespace, &self.info.name) else {
            return;
        };
        let observed = state.policies().observe(&ConnectionInfo {
            src_ip,
            src_identity: src_identity.cloned(),
            dst_ip: dst.ip(),
            dst_port: dst.port(),
            dst_workload: workload.clone(),
        });
        let src = src_identity.map(ToString::to_string).unwrap_or_default();
        if !observed.audited_by.is_empty() {
            info!(
                src.addr = %src_ip, src.identity = %src, dst.addr = %dst,
                dst.identity = %self.identity, policy = %observed.audited_by.join(", "),
                "connection audited by authorization policy"
            );
        }
        if let Some(Err(denied)) = observed.dry_run {
            info!(
                src.addr = %src_ip, src.identity = %src, dst.addr = %dst,
                dst.identity = %self.identity, policy = %denied.policy, reason = %denied.reason,
                "dry-run authorization policy would deny this connection (not enforced)"
            );
        }
    }

    /// Resolves once a change of state makes policy deny an admitted connection, with the
    /// reason: a policy change re-evaluates live connections, and those now denied are
    /// cut off. A connection whose pod is missing from the state for a while is left
    /// alone (its proxies stop when the pod does).
    pub(crate) async fn revoked(
        &self,
        src_ip: IpAddr,
        src_identity: Option<Identity>,
        dst: SocketAddr,
    ) -> std::io::Error {
        let mut changes = self.inputs.state.subscribe();
        // A change between admission and this subscription must not be missed.
        changes.mark_changed();
        loop {
            if changes.changed().await.is_err() {
                return std::future::pending().await; // the state is gone: nothing changes
            }
            let state = self.inputs.state.snapshot();
            if let Err(Refusal::Denied(denied)) =
                admit(&state, &self.info, src_ip, src_identity.as_ref(), dst)
            {
                warn!(
                    src.addr = %src_ip,
                    src.identity = src_identity.as_ref().map(ToString::to_string).unwrap_or_default(),
                    dst.addr = %dst,
                    dst.identity = %self.identity,
                    policy = %denied.policy,
                    reason = %denied.reason,
                    response_flags = "DENY",
                    "live connection now denied by authorization policy; closing it"
                );
                return std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("closed by policy: {denied}"),
                );
            }
        }
    }
}

/// Why an inbound connection is not connected to the app.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `dst` is not an address of this pod (or the pod is not in the state yet).
    NotThisPod,
    /// The pod's authorization policies refuse the connection.
    Denied(Denied),
}

/// The inbound decision shared by HBONE and plaintext, pure over a state snapshot: `dst`
/// must be an address of `pod`, and the pod's policies must allow the connection.
fn admit(
    state: &WorkloadState,
    pod: &PodInfo,
    src_ip: IpAddr,
    src_identity: Option<&Identity>,
    dst: SocketAddr,
) -> Result<(), Refusal> {
    let workload = state
        .pod(&pod.namespace, &pod.name)
        .filter(|w| w.addresses.contains(&dst.ip()))
        .ok_or(Refusal::NotThisPod)?;
    let conn = ConnectionInfo {
        src_ip,
        src_identity: src_identity.cloned(),
        dst_ip: dst.ip(),
        dst_port: dst.port(),
        dst_workload: workload.clone(),
    };
    state.authorize(&conn).map_err(Refusal::Denied)
}

/// A running set of proxies for one pod. Dropping it stops them.
#[derive(Debug)]
pub struct PodProxies {
    context: Arc<PodContext>,
    /// Where the proxies listen inside the pod.
    listeners: Vec<SocketAddr>,
    /// True: stop accepting (listeners closed, GOAWAY on tunnel connections).
    accepting: watch::Sender<bool>,
    /// True: end every connection.
    cut: watch::Sender<bool>,
    /// The accept loops.
    tasks: Vec<JoinHandle<()>>,
}

impl PodProxies {
    /// Creates the listeners inside the pod and starts serving.
    pub async fn start(
        info: PodInfo,
        sockets: PodSockets,
        inputs: ProxyInputs,
    ) -> Result<Self, StartError> {
        let pod = format!("{}/{}", info.namespace, info.name);
        let known = inputs
            .state
            .snapshot()
            .pod(&info.namespace, &info.name)
            .cloned();
        let identity = match &known {
            Some(w) => w.identity.clone(),
            None => Identity::new(&inputs.trust_domain, &info.namespace, &info.service_account)
                .map_err(|source| StartError::Identity {
                    pod: pod.clone(),
                    source,
                })?,
        };
        if known.is_none() {
            warn!(%pod, uid = %info.uid, "pod is not in the workload state yet; inbound traffic is refused until it is");
        }
        let cert = inputs
            .certs
            .certificate(&identity)
            .await
            .map_err(|source| StartError::Certificate {
                pod: pod.clone(),
                identity: identity.clone(),
                source,
            })?;
        let dialer = PodDialer::new(sockets.clone(), inputs.certs.clone());
        let pool = Pool::new(inputs.pool.clone(), Arc::new(dialer));
        let (accepting, _) = watch::channel(false);
        let (cut, cut_rx) = watch::channel(false);
        let limits = inputs.limits.pod(pod.clone());
        let context = Arc::new(PodContext {
            info,
            identity,
            sockets,
            inputs,
            pool,
            limits,
            cut: cut_rx,
        });

        let listen = |port| {
            context
                .sockets
                .listen_all(port)
                .map_err(|source| StartError::Listen {
                    pod: pod.clone(),
                    port,
                    source,
                })
        };
        if let Err(error) = context.sockets.enable_listener_handover() {
            // Only upgrades suffer: connections queued on our listeners when we close them
            // are reset rather than handed to the new ztunnel.
            warn!(%pod, %error, "cannot enable listener handover (tcp_migrate_req); a ztunnel upgrade may reset connections queued at that moment");
        }
        let outbound = listen(OUTBOUND_PORT)?;
        let inbound_plain = listen(INBOUND_PLAIN_PORT)?;
        let hbone = listen(HBONE_PORT)?;
        let listeners = outbound
            .iter()
            .chain(&inbound_plain)
            .chain(&hbone)
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let server_tls = hbone::tls::ServerTls::new(cert).map_err(|source| StartError::Tls {
            pod: pod.clone(),
            source,
        })?;

        let span = info_span!("pod", pod = %pod);
        let mut tasks = Vec::new();
        for l in outbound {
            let fut = outbound::serve(context.clone(), l, accepting.subscribe());
            tasks.push(tokio::spawn(fut.instrument(span.clone())));
        }
        for l in inbound_plain {
            let fut = inbound_plain::serve(context.clone(), l, accepting.subscribe());
            tasks.push(tokio::spawn(fut.instrument(span.clone())));
        }
        for l in hbone {
            let fut = inbound::serve(
                context.clone(),
                server_tls.clone(),
                l,
                accepting.subscribe(),
            );
            tasks.push(tokio::spawn(fut.instrument(span.clone())));
        }
        // Renewed certificates are presented to new tunnels while the pod runs.
        let refresh = dataplane::cert::refresh::keep_fresh(
            server_tls,
            context.inputs.certs.clone(),
            dataplane::cert::refresh::CHECK_INTERVAL,
            accepting.subscribe(),
        );
        tasks.push(tokio::spawn(refresh.instrument(span.clone())));
        info!(%pod, identity = %context.identity, "proxies started inside the pod");
        Ok(Self {
            context,
            listeners,
            accepting,
            cut,
            tasks,
        })
    }

    pub fn context(&self) -> &Arc<PodContext> {
        &self.context
    }

    /// The addresses the pod's proxies listen on (inside the pod's namespace).
    pub fn listeners(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// Closes the listeners and cuts the pod's connections.
    pub async fn stop(mut self) {
        self.drain().await;
        let _ = self.cut.send(true);
        info!(pod = %self.context.info.name, namespace = %self.context.info.namespace, "proxies stopped");
    }

    /// Stops accepting (the listeners are closed once this returns) and sends GOAWAY on
    /// the pod's tunnel connections; connections in flight go on until they finish or
    /// [`Self::stop`] cuts them. This is the first step of a graceful stop: a new ztunnel
    /// already listening beside this one (`SO_REUSEPORT`) gets every new connection,
    /// including those that were queued on these listeners (`tcp_migrate_req`).
    pub async fn drain(&mut self) {
        let _ = self.accepting.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for PodProxies {
    fn drop(&mut self) {
        let _ = self.accepting.send(true);
        let _ = self.cut.send(true);
    }
}

/// Accepts until `accepting` says stop; each connection runs in its own task, counted in
/// [`ProxyInputs::connections`] and cut when the pod's connections are.
async fn accept_loop<F, Fut>(
    kind: &'static str,
    context: &Arc<PodContext>,
    listener: tokio::net::TcpListener,
    accepting: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stop = accepting;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = info_span!("conn", kind, src = %peer);
                    let (guard, context) = (context.inputs.connections.guard(), context.clone());
                    let conn = handle(stream, peer);
                    tokio::spawn(async move {
                        let _guard = guard;
                        tokio::select! {
                            () = conn => {}
                            () = context.cut() => {}
                        }
                    }.instrument(span));
                }
                Err(e) => accept_failed(kind, e).await,
            },
            () = stopped(&mut stop) => return,
        }
    }
}

/// The original destination of a redirected connection (and no Nagle delay on it);
/// `None`, logged, when the kernel has none: the connection is then simply closed.
fn redirected_dst(client: &tokio::net::TcpStream) -> Option<std::net::SocketAddr> {
    let _ = client.set_nodelay(true);
    crate::socket::original_dst(client)
        .inspect_err(
            |e| warn!(error = %e, "no original destination on a redirected connection; closing"),
        )
        .ok()
}

/// EMFILE and friends: log and back off instead of spinning on the accept loop.
async fn accept_failed(listener: &str, error: std::io::Error) {
    warn!(listener, %error, "accept failed; backing off");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// Resolves once `rx` says stop (or its sender is gone, which also means stop).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests;
