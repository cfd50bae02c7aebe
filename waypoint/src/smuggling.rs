//! HTTP/1.1 request smuggling: a request with both `Content-Length` and
//! `Transfer-Encoding` is framed one way by some parsers and the other way by others (RFC
//! 9112 section 6.1: a server ought to handle it as an error). Envoy refuses it with `400`.
//! hyper accepts it: it drops the `Content-Length`, reads the chunked body and closes the
//! connection afterwards, and the service never learns that there was a conflict.
//!
//! So [`Watch`] looks at the bytes hyper reads: it follows the framing of each request on
//! the connection (head, then a fixed-length or chunked body) and notes, in order, which
//! request heads carry both. hyper hands requests to the service in the same order, and
//! the service asks [`Heads::next`] about each. The watch stops (and every later request
//! passes) where hyper stops reading requests anyway: after a head it rejects or one that
//! makes it close the connection, and at an upgrade.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::forward::Body;
use crate::inbound::MAX_HEADER_BYTES;

/// What the watch saw in a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Nothing wrong (or not looked at).
    Ok,
    /// `Content-Length` with `Transfer-Encoding`.
    LengthAndEncoding,
}

/// The verdicts on a connection's request heads, in order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Heads(Arc<Mutex<VecDeque<Head>>>);

impl Heads {
    /// The verdict on the next request hyper hands over.
    pub fn next(&self) -> Head {
        self.lock().pop_front().unwrap_or(Head::Ok)
    }

