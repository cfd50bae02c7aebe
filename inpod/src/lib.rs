//! In-pod plumbing shared by the node agent (`daemonset`) and `ztunnel`.
//!
//! - [`Netns`]: an owned handle on a Linux network namespace, able to run a closure
//!   (typically a `socket()` call) inside it. A socket belongs to the namespace it was
//!   created in, whichever thread later uses it; this is how ztunnel listens and
//!   connects *inside* each pod.
//! - [`zds`]: the ZDS transport: one protobuf message per `SOCK_SEQPACKET` packet, with
//!   the pod's netns fd attached to `add` requests by `SCM_RIGHTS`.
//!
//! This is the one crate of the workspace allowed `unsafe` (in `fd_passing.rs` only).

mod fd_passing;
mod netns;
pub mod zds;

pub use fd_passing::{Received, SeqPacket, SeqPacketListener};
pub use netns::Netns;
