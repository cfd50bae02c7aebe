//! The policy-routing half of in-pod capture, over rtnetlink in the pod's namespace:
//!
//! ```text
//! ip    rule add fwmark 0x111/0xfff lookup 100 pref 32764
//! ip    route add local 0.0.0.0/0 dev lo table 100
//! ip -6 rule add fwmark 0x111/0xfff lookup 100 pref 32764
//! ip -6 route add local ::/0 dev lo table 100
//! ```
//!
//! ztunnel connects to the app with the *client's* address as source (transparent
//! socket). Without these, the app's replies to that address would be routed out of the
//! pod; the nft rules give them mark 0x111 and table 100 delivers them locally, to
//! ztunnel's socket. Both operations are idempotent.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use inpod::Netns;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use nix::errno::Errno;
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::rules::{CONNECTION_MARK, MARK_MASK};

/// The table holding the `local` default routes.
pub const ROUTE_TABLE: u8 = 100;
/// Before `main` (32766), as Istio's in-pod rule.
pub const RULE_PRIORITY: u32 = 32764;

/// Something went wrong configuring a pod's policy routing.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot enter the pod's network namespace for rtnetlink: {0}")]
    EnterNetns(#[source] io::Error),
    #[error("cannot open an rtnetlink socket in the pod's network namespace: {0}")]
    Socket(#[source] io::Error),
    #[error("the pod's network namespace has no `lo` interface")]
    NoLoopback,
    #[error("`{op}` in the pod's network namespace failed: {source}{hint}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
        hint: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn ip(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip -6",
        }
    }

    fn default_route(self) -> &'static str {
        match self {
            Self::V4 => "0.0.0.0/0",
            Self::V6 => "::/0",
        }
    }

    fn rule_op(self, verb: &str) -> String {
        format!(
            "{} rule {verb} fwmark {CONNECTION_MARK:#x}/{MARK_MASK:#x} lookup {ROUTE_TABLE} pref {RULE_PRIORITY}",
            self.ip()
        )
    }

    fn route_op(self, verb: &str) -> String {
        format!(
            "{} route {verb} local {} dev lo table {ROUTE_TABLE}",
            self.ip(),
            self.default_route()
        )
    }
}

/// An rtnetlink connection whose socket lives in a pod's namespace.
struct PodNetlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl PodNetlink {
    fn open(netns: &Netns) -> Result<Self, RoutingError> {
        // The socket belongs to the namespace of the thread that creates it; the
        // connection task can then run on any runtime thread.
        let (connection, handle, _) = netns
            .run(rtnetlink::new_connection)
            .map_err(RoutingError::EnterNetns)?
            .map_err(RoutingError::Socket)?;
        Ok(Self {
            handle,
            task: tokio::spawn(connection),
        })
    }

    async fn loopback_index(&self) -> Result<u32, RoutingError> {
        let mut links = self.handle.link().get().match_name("lo").execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(RoutingError::NoLoopback),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Err(RoutingError::NoLoopback),
            Err(source) => Err(RoutingError::Netlink {
                op: "ip link show lo".into(),
                source,
                hint: "",
            }),
        }
    }
}

impl Drop for PodNetlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

/// The kernel has no IPv6 at all, or it is disabled on `lo` (`disable_ipv6=1`): then
/// there is no IPv6 traffic to route and the v6 half is skipped.
fn ipv6_unavailable(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(Errno::EAFNOSUPPORT | Errno::EACCES))
}

fn rule_message(family: Family) -> RuleMessage {
    let mut rule = RuleMessage::default();
    rule.header.family = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    rule.header.table = ROUTE_TABLE;
    rule.header.action = RuleAction::ToTable;
    rule.attributes = vec![
        RuleAttribute::Priority(RULE_PRIORITY),
        RuleAttribute::FwMark(CONNECTION_MARK),
        RuleAttribute::FwMask(MARK_MASK),
    ];
    rule
}

fn route_message(family: Family, lo: u32) -> RouteMessage {
    let table = u32::from(ROUTE_TABLE);
    match family {
        Family::V4 => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .scope(RouteScope::Host)
            .table_id(table)
            .kind(RouteType::Local)
            .output_interface(lo)
            .build(),
        Family::V6 => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            // As iproute2: IPv6 routes are universe-scoped whatever their type.
            .scope(RouteScope::Universe)
            .table_id(table)
            .kind(RouteType::Local)
            .output_interface(lo)
            .build(),
    }
}

/// Installs the rule and route for both families. Re-running it changes nothing.
pub async fn install(netns: &Netns) -> Result<(), RoutingError> {
    let nl = PodNetlink::open(netns)?;
    let lo = nl.loopback_index().await?;
    for family in [Family::V4, Family::V6] {
        let mut add = nl.handle.rule().add();
        *add.message_mut() = rule_message(family);
        match add.execute().await {
            Ok(()) => {}
            // Already there (an earlier run, or an agent restart): keep the one rule.
            Err(e) if errno(&e) == Some(Errno::EEXIST) => {}
            Err(e) if matches!(family, Family::V6) && ipv6_unavailable(&e) => {
                debug!("IPv6 unavailable in the pod's namespace; IPv4 routing only");
                continue;
            }
            Err(source) => {
                return Err(RoutingError::Netlink {
                    op: family.rule_op("add"),
                    source,
                    hint: "",
                });
            }
        }
        match nl
            .handle
            .route()
            .add(route_message(family, lo))
            .replace()
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if matches!(family, Family::V6) && ipv6_unavailable(&e) => {
                debug!("IPv6 disabled on the pod's lo; IPv4 routing only");
            }
            Err(source) => {
                let hint = if errno(&source) == Some(Errno::ENETDOWN) {
                    " (the pod's lo interface is down)"
                } else {
                    ""
                };
                return Err(RoutingError::Netlink {
                    op: family.route_op("add"),
                    source,
                    hint,
                });
            }
        }
    }
    Ok(())
}

/// Removes the rule and route for both families; whatever is already gone is fine.
pub async fn remove(netns: &Netns) -> Result<(), RoutingError> {
    let nl = PodNetlink::open(netns)?;
    let lo = nl.loopback_index().await?;
    for family in [Family::V4, Family::V6] {
        let gone = |e: &rtnetlink::Error| {
            matches!(errno(e), Some(Errno::ENOENT | Errno::ESRCH))
                || (matches!(family, Family::V6) && ipv6_unavailable(e))
        };
        // Delete until none is left, so that duplicates from any earlier tool go too.
        for _ in 0..16 {
            match nl.handle.rule().del(rule_message(family)).execute().await {
                Ok(()) => continue,
                Err(e) if gone(&e) => break,
                Err(source) => {
                    return Err(RoutingError::Netlink {
                        op: family.rule_op("del"),
                        source,
                        hint: "",
                    });
                }
            }
        }
        let mut route = route_message(family, lo);
        // Match the route whoever added it.
        route.header.protocol = RouteProtocol::Unspec;
        if matches!(family, Family::V4) {
            route.header.scope = RouteScope::NoWhere;
        }
        match nl.handle.route().del(route).execute().await {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(source) => {
                return Err(RoutingError::Netlink {
                    op: family.route_op("del"),
                    source,
                    hint: "",
                });
            }
        }
    }
    Ok(())
}
