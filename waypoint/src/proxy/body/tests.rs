use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;

use super::*;

/// What `on_end` was called with, each time.
type Calls = Arc<Mutex<Vec<(u64, bool)>>>;

fn metered(body: Body) -> (Metered<impl FnOnce(u64, Option<&HeaderMap>) + Unpin>, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let metered = Metered::new(body.into(), move |bytes, trailers| {
        seen.lock().unwrap().push((bytes, trailers.is_some()));
    });
    (metered, calls)
}

#[tokio::test]
async fn a_body_read_to_its_end_reports_its_bytes_and_trailers_once() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let (body, calls) = metered(buffered(Bytes::from_static(b"hello"), Some(trailers)));
    let collected = body.collect().await.unwrap();
    assert!(collected.trailers().is_some());
    assert_eq!(collected.to_bytes(), "hello");
    assert_eq!(*calls.lock().unwrap(), vec![(5, true)]);
}

#[tokio::test]
async fn a_body_dropped_early_reports_what_passed() {
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::data(Bytes::from_static(b"defg"))),
    ]);
    let (mut body, calls) = metered(http_body_util::StreamBody::new(chunks).boxed_unsync());
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().unwrap(), "abc");
    assert!(calls.lock().unwrap().is_empty(), "not over yet");
    drop(body);
    assert_eq!(*calls.lock().unwrap(), vec![(3, false)]);
}

#[tokio::test]
async fn an_empty_buffered_body_is_empty_and_ends_at_once() {
    let body = RequestBody::Buffered {
        data: Bytes::new(),
        trailers: None,
    };
    let copy = body.replay().expect("buffered");
    assert!(copy.is_end_stream());
    assert_eq!(copy.size_hint().exact(), Some(0));
    let collected = copy.collect().await.unwrap();
    assert!(collected.trailers().is_none());
    assert!(collected.to_bytes().is_empty());
}
