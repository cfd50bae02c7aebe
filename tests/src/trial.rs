//! Lab test trials for libtest-mimic (`harness = false` test binaries): each runs on its
//! own 2-worker tokio runtime, bounded, with the error chain as the failure message.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::Trial;

/// A trial named `name` running `test`; still running after `bound` is a failure, so a
/// hang fails instead of stalling CI.
pub fn trial<F, Fut>(name: &str, bound: Duration, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            match tokio::time::timeout(bound, test()).await {
                Ok(result) => result.map_err(|e| format!("{e:#}").into()),
                Err(_) => Err(format!("trial still running after {bound:?}").into()),
            }
        })
    })
}

/// `main` of a lab test binary whose trials run mesh components: runs the component
/// when re-executed as one ([`crate::mesh::dispatch`]), else enters the sandbox and runs
/// `trials()` under libtest-mimic.
pub fn mesh_main(binary: &str, trials: impl FnOnce() -> Vec<Trial>) -> std::process::ExitCode {
    if let Some(code) = crate::mesh::dispatch() {
        return code;
    }
    if let Err(e) = crate::sandbox::enter() {
        eprintln!(
            "{binary}: cannot set up the lab sandbox: {:#}",
            anyhow::Error::from(e)
        );
        return std::process::ExitCode::FAILURE;
    }
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials()).exit_code()
}

/// A trial's scratch directory, `$TMPDIR/PREFIX-PID-NAME`: emptied when made, removed
/// when dropped unless `LAB_MESH_KEEP` is set (then its path is printed).
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(prefix: &str, name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Scratch(root)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("LAB_MESH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
