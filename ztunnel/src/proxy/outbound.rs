//! Outbound (15001): the pod's redirected outgoing TCP. The original destination is
//! resolved against the workload state; mesh (HBONE) destinations get a pooled HBONE
//! stream to `podIP:15008`, destinations behind a waypoint one to the waypoint's 15008
//! with the original destination as the authority, everything else is passed through as
//! plain TCP. Each
//! connection ends with its access line ([`crate::access_log`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hbone::copy::{CopyError, Transferred};
use hbone::{Baggage, ConnectRequest, Forwarded, PoolKey, copy_bidirectional, copy_tunnel};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{HBONE_PORT, PodContext, accept_loop, redirected_dst};
use crate::access_log::{ConnectionLog, ResponseFlag};
use crate::state::{TunnelProtocol, Upstream, Workload};

pub(super) async fn serve(
    context: Arc<PodContext>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(
        "outbound",
        &context.clone(),
        listener,
        shutdown,
        move |stream, peer| handle(context.clone(), stream, peer),
    )
    .await;
}

async fn handle(context: Arc<PodContext>, mut client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let dst = redirected_dst(&client);
    let log =
        ConnectionLog::outbound(&context.info, &context.identity, peer, dst).counted(&context);
    let Some(dst) = dst else {
        log.failed(ResponseFlag::NoRoute, "no original destination")
            .lasted(Some(started.elapsed()))
            .emit();
        return;
    };
    let source = context.workload();
    let upstream = match context
        .inputs
        .state
        .snapshot()
        .resolve_from(dst, source.as_deref())
    {
        Ok(u) => u,
        Err(e) => {
            warn!(%dst, error = %e, "no upstream; closing");
            log.unresolved(&e).lasted(Some(started.elapsed())).emit();
            return;
        }
    };
    let log = log.upstream(&upstream).opened();
    let outcome = match upstream {
        Upstream::Workload {
            workload,
            addr,
            service,
        } if workload.protocol == TunnelProtocol::Hbone => {
            let host = service.as_ref().map(|s| s.hostname.clone());
            let next_hop = SocketAddr::new(addr.ip(), HBONE_PORT);
            via_hbone(&context, &mut client, peer, &workload, next_hop, addr, host).await
        }
        Upstream::Waypoint {
            waypoint,
            addr,
            target,
            service,
        } => {
            let host = service.as_ref().map(|s| s.hostname.clone());
            via_hbone(&context, &mut client, peer, &waypoint, addr, target, host).await
        }
        Upstream::Workload { addr, .. } | Upstream::Passthrough(addr) => {
            passthrough(&context, &mut client, addr).await
        }
    };
    let log = match outcome {
        Ok(transferred) => log.transferred(transferred),
        Err(Failed {
            transferred,
            flag,
            error,
        }) => log.transferred(transferred).failed(flag, error),
    };
    log.lasted(Some(started.elapsed())).emit();
    crate::memory::connection_closed();
}

/// Bound on reaching the upstream (TCP connect, or HBONE handshake + CONNECT answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an outbound connection ended badly.
struct Failed {
    /// What was moved before (nothing when the upstream was never reached).
    transferred: Transferred,
    /// `UF` or `DENY` when the upstream was never reached; none when the copy broke.
    flag: ResponseFlag,
    error: String,
}

impl Failed {
    /// The upstream was never reached.
    fn connect(flag: ResponseFlag, error: String) -> Self {
        Failed {
            transferred: Transferred::default(),
            flag,
            error,
        }
    }

    fn copy(e: CopyError) -> Self {
        Failed {
            transferred: e.transferred,
            flag: ResponseFlag::None,
            error: e.source.to_string(),
        }
    }
}

type Outcome = Result<Transferred, Failed>;

/// One HBONE hop to `next_hop` (the destination's 15008, or its waypoint's), run by
/// `workload`, asking for `target`.
async fn via_hbone(
    context: &PodContext,
    client: &mut TcpStream,
    peer: SocketAddr,
    workload: &Workload,
    next_hop: SocketAddr,
    target: SocketAddr,
    service_host: Option<String>,
) -> Outcome {
    let key = PoolKey::new(
        context.identity.clone(),
        vec![workload.identity.clone()],
        next_hop,
        None,
    );
    let request = ConnectRequest::new(target)
        .with_baggage(baggage(context))
        .with_forwarded(Forwarded::new(peer, service_host));
    // The pool bounds its handshakes; this also bounds the wait for the CONNECT answer.
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, context.pool.connect(&key, &request));
    let mut tunnel = match connect.await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            debug!(%next_hop, error = %e, "HBONE connect failed");
            // The destination's ztunnel answers 401 when its policies refuse.
            let flag = if e.status() == Some(StatusCode::UNAUTHORIZED) {
                ResponseFlag::Deny
            } else {
                ResponseFlag::UpstreamFailure
            };
            return Err(Failed::connect(flag, e.to_string()));
        }
        Err(_) => {
            let e = format!("no CONNECT answer from {next_hop} within {CONNECT_TIMEOUT:?}");
            return Err(Failed::connect(ResponseFlag::UpstreamFailure, e));
        }
    };
    copy_tunnel(client, &mut tunnel).await.map_err(Failed::copy)
}

async fn passthrough(context: &PodContext, client: &mut TcpStream, target: SocketAddr) -> Outcome {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, context.sockets.connect(target, None));
    let mut upstream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let e = format!("connect to {target}: {e}");
            return Err(Failed::connect(ResponseFlag::UpstreamFailure, e));
        }
        Err(_) => {
            let e = format!("connect to {target}: no answer within {CONNECT_TIMEOUT:?}");
            return Err(Failed::connect(ResponseFlag::UpstreamFailure, e));
        }
    };
    copy_bidirectional(client, &mut upstream)
        .await
        .map_err(Failed::copy)
}

/// Istio's baggage for the source workload.
fn baggage(context: &PodContext) -> Baggage {
    let workload = context.workload();
    Baggage {
        cluster_id: None,
        namespace: Some(context.info.namespace.clone()),
        workload_kind: Some("pod".to_owned()),
        workload_name: Some(
            workload
                .as_ref()
                .map_or_else(|| context.info.name.clone(), |w| w.workload_name.clone()),
        ),
        service_name: workload.as_ref().map(|w| w.canonical_name.clone()),
        service_version: workload.as_ref().map(|w| w.canonical_revision.clone()),
    }
}
