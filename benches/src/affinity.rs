//! Holding processes to one CPU for a figure, to separate a hop's own cost from the cost of
//! waking an idle CPU. On a virtual machine that halts idle vCPUs, every hand-off to a
//! process whose vCPU is asleep pays for the hypervisor waking it; with every process on one
//! CPU, hand-offs are plain context switches.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// While alive, every thread of the given processes runs on CPU 0 only; dropping it puts
/// each thread's previous CPU set back.
#[derive(Debug)]
pub struct OneCpu {
    saved: BTreeMap<i32, CpuSet>,
}

impl OneCpu {
    /// Pins every current thread of `pids` (threads created later inherit the pin from
    /// their creator).
    pub fn pin(pids: &[u32]) -> Result<OneCpu> {
        let mut cpu0 = CpuSet::new();
        cpu0.set(0).context("CPU 0 in a CPU set")?;
        let mut pinned = OneCpu {
            saved: BTreeMap::new(),
        };
        for pid in pids {
            let dir = format!("/proc/{pid}/task");
            for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
                let name = entry?.file_name();
                let Some(tid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let tid = Pid::from_raw(tid);
                // A thread that exited since the listing is not an error.
                let Ok(before) = sched_getaffinity(tid) else {
                    continue;
                };
                if sched_setaffinity(tid, &cpu0).is_ok() {
                    pinned.saved.insert(tid.as_raw(), before);
                }
            }
        }
        Ok(pinned)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        for (tid, set) in &self.saved {
            let _ = sched_setaffinity(Pid::from_raw(*tid), set);
        }
    }
}
