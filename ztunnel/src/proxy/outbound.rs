//! Outbound (15001): the pod's redirected outgoing TCP. The original destination is
//! resolved against the workload state; mesh (HBONE) destinations get a pooled HBONE
//! stream to `podIP:15008`, everything else is passed through as plain TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hbone::copy::Transferred;
use hbone::{Baggage, ConnectRequest, Forwarded, PoolKey, copy_bidirectional, copy_tunnel};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{HBONE_PORT, PodContext, accept_loop, redirected_dst};
use crate::state::{TunnelProtocol, Upstream, Workload};

pub(super) async fn serve(
    context: Arc<PodContext>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop("outbound", listener, shutdown, move |stream, peer| {
        handle(context.clone(), stream, peer)
    })
    .await;
}

/// How the connection left, for the access log.
enum Route {
    Hbone { dst_identity: String },
    Passthrough,
}

async fn handle(context: Arc<PodContext>, mut client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Some(dst) = redirected_dst(&client) else {
        return;
    };
    let upstream = match context.inputs.state.snapshot().resolve(dst) {
        Ok(u) => u,
        Err(e) => {
            warn!(%dst, error = %e, "no upstream; closing");
            return;
        }
    };
    let (target, route, outcome) = match upstream {
        Upstream::Workload {
            workload,
            addr,
            service,
        } if workload.protocol == TunnelProtocol::Hbone => {
            let host = service.as_ref().map(|s| s.hostname.clone());
            let route = Route::Hbone {
                dst_identity: workload.identity.to_string(),
            };
            let outcome = via_hbone(&context, &mut client, peer, &workload, addr, host).await;
            (addr, route, outcome)
        }
        Upstream::Workload { addr, .. } | Upstream::Passthrough(addr) => {
            let outcome = passthrough(&context, &mut client, addr).await;
            (addr, Route::Passthrough, outcome)
        }
    };
    let (transferred, error) = match outcome {
        Ok(t) => (t, None),
        Err((t, e)) => (t, Some(e)),
    };
    let (protocol, dst_identity) = match &route {
        Route::Hbone { dst_identity } => ("HBONE", dst_identity.as_str()),
        Route::Passthrough => ("TCP", ""),
    };
    info!(
        src.addr = %peer,
        src.identity = %context.identity,
        original_dst = %dst,
        dst.addr = %target,
        dst.identity = dst_identity,
        protocol,
        bytes_sent = transferred.a_to_b,
        bytes_received = transferred.b_to_a,
        duration_ms = started.elapsed().as_millis() as u64,
        error = error.as_deref().unwrap_or(""),
        "outbound connection closed"
    );
    crate::memory::connection_closed();
}

/// Bound on reaching the upstream (TCP connect, or HBONE handshake + CONNECT answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Outcome = Result<Transferred, (Transferred, String)>;

async fn via_hbone(
    context: &PodContext,
    client: &mut TcpStream,
    peer: SocketAddr,
    workload: &Workload,
    target: SocketAddr,
    service_host: Option<String>,
) -> Outcome {
    let next_hop = SocketAddr::new(target.ip(), HBONE_PORT);
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
            return Err((Transferred::default(), e.to_string()));
        }
        Err(_) => {
            let e = format!("no CONNECT answer from {next_hop} within {CONNECT_TIMEOUT:?}");
            return Err((Transferred::default(), e));
        }
    };
    copy_tunnel(client, &mut tunnel)
        .await
        .map_err(|e| (e.transferred, e.source.to_string()))
}

async fn passthrough(context: &PodContext, client: &mut TcpStream, target: SocketAddr) -> Outcome {
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, context.sockets.connect(target, None)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err((Transferred::default(), format!("connect to {target}: {e}")));
            }
            Err(_) => {
                return Err((
                    Transferred::default(),
                    format!("connect to {target}: no answer within {CONNECT_TIMEOUT:?}"),
                ));
            }
        };
    copy_bidirectional(client, &mut upstream)
        .await
        .map_err(|e| (e.transferred, e.source.to_string()))
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
