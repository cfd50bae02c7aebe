//! The nftables half of in-pod capture: one `inet` table of our own, written as a
//! script and applied atomically with `nft -f -` *inside* the pod's namespace.
//!
//! The rules mirror Istio's in-pod iptables (`cni/pkg/iptables`, `AppendInpodRules`):
//! packets from ztunnel's sockets carry mark 0x539 and are never captured; connections
//! ztunnel makes to the app (seen in prerouting, looped over `lo`) are connmarked
//! 0x111, and the app's replies get that mark back so that policy routing
//! ([`crate::routing`]) delivers them to ztunnel's transparent socket.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use inpod::Netns;

/// Our table; nothing else in the pod's ruleset is touched.
pub const TABLE: &str = "istio-ambient";
/// Mark on every socket ztunnel opens (1337).
pub const ZTUNNEL_MARK: u32 = 0x539;
/// Connmark (and, restored, packet mark) of connections ztunnel originated in the pod.
pub const CONNECTION_MARK: u32 = 0x111;
/// The bits of the mark that are ours; the rest belongs to others (CNI, kube-proxy).
pub const MARK_MASK: u32 = 0xfff;
/// Source of kubelet probes once SNATed by the node (Istio's `HostProbeSNATIP`).
pub const PROBE_SOURCE_V4: &str = "169.254.7.127";
/// Its IPv6 counterpart (Istio's `HostProbeSNATIPV6`).
pub const PROBE_SOURCE_V6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
/// ztunnel's outbound capture port.
pub const OUTBOUND_PORT: u16 = 15001;
/// ztunnel's inbound plaintext port.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// ztunnel's inbound HBONE port: traffic to it is ztunnel's own, never redirected.
pub const INBOUND_HBONE_PORT: u16 = 15008;

/// Something went wrong running `nft` in a pod's namespace.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot enter the pod's network namespace to run nft: {0}")]
    EnterNetns(#[source] io::Error),
    #[error("cannot run {nft}: {source} (is the nftables package installed, or --nft set?)")]
    Spawn { nft: PathBuf, source: io::Error },
    #[error("{nft} -f - failed ({status}): {stderr}")]
    Rejected {
        nft: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("talking to {nft}: {source}")]
    Io { nft: PathBuf, source: io::Error },
}

