//! Processes started inside lab namespaces, and the guarantees that none outlive the lab.
//!
//! Every child runs in its own process group so that killing it also kills what it
//! forked. Three owners can end a child: its [`LabProcess`] handle (on drop or `kill`),
//! the teardown of its namespace, and the lab's drop. A test process that dies without
//! unwinding runs none of those, so a watchdog (`/bin/sh` reading a pipe from us) learns
//! every process group and kills them all when the pipe closes, which the kernel does
//! whenever we exit, however we exit.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::namespace::NamespaceId;

/// Lab-wide registry of the children started in lab namespaces.
#[derive(Debug, Default)]
pub(crate) struct Processes {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: Vec<(NamespaceId, Arc<Slot>)>,
    watchdog: Option<Watchdog>,
    /// Set by `shutdown`: late arrivals are killed on adoption.
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not turn teardown into a second panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Processes {
    /// Makes sure the watchdog runs before a child exists that it should know about.
    /// Call from a thread in the test process's own namespace: the watchdog inherits it.
    pub(crate) fn prepare(&self) -> io::Result<()> {
        let mut table = lock(&self.table);
        if table.watchdog.is_none() {
            table.watchdog = Some(Watchdog::start()?);
        }
        Ok(())
    }

    /// Makes `command` a process-group leader, so its descendants die with it.
    pub(crate) fn configure(command: &mut Command) {
        command.process_group(0);
    }

    /// Takes ownership of a freshly spawned child of namespace `ns`.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        ns: NamespaceId,
        program: String,
        mut child: Child,
    ) -> LabProcess {
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let slot = Arc::new(Slot {
            pid,
            state: Mutex::new(State::Running(child)),
        });
        let mut table = lock(&self.table);
        if table.closed {
            drop(table);
            slot.kill(None).ok();
        } else {
            if let Some(w) = table.watchdog.as_mut() {
                w.send(&format!("add {pid}"));
            }
            table.entries.retain(|(_, s)| !s.has_exited());
            table.entries.push((ns, Arc::clone(&slot)));
        }
        LabProcess {
            slot,
            processes: Arc::clone(self),
            program,
            detached: false,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Kills every child started in namespace `ns` (its pod is going away).
    pub(crate) fn kill_in(&self, ns: NamespaceId) {
        let mut table = lock(&self.table);
        let (doomed, kept) = std::mem::take(&mut table.entries)
            .into_iter()
            .partition(|(owner, _)| *owner == ns);
        table.entries = kept;
        for (_, slot) in doomed {
            if let Err(e) = slot.kill(table.watchdog.as_mut()) {
                tracing::warn!(pid = slot.pid, "cannot kill lab process: {e}");
            }
        }
    }

    fn kill(&self, slot: &Slot) -> io::Result<ExitStatus> {
        let mut table = lock(&self.table);
        slot.kill(table.watchdog.as_mut())
    }

    /// Tells the watchdog that a group is gone, so it never signals a reused id.
    fn forget(&self, pid: u32) {
        if let Some(w) = lock(&self.table).watchdog.as_mut() {
            w.send(&format!("del {pid}"));
        }
    }

    /// Kills every child and the watchdog; later spawns are killed on arrival.
    pub(crate) fn shutdown(&self) {
        let mut table = lock(&self.table);
        table.closed = true;
        for (_, slot) in std::mem::take(&mut table.entries) {
            if let Err(e) = slot.kill(table.watchdog.as_mut()) {
                tracing::warn!(pid = slot.pid, "cannot kill lab process: {e}");
            }
        }
        table.watchdog.take();
    }
}

#[derive(Debug)]
struct Slot {
    pid: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Running(Child),
    Exited(ExitStatus),
}

impl Slot {
    fn has_exited(&self) -> bool {
        matches!(*lock(&self.state), State::Exited(_))
    }

    /// SIGKILLs the whole group and reaps the leader. The group id is safe to signal
    /// because the leader is not reaped before: its pid cannot have been reused.
    fn kill(&self, watchdog: Option<&mut Watchdog>) -> io::Result<ExitStatus> {
        let mut state = lock(&self.state);
        let status = match &mut *state {
            State::Exited(status) => return Ok(*status),
            State::Running(child) => {
                killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL).ok();
                child.wait()?
            }
        };
        *state = State::Exited(status);
        if let Some(w) = watchdog {
            w.send(&format!("del {}", self.pid));
        }
        Ok(status)
    }

    /// Reaps the leader if it has exited, first killing whatever it left running in
    /// its group (peeking with `WNOWAIT` keeps the group id reserved meanwhile). The
    /// flag says whether this call did the reaping.
    fn try_wait(&self) -> io::Result<Option<(ExitStatus, bool)>> {
        let mut state = lock(&self.state);
        let child = match &mut *state {
            State::Exited(status) => return Ok(Some((*status, false))),
            State::Running(child) => child,
        };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(self.pid as i32)), flags) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => {
                killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL).ok();
            }
            Err(e) => return Err(e.into()),
        }
        let status = child.wait()?;
        *state = State::Exited(status);
        Ok(Some((status, true)))
    }
}

