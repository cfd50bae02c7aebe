//! Network namespace handles.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns, unshare};

/// Where the calling thread's own network namespace is visible.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace. Holding it keeps the namespace alive, even after every
/// process inside has exited; dropping the last handle (and the last interface or
/// process in it) destroys it, so nothing leaks if the holder crashes.
pub struct Netns {
    fd: OwnedFd,
    /// `(device, inode)` of the nsfs file: equal for two handles on the same namespace.
    id: (u64, u64),
}

impl Netns {
    /// The network namespace of the calling thread.
    pub fn current() -> io::Result<Self> {
        // The kernel's own link: no need to verify that it is a network namespace.
        Self::unchecked(File::open(THREAD_NETNS)?.into())
    }

    fn unchecked(fd: OwnedFd) -> io::Result<Self> {
        let meta = File::from(fd.try_clone()?).metadata()?;
        Ok(Self {
            fd,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Opens a namespace by path (`/proc/PID/ns/net`, `/var/run/netns/NAME`,
    /// `/proc/PID/fd/N`, ...).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| annotate(e, path))?;
        Self::from_fd(file.into())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Wraps a descriptor received from elsewhere (for example over ZDS), after checking
    /// that it really is a network namespace: joining it must succeed.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let meta = File::from(fd.try_clone()?).metadata()?;
        let ns = Self {
            fd,
            id: (meta.dev(), meta.ino()),
        };
        // setns with CLONE_NEWNET fails with EINVAL for anything that is not a netns.
        ns.run(|| ())?;
        Ok(ns)
    }

    /// Creates a fresh, empty network namespace (only a down `lo`). Needs
    /// `CAP_SYS_ADMIN` in the owning user namespace. The calling thread is not moved:
    /// the namespace is created on a short-lived helper thread.
    pub fn create() -> io::Result<Self> {
        std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Self::current()
        })
        .join()
        .map_err(|_| io::Error::other("netns creation thread panicked"))?
    }

    /// Runs `f` with the calling thread inside this namespace, then moves the thread
    /// back. Sockets created by `f` stay in this namespace for their whole life. `f`
    /// must not block or await: the thread is borrowed, not dedicated.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = Self::current()?;
        if home.id == self.id {
            return Ok(f());
        }
        setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        // Moves the thread home on every exit, unwinding included.
        let _back = ReturnHome(home);
        Ok(f())
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
            id: self.id,
        })
    }

    /// The namespace's inode number, as `ip netns identify` and `/proc/PID/ns/net` show.
    pub fn inode(&self) -> u64 {
        self.id.1
    }

    /// Gives up the handle, returning the descriptor (to pass it over ZDS).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Netns {}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Netns(net:[{}])", self.id.1)
    }
}

/// Puts the thread back into its own namespace when dropped.
struct ReturnHome(Netns);

impl Drop for ReturnHome {
    fn drop(&mut self) {
        // Failing to return would leave a runtime thread in a pod's namespace, where every
        // later socket would be created by mistake: that is not recoverable.
        if let Err(e) = setns(&self.0.fd, CloneFlags::CLONE_NEWNET) {
            eprintln!("cannot return to the original network namespace: {e}; aborting");
            std::process::abort();
        }
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_stable_and_equal_to_itself() {
        let a = Netns::current().unwrap();
        let b = Netns::current().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.try_clone().unwrap(), a);
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let err = Netns::open("/proc/self/status").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("/proc/self/status"), "{err}");
    }

    #[test]
    fn missing_path_names_the_path() {
        let err = Netns::open("/nonexistent/netns").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