/// The script that installs (or replaces) the capture rules. Declaring the table
/// first makes the `delete` valid when it does not exist yet, and the whole file is
/// one transaction: a pod is never seen with half the rules or with two copies.
pub fn install_script() -> String {
    let t = TABLE;
    let mark = |m: u32| format!("meta mark & {MARK_MASK:#x} == {m:#x}");
    let not_mark = |m: u32| format!("meta mark & {MARK_MASK:#x} != {m:#x}");
    let ztunnel = mark(ZTUNNEL_MARK);
    let not_ztunnel = not_mark(ZTUNNEL_MARK);
    let connection = mark(CONNECTION_MARK);
    let keep = !MARK_MASK;
    let (p4, p6) = (PROBE_SOURCE_V4, PROBE_SOURCE_V6);
    let (out, inb, hbone) = (OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, INBOUND_HBONE_PORT);
    format!(
        "\
table inet {t}
delete table inet {t}
table inet {t} {{
\tchain prerouting-mangle {{
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\t{ztunnel} ct mark set ct mark & {keep:#010x} | {CONNECTION_MARK:#x}
\t\tip saddr {p4} meta l4proto tcp accept
\t\tip6 saddr {p6} meta l4proto tcp accept
\t}}
\tchain prerouting-nat {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip saddr {p4} meta l4proto tcp accept
\t\tip6 saddr {p6} meta l4proto tcp accept
\t\tip daddr != 127.0.0.1 tcp dport != {hbone} {not_ztunnel} redirect to :{inb}
\t\tip6 daddr != ::1 tcp dport != {hbone} {not_ztunnel} redirect to :{inb}
\t}}
\tchain output-route {{
\t\ttype route hook output priority mangle; policy accept;
\t\tct mark & {MARK_MASK:#x} == {CONNECTION_MARK:#x} meta mark set ct mark
\t}}
\tchain output-nat {{
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr {p4} meta l4proto tcp accept
\t\tip6 daddr {p6} meta l4proto tcp accept
\t\tmeta l4proto tcp {connection} accept
\t\toifname \"lo\" ip daddr != 127.0.0.1 accept
\t\toifname \"lo\" ip6 daddr != ::1 accept
\t\t{ztunnel} accept
\t\tip daddr != 127.0.0.1 meta l4proto tcp redirect to :{out}
\t\tip6 daddr != ::1 meta l4proto tcp redirect to :{out}
\t}}
}}
"
    )
}

/// The script that removes the rules; valid whether or not they are installed.
pub fn remove_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Runs `nft -f -` with `script` inside `netns`. Blocking: call it from a thread that
/// may block (`spawn_blocking`). The child is spawned while this thread is inside the
/// namespace, so it inherits it; no `unsafe` needed.
pub fn apply(nft: &Path, netns: &Netns, script: &str) -> Result<(), RulesError> {
    let spawned = netns
        .run(|| {
            Command::new(nft)
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .map_err(RulesError::EnterNetns)?;
    let mut child = spawned.map_err(|source| RulesError::Spawn {
        nft: nft.to_owned(),
        source,
    })?;
    let io_error = |source| RulesError::Io {
        nft: nft.to_owned(),
        source,
    };
    if let Some(mut stdin) = child.stdin.take() {
        // nft reads the whole script before acting; if it exits early (bad flag), its
        // status and stderr say why, so a broken pipe here is not the error to report.
        match stdin.write_all(script.as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(io_error(e)),
            _ => {}
        }
    }
    let output = child.wait_with_output().map_err(io_error)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(RulesError::Rejected {
            nft: nft.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact ruleset; a change here is a change to the data path, review it as such.
    const GOLDEN: &str = r#"table inet istio-ambient
delete table inet istio-ambient
table inet istio-ambient {
	chain prerouting-mangle {
		type filter hook prerouting priority mangle; policy accept;
		meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111
		ip saddr 169.254.7.127 meta l4proto tcp accept
		ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp accept
	}
	chain prerouting-nat {
		type nat hook prerouting priority dstnat; policy accept;
		ip saddr 169.254.7.127 meta l4proto tcp accept
		ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp accept
		ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
		ip6 daddr != ::1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
	}
	chain output-route {
		type route hook output priority mangle; policy accept;
		ct mark & 0xfff == 0x111 meta mark set ct mark
	}
	chain output-nat {
		type nat hook output priority -100; policy accept;
		ip daddr 169.254.7.127 meta l4proto tcp accept
		ip6 daddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp accept
		meta l4proto tcp meta mark & 0xfff == 0x111 accept
		oifname "lo" ip daddr != 127.0.0.1 accept
		oifname "lo" ip6 daddr != ::1 accept
		meta mark & 0xfff == 0x539 accept
		ip daddr != 127.0.0.1 meta l4proto tcp redirect to :15001
		ip6 daddr != ::1 meta l4proto tcp redirect to :15001
	}
}
"#;

    #[test]
    fn install_script_is_the_golden_ruleset() {
        let got = install_script();
        if got != GOLDEN {
            for (i, (g, w)) in got.lines().zip(GOLDEN.lines()).enumerate() {
                assert_eq!(g, w, "first difference on line {}", i + 1);
            }
            assert_eq!(got.lines().count(), GOLDEN.lines().count(), "line count");
            panic!("scripts differ in line endings:\n{got}");
        }
    }

    #[test]
    fn remove_script_declares_then_deletes_our_table_only() {
        assert_eq!(
            remove_script(),
            "table inet istio-ambient\ndelete table inet istio-ambient\n"
        );
    }

    #[test]
    fn a_missing_nft_binary_is_a_clear_error() {
        let ns = Netns::current().unwrap();
        let err = apply(Path::new("/nonexistent/nft"), &ns, &remove_script()).unwrap_err();
        assert!(matches!(err, RulesError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/nft"), "{err}");
    }

    #[test]
    fn a_failing_nft_reports_status_and_stderr() {
        // `sh -f -` reads its script from stdin, as `nft -f -` does: a stand-in for an
        // nft that rejects its input, without touching any ruleset.
        let ns = Netns::current().unwrap();
        let err = apply(Path::new("/bin/sh"), &ns, "echo rejected >&2; exit 3").unwrap_err();
        match &err {
            RulesError::Rejected { status, stderr, .. } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "rejected");
            }
            other => panic!("expected Rejected, got {other}"),
        }
    }
}
