//! Request and response bodies: a request body is buffered (up to a bound) so that it can
//! be sent again on a retry or to a mirror; a larger one streams through once. Response
//! bodies are counted as they pass and report when they end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::forward::{Body, BoxError};

/// Request bodies up to this size are kept for retries and mirrors (Envoy's default
/// buffer limit per request is 1 MiB too).
pub const MAX_BUFFERED: usize = 1 << 20;

/// A request body, read as far as needed.
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body (and trailers): it can be sent any number of times.
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Too large to keep: what was read, then the rest, sent once.
    Streaming { prefix: Bytes, rest: Incoming },
}

impl RequestBody {
    /// Reads `body` until its end or until more than `limit` bytes arrived.
    pub async fn read(mut body: Incoming, limit: usize) -> Result<RequestBody, hyper::Error> {
        let mut data = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() > limit {
                        return Ok(RequestBody::Streaming {
                            prefix: data.freeze(),
                            rest: body,
                        });
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return Ok(RequestBody::Buffered {
                            data: data.freeze(),
                            trailers: Some(trailers),
                        });
                    }
                }
            }
        }
        Ok(RequestBody::Buffered {
            data: data.freeze(),
            trailers: None,
        })
    }

    /// Body bytes known so far (all of them when buffered).
    pub fn len(&self) -> usize {
        match self {
            RequestBody::Buffered { data, .. } => data.len(),
            RequestBody::Streaming { prefix, .. } => prefix.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy to send, when the body is buffered.
    pub fn replay(&self) -> Option<Body> {
        match self {
            RequestBody::Buffered { data, trailers } => {
                Some(buffered(data.clone(), trailers.clone()))
            }
            RequestBody::Streaming { .. } => None,
        }
    }

    /// A second buffered body with the same bytes (for a mirror); `None` when streaming.
    pub fn copy(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Buffered { data, trailers } => Some(RequestBody::Buffered {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            RequestBody::Streaming { .. } => None,
        }
    }

    /// The body to send, consuming it.
    pub fn into_body(self) -> Body {
        match self {
            RequestBody::Buffered { data, trailers } => buffered(data, trailers),
            RequestBody::Streaming { prefix, rest } => Prefixed {
                prefix: Some(prefix),
                rest,
            }
            .map_err(|e| Box::new(e) as BoxError)
            .boxed_unsync(),
        }
    }
}

fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Body {
    let full = Full::new(data).map_err(|never| match never {});
    match trailers {
        Some(t) => full
            .with_trailers(async move { Some(Ok(t)) })
            .boxed_unsync(),
        None => full.boxed_unsync(),
    }
}

/// A body of its own bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What was read before, then the rest of the request body.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

/// What [`Metered`] calls once the body is over: with its byte count and its trailers
/// (if it had some).
type OnEnd = Box<dyn FnOnce(u64, Option<&HeaderMap>) + Send>;

/// A response body that counts its bytes and calls `on_end` with the count (and the
/// trailers) once it is over: read to its end, failed, or dropped by the client.
pub struct Metered {
    inner: Body,
    bytes: u64,
    trailers: Option<HeaderMap>,
    on_end: Option<OnEnd>,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Metered {
    pub fn new(inner: Body, on_end: impl FnOnce(u64, Option<&HeaderMap>) + Send + 'static) -> Self {
        Metered {
            inner,
            bytes: 0,
            trailers: None,
            on_end: Some(Box::new(on_end)),
        }
    }

    fn finish(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes, self.trailers.as_ref());
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.trailers = Some(trailers.clone());
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `inner`, keeping `guard` alive until the body is dropped (a request's slot in its
/// cluster's connection pool lasts as long as its response).
pub fn guarded(inner: Body, guard: impl Send + 'static) -> Body {
    Guarded {
        inner,
        _guard: Box::new(guard),
    }
    .boxed_unsync()
}

struct Guarded {
    inner: Body,
    _guard: Box<dyn Send>,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
