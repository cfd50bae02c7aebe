//! Helpers for the namespace tests: fresh namespaces, and independent views of what is
//! installed in them (`nft list`, rtnetlink dumps) to check the agent's work against.
#![allow(dead_code)] // Each test binary uses its own subset.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::time::Duration;

use futures_util::TryStreamExt;
use inpod::Netns;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAttribute, RouteType};
use netlink_packet_route::rule::RuleAttribute;
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Bound on every wait: a hang fails instead of blocking CI.
pub const BOUND: Duration = Duration::from_secs(10);

/// A new, empty network namespace. These tests need root (or CAP_SYS_ADMIN) and
/// **fail** without it: a skipped capture test would hide a broken data path.
pub fn fresh_netns(what: &str) -> Netns {
    Netns::create().unwrap_or_else(|e| {
        panic!(
            "cannot create a network namespace for {what}: {e}. The daemonset namespace tests \
             need root or CAP_SYS_ADMIN (run them as root, or inside `unshare -rn`); they \
             never skip."
        )
    })
}

/// A pod-like namespace: fresh, with `lo` up (as every pod sandbox has).
pub async fn pod_netns(what: &str) -> Netns {
    let ns = fresh_netns(what);
    let nl = netlink(&ns);
    set_up(&nl, "lo").await;
    ns
}

/// An rtnetlink handle whose socket lives in `ns`.
pub fn netlink(ns: &Netns) -> Handle {
    let (conn, handle, _) = ns
        .run(rtnetlink::new_connection)
        .expect("enter the namespace")
        .expect("rtnetlink socket");
    tokio::spawn(conn);
    handle
}

pub async fn index(nl: &Handle, name: &str) -> u32 {
    nl.link()
        .get()
        .match_name(name)
        .execute()
        .try_next()
        .await
        .unwrap_or_else(|e| panic!("link {name}: {e}"))
        .unwrap_or_else(|| panic!("no link {name}"))
        .header
        .index
}

pub async fn set_up(nl: &Handle, name: &str) {
    let i = index(nl, name).await;
    nl.link()
        .change(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .unwrap_or_else(|e| panic!("set {name} up: {e}"));
}

/// Wires `pod` (`eth0`, 10.0.0.1/24) to `peer` (`eth0`, 10.0.0.2/24) with a veth pair.
pub async fn wire(pod: &Netns, peer: &Netns) {
    let nl = netlink(pod);
    nl.link()
        .add(LinkVeth::new("eth0", "peer0").build())
        .execute()
        .await
        .expect("create veth");
    let peer_end = index(&nl, "peer0").await;
    nl.link()
        .change(
            LinkUnspec::new_with_index(peer_end)
                .setns_by_fd(peer.as_fd().as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .expect("move the veth peer");
    let peer_nl = netlink(peer);
    peer_nl
        .link()
        .change(
            LinkUnspec::new_with_index(index(&peer_nl, "peer0").await)
                .name("eth0".to_owned())
                .build(),
        )
        .execute()
        .await
        .expect("rename the veth peer");
    for (handle, ip) in [
        (&nl, Ipv4Addr::new(10, 0, 0, 1)),
        (&peer_nl, Ipv4Addr::new(10, 0, 0, 2)),
    ] {
        let eth0 = index(handle, "eth0").await;
        handle
            .address()
            .add(eth0, ip.into(), 24)
            .execute()
            .await
            .expect("add address");
        set_up(handle, "eth0").await;
        set_up(handle, "lo").await;
    }
}

/// Runs `nft ARGS` inside `ns`; returns stdout, panicking with stderr on failure.
pub fn nft(ns: &Netns, args: &[&str]) -> String {
    let out = ns
        .run(|| Command::new("nft").args(args).output())
        .expect("enter the namespace")
        .expect("run nft (is the nftables package installed?)");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Our policy rules, as `ip rule` would summarise them.
pub async fn our_rules(nl: &Handle) -> Vec<String> {
    let mut found = Vec::new();
    for (version, tag) in [(IpVersion::V4, "v4"), (IpVersion::V6, "v6")] {
        let rules: Vec<_> = nl
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await
            .unwrap();
        for rule in rules {
            let (mut pref, mut mark, mut mask) = (None, None, None);
            let mut table = u32::from(rule.header.table);
            for attr in &rule.attributes {
                match attr {
                    RuleAttribute::Priority(p) => pref = Some(*p),
                    RuleAttribute::FwMark(m) => mark = Some(*m),
                    RuleAttribute::FwMask(m) => mask = Some(*m),
                    RuleAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if let Some(mark) = mark {
                found.push(format!(
                    "{tag} pref {} fwmark {mark:#x}/{:#x} lookup {table}",
                    pref.unwrap_or_default(),
                    mask.unwrap_or(u32::MAX)
                ));
            }
        }
    }
    found
}

/// Routes of table 100, as `ip route show table 100` would summarise them.
pub async fn table_100(nl: &Handle) -> Vec<String> {
    let mut found = Vec::new();
    let queries = [
        (RouteMessageBuilder::<Ipv4Addr>::new().build(), "v4"),
        (
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            "v6",
        ),
    ];
    for (query, tag) in queries {
        let routes: Vec<_> = nl.route().get(query).execute().try_collect().await.unwrap();
        for route in routes {
            let table = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(route.header.table));
            if table != 100 {
                continue;
            }
            let kind = if route.header.kind == RouteType::Local {
                "local"
            } else {
                "other"
            };
            let family = match route.header.address_family {
                AddressFamily::Inet6 => "::",
                _ => "0.0.0.0",
            };
            found.push(format!(
                "{tag} {kind} {family}/{}",
                route.header.destination_prefix_length
            ));
        }
    }
    found
}
