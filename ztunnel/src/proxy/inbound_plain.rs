//! Inbound plaintext (15006): TCP from clients outside the mesh, redirected by the pod's
//! capture rules. PERMISSIVE: accepted (unless the pod's authorization policies refuse a
//! peer without identity) and connected to the app with the client's IP. STRICT mTLS
//! reaches ztunnel as such a policy (a DENY of connections without a principal), so a
//! refused connection is reset, whichever policy refused it. Every connection gets its
//! access line ([`crate::access_log`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hbone::{copy_bidirectional, copy_until};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use super::{PodContext, Refusal, accept_loop, redirected_dst};
use crate::access_log::{self, ConnectionLog, ResponseFlag};

pub(super) async fn serve(
    context: Arc<PodContext>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(
        "inbound_plain",
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
    let log = ConnectionLog::inbound(
        &context.inputs.state.snapshot(),
        &context.info,
        &context.identity,
        peer,
        None,
        dst.map(|d| d.to_string()),
    )
    .counted(&context);
    let Some(dst) = dst else {
        log.failed(ResponseFlag::NoRoute, "no original destination")
            .lasted(Some(started.elapsed()))
            .emit();
        return;
    };
    // The cheapest refusal first: a pod at its limit spends nothing on policy.
    let Some(_slot) = context.limits.try_connection("TCP") else {
        let max = context.inputs.limits.config().max_inbound_connections;
        crate::socket::reset(client);
        log.failed(
            ResponseFlag::UpstreamOverflow,
            format_args!("the pod is at its limit of {max} concurrent inbound connections"),
        )
        .lasted(Some(started.elapsed()))
        .emit();
        return;
    };
    if let Err(refusal) = context.admit(peer.ip(), None, dst) {
        match &refusal {
            Refusal::NotThisPod => {
                warn!(%dst, "plaintext connection for an address that is not this pod; resetting");
            }
            Refusal::Denied(denied) => {
                warn!(src.addr = %peer, dst.addr = %dst, dst.identity = %context.identity, policy = %denied.policy, reason = %denied.reason, response_flags = "DENY", "plaintext connection denied by authorization policy; resetting");
            }
        }
        crate::socket::reset(client);
        log.refused(&refusal).lasted(Some(started.elapsed())).emit();
        return;
    }
    let log = log.opened();
    let mut upstream = match context.sockets.connect(dst, Some(peer.ip())).await {
        Ok(s) => s,
        Err(e) => {
            log.failed(
                ResponseFlag::UpstreamFailure,
                format_args!("connect to {dst}: {e}"),
            )
            .lasted(Some(started.elapsed()))
            .emit();
            return;
        }
    };
    let revoked = async { access_log::revoked(context.revoked(peer.ip(), None, dst).await) };
    let copy = copy_bidirectional(&mut client, &mut upstream);
    let outcome = copy_until(copy, revoked).await;
    log.copied(&outcome).lasted(Some(started.elapsed())).emit();
    crate::memory::connection_closed();
}
