//! Inbound plaintext (15006): TCP from clients outside the mesh, redirected by the pod's
//! capture rules. PERMISSIVE: accepted (unless the pod's authorization policies refuse a
//! peer without identity) and connected to the app with the client's IP. STRICT mTLS
//! reaches ztunnel as such a policy (a DENY of connections without a principal), so a
//! refused connection is reset, whichever policy refused it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hbone::{copy_bidirectional, copy_until};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{PodContext, Refusal, accept_loop, redirected_dst};

pub(super) async fn serve(
    context: Arc<PodContext>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop("inbound_plain", listener, shutdown, move |stream, peer| {
        handle(context.clone(), stream, peer)
    })
    .await;
}

async fn handle(context: Arc<PodContext>, mut client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Some(dst) = redirected_dst(&client) else {
        return;
    };
    match context.admit(peer.ip(), None, dst) {
        Ok(()) => {}
        Err(Refusal::NotThisPod) => {
            warn!(%dst, "plaintext connection for an address that is not this pod; resetting");
            crate::socket::reset(client);
            return;
        }
        Err(Refusal::Denied(denied)) => {
            warn!(src.addr = %peer, dst.addr = %dst, dst.identity = %context.identity, policy = %denied.policy, reason = %denied.reason, response_flags = "DENY", "plaintext connection denied by authorization policy; resetting");
            crate::socket::reset(client);
            return;
        }
    }
    let mut upstream = match context.sockets.connect(dst, Some(peer.ip())).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%dst, error = %e, "app unreachable");
            return;
        }
    };
    let revoked = context.revoked(peer.ip(), None, dst);
    let copy = copy_bidirectional(&mut client, &mut upstream);
    let (transferred, error) = match copy_until(copy, revoked).await {
        Ok(t) => (t, None),
        Err(e) => (e.transferred, Some(e.source.to_string())),
    };
    info!(
        src.addr = %peer,
        dst.addr = %dst,
        dst.identity = %context.identity,
        bytes_received = transferred.a_to_b,
        bytes_sent = transferred.b_to_a,
        duration_ms = started.elapsed().as_millis() as u64,
        error = error.as_deref().unwrap_or(""),
        "inbound plaintext connection closed"
    );
    crate::memory::connection_closed();
}
