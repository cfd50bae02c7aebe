//! Getting the privileges the lab needs, without sudo.
//!
//! Creating network namespaces, veths and packet sockets needs `CAP_SYS_ADMIN`,
//! `CAP_NET_ADMIN` and `CAP_NET_RAW`. Root has them. Anyone else can get them inside a
//! fresh user namespace, together with a fresh network namespace so the host network is
//! not even visible. The kernel allows `unshare(CLONE_NEWUSER)` only while the process
//! has a single thread, hence [`enter`] must run first thing in `main`, before any
//! runtime, logger or test harness starts a thread.

use std::fs;
use std::io;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{getgid, getuid};

/// How the process got its privileges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Already privileged (root): the lab works directly, in namespaces of its own.
    Root,
    /// Entered a new user and network namespace, mapping `uid`/`gid` to root in it.
    UserNamespace { uid: u32, gid: u32 },
}

/// Why the lab cannot get its privileges. Tests fail with this; they never skip.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the process already has {threads} threads: call lab::sandbox::enter() first thing \
         in main, before starting a runtime, logger or test harness (the kernel only lets \
         a single-threaded process create a user namespace)"
    )]
    MultiThreaded { threads: usize },

    #[error("cannot create a user namespace: {reason}")]
    UserNamespace { reason: String },

    #[error("cannot write {file} for the new user namespace")]
    IdMap {
        file: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "cannot create network namespaces even after entering the sandbox ({mode:?}): {source}"
    )]
    Probe {
        mode: Mode,
        #[source]
        source: io::Error,
    },
}

/// Set `LAB_SANDBOX=userns` to take the unprivileged path even as root (to test it).
const FORCE_ENV: &str = "LAB_SANDBOX";

static ENTERED: Mutex<Option<Mode>> = Mutex::new(None);

/// Makes sure the process can build labs: as root, nothing to do; otherwise enter a
/// new user+network namespace. Idempotent. Fails with the reason when neither works,
/// e.g. "unprivileged user namespaces are disabled: ...".
pub fn enter() -> Result<Mode, SandboxError> {
    let mut entered = ENTERED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mode) = *entered {
        return Ok(mode);
    }
    let forced = std::env::var(FORCE_ENV).is_ok_and(|v| v == "userns");
    let mode = if !forced && has_lab_capabilities() {
        Mode::Root
    } else {
        enter_user_namespace()?
    };
    // A namespace creation is the real test (seccomp, LSMs and containers can forbid it
    // even with the capabilities).
    inpod::Netns::create().map_err(|source| SandboxError::Probe { mode, source })?;
    *entered = Some(mode);
    tracing::debug!(?mode, "lab sandbox ready");
    Ok(mode)
}

/// `CAP_NET_ADMIN`, `CAP_NET_RAW` and `CAP_SYS_ADMIN` in the effective set.
fn has_lab_capabilities() -> bool {
    const NEEDED: u64 = (1 << 12) | (1 << 13) | (1 << 21);
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & NEEDED == NEEDED)
}

fn thread_count() -> usize {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}

fn enter_user_namespace() -> Result<Mode, SandboxError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(SandboxError::MultiThreaded { threads });
    }
    let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
    if let Err(errno) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET) {
        let reason = diagnose(errno, &read_userns_sysctls());
        return Err(SandboxError::UserNamespace { reason });
    }
    // setgroups must be denied before an unprivileged process may write gid_map.
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write_proc("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    Ok(Mode::UserNamespace { uid, gid })
}

fn write_proc(file: &'static str, content: &str) -> Result<(), SandboxError> {
    fs::write(file, content).map_err(|source| SandboxError::IdMap { file, source })
}

/// The knobs distributions use to turn unprivileged user namespaces off; `None` where
/// the kernel does not have the knob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct UsernsSysctls {
    max_user_namespaces: Option<String>,
    unprivileged_userns_clone: Option<String>,
    apparmor_restrict: Option<String>,
}

fn read_userns_sysctls() -> UsernsSysctls {
    let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    UsernsSysctls {
        max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restrict: read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    }
}

/// Turns an `unshare` failure into a reason an operator can act on.
fn diagnose(errno: Errno, sysctls: &UsernsSysctls) -> String {
    let is = |v: &Option<String>, want: &str| v.as_deref() == Some(want);
    if is(&sysctls.max_user_namespaces, "0") {
        return format!(
            "unprivileged user namespaces are disabled: user.max_user_namespaces = 0 \
             ({errno}); raise it or run the tests as root"
        );
    }
    if is(&sysctls.unprivileged_userns_clone, "0") {
        return format!(
            "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone = 0 \
             ({errno}); set it to 1 or run the tests as root"
        );
    }
    if is(&sysctls.apparmor_restrict, "1") {
        return format!(
            "unprivileged user namespaces are restricted by AppArmor: \
             kernel.apparmor_restrict_unprivileged_userns = 1 ({errno}); set it to 0, give \
             the test binary an AppArmor profile with `userns`, or run the tests as root"
        );
    }
    match errno {
        Errno::ENOSPC => format!(
            "the per-user limit of user namespaces is reached ({errno}); see \
             /proc/sys/user/max_user_namespaces"
        ),
        Errno::EPERM => format!(
            "unprivileged user namespaces are not allowed here ({errno}); a container's \
             seccomp profile or an LSM may forbid unshare(CLONE_NEWUSER); run the tests as root"
        ),
        other => format!("unshare(CLONE_NEWUSER | CLONE_NEWNET) failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_knob_that_disables_user_namespaces() {
        let table = [
            (
                UsernsSysctls {
                    max_user_namespaces: Some("0".into()),
                    ..Default::default()
                },
                "user.max_user_namespaces = 0",
            ),
            (
                UsernsSysctls {
                    max_user_namespaces: Some("1000".into()),
                    unprivileged_userns_clone: Some("0".into()),
                    ..Default::default()
                },
                "kernel.unprivileged_userns_clone = 0",
            ),
            (
                UsernsSysctls {
                    apparmor_restrict: Some("1".into()),
                    ..Default::default()
                },
                "apparmor_restrict_unprivileged_userns = 1",
            ),
            (UsernsSysctls::default(), "seccomp"),
        ];
        for (sysctls, expected) in table {
            let reason = diagnose(Errno::EPERM, &sysctls);
            assert!(reason.contains(expected), "{sysctls:?}: {reason}");
        }
    }

    #[test]
    fn reports_the_namespace_limit() {
        let reason = diagnose(Errno::ENOSPC, &UsernsSysctls::default());
        assert!(reason.contains("limit"), "{reason}");
    }
}
