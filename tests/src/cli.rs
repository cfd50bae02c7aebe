//! The `lab` command: the local mesh for people (`up`, `exec`, `tour`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cluster::ClusterConfig;
use crate::sandbox::{self, Mode};

mod exec;
pub mod session;
pub mod tour;
mod up;

pub const USAGE: &str = "\
usage:
  lab up [DIR] [--nodes N] [--work-dir DIR]
      Start the local mesh: a lab cluster of N nodes (default 2) with the controller,
      a node agent and a ztunnel per node, and the pods the manifests in DIR describe
      (default examples/bookinfo). Edits to DIR apply live. Ctrl-C stops everything.
  lab exec [--work-dir DIR] POD -- COMMAND [ARGS...]
      Run COMMAND inside POD (NAMESPACE/NAME, or NAME when unique, or node-N) of the
      running mesh, with the pod's environment. `demo-app` is the demo app, e.g.
        lab exec curl -- demo-app get http://productpage:9080/productpage
  lab tour [--work-dir DIR]
      Start a mesh on a copy of examples/bookinfo and walk through it: traffic, mTLS
      and a policy edit. Exits 0 only if every step holds.

The work directory (default $TMPDIR/mesh-lab, or $LAB_WORK_DIR) keeps logs, tokens,
the CA state and the session `lab exec` uses. Needs root, or unprivileged user
namespaces (then `lab` enters one itself).
";

/// The command line was wrong: exit status 2, with the usage.
#[derive(Debug, thiserror::Error)]
#[error("{0}\n\n{USAGE}")]
struct UsageError(String);

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The `lab` binary's `main`.
pub fn main() -> ExitCode {
    if let Some(code) = crate::mesh::dispatch() {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: {e:#}");
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

struct Flags {
    nodes: usize,
    work_dir: PathBuf,
    positional: Vec<String>,
    /// After `--`.
    command: Vec<String>,
}

fn parse(args: &[String]) -> Result<Flags> {
    let mut flags = Flags {
        nodes: 2,
        work_dir: std::env::var_os("LAB_WORK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("mesh-lab")),
        positional: Vec::new(),
        command: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--" => {
                flags.command = it.cloned().collect();
                break;
            }
            "--nodes" => {
                let v = value("--nodes")?;
                flags.nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::MAX_NODES).contains(n))
                    .with_context(|| {
                        format!("--nodes must be 1 to {}, not {v:?}", crate::MAX_NODES)
                    })?;
            }
            "--work-dir" => flags.work_dir = PathBuf::from(value("--work-dir")?),
            flag if flag.starts_with("--") => bail!("unknown flag {flag}"),
            _ => flags.positional.push(arg.clone()),
        }
    }
    Ok(flags)
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let flags = parse(rest).map_err(|e| usage(format!("{e:#}")))?;
    match command.as_str() {
        "exec" => {
            // Before anything starts a thread: joining a user namespace needs one thread.
            let [pod] = flags.positional.as_slice() else {
                return Err(usage("lab exec takes one POD, then -- COMMAND"));
            };
            if flags.command.is_empty() {
                return Err(usage("nothing to run: lab exec POD -- COMMAND [ARGS...]"));
            }
            exec::exec(&flags.work_dir, pod, &flags.command)?;
            unreachable!("exec returns only on failure");
        }
        "up" => {
            let manifests = match flags.positional.as_slice() {
                [] => tour::bookinfo(),
                [dir] => PathBuf::from(dir),
                _ => return Err(usage("lab up takes one manifest directory")),
            };
            let manifests = manifests
                .canonicalize()
                .with_context(|| format!("manifest directory {}", manifests.display()))?;
            let mode = sandbox::enter()?;
            let mut config = ClusterConfig::new(manifests, flags.work_dir);
            config.nodes = flags.nodes;
            block_on(up::up(config, mode != Mode::Root))
        }
        "tour" => {
            sandbox::enter()?;
            let work_dir = flags.work_dir.join("tour");
            block_on(tour::tour(&work_dir))
        }
        other => Err(usage(format!("unknown command {other:?}"))),
    }
}

fn block_on(main: impl std::future::Future<Output = Result<()>>) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(main)?;
    Ok(ExitCode::SUCCESS)
}
