//! The lab: simulated Kubernetes nodes and pods as Linux network namespaces, for the
//! end-to-end tier of tests (see `tests/README.md`).
//!
//! ```no_run
//! use lab::{Lab, LabConfig, PodSpec};
//!
//! // In a `harness = false` test, after `lab::sandbox::enter()` ran first in `main`:
//! async fn echo() -> anyhow::Result<()> {
//!     let lab = Lab::start(LabConfig { nodes: 2 }).await?;
//!     let server = lab.add_pod(PodSpec::new("server", 1)).await?;
//!     let listener = server.listen(8080)?;
//!     let client = lab.add_pod(PodSpec::new("client", 0)).await?;
//!     let stream = client.connect((server.ip(), 8080).into()).await?;
//!     let (_accepted, peer) = listener.accept().await?;
//!     assert_eq!(peer, stream.local_addr()?);
//!     Ok(())
//! }
//! ```
//!
//! Namespaces are held only by file descriptors of the test process: no bind mounts,
//! no `/var/run/netns` entries. Dropping the [`Lab`] (also while unwinding from a
//! panic) closes them and kills every process started in them; if the test process
//! dies outright, the kernel closes the descriptors and a watchdog kills the processes.
//! The host's own interfaces are never touched: every link is created inside a lab
//! namespace.

mod capture;
pub mod cli;
pub mod cluster;
mod error;
pub mod eventually;
mod frames;
mod leaks;
pub mod mesh;
mod namespace;
mod netlink;
mod pod;
mod process;
pub mod sandbox;
mod topology;
pub mod trial;

pub use capture::Capture;
pub use error::LabError;
pub use frames::{Frame, Frames, Segment, TcpFlow, tcp_segment};
pub use inpod::Netns;
pub use leaks::{NetnsIdentity, netns_holders};
pub use namespace::Namespace;
pub use nix::sys::signal::Signal;
pub use pod::{Pod, PodSpec};
pub use process::LabProcess;
pub use topology::{
    Ipv4Cidr, Lab, LabConfig, MAX_NODES, NODE_SUBNET, Node, node_ip, pod_cidr, pod_gateway,
};

/// Compiles the README's example as a doctest, so it cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
