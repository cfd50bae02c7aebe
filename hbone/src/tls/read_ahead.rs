//! Read-ahead under TLS. rustls pulls ciphertext in reads of at most a few KiB (one
//! record or less), which under bulk load means several `recv` calls per record. This
//! wrapper fetches whatever the socket holds, up to [`READ_AHEAD`], in one call and hands
//! it out from memory. Writes pass straight through (vectored when the socket is).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes fetched per socket read.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

pub struct ReadAhead<IO> {
    io: IO,
    /// Allocated on first use: a session that never reads costs nothing.
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl<IO> ReadAhead<IO> {
    pub(crate) fn new(io: IO) -> Self {
        ReadAhead {
            io,
            buf: Box::default(),
            pos: 0,
            filled: 0,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.filled {
            // Nothing buffered. A caller asking for at least as much reads directly.
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = vec![0; READ_AHEAD].into_boxed_slice();
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            this.pos = 0;
            this.filled = rb.filled().len();
        }
        let n = (this.filled - this.pos).min(out.remaining());
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn hands_out_every_byte_in_order_whatever_the_read_sizes() {
        let (mut writer, reader) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let sender = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
        });
        let mut reader = ReadAhead::new(reader);
        let mut got = Vec::new();
        // Mix tiny reads, record-sized reads and reads larger than the read-ahead.
        for size in [1usize, 5, 4096, 16 * 1024 + 5, READ_AHEAD + 1]
            .iter()
            .cycle()
        {
            let mut chunk = vec![0u8; *size];
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.len() == expected.len() {
                sender.await.unwrap();
                assert_eq!(
                    reader.read(&mut chunk).await.unwrap(),
                    0,
                    "EOF after the data"
                );
                break;
            }
        }
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut a = ReadAhead::new(a);
        a.write_all(b"hello").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
    }
}