    fn push(&self, head: Head) {
        self.lock().push_back(head);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Head>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Envoy's answer to a request it will not frame: `400`, and the connection closes.
pub fn refusal() -> Response<Body> {
    let mut response = crate::proxy::local(StatusCode::BAD_REQUEST, "Bad Request");
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `io` as hyper reads it, with the verdicts on its request heads.
pub fn watch<IO>(io: IO) -> (Watch<IO>, Heads) {
    let heads = Heads::default();
    let watch = Watch {
        inner: io,
        scanner: Scanner::new(heads.clone()),
    };
    (watch, heads)
}

/// An HTTP/1.1 server's byte stream, its requests' framing followed as they are read.
#[derive(Debug)]
pub struct Watch<IO> {
    inner: IO,
    scanner: Scanner,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.scanner.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watch<IO> {
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

/// Where the scanner is in the stream of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request head (or the empty lines before one).
    Head,
    /// In a fixed-length body: bytes left.
    Body(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// In a chunk's data: bytes left.
    ChunkData(u64),
    /// At the line break after a chunk's data.
    ChunkEnd,
    /// In the trailer section of a chunked body.
    Trailers,
    /// Not watching any more.
    Off,
}

/// What the head being read says about its body.
#[derive(Debug, Default)]
struct Framing {
    request_line: bool,
    bytes: usize,
    length: Option<u64>,
    /// Any `Content-Length` line, valid or not.
    length_seen: bool,
    /// An invalid `Content-Length`, or two different ones.
    length_invalid: bool,
    /// Set by the last `Transfer-Encoding` line: whether it ends in `chunked`.
    encoding: Option<bool>,
    /// An upgrade or CONNECT: what follows may not be HTTP.
    upgrade: bool,
}

#[derive(Debug)]
struct Scanner {
    state: State,
    /// The line being read.
    line: Vec<u8>,
    head: Framing,
    heads: Heads,
}

impl Scanner {
    fn new(heads: Heads) -> Self {
        Scanner {
            state: State::Head,
            line: Vec::new(),
            head: Framing::default(),
            heads,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(left) | State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = match (self.state, left - n) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    match bytes.iter().position(|b| *b == b'\n') {
                        // A line read whole is looked at where it is.
                        Some(end) if self.line.is_empty() => {
                            let line = &bytes[..end];
                            bytes = &bytes[end + 1..];
                            self.state = self.on_line(line.strip_suffix(b"\r").unwrap_or(line));
                        }
                        Some(end) => {
                            self.line.extend_from_slice(&bytes[..end]);
                            bytes = &bytes[end + 1..];
                            let mut line = std::mem::take(&mut self.line);
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                            self.state = self.on_line(&line);
                            // Keep the allocation for the next line.
                            line.clear();
                            self.line = line;
                        }
                        None => {
                            self.line.extend_from_slice(bytes);
                            bytes = &[];
                            // Longer than hyper accepts: it answers 431 itself.
                            if self.line.len() > MAX_HEADER_BYTES {
                                self.state = State::Off;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The state after a complete `line` (its line break removed).
    fn on_line(&mut self, line: &[u8]) -> State {
        match self.state {
            State::Head => self.on_head_line(line),
            State::ChunkSize => {
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                }
            }
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Off,
        }
    }

    fn on_head_line(&mut self, line: &[u8]) -> State {
        let head = &mut self.head;
        head.bytes += line.len() + 2;
        if head.bytes > MAX_HEADER_BYTES {
            return State::Off;
        }
        if !head.request_line {
            // Empty lines before a request line are skipped, as hyper does.
            if !line.is_empty() {
                head.request_line = true;
                head.upgrade = line.starts_with(b"CONNECT ");
            }
            return State::Head;
        }
        if line.is_empty() {
            return self.end_of_head();
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            // hyper refuses the head.
            return State::Off;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            head.length_seen = true;
            let length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (length, head.length) {
                (Some(n), None) => head.length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => head.length_invalid = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            head.encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        }
        State::Head
    }

    fn end_of_head(&mut self) -> State {
        let head = std::mem::take(&mut self.head);
        if head.length_seen && head.encoding.is_some() {
            self.heads.push(Head::LengthAndEncoding);
            // hyper closes the connection after this request.
            return State::Off;
        }
        self.heads.push(Head::Ok);
        if head.upgrade || head.length_invalid {
            // What follows is another protocol, or hyper refuses the head.
            return State::Off;
        }
        match (head.encoding, head.length) {
            (Some(true), _) => State::ChunkSize,
            // Not chunked: hyper refuses the head.
            (Some(false), _) => State::Off,
            (None, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts on `stream`, fed in pieces of `step` bytes.
    fn verdicts(stream: &[u8], step: usize) -> Vec<Head> {
        let heads = Heads::default();
        let mut scanner = Scanner::new(heads.clone());
        for piece in stream.chunks(step) {
            scanner.feed(piece);
        }
        heads.lock().iter().copied().collect()
    }

    #[test]
    fn heads_are_found_across_bodies_of_either_framing() {
        let stream: &[u8] = b"\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n\
            POST /a HTTP/1.1\r\nContent-Length: 28\r\n\r\n\
            GET /x HTTP/1.1\r\nhost: b\r\n\r\n\
            POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
            10;ext=1\r\nGET /y HTTP/1.0\n\r\n3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n\
            POST /c HTTP/1.1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n\
            0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        for step in [1, 7, stream.len()] {
            assert_eq!(
                verdicts(stream, step),
                [Head::Ok, Head::Ok, Head::Ok, Head::LengthAndEncoding],
                "fed {step} bytes at a time"
            );
        }
    }

    #[test]
    fn either_order_of_the_two_headers_is_caught() {
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: x\r\n\r\n",
        ] {
            assert_eq!(verdicts(head, 5), [Head::LengthAndEncoding]);
        }
    }

    #[test]
    fn the_watch_stops_where_hyper_stops_reading_requests() {
        let cases: &[&[u8]] = &[
            // An upgrade: what follows is another protocol.
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\n",
            // Heads hyper refuses.
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        ];
        for stream in cases {
            let mut more = stream.to_vec();
            more.extend_from_slice(
                b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            assert!(
                !verdicts(&more, 3).contains(&Head::LengthAndEncoding),
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
        let oversized = [b'a'; MAX_HEADER_BYTES + 1];
        let mut scanner = Scanner::new(Heads::default());
        scanner.feed(b"GET / HTTP/1.1\r\nx: ");
        scanner.feed(&oversized);
        assert_eq!(scanner.state, State::Off);
    }

    #[test]
    fn requests_are_answered_in_order() {
        let heads = Heads::default();
        heads.push(Head::Ok);
        heads.push(Head::LengthAndEncoding);
        assert_eq!(heads.next(), Head::Ok);
        assert_eq!(heads.next(), Head::LengthAndEncoding);
        assert_eq!(heads.next(), Head::Ok, "unknown heads pass");
    }
}
