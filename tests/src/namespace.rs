//! One lab network namespace (the wire, a node or a pod) and what a test can do in it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use inpod::Netns;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

use crate::LabError;
use crate::leaks::{NetnsIdentity, TAG_SYSCTL};
use crate::process::{LabProcess, Processes};

/// Distinguishes namespaces inside one process, so processes can be tied to theirs.
pub(crate) type NamespaceId = u64;

/// A lab network namespace. Cheap to clone; every clone sees the same namespace, and
/// all of them lose access when the lab tears it down (pod removed, lab dropped): the
/// only long-lived descriptor is the one the lab owns, so teardown does not depend on
/// how long tests keep their handles.
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<Inner>,
}

struct Inner {
    id: NamespaceId,
    name: String,
    /// `None` once torn down.
    netns: RwLock<Option<Netns>>,
    /// Kept after teardown so tests can check the namespace is gone.
    identity: NetnsIdentity,
    processes: Arc<Processes>,
}

impl Namespace {
    /// Creates a fresh namespace named `name` (for messages only), tagged so it can be
    /// told apart from later namespaces that reuse its inode number.
    pub(crate) fn create(name: String, processes: Arc<Processes>) -> Result<Self, LabError> {
        let netns = Netns::create().map_err(|source| LabError::CreateNamespace {
            what: name.clone(),
            source,
        })?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let ns = Self {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                name,
                identity: NetnsIdentity {
                    inode: netns.inode(),
                    tag: NetnsIdentity::new_tag(),
                },
                netns: RwLock::new(Some(netns)),
                processes,
            }),
        };
        ns.set_sysctl(TAG_SYSCTL, &ns.inner.identity.tag.to_string())?;
        Ok(ns)
    }

    pub(crate) fn id(&self) -> NamespaceId {
        self.inner.id
    }

    /// Closes the lab's descriptor. The kernel frees the namespace once no process,
    /// socket or other descriptor refers to it any more.
    pub(crate) fn tear_down(&self) {
        let mut slot = self.inner.netns.write().unwrap_or_else(|e| e.into_inner());
        slot.take();
        self.inner.processes.kill_in(self.id());
    }

    /// Calls `f` with the namespace handle, or fails if it was torn down.
    pub(crate) fn with_netns<T>(&self, f: impl FnOnce(&Netns) -> T) -> Result<T, LabError> {
        let slot = self.inner.netns.read().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(netns) => Ok(f(netns)),
            None => Err(self.gone()),
        }
    }

    fn gone(&self) -> LabError {
        LabError::Gone {
            namespace: self.inner.name.clone(),
        }
    }

    /// A human name: `wire`, `node-0`, `pod default/client`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The namespace's inode number (as in `/proc/PID/ns/net`), still known after
    /// teardown. The kernel reuses it for a later namespace: see [`identity`].
    ///
    /// [`identity`]: Self::identity
    pub fn inode(&self) -> u64 {
        self.inner.identity.inode
    }

    /// What names this namespace even after it is gone, for [`crate::netns_holders`].
    pub fn identity(&self) -> NetnsIdentity {
        self.inner.identity
    }

    /// Whether the lab still holds the namespace (false after pod removal or lab drop).
    pub fn is_alive(&self) -> bool {
        self.with_netns(|_| ()).is_ok()
    }

    /// A second descriptor for the namespace, e.g. to hand to the node agent over ZDS.
    /// The namespace lives as long as that descriptor does.
    pub fn netns(&self) -> Result<Netns, LabError> {
        self.with_netns(Netns::try_clone)?
            .map_err(|source| self.enter_error(source))
    }

    /// A path other processes can open to reach this namespace, `/proc/<pid>/fd/<fd>`:
    /// valid while the lab holds the namespace, and without leaving a bind mount behind.
    pub fn netns_path(&self) -> Result<PathBuf, LabError> {
        let fd = self.with_netns(|n| n.as_fd().as_raw_fd())?;
        Ok(PathBuf::from(format!(
            "/proc/{}/fd/{fd}",
            std::process::id()
        )))
    }

    fn enter_error(&self, source: io::Error) -> LabError {
        LabError::Enter {
            namespace: self.inner.name.clone(),
            source,
        }
    }

    /// Runs `f` on the calling thread moved into this namespace, then moves it back.
    /// Sockets created by `f` belong to this namespace for good. `f` must not block.
    /// A panic in `f` unwinds only after the thread is back home (`Netns::run` guards it).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, LabError> {
        // `Netns::run` moves the thread back even when `f` panics.
        self.with_netns(|netns| netns.run(f))?
            .map_err(|source| self.enter_error(source))
    }

    /// A socket created inside the namespace, for anything the helpers below do not
    /// cover (raw sockets, socket options that must precede `bind`, ...).
    pub fn socket(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        self.run(|| Socket::new(domain, ty, protocol))?
    }

    /// A TCP listener on `0.0.0.0:port` inside the namespace (port 0 picks one), like an
    /// application in a pod. Needs a tokio runtime.
    pub fn listen(&self, port: u16) -> io::Result<TcpListener> {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let listener = self.run(|| std::net::TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }

    /// A TCP connection to `addr` from inside the namespace. The socket is created in
    /// the namespace; connecting and all later I/O happen on the runtime as usual.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = self.run(|| match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        })??;
        socket.connect(addr).await
    }

    /// A UDP socket bound to `addr` inside the namespace. Needs a tokio runtime.
    pub fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = self.run(|| std::net::UdpSocket::bind(addr))??;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    /// Sets a per-namespace sysctl, e.g. `set_sysctl("net.ipv4.ip_forward", "1")`.
    /// Written from a thread inside the namespace, where `/proc/sys/net` shows this
    /// namespace's values; keys outside `net.` are refused because they are host-wide.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let error = |source| LabError::Sysctl {
            namespace: self.inner.name.clone(),
            key: key.to_owned(),
            value: value.to_owned(),
            source,
        };
        if !key.starts_with("net.") || key.contains("..") || key.contains('/') {
            return Err(error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only per-namespace net.* keys may be set from the lab",
            )));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?.map_err(error)
    }

    /// The names of the interfaces in the namespace, from the calling thread's view of
    /// `/proc/thread-self/net/dev` (`/proc/self/net` would show the process's namespace).
    pub fn interfaces(&self) -> Result<Vec<String>, LabError> {
        let dev = self
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?
            .map_err(|source| self.enter_error(source))?;
        Ok(dev
            .lines()
            .skip(2)
            .filter_map(|line| line.split_once(':'))
            .map(|(name, _)| name.trim().to_owned())
            .collect())
    }

    /// Starts `command` inside the namespace. The child inherits the namespace of the
    /// thread that forks it, so the fork happens from a thread that entered it. The
    /// process is killed when its handle is dropped, when its pod is removed, when the
    /// lab is dropped, or (through a watchdog) when the test process dies.
    pub fn spawn(&self, mut command: Command) -> Result<LabProcess, LabError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let spawn_error = |source| LabError::Spawn {
            program: program.clone(),
            namespace: self.inner.name.clone(),
            source,
        };
        let processes = &self.inner.processes;
        processes.prepare().map_err(spawn_error)?;
        Processes::configure(&mut command);
        // Registered before the namespace lock is released, so a concurrent teardown
        // either refuses the spawn or finds the process to kill.
        self.with_netns(|netns| {
            let child = netns
                .run(|| command.spawn())
                .map_err(|source| self.enter_error(source))?
                .map_err(spawn_error)?;
            Ok(processes.adopt(self.id(), program.clone(), child))
        })?
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Namespace({} net:[{}])",
            self.inner.name, self.inner.identity.inode
        )
    }
}
