//! Request and response bodies: a request body is buffered (up to a bound) so that it can
//! be sent again on a retry or to a mirror; a larger one streams through once. Response
//! bodies are counted as they pass and report when they end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::forward::{Body, BoxError};
use crate::upstream::RequestPermit;

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
    if data.is_empty() && trailers.is_none() {
        // Zero-sized: boxing it allocates nothing (most requests have no body).
        return Empty::new().map_err(|never| match never {}).boxed_unsync();
    }
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

/// A response body on its way to the client: the waypoint's own reply, or an upstream's
/// with the request's slot in its cluster's pool (`http2MaxRequests`), held until the body
/// is dropped. Not boxed: a request's response costs one allocation, its [`Metered`].
pub enum ResponseBody {
    Local(Body),
    Upstream {
        body: Incoming,
        permit: RequestPermit,
    },
}

impl From<Body> for ResponseBody {
    fn from(body: Body) -> Self {
        ResponseBody::Local(body)
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Local(_) => f.write_str("ResponseBody::Local"),
            ResponseBody::Upstream { permit, .. } => f
                .debug_struct("ResponseBody::Upstream")
                .field("permit", permit)
                .finish_non_exhaustive(),
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Local(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Upstream { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(body) => body.is_end_stream(),
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(body) => body.size_hint(),
            ResponseBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// A response body that counts its bytes and calls `on_end` with the count (and the
/// trailers, if it had some) once it is over: read to its end, failed, or dropped by the
/// client.
pub struct Metered<F: FnOnce(u64, Option<&HeaderMap>)> {
    inner: ResponseBody,
    bytes: u64,
    trailers: Option<HeaderMap>,
    on_end: Option<F>,
}

impl<F: FnOnce(u64, Option<&HeaderMap>)> std::fmt::Debug for Metered<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("inner", &self.inner)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<F: FnOnce(u64, Option<&HeaderMap>)> Metered<F> {
    pub fn new(inner: ResponseBody, on_end: F) -> Self {
        Metered {
            inner,
            bytes: 0,
            trailers: None,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes, self.trailers.as_ref());
        }
    }
}

impl<F: FnOnce(u64, Option<&HeaderMap>)> Drop for Metered<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<F: FnOnce(u64, Option<&HeaderMap>) + Unpin> HttpBody for Metered<F> {
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

#[cfg(test)]
mod tests;
