//! One HBONE tunnel as a byte stream: an HTTP/2 CONNECT stream behind AsyncRead/AsyncWrite.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest slice handed to HTTP/2 in one write. Kept under glibc's 128 KiB mmap threshold so
/// the per-write copy is served from the heap instead of fresh pages.
const MAX_WRITE_CHUNK: usize = 64 * 1024;

/// A tunnelled byte stream. Shutting down the write side sends END_STREAM (half-close);
/// dropping it before both sides finished resets the HTTP/2 stream.
pub struct H2Stream {
    pub(crate) send: SendStream<Bytes>,
    pub(crate) recv: RecvStream,
    /// Received but not yet read.
    pub(crate) pending: Bytes,
    /// Staging for outgoing data. Frames handed to HTTP/2 are split off it; once they are
    /// written and dropped, `reserve` reclaims the same allocation instead of a new one.
    staging: BytesMut,
    pub(crate) write_closed: bool,
    /// Held for accounting (e.g. a pool's stream count); released on drop.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id())
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            staging: BytesMut::new(),
            write_closed: false,
            _guard: None,
        }
    }

    pub(crate) fn with_guard(mut self, guard: Box<dyn Send + Sync>) -> Self {
        self._guard = Some(guard);
        self
    }
}

pub(crate) fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    let kind = if e.is_reset() || e.is_go_away() || e.is_remote() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                // Window credit goes back only as the reader consumes: real backpressure.
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tunnel write side is shut down",
            )));
        }
        let want = buf.len().min(MAX_WRITE_CHUNK);
        loop {
            // Capacity left over from an earlier reservation is usable now; `poll_capacity`
            // only wakes on *new* capacity, so it must not be the first thing we ask.
            let mut available = self.send.capacity();
            if available == 0 {
                // A reservation is granted at once from the connection's window when it
                // has room, so ask again before waiting.
                self.send.reserve_capacity(want);
                available = self.send.capacity();
            }
            if available > 0 {
                let n = available.min(want);
                let this = &mut *self;
                this.staging.reserve(n);
                this.staging.extend_from_slice(&buf[..n]);
                let frame = this.staging.split().freeze();
                this.send.send_data(frame, false).map_err(h2_to_io)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "tunnel stream was closed by the peer",
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes frames as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            self.send.reserve_capacity(0);
            self.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
