//! The few rtnetlink operations the lab needs, bound to one namespace.
//!
//! A netlink socket talks to the namespace it was created in, for its whole life, so each
//! namespace gets its own connection, opened from a thread that has entered it.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use inpod::Netns;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, State};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use tokio::task::JoinHandle;

use crate::LabError;

/// `ENODEV`: the link is already gone.
const ENODEV: i32 = 19;

/// An rtnetlink connection into one namespace. Its socket pins the namespace, so
/// connections are short-lived: opened for a batch of changes, then [`close`]d, which
/// returns only once the socket is gone. Dropping without closing aborts the task, and
/// the socket goes when the runtime next runs.
///
/// [`close`]: Self::close
#[derive(Debug)]
pub(crate) struct Netlink {
    handle: Handle,
    task: Option<JoinHandle<()>>,
    namespace: String,
}

impl Netlink {
    /// Opens a connection inside `netns`. Must be called within a tokio runtime, which
    /// drives the connection from then on.
    pub(crate) fn connect(netns: &Netns, namespace: &str) -> Result<Self, LabError> {
        let socket_error = |source| LabError::NetlinkSocket {
            namespace: namespace.to_owned(),
            source,
        };
        let (connection, handle, _) = netns
            .run(rtnetlink::new_connection)
            .map_err(socket_error)?
            .map_err(socket_error)?;
        let task = tokio::spawn(connection);
        Ok(Self {
            handle,
            task: Some(task),
            namespace: namespace.to_owned(),
        })
    }

    fn fail(&self, what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LabError {
        let namespace = self.namespace.clone();
        let what = what.into();
        move |source| LabError::Netlink {
            namespace,
            what,
            source,
        }
    }

    /// The index of the interface called `name`.
    pub(crate) async fn index(&self, name: &str) -> Result<u32, LabError> {
        let what = format!("look up interface {name}");
        let msg = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(self.fail(what.clone()))?
            .ok_or_else(|| self.fail(what)(rtnetlink::Error::RequestFailed))?;
        Ok(msg.header.index)
    }

    pub(crate) async fn set_up(&self, index: u32) -> Result<(), LabError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(self.fail(format!("set link {index} up")))
    }

    /// Waits until link `index` can carry packets. A link set up is not ready at once:
    /// the kernel's linkwatch attaches its queueing discipline later (after up to a
    /// second when links change in bursts), and until then it silently drops whatever
    /// is sent, e.g. a first SYN, which then costs a 1 s retransmission.
    pub(crate) async fn wait_ready(&self, index: u32) -> Result<(), LabError> {
        const BOUND: Duration = Duration::from_secs(5);
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let msg = self
                .handle
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_next()
                .await
                .map_err(self.fail(format!("look up link {index}")))?;
            let attributes = msg.map(|m| m.attributes).unwrap_or_default();
            let oper_up = attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
            // `noop` is the placeholder discipline that drops everything.
            let activated = attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Qdisc(q) if q != "noop"));
            if oper_up && activated {
                return Ok(());
            }
            if started.elapsed() > BOUND {
                return Err(LabError::LinkNotReady {
                    namespace: self.namespace.clone(),
                    index,
                    waited: BOUND,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Brings up the loopback interface, which a fresh namespace has down.
    pub(crate) async fn loopback_up(&self) -> Result<(), LabError> {
        let lo = self.index("lo").await?;
        self.set_up(lo).await
    }

    /// Creates a bridge (up) and returns its index.
    pub(crate) async fn add_bridge(&self, name: &str) -> Result<u32, LabError> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(self.fail(format!("create bridge {name}")))?;
        self.index(name).await
    }

    /// Creates a veth pair with `name` here and `peer_name` directly inside `peer_ns`,
    /// returning the local end's index. Creating the peer in place (rather than creating
    /// both ends here and moving one) means a peer called `eth0` never clashes with this
    /// namespace's own `eth0`, and no half-moved pair is left behind on failure.
    pub(crate) async fn add_veth(
        &self,
        name: &str,
        peer_name: &str,
        peer_ns: &Netns,
    ) -> Result<u32, LabError> {
        let peer = LinkUnspec::new_with_name(peer_name)
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.fail(format!("create veth {name} <-> {peer_name}")))?;
        self.index(name).await
    }

    /// Plugs interface `index` into `bridge` and brings it up.
    pub(crate) async fn attach_to_bridge(&self, index: u32, bridge: u32) -> Result<(), LabError> {
        self.handle
            .link()
            .change(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(self.fail(format!("attach link {index} to bridge {bridge}")))
    }

    pub(crate) async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), LabError> {
        self.handle
            .address()
            .add(index, ip.into(), prefix)
            .execute()
            .await
            .map_err(self.fail(format!("add address {ip}/{prefix} to link {index}")))
    }

    /// A route to `dest/prefix` straight out of interface `index` (scope link: the
    /// destination is on the other end of the cable).
    pub(crate) async fn add_link_route(
        &self,
        dest: Ipv4Addr,
        prefix: u8,
        index: u32,
    ) -> Result<(), LabError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        self.add_route(route, format!("add route {dest}/{prefix} dev {index}"))
            .await
    }

    /// A route to `dest/prefix` via `gateway` (`prefix` 0 is the default route).
    pub(crate) async fn add_gateway_route(
        &self,
        dest: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), LabError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix)
            .gateway(gateway)
            .build();
        self.add_route(route, format!("add route {dest}/{prefix} via {gateway}"))
            .await
    }

    async fn add_route(&self, route: RouteMessage, what: String) -> Result<(), LabError> {
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(self.fail(what))
    }

    /// Deletes a link; for a veth this removes both ends. An already missing link is not
    /// an error, so teardown can be repeated.
    pub(crate) async fn delete_link(&self, index: u32) -> Result<(), LabError> {
        match self.handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(()),
            other => other.map_err(self.fail(format!("delete link {index}"))),
        }
    }

    /// Shuts the connection down and waits until its socket is closed.
    pub(crate) async fn close(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Resolves once the task's future, and with it the socket, is dropped.
            task.await.ok();
        }
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
