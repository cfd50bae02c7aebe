//! What can go wrong while building or driving the lab.
//!
//! Messages say what the lab was doing; the underlying error is the `source()`, so
//! print with `{:#}` (anyhow) or walk the chain to see both.

use std::io;

/// A lab operation that failed. Messages name the namespace or object involved and,
/// where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The kernel refused a new network namespace: usually missing privileges.
    #[error(
        "cannot create the network namespace for {what} (run as root, or call \
         lab::sandbox::enter() first thing in main so the test runs in its own user namespace)"
    )]
    CreateNamespace {
        what: String,
        #[source]
        source: io::Error,
    },

    /// A netlink request (link, address or route change) failed.
    #[error("netlink: {what} in {namespace}")]
    Netlink {
        namespace: String,
        what: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// A netlink socket could not be opened inside a namespace.
    #[error("cannot open a netlink socket in {namespace}")]
    NetlinkSocket {
        namespace: String,
        #[source]
        source: io::Error,
    },

    /// A link was set up but the kernel never made it operational.
    #[error("link {index} in {namespace} is not operational after {waited:?}")]
    LinkNotReady {
        namespace: String,
        index: u32,
        waited: std::time::Duration,
    },

    /// A per-namespace sysctl could not be written.
    #[error("cannot set sysctl {key}={value} in {namespace}")]
    Sysctl {
        namespace: String,
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },

    /// Entering a namespace with `setns` failed.
    #[error("cannot enter {namespace}")]
    Enter {
        namespace: String,
        #[source]
        source: io::Error,
    },

    /// The namespace was torn down (its pod was removed, or the lab was dropped).
    #[error("{namespace} no longer exists (pod removed or lab dropped)")]
    Gone { namespace: String },

    /// The topology asked for is outside what the address plan can express.
    #[error("invalid lab config: {0}")]
    Config(String),

    #[error("no node with index {index}: the lab has {nodes} node(s)")]
    UnknownNode { index: usize, nodes: usize },

    #[error("a pod named {0:?} already exists in the lab (pod names are lab-wide)")]
    DuplicatePod(String),

    #[error("no pod named {0:?} in the lab")]
    UnknownPod(String),

    #[error("node {node} has no free pod address left in {cidr}")]
    PodCidrFull { node: usize, cidr: String },

    #[error("pod {pod:?} cannot have the address it asks for: {reason}")]
    PodAddress { pod: String, reason: String },

    /// A process could not be started inside a namespace.
    #[error("cannot spawn {program} in {namespace}")]
    Spawn {
        program: String,
        namespace: String,
        #[source]
        source: io::Error,
    },

    /// The packet capture socket could not be set up.
    #[error("cannot capture on the wire")]
    Capture(#[source] io::Error),
}

impl From<LabError> for io::Error {
    /// Socket helpers return `io::Result` like the tokio calls they wrap; a lab failure
    /// surfaces there with a kind that says whether the namespace is simply gone.
    fn from(e: LabError) -> Self {
        let kind = match &e {
            LabError::Gone { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
