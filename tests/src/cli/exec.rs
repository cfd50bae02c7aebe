//! `lab exec POD -- CMD...`: runs a command inside a pod of the running local mesh, with
//! the pod's environment (service variables included), as `kubectl exec` does. The
//! process joins `lab up`'s user namespace (when it has one) and the pod's network
//! namespace, then becomes the command.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

use super::session::Session;
use crate::cluster::pod_command;

/// Only returns on failure: on success the process is the command.
pub fn exec(work_dir: &Path, target: &str, argv: &[String]) -> Result<()> {
    if argv.is_empty() {
        bail!("nothing to run: lab exec POD -- COMMAND [ARGS...]");
    }
    let Some(session) = Session::read_live(work_dir)? else {
        bail!(
            "no local mesh is running with work directory {} (start one with `lab up`)",
            work_dir.display()
        );
    };
    let target = session.find(target)?;
    // Open both before moving: after joining the user namespace, /proc of the host's
    // processes may no longer be ours to open.
    let netns = File::open(&target.netns).with_context(|| {
        format!(
            "opening {}'s namespace {}",
            target.name,
            target.netns.display()
        )
    })?;
    if session.user_namespace {
        let userns_path = format!("/proc/{}/ns/user", session.pid);
        let userns = File::open(&userns_path).with_context(|| format!("opening {userns_path}"))?;
        setns(&userns, CloneFlags::CLONE_NEWUSER)
            .with_context(|| format!("joining lab up's user namespace ({userns_path})"))?;
    }
    setns(&netns, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}'s network namespace", target.name))?;
    let mut cmd = pod_command(argv, &target.env)?;
    cmd.stdin(Stdio::inherit());
    let err = cmd.exec();
    Err(err).with_context(|| format!("running {:?} in {}", argv[0], target.name))
}
