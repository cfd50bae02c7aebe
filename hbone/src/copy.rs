//! The byte pump between two streams: both directions at once, half-close aware, with
//! buffers that start small and grow under bulk load. A direction waiting for data at
//! the initial size holds no buffer at all, so an idle connection costs no copy buffers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffer size for a new connection: small, since most connections are idle or chatty.
pub const INITIAL_BUFFER: usize = 1024;
/// Largest buffer a bulk transfer grows to (in [`copy_tunnel`], the largest read handed to
/// HTTP/2 at once). Under bulk load each buffer's worth costs a read and a write (through a
/// tunnel: an HTTP/2 frame and a `writev` of its TLS records), so bigger means fewer of
/// each. Buffers above glibc's default mmap threshold (128 KiB) come from the heap once the
/// process raises it (`runtime::hold_freed_heap_until_trim`, as ztunnel does), or once
/// glibc's dynamic threshold adapts after the first free.
pub const MAX_BUFFER: usize = 256 * 1024;
/// Consecutive reads that fill the buffer before it grows (4x per step).
pub(crate) const GROW_AFTER_FULL_READS: u8 = 2;

/// Bytes moved in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// A copy failed; carries what was moved before the failure so metrics stay exact.
#[derive(Debug, thiserror::Error)]
#[error("copy failed after {} bytes a->b and {} bytes b->a: {source}", transferred.a_to_b, transferred.b_to_a)]
pub struct CopyError {
    pub transferred: Transferred,
    #[source]
    pub source: io::Error,
}

/// Copies `a -> b` and `b -> a` until both sides reached EOF. When one side finishes
/// sending, the other's write half is shut down (half-close) and the reverse direction
/// keeps going.
pub fn copy_bidirectional<'a, A, B>(a: &'a mut A, b: &'a mut B) -> Bidirectional<'a, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    Bidirectional {
        a,
        b,
        a_to_b: Pump::new(),
        b_to_a: Pump::new(),
    }
}

/// A copy in progress: what it has moved so far.
pub trait Progress {
    fn transferred(&self) -> Transferred;
}

/// Runs `copy` until it ends or `stop` resolves, whichever comes first. A stopped copy
/// fails with `stop`'s error and the bytes it had moved (so metrics stay exact); the
/// caller then drops both streams. This is how a connection that policy no longer allows
/// is cut off.
pub async fn copy_until<C, S>(copy: C, stop: S) -> Result<Transferred, CopyError>
where
    C: Future<Output = Result<Transferred, CopyError>> + Progress,
    S: Future<Output = io::Error>,
{
    let mut copy = std::pin::pin!(copy);
    let mut stop = std::pin::pin!(stop);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(outcome) = copy.as_mut().poll(cx) {
            return Poll::Ready(outcome);
        }
        match stop.as_mut().poll(cx) {
            Poll::Ready(source) => Poll::Ready(Err(CopyError {
                transferred: copy.transferred(),
                source,
            })),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The future of [`copy_bidirectional`].
pub struct Bidirectional<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Pump,
    b_to_a: Pump,
}

impl<A: ?Sized, B: ?Sized> std::fmt::Debug for Bidirectional<'_, A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bidirectional")
            .field("transferred", &self.transferred())
            .finish_non_exhaustive()
    }
}

impl<A: ?Sized, B: ?Sized> Progress for Bidirectional<'_, A, B> {
    fn transferred(&self) -> Transferred {
        Transferred {
            a_to_b: self.a_to_b.total,
            b_to_a: self.b_to_a.total,
        }
    }
}

impl<A, B> Future for Bidirectional<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = Result<Transferred, CopyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let ab = this.a_to_b.poll_pump(cx, &mut *this.a, &mut *this.b);
        let ba = this.b_to_a.poll_pump(cx, &mut *this.b, &mut *this.a);
        let transferred = Transferred {
            a_to_b: this.a_to_b.total,
            b_to_a: this.b_to_a.total,
        };
        match (ab, ba) {
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

/// One direction of the copy.
struct Pump {
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    total: u64,
    full_reads: u8,
    read_eof: bool,
    need_flush: bool,
    done: bool,
}

impl Pump {
    fn new() -> Self {
        Pump {
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            total: 0,
            full_reads: 0,
            read_eof: false,
            need_flush: false,
            done: false,
        }
    }

    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.pos < self.filled {
                let n = ready!(
                    Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.filled])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "peer accepted no bytes",
                    )));
                }
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.read_eof {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                // Give the memory back; this direction is over.
                self.buf = Vec::new();
                return Poll::Ready(Ok(()));
            }
            self.pos = 0;
            self.filled = 0;
            self.grow_if_needed();
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    if self.need_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    // Waiting at the initial size (an idle or chatty connection, the
                    // common case): hold no buffer meanwhile. A grown one (bulk) is kept.
                    if self.buf.len() <= INITIAL_BUFFER {
                        self.buf = Vec::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.read_eof = true;
                    } else {
                        if n == self.buf.len() {
                            self.full_reads = self.full_reads.saturating_add(1);
                        } else {
                            self.full_reads = 0;
                        }
                        self.filled = n;
                    }
                }
            }
        }
    }

    fn grow_if_needed(&mut self) {
        let current = self.buf.len().max(INITIAL_BUFFER);
        if self.full_reads >= GROW_AFTER_FULL_READS && current < MAX_BUFFER {
            self.buf = vec![0; (current * 4).min(MAX_BUFFER)];
            self.full_reads = 0;
        } else if self.buf.is_empty() {
            self.buf = vec![0; INITIAL_BUFFER];
        }
    }

    #[cfg(test)]
    fn buffer_len(&self) -> usize {
        self.buf.len()
    }
}

mod tunnel;

pub use tunnel::{CopyTunnel, copy_tunnel};

#[cfg(test)]
mod tests;
