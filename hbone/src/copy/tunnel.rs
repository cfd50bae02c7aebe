//! The byte pump between a plain stream and an HBONE tunnel, without the intermediate
//! copies of the generic pump: data read from the stream is handed to HTTP/2 as owned
//! `Bytes`, and DATA frames received from the tunnel are written straight to the stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{CopyError, GROW_AFTER_FULL_READS, INITIAL_BUFFER, MAX_BUFFER, Transferred};
use crate::stream::{H2Stream, h2_to_io};

/// Copies `stream -> tunnel` and `tunnel -> stream` until both directions reached EOF, with
/// half-close, like [`super::copy_bidirectional`]. `a_to_b` counts stream -> tunnel.
pub fn copy_tunnel<'a, S>(stream: &'a mut S, tunnel: &'a mut H2Stream) -> CopyTunnel<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    CopyTunnel {
        stream,
        tunnel,
        into: IntoTunnel::new(),
        from: FromTunnel::default(),
    }
}

/// The future of [`copy_tunnel`].
pub struct CopyTunnel<'a, S: ?Sized> {
    stream: &'a mut S,
    tunnel: &'a mut H2Stream,
    into: IntoTunnel,
    from: FromTunnel,
}

impl<S: ?Sized> std::fmt::Debug for CopyTunnel<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::Progress as _;
        f.debug_struct("CopyTunnel")
            .field("transferred", &self.transferred())
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized> super::Progress for CopyTunnel<'_, S> {
    fn transferred(&self) -> Transferred {
        Transferred {
            a_to_b: self.into.total,
            b_to_a: self.from.total,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + ?Sized> Future for CopyTunnel<'_, S> {
    type Output = Result<Transferred, CopyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let into = this.into.poll_pump(cx, &mut *this.stream, this.tunnel);
        let from = this.from.poll_pump(cx, this.tunnel, &mut *this.stream);
        let transferred = Transferred {
            a_to_b: this.into.total,
            b_to_a: this.from.total,
        };
        match (into, from) {
            (Poll::Ready(Err(source)), _) | (_, Poll::Ready(Err(source))) => {
                Poll::Ready(Err(CopyError {
                    transferred,
                    source,
                }))
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(transferred)),
            _ => Poll::Pending,
        }
    }
}

/// stream -> tunnel: read into a reusable buffer, send what was read as one owned chunk.
struct IntoTunnel {
    buf: BytesMut,
    chunk: Bytes,
    read_size: usize,
    full_reads: u8,
    total: u64,
    read_eof: bool,
    done: bool,
}

impl IntoTunnel {
    fn new() -> Self {
        IntoTunnel {
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            read_size: INITIAL_BUFFER,
            full_reads: 0,
            total: 0,
            read_eof: false,
            done: false,
        }
    }

    fn poll_pump<R>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        tunnel: &mut H2Stream,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while !self.chunk.is_empty() {
                let available = tunnel.send.capacity();
                if available == 0 {
                    tunnel.send.reserve_capacity(self.chunk.len());
                    match ready!(tunnel.send.poll_capacity(cx)) {
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                        None => return Poll::Ready(Err(closed_by_peer())),
                    }
                }
                let frame = self.chunk.split_to(available.min(self.chunk.len()));
                let n = frame.len();
                tunnel.send.send_data(frame, false).map_err(h2_to_io)?;
                self.total += n as u64;
            }
            if self.read_eof {
                ready!(Pin::new(&mut *tunnel).poll_shutdown(cx))?;
                self.done = true;
                self.buf = BytesMut::new();
                return Poll::Ready(Ok(()));
            }
            // Once the previous chunks were written out and dropped, this reclaims the
            // same allocation.
            self.buf.reserve(self.read_size);
            let n = match tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, &mut self.buf) {
                Poll::Ready(read) => read?,
                Poll::Pending => {
                    // Waiting at the initial size (an idle or chatty connection, the
                    // common case): hold no buffer meanwhile. Bulk reads keep theirs.
                    if self.read_size == INITIAL_BUFFER && self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            };
            if n == 0 {
                self.read_eof = true;
                continue;
            }
            if n >= self.read_size {
                self.full_reads = self.full_reads.saturating_add(1);
                if self.full_reads >= GROW_AFTER_FULL_READS && self.read_size < MAX_BUFFER {
                    self.read_size = (self.read_size * 4).min(MAX_BUFFER);
                    self.full_reads = 0;
                }
            } else {
                self.full_reads = 0;
            }
            self.chunk = self.buf.split().freeze();
        }
    }
}

/// tunnel -> stream: write each received DATA frame as it is.
#[derive(Default)]
struct FromTunnel {
    total: u64,
    eof: bool,
    need_flush: bool,
    done: bool,
}

impl FromTunnel {
    fn poll_pump<W>(
        &mut self,
        cx: &mut Context<'_>,
        tunnel: &mut H2Stream,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while !tunnel.pending.is_empty() {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &tunnel.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "peer accepted no bytes",
                    )));
                }
                tunnel.pending.advance(n);
                // Window credit goes back only once the bytes left: real backpressure.
                let _ = tunnel.recv.flow_control().release_capacity(n);
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match tunnel.recv.poll_data(cx) {
                Poll::Pending => {
                    if self.need_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => self.eof = true,
                Poll::Ready(Some(Ok(data))) => tunnel.pending = data,
                Poll::Ready(Some(Err(e))) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    self.eof = true
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
    }
}

fn closed_by_peer() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "tunnel stream was closed by the peer",
    )
}
