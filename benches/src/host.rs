//! Facts about the machine and the checkout a benchmark ran on, for its report.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

/// CPUs this process may use.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `git ARGS` in `root`, trimmed; `None` if git is missing or fails.
pub fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The short commit and whether the tree had uncommitted changes.
pub fn git_state(root: &Path) -> (Option<String>, Option<bool>) {
    (
        git(root, &["rev-parse", "--short=12", "HEAD"]),
        git(root, &["status", "--porcelain"]).map(|s| !s.is_empty()),
    )
}

/// The 1-minute load average: other work on the machine skews every figure.
pub fn loadavg() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// CPU model and kernel release, as far as `/proc` tells.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    format!("{cpu}, Linux {kernel}")
}

/// A process's memory, from `/proc/<pid>/status`, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessMemory {
    pub rss_mib: f64,
    /// The anonymous part of the RSS (heap, stacks).
    pub rss_anon_mib: f64,
    /// The file-backed part of the RSS (mostly the executable's touched pages).
    pub rss_file_mib: f64,
    /// Peak RSS over the process's life.
    pub hwm_mib: f64,
}

/// The memory of process `pid` right now.
pub fn process_memory(pid: u32) -> Result<ProcessMemory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mib = |field: &str| {
        status_kib(&status, field)
            .map(|kib| kib / 1024.0)
            .with_context(|| format!("no {field} in {path}"))
    };
    Ok(ProcessMemory {
        rss_mib: mib("VmRSS:")?,
        rss_anon_mib: mib("RssAnon:")?,
        rss_file_mib: mib("RssFile:")?,
        hwm_mib: mib("VmHWM:")?,
    })
}

/// CPU time process `pid` has used so far, every thread (exited ones included), user
/// plus system, in seconds: `utime + stime` from `/proc/<pid>/stat` (clock-tick
/// resolution, usually 10 ms).
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = stat_cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .context("sysconf(_SC_CLK_TCK)")?;
    Ok(ticks as f64 / per_second as f64)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted after its `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `/proc/<pid>/status` field in kB, e.g. `VmRSS:     5120 kB`.
fn status_kib(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tbench\nVmHWM:\t    9216 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(5120.0));
        assert_eq!(status_kib(status, "VmHWM:"), Some(9216.0));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let me = process_memory(std::process::id()).unwrap();
        assert!(me.rss_mib > 0.0 && me.hwm_mib >= me.rss_mib, "{me:?}");
    }

    #[test]
    fn reads_cpu_time_from_proc_stat() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 120 0 0 0 \
                    250 37 0 0 20 0 3 0 1000 123456 789 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(287));
        assert_eq!(stat_cpu_ticks("1 (x) S 1"), None);
        let before = process_cpu_seconds(std::process::id()).unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            std::hint::black_box(spin.elapsed());
        }
        let after = process_cpu_seconds(std::process::id()).unwrap();
        assert!(after > before, "{before} -> {after}");
    }
}
