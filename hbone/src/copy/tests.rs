use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf, duplex};

use super::*;

#[tokio::test]
async fn copies_both_ways_and_half_closes() {
    let (mut client, mut proxy_a) = duplex(64 * 1024);
    let (mut proxy_b, mut server) = duplex(64 * 1024);
    let proxy = tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b).await });

    let request = vec![7u8; 100_000];
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        // The client has half-closed; the server can still answer.
        server.write_all(&got[..1000]).await.unwrap();
        server.shutdown().await.unwrap();
        got.len()
    });
    client.write_all(&request).await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();

    assert_eq!(server.await.unwrap(), 100_000);
    assert_eq!(reply, vec![7u8; 1000]);
    let t = proxy.await.unwrap().unwrap();
    assert_eq!(
        t,
        Transferred {
            a_to_b: 100_000,
            b_to_a: 1000
        }
    );
}

/// Fills every read completely `reads` times, then stays pending.
struct FullReads {
    reads: usize,
}

impl AsyncRead for FullReads {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.reads == 0 {
            return Poll::Pending;
        }
        self.reads -= 1;
        let n = buf.remaining();
        buf.put_slice(&vec![1u8; n]);
        Poll::Ready(Ok(()))
    }
}

fn pump_after(reads: usize) -> (Pump, u64) {
    let mut pump = Pump::new();
    let mut reader = FullReads { reads };
    let mut writer = tokio::io::sink();
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(
        pump.poll_pump(&mut cx, &mut reader, &mut writer)
            .is_pending()
    );
    let total = pump.total;
    (pump, total)
}

#[test]
fn buffer_starts_small_and_grows_under_bulk() {
    let (idle, _) = pump_after(0);
    assert_eq!(idle.buffer_len(), INITIAL_BUFFER);
    let (chatty, _) = pump_after(1);
    assert_eq!(chatty.buffer_len(), INITIAL_BUFFER);
    let (bulk, total) = pump_after(50);
    assert_eq!(bulk.buffer_len(), MAX_BUFFER);
    assert!(total > 50 * INITIAL_BUFFER as u64);
}

struct FailingWriter;

impl tokio::io::AsyncWrite for FailingWriter {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "boom")))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for FailingWriter {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn reports_errors_with_counts() {
    let (mut client, mut proxy_a) = duplex(1024);
    client.write_all(b"hello").await.unwrap();
    let mut failing = FailingWriter;
    let err = copy_bidirectional(&mut proxy_a, &mut failing)
        .await
        .unwrap_err();
    assert_eq!(err.source.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(err.transferred, Transferred::default());
}
