//! Capture for real, in fresh network namespaces (needs root; fails, never skips,
//! without it): `nft -f` accepts the ruleset, policy routing is set, re-applying
//! replaces, removal leaves nothing, and the rules redirect real connections.

mod common;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::*;
use daemonset::{Capture, NftCapture};
use socket2::{Domain, Socket, Type};

const RULES: &[&str] = &[
    "v4 pref 32764 fwmark 0x111/0xfff lookup 100",
    "v6 pref 32764 fwmark 0x111/0xfff lookup 100",
];
const ROUTES: &[&str] = &["v4 local 0.0.0.0/0", "v6 local ::/0"];

#[tokio::test]
async fn install_replaces_and_remove_leaves_an_empty_ruleset() {
    let pod = pod_netns("a pod").await;
    let nl = netlink(&pod);
    let capture = NftCapture::default();

    capture.install(&pod).await.expect("install capture");
    let first = nft(&pod, &["list", "ruleset"]);
    for needle in [
        "table inet istio-ambient",
        "type route hook output priority mangle",
        "redirect to :15001",
        "redirect to :15006",
        "tcp dport != 15008",
        "ct mark set",
        "meta mark set ct mark",
        "169.254.7.127",
    ] {
        assert!(first.contains(needle), "missing {needle:?} in:\n{first}");
    }
    assert_eq!(our_rules(&nl).await, RULES);
    assert_eq!(table_100(&nl).await, ROUTES);

    // Re-applying replaces: same ruleset, one rule and one route per family.
    capture.install(&pod).await.expect("install capture again");
    assert_eq!(nft(&pod, &["list", "ruleset"]), first);
    assert_eq!(our_rules(&nl).await, RULES);
    assert_eq!(table_100(&nl).await, ROUTES);

    capture.remove(&pod).await.expect("remove capture");
    assert_eq!(
        nft(&pod, &["list", "ruleset"]),
        "",
        "nothing of ours may remain"
    );
    assert!(our_rules(&nl).await.is_empty());
    assert!(table_100(&nl).await.is_empty());

    capture.remove(&pod).await.expect("removing twice is fine");
    assert_eq!(nft(&pod, &["list", "ruleset"]), "");
}

#[tokio::test]
async fn removal_cleans_a_half_configured_pod_and_spares_other_tables() {
    let pod = pod_netns("a half-configured pod").await;
    let nl = netlink(&pod);
    // Someone else's table, and only the nft half of ours (as if routing had failed).
    let script = format!(
        "table inet other {{\n\tchain c {{\n\t\ttype filter hook input priority 0;\n\t}}\n}}\n{}",
        daemonset::rules::install_script()
    );
    let applied = daemonset::rules::apply("nft".as_ref(), &pod, &script);
    applied.expect("apply a partial configuration");
    assert!(our_rules(&nl).await.is_empty());

    NftCapture::default().remove(&pod).await.expect("remove");
    let left = nft(&pod, &["list", "ruleset"]);
    assert!(left.contains("table inet other"), "{left}");
    assert!(!left.contains("istio-ambient"), "{left}");
}

#[tokio::test]
async fn a_pod_with_ipv6_disabled_gets_ipv4_routing() {
    let pod = pod_netns("an IPv4-only pod").await;
    let nl = netlink(&pod);
    pod.run(|| std::fs::write("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "1"))
        .unwrap()
        .expect("disable IPv6 on lo");
    NftCapture::default().install(&pod).await.expect("install");
    assert_eq!(table_100(&nl).await, ["v4 local 0.0.0.0/0"]);
    NftCapture::default().remove(&pod).await.expect("remove");
    assert!(table_100(&nl).await.is_empty());
    assert!(our_rules(&nl).await.is_empty());
}

/// Connects from inside `ns` (blocking, bounded).
fn connect_from(ns: &inpod::Netns, to: &str) -> io::Result<TcpStream> {
    let to: SocketAddr = to.parse().unwrap();
    ns.run(|| TcpStream::connect_timeout(&to, BOUND)).unwrap()
}

fn listen_in(ns: &inpod::Netns, on: &str) -> TcpListener {
    ns.run(|| TcpListener::bind(on)).unwrap().expect("listen")
}

fn accepted(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(false).unwrap();
    listener.accept().expect("accept").0
}

#[tokio::test]
async fn the_rules_redirect_real_connections() {
    let pod = pod_netns("the captured pod").await;
    let peer = fresh_netns("the pod's peer");
    wire(&pod, &peer).await;
    NftCapture::default().install(&pod).await.expect("install");

    let outbound = listen_in(&pod, "0.0.0.0:15001");
    let inbound = listen_in(&pod, "0.0.0.0:15006");
    let hbone = listen_in(&pod, "0.0.0.0:15008");

    // Outbound TCP from the pod goes to 15001, wherever it was headed.
    let _c = connect_from(&pod, "10.0.0.2:80").expect("outbound redirected");
    let s = accepted(&outbound);
    assert_eq!(s.local_addr().unwrap().port(), 15001);

    // Inbound TCP to the pod goes to 15006...
    let _c = connect_from(&peer, "10.0.0.1:8080").expect("inbound redirected");
    assert_eq!(accepted(&inbound).local_addr().unwrap().port(), 15006);
    // ...except HBONE on 15008, which reaches its own listener.
    let _c = connect_from(&peer, "10.0.0.1:15008").expect("HBONE not redirected");
    assert_eq!(
        accepted(&hbone).peer_addr().unwrap().ip().to_string(),
        "10.0.0.2"
    );

    // ztunnel's own sockets (mark 0x539) are never captured: nobody listens on
    // 10.0.0.2:81, so a marked connection is refused instead of reaching 15001.
    let marked = pod
        .run(|| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_mark(0x539)?;
            let to: SocketAddr = "10.0.0.2:81".parse().unwrap();
            socket.connect_timeout(&to.into(), BOUND)
        })
        .unwrap();
    let err = marked.expect_err("a marked connection must not be captured");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    // Without capture, the same outbound connection is refused by the peer.
    NftCapture::default().remove(&pod).await.expect("remove");
    let err = connect_from(&pod, "10.0.0.2:80").expect_err("no longer redirected");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}
