//! Unix `SOCK_SEQPACKET` sockets that carry file descriptors (`SCM_RIGHTS`), on tokio.
#![allow(unsafe_code)]

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, accept4, bind, connect, listen, recvmsg, sendmsg, socket,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Most descriptors accepted with one packet; more is a protocol violation (ZDS sends
/// at most one) and the extra ones are closed.
const MAX_FDS: usize = 4;

/// One received packet.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the packet written into the caller's buffer.
    pub len: usize,
    /// Descriptors that came with it, already owned (closed on drop).
    pub fds: Vec<OwnedFd>,
    /// The packet or its descriptors did not fit and were cut.
    pub truncated: bool,
}

/// A connected `SOCK_SEQPACKET` socket: message boundaries are kept, each `send` is one
/// `recv` on the other side.
pub struct SeqPacket {
    fd: AsyncFd<OwnedFd>,
}

impl SeqPacket {
    /// Connects to a listening socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        let fd = new_socket()?;
        let addr = UnixAddr::new(path.as_ref()).map_err(io::Error::from)?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", path.as_ref().display()),
            )
        })?;
        Self::from_owned(fd)
    }

    /// A connected pair, for tests.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok((Self::from_owned(a)?, Self::from_owned(b)?))
    }

    fn from_owned(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            fd: register(fd, Interest::READABLE | Interest::WRITABLE)?,
        })
    }

    /// Sends one packet with `fds` attached.
    pub async fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        loop {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|inner| {
                let iov = [IoSlice::new(bytes)];
                let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() {
                    &[]
                } else {
                    &[ControlMessage::ScmRights(&raw)]
                };
                sendmsg::<()>(inner.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(io::Error::from)
            });
            match res {
                Ok(Ok(n)) if n == bytes.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(io::Error::other(format!(
                        "short seqpacket send: {n} of {} bytes",
                        bytes.len()
                    )));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one packet into `buf`. `len == 0` with no descriptors means the peer
    /// closed the connection.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| recv_packet(inner.as_raw_fd(), buf)) {
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: the kernel installed `r` in our descriptor table for this
                // message (SCM_RIGHTS); nothing else refers to it, so we own it.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    Ok(Received {
        len: msg.bytes,
        fds,
        truncated,
    })
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl fmt::Debug for SeqPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqPacket(fd {})", self.fd.get_ref().as_raw_fd())
    }
}

/// A listening `SOCK_SEQPACKET` socket.
pub struct SeqPacketListener {
    fd: AsyncFd<OwnedFd>,
}

impl SeqPacketListener {
    /// Binds `path`, replacing a stale socket file left by an earlier run.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        let fd = new_socket()?;
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", path.display()),
            )
        })?;
        listen(&fd, Backlog::new(64).map_err(io::Error::from)?).map_err(io::Error::from)?;
        Ok(Self {
            fd: register(fd, Interest::READABLE)?,
        })
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<SeqPacket> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|inner| {
                accept4(
                    inner.as_raw_fd(),
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                )
                .map_err(io::Error::from)
            });
            match res {
                Ok(Ok(raw)) => {
                    // SAFETY: accept4 returned a new descriptor that only we refer to.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    return SeqPacket::from_owned(fd);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

impl fmt::Debug for SeqPacketListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqPacketListener(fd {})", self.fd.get_ref().as_raw_fd())
    }
}

fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd's descriptor is valid, stays open until the OwnedFd is dropped
    // (which only the AsyncFd can do now) and `as_raw_fd` always returns the same value.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

fn new_socket() -> io::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}
