//! Finding what still holds a network namespace, for "nothing leaked" assertions.
//!
//! A namespace lives while a process (any thread) is in it, a descriptor refers to it,
//! a bind mount pins it, or a socket created in it is open. The lab uses no bind
//! mounts; this looks for the first two across every process we may inspect. Sockets
//! are not attributable from `/proc`, so a test must close its own.
//!
//! The kernel hands a freed namespace's inode number to the next namespace created,
//! anywhere on the machine, so an inode alone would blame a concurrent test's fresh
//! namespace. Each lab namespace therefore also carries a random tag, written to the
//! otherwise unused per-namespace sysctl `net.ipv4.conf.lo.tag`, and a candidate
//! holder counts only if its namespace has the same tag.

use std::fmt;
use std::fs;
use std::hash::{BuildHasher, RandomState};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::str::FromStr;

use inpod::Netns;

/// Where the tag lives, relative to `/proc/sys`, as seen from inside the namespace.
pub(crate) const TAG_SYSCTL: &str = "net.ipv4.conf.lo.tag";

/// Names one lab namespace for its whole life and after: inode plus tag. Its text
/// form `inode:tag` lets a child process report the namespaces it built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetnsIdentity {
    pub inode: u64,
    pub tag: u32,
}

impl NetnsIdentity {
    /// A fresh random tag: non-zero (every namespace's default) and below 2^31 (the
    /// sysctl is a signed int).
    pub(crate) fn new_tag() -> u32 {
        let random = RandomState::new().hash_one(std::process::id()) as u32;
        (random & 0x7fff_ffff).max(1)
    }

    /// Whether `path` (a `/proc/.../ns/net` link, a `/proc/.../fd/N`) refers to this
    /// very namespace. A path that cannot be opened or entered does not.
    pub fn is_at(&self, path: impl AsRef<Path>) -> bool {
        let path = path.as_ref();
        if !fs::metadata(path).is_ok_and(|m| m.ino() == self.inode) {
            return false;
        }
        let Ok(netns) = Netns::open(path) else {
            return false;
        };
        let tag = netns.run(|| read_tag().ok()).ok().flatten();
        tag == Some(self.tag)
    }
}

fn read_tag() -> std::io::Result<u32> {
    let path = format!("/proc/sys/{}", TAG_SYSCTL.replace('.', "/"));
    let text = fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl fmt::Display for NetnsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.inode, self.tag)
    }
}

impl FromStr for NetnsIdentity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected INODE:TAG, got {s:?}");
        let (inode, tag) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            inode: inode.parse().map_err(|_| bad())?,
            tag: tag.parse().map_err(|_| bad())?,
        })
    }
}

/// Every thread in the namespace `id`, and every open descriptor that refers to it, as
/// `/proc/...` paths followed by the holder's command name. Processes we may not
/// inspect are skipped.
pub fn netns_holders(id: &NetnsIdentity) -> Vec<String> {
    let target = format!("net:[{}]", id.inode);
    let mut holders = Vec::new();
    for pid in numeric_entries(Path::new("/proc")) {
        let proc_dir = Path::new("/proc").join(&pid);
        let comm = fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
        let holder = |path: &Path| format!("{} ({})", path.display(), comm.trim());
        for tid in numeric_entries(&proc_dir.join("task")) {
            let ns = proc_dir.join("task").join(&tid).join("ns/net");
            if id.is_at(&ns) {
                holders.push(holder(&ns));
            }
        }
        for fd in numeric_entries(&proc_dir.join("fd")) {
            let link = proc_dir.join("fd").join(&fd);
            let candidate = fs::read_link(&link).is_ok_and(|t| t.as_os_str() == target.as_str());
            if candidate && id.is_at(&link) {
                holders.push(holder(&link));
            }
        }
    }
    holders
}

fn numeric_entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_as_text() {
        let id = NetnsIdentity {
            inode: 4026532000,
            tag: 77,
        };
        assert_eq!(id.to_string().parse::<NetnsIdentity>(), Ok(id));
        assert!("4026532000".parse::<NetnsIdentity>().is_err());
        assert!("x:1".parse::<NetnsIdentity>().is_err());
    }

    #[test]
    fn tags_are_random_and_never_the_default() {
        let tags: std::collections::BTreeSet<u32> =
            (0..32).map(|_| NetnsIdentity::new_tag()).collect();
        assert!(tags.len() > 1 && !tags.contains(&0), "{tags:?}");
        assert!(tags.iter().all(|t| i32::try_from(*t).is_ok()), "{tags:?}");
    }

    #[test]
    fn a_wrong_tag_or_missing_path_is_not_a_match() {
        let inode = fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        // Our own namespace has tag 0 (or we may not enter it): never a random tag.
        let id = NetnsIdentity { inode, tag: 12345 };
        assert!(!id.is_at("/proc/thread-self/ns/net"));
        assert!(!id.is_at("/nonexistent"));
        assert!(netns_holders(&id).is_empty());
    }
}
