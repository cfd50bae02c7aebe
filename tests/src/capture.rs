//! Packet capture on the bridge, for assertions about what crosses the wire between
//! nodes.
//!
//! An `AF_PACKET`/`ETH_P_ALL` socket created in the wire namespace sees every frame on
//! every bridge port. A forwarded frame shows up twice there (received on one port,
//! sent on another), and a broadcast a third time on the bridge device itself; only the
//! receptions on ports are kept, so each frame on the wire is recorded exactly once.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{LinkAddr, SockProtocol, recvfrom};
use socket2::{Domain, Protocol, Socket, Type};

use crate::frames::{Frame, Frames};
use crate::{LabError, Namespace};

/// `sll_pkttype` of a frame this host sent (see `packet(7)`).
const PACKET_OUTGOING: u8 = 4;
/// Big enough for a GSO super-frame, which veths pass along unsegmented.
const MAX_FRAME: usize = 256 * 1024;
/// How often the recording thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(20);

/// A running capture. Frames are recorded from the moment `Lab::capture` returns;
/// [`stop`](Self::stop) returns them. Stop only after the traffic of interest has been
/// seen by its receiver: a frame still queued in a sender's socket is not on the wire.
/// Its socket keeps the wire namespace alive until it is stopped or dropped.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<Vec<Frame>>>>,
}

impl Capture {
    pub(crate) fn start(wire: &Namespace, bridge: u32) -> Result<Self, LabError> {
        let protocol = Protocol::from(SockProtocol::EthAll as i32);
        let socket = wire
            .socket(Domain::PACKET, Type::RAW, Some(protocol))
            .map_err(LabError::Capture)?;
        // Bursts of bulk traffic must not overflow the queue between two reads.
        socket
            .set_recv_buffer_size(16 << 20)
            .map_err(LabError::Capture)?;
        socket
            .set_read_timeout(Some(POLL))
            .map_err(LabError::Capture)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("lab-capture".to_owned())
            .spawn(move || record(&socket, bridge, &flag))
            .map_err(LabError::Capture)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops recording and returns every frame seen, after draining what the kernel
    /// had already queued.
    pub fn stop(mut self) -> Result<Frames, LabError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Frames, LabError> {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else {
            return Ok(Frames::default());
        };
        let frames = thread
            .join()
            .map_err(|_| LabError::Capture(io::Error::other("capture thread panicked")))?
            .map_err(LabError::Capture)?;
        Ok(Frames::new(frames))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish().ok();
    }
}

fn record(socket: &Socket, bridge: u32, stop: &AtomicBool) -> io::Result<Vec<Frame>> {
    let started = Instant::now();
    let mut frames = Vec::new();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut draining = false;
    loop {
        if !draining && stop.load(Ordering::Acquire) {
            socket.set_nonblocking(true)?;
            draining = true;
        }
        match recvfrom::<LinkAddr>(socket.as_raw_fd(), &mut buf) {
            Ok((len, Some(from))) => {
                let port = from.ifindex() as u32;
                if from.pkttype() != PACKET_OUTGOING && port != bridge {
                    frames.push(Frame {
                        interface: port,
                        at: started.elapsed(),
                        data: buf[..len].to_vec(),
                    });
                }
            }
            Ok((_, None)) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if draining => return Ok(frames),
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
