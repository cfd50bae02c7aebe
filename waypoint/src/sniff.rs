//! Which protocol a tunnel carries, from its first bytes: the HTTP/2 connection preface
//! (prior-knowledge HTTP/2, gRPC included), an HTTP/1.x request line, or anything else
//! (opaque TCP). The bytes read to decide are replayed by [`Rewind`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest request line looked at for ` HTTP/1.x`: beyond it the stream is HTTP only if
/// its method and target look like one, which hyper then checks in full.
const MAX_PEEK: usize = 8 * 1024;

/// What a tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tcp,
}

/// Reads from `io` until the protocol is known. A client that sends nothing within
/// `wait` (a server-first protocol) is opaque TCP, as is one that closes at once.
pub async fn detect<IO: AsyncRead + Unpin>(
    io: &mut IO,
    wait: Duration,
) -> io::Result<(Protocol, Bytes)> {
    let mut seen = BytesMut::with_capacity(256);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(protocol) = classify(&seen) {
            return Ok((protocol, seen.freeze()));
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut seen)).await;
        match read {
            Ok(Ok(0)) | Err(_) => return Ok((Protocol::Tcp, seen.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
        if seen.len() >= MAX_PEEK {
            return Ok((Protocol::Tcp, seen.freeze()));
        }
    }
}

/// The protocol of a stream starting with `seen`, or `None` while undecided.
pub fn classify(seen: &[u8]) -> Option<Protocol> {
    if seen.is_empty() {
        return None;
    }
    let preface = seen.len().min(H2_PREFACE.len());
    if seen[..preface] == H2_PREFACE[..preface] {
        return (seen.len() >= H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    // `METHOD SP request-target SP HTTP/1.x CRLF`: the method is a token.
    let method_len = seen.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == seen.len() {
        return (method_len > 32).then_some(Protocol::Tcp);
    }
    if method_len == 0 || seen[method_len] != b' ' {
        return Some(Protocol::Tcp);
    }
    let Some(line_end) = seen.iter().position(|b| *b == b'\n') else {
        // A request line still arriving: HTTP so far unless it holds control bytes.
        return seen[method_len..]
            .iter()
            .any(|b| b.is_ascii_control() && *b != b'\r')
            .then_some(Protocol::Tcp);
    };
    let line = &seen[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    Some(if http1 {
        Protocol::Http1
    } else {
        Protocol::Tcp
    })
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `inner`, with `prefix` read first.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(prefix: Bytes, inner: IO) -> Self {
        Rewind { prefix, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn first_bytes_decide_the_protocol() {
        let cases: &[(&[u8], Option<Protocol>)] = &[
            (b"", None),
            (b"PRI * HTTP/2", None),
            (H2_PREFACE, Some(Protocol::Http2)),
            (b"GET", None),
            (b"GET /index.html HT", None),
            (
                b"GET /index.html HTTP/1.1\r\nHost: x\r\n",
                Some(Protocol::Http1),
            ),
            (b"POST /api HTTP/1.0\n", Some(Protocol::Http1)),
            (b"GET /index.html HTTP/2.0\r\n", Some(Protocol::Tcp)),
            (b"\x16\x03\x01\x02\x00", Some(Protocol::Tcp)),
            (b"hello there\n", Some(Protocol::Tcp)),
            (b"PRX", None),
            (b"PRX\x00", Some(Protocol::Tcp)),
            (b"GET /\x00", Some(Protocol::Tcp)),
        ];
        for (seen, want) in cases {
            assert_eq!(classify(seen), *want, "{:?}", String::from_utf8_lossy(seen));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn detection_reads_across_writes_and_rewinds_what_it_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HT").await.unwrap();
        let detect = tokio::spawn(async move {
            let (protocol, seen) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
            let mut replayed = Vec::new();
            let mut rewound = Rewind::new(seen, server);
            let mut buf = [0; 64];
            let n = rewound.read(&mut buf).await.unwrap();
            replayed.extend_from_slice(&buf[..n]);
            (protocol, replayed)
        });
        tokio::task::yield_now().await;
        client.write_all(b"TP/1.1\r\n").await.unwrap();
        let (protocol, replayed) = detect.await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(replayed, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_tcp_after_the_wait() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (protocol, seen) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
        assert_eq!((protocol, seen.len()), (Protocol::Tcp, 0));
    }
}