/// A process running inside a lab namespace. Dropping the handle kills it (and its
/// process group) unless it was [`detach`](Self::detach)ed.
pub struct LabProcess {
    slot: Arc<Slot>,
    processes: Arc<Processes>,
    program: String,
    detached: bool,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl LabProcess {
    pub fn pid(&self) -> u32 {
        self.slot.pid
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// SIGKILLs the process and its group and reaps it: a crash, as far as peers can
    /// tell. Returns the exit status; repeated calls return the same status.
    pub fn kill(&self) -> io::Result<ExitStatus> {
        self.processes.kill(&self.slot)
    }

    /// Sends `signal` (e.g. `SIGTERM` for a graceful stop) to the process group.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let state = lock(&self.slot.state);
        match *state {
            State::Exited(_) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} (pid {}) has already exited",
                    self.program, self.slot.pid
                ),
            )),
            State::Running(_) => Ok(killpg(Pid::from_raw(self.slot.pid as i32), signal)?),
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let status = self.slot.try_wait()?;
        if let Some((status, true)) = status {
            self.processes.forget(self.slot.pid);
            return Ok(Some(status));
        }
        Ok(status.map(|(status, _)| status))
    }

    /// Waits for the process to exit, polling so the runtime thread is never blocked.
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The child's stdin, if it was configured as `Stdio::piped()`.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The child's stdout, if it was configured as `Stdio::piped()`.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The child's stderr, if it was configured as `Stdio::piped()`.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Lets the process run until its namespace is torn down or the lab is dropped.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if !self.detached {
            self.kill().ok();
        }
    }
}

impl fmt::Debug for LabProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabProcess")
            .field("program", &self.program)
            .field("pid", &self.slot.pid)
            .finish_non_exhaustive()
    }
}

/// Kills the registered process groups when our end of its stdin closes. Ignores the
/// terminal's signals so that Ctrl-C, which kills the test, cannot kill it first.
const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
set --
while read -r op pg; do
  case $op in
    add) set -- "$@" "$pg" ;;
    del) keep=; for p in "$@"; do [ "$p" = "$pg" ] || keep="$keep $p"; done; set -- $keep ;;
  esac
done
for pg in "$@"; do kill -KILL "-$pg" 2>/dev/null; done
"#;

#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: ChildStdin,
}

impl Watchdog {
    fn start() -> io::Result<Self> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Out of our process group: a signal to our group must not reach it.
        command.process_group(0);
        let mut child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start the /bin/sh process watchdog: {e}"),
            )
        })?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok(Self { child, stdin })
    }

    fn send(&mut self, line: &str) {
        if let Err(e) = writeln!(self.stdin, "{line}") {
            tracing::warn!("lab process watchdog is gone ({e}); a crash may leak processes");
        }
    }
}

impl Drop for Watchdog {
    /// Killed rather than told to finish: every group it knows of is already dead, and
    /// their ids may be reused.
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
