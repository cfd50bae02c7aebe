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
fn buffer_starts_small_grows_under_bulk_and_is_not_held_while_idle() {
    // Waiting for data at the initial size holds no buffer.
    let (idle, _) = pump_after(0);
    assert_eq!(idle.buffer_len(), 0);
    let (chatty, total) = pump_after(1);
    assert_eq!(chatty.buffer_len(), 0);
    assert_eq!(total, INITIAL_BUFFER as u64);
    // A bulk transfer grows its buffer and keeps it between reads.
    let (bulk, total) = pump_after(50);
    assert_eq!(bulk.buffer_len(), MAX_BUFFER);
    assert!(total > 50 * INITIAL_BUFFER as u64);
}

#[test]
fn a_grown_buffer_is_kept_between_bursts() {
    // Two full reads grow the buffer before the next read: waiting then keeps it, and
    // the next burst reads 4 KiB at once instead of starting over at 1 KiB.
    let (mut pump, _) = pump_after(2);
    assert_eq!(pump.buffer_len(), 4 * INITIAL_BUFFER);
    let mut reader = FullReads { reads: 1 };
    let mut writer = tokio::io::sink();
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let before = pump.total;
    assert!(
        pump.poll_pump(&mut cx, &mut reader, &mut writer)
            .is_pending()
    );
    assert_eq!(pump.total - before, 4 * INITIAL_BUFFER as u64);
    assert_eq!(pump.buffer_len(), 4 * INITIAL_BUFFER);
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

#[tokio::test]
async fn a_stopped_copy_fails_with_the_reason_and_the_bytes_moved_so_far() {
    let (mut client, mut proxy_a) = duplex(64 * 1024);
    let (mut proxy_b, mut server) = duplex(64 * 1024);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(async move {
        let stop = async {
            let _ = stop_rx.await;
            io::Error::new(io::ErrorKind::PermissionDenied, "now denied by policy")
        };
        copy_until(copy_bidirectional(&mut proxy_a, &mut proxy_b), stop).await
    });
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.unwrap();
    server.write_all(b"hi").await.unwrap();
    let mut back = [0u8; 2];
    client.read_exact(&mut back).await.unwrap();

    stop_tx.send(()).unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), proxy)
        .await
        .expect("the copy stops when told")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.source.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(
        err.transferred,
        Transferred {
            a_to_b: 5,
            b_to_a: 2
        }
    );
    // Both proxy ends are gone: the client sees the end of its stream.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_copy_that_ends_first_is_not_stopped() {
    let (mut client, mut proxy_a) = duplex(1024);
    let (mut proxy_b, mut server) = duplex(1024);
    let proxy = tokio::spawn(async move {
        copy_until(
            copy_bidirectional(&mut proxy_a, &mut proxy_b),
            std::future::pending(),
        )
        .await
    });
    client.write_all(b"x").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(got, b"x");
    let t = proxy.await.unwrap().unwrap();
    assert_eq!(t.a_to_b, 1);
}
