//! The load server at the far end of every path, and the load client's three measurements:
//! bulk throughput, request/response latency, and new-tunnel rate.
//!
//! Wire protocol: the client's first byte picks the server's mode. `S` (sink): the server
//! counts bytes until EOF, answers with the count as a big-endian u64 and closes. `E`
//! (echo): the server echoes everything until EOF, then closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

use crate::stats::{percentile, sorted};
use crate::topology::{HopErrors, accept, dial, listen};

const MODE_SINK: u8 = b'S';
const MODE_ECHO: u8 = b'E';
/// Read and write size for bulk transfer on both ends.
const BULK_CHUNK: usize = 256 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
/// Bound on one connection of the new-tunnel measurement.
const PER_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a load server on loopback; relay-style errors are counted in `errors`.
pub async fn start_server(errors: Arc<HopErrors>) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = listen().await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            match accept(&listener).await {
                Ok(tcp) => {
                    let errors = errors.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(tcp).await {
                            errors.record("load server", format!("{e:#}"));
                        }
                    });
                }
                Err(e) => {
                    errors.record("load server", format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok((addr, task))
}

/// Serves one load-client connection (sink or echo, picked by its first byte). Public so
/// other topologies (e.g. the lab's pods) can run the same server.
pub async fn serve(mut tcp: TcpStream) -> Result<()> {
    let mut mode = [0u8];
    tcp.read_exact(&mut mode).await.context("read mode byte")?;
    match mode[0] {
        MODE_SINK => {
            let mut buf = vec![0u8; BULK_CHUNK];
            let mut total = 0u64;
            loop {
                let n = tcp.read(&mut buf).await.context("sink read")?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            tcp.write_all(&total.to_be_bytes()).await?;
        }
        MODE_ECHO => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tcp.read(&mut buf).await.context("echo read")?;
                if n == 0 {
                    break;
                }
                tcp.write_all(&buf[..n]).await.context("echo write")?;
            }
        }
        other => bail!("unknown mode byte {other:#04x}"),
    }
    tcp.shutdown().await?;
    Ok(())
}

/// A deterministic, non-constant payload.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// After a half-close, the far end must close too and send nothing more.
async fn expect_eof(tcp: &mut TcpStream) -> Result<()> {
    let mut rest = [0u8; 64];
    let n = tcp.read(&mut rest).await.context("read until EOF")?;
    ensure!(n == 0, "{n} unexpected bytes after the reply");
    Ok(())
}

/// Sends `bytes` one way on a single connection; MiB/s from the first byte sent to the
/// server's byte count received.
pub async fn bulk(entry: SocketAddr, bytes: u64) -> Result<f64> {
    bulk_on(dial(entry).await?, bytes).await
}

/// [`bulk`] on a connection that is already open.
pub async fn bulk_on(mut tcp: TcpStream, bytes: u64) -> Result<f64> {
    let chunk = pattern(BULK_CHUNK);
    let start = Instant::now();
    tcp.write_all(&[MODE_SINK]).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tcp.write_all(&chunk[..n]).await.context("bulk write")?;
        left -= n as u64;
    }
    tcp.shutdown().await?;
    let mut count = [0u8; 8];
    tcp.read_exact(&mut count)
        .await
        .context("read byte count")?;
    let secs = start.elapsed().as_secs_f64();
    let got = u64::from_be_bytes(count);
    ensure!(got == bytes, "server counted {got} bytes, sent {bytes}");
    expect_eof(&mut tcp).await?;
    Ok(bytes as f64 / MIB / secs)
}

/// Round-trip latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `warmup` then `round_trips` request/response exchanges of `size` bytes each on one
/// long-lived connection; only the latter are timed.
pub async fn latency(
    entry: SocketAddr,
    warmup: usize,
    round_trips: usize,
    size: usize,
) -> Result<Latency> {
    let mut tcp = dial(entry).await?;
    tcp.write_all(&[MODE_ECHO]).await?;
    let msg = pattern(size);
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..warmup + round_trips {
        let start = Instant::now();
        tcp.write_all(&msg).await.context("latency write")?;
        tcp.read_exact(&mut back).await.context("latency read")?;
        let took = start.elapsed();
        if i >= warmup {
            samples.push(took.as_secs_f64() * 1e6);
        }
    }
    ensure!(back == msg, "echo returned different bytes");
    tcp.shutdown().await?;
    expect_eof(&mut tcp).await?;
    let s = sorted(samples);
    Ok(Latency {
        p50_us: percentile(&s, 50.0).context("no latency samples")?,
        p99_us: percentile(&s, 99.0).context("no latency samples")?,
    })
}

/// Opens `total` new connections, `concurrency` at a time; each sends `size` bytes, reads
/// the `size`-byte echo, half-closes and waits for the far end to close. Connections/s.
pub async fn new_tunnel_rate(
    entry: SocketAddr,
    total: usize,
    concurrency: usize,
    size: usize,
) -> Result<f64> {
    new_connection_rate(move || dial(entry), total, concurrency, size).await
}

/// [`new_tunnel_rate`] with any way of opening a connection (e.g. from inside a pod).
pub async fn new_connection_rate<D, F>(
    dial: D,
    total: usize,
    concurrency: usize,
    size: usize,
) -> Result<f64>
where
    D: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<TcpStream>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut request = vec![MODE_ECHO];
    request.extend(pattern(size));
    let request = Arc::new(request);
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, request, dial) = (next.clone(), request.clone(), dial.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let one = async { one_tunnel(dial().await?, &request).await };
                tokio::time::timeout(PER_CONNECTION_TIMEOUT, one)
                    .await
                    .context("one connection exceeded its time bound")??;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("load worker panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn one_tunnel(mut tcp: TcpStream, request: &[u8]) -> Result<()> {
    tcp.write_all(request).await?;
    let mut back = vec![0u8; request.len() - 1];
    tcp.read_exact(&mut back).await.context("read reply")?;
    ensure!(back == request[1..], "echo returned different bytes");
    tcp.shutdown().await?;
    expect_eof(&mut tcp).await
}

/// Sends `bytes_each` one way on every connection at once; aggregate MiB/s from the
/// common start to the last server's byte count.
pub async fn parallel_bulk(streams: Vec<TcpStream>, bytes_each: u64) -> Result<f64> {
    let total = bytes_each * streams.len() as u64;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for tcp in streams {
        set.spawn(bulk_on(tcp, bytes_each));
    }
    while let Some(done) = set.join_next().await {
        done.context("bulk stream panicked")??;
    }
    Ok(total as f64 / MIB / start.elapsed().as_secs_f64())
}

/// Request/response latency at a fixed request rate on one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Paced {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub samples: usize,
    /// Requests per second actually sent during the timed part.
    pub achieved_rate: f64,
}

/// Sends a `size`-byte request and waits for its echo `rate` times a second (tokio's
/// interval; missed ticks are caught up in a burst so the rate holds), first for `warmup`
/// untimed, then for `duration` timed. Each sample runs from the request's first write to
/// the last byte of its echo.
pub async fn paced_latency(
    mut tcp: TcpStream,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    size: usize,
) -> Result<Paced> {
    ensure!(rate > 0.0, "rate must be positive");
    tcp.write_all(&[MODE_ECHO]).await?;
    let msg = pattern(size);
    let mut back = vec![0u8; size];
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut samples = Vec::with_capacity((rate * duration.as_secs_f64()) as usize + 1);
    let begin = Instant::now();
    let mut timed_from = None;
    loop {
        ticks.tick().await;
        let start = Instant::now();
        let timed = match timed_from {
            Some(from) if start.duration_since(from) >= duration => break,
            Some(_) => true,
            None if start.duration_since(begin) >= warmup => {
                timed_from = Some(start);
                true
            }
            None => false,
        };
        tcp.write_all(&msg).await.context("paced write")?;
        tcp.read_exact(&mut back).await.context("paced read")?;
        if timed {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    let window = timed_from.map_or(0.0, |t| t.elapsed().as_secs_f64());
    ensure!(back == msg, "echo returned different bytes");
    tcp.shutdown().await?;
    expect_eof(&mut tcp).await?;
    let n = samples.len();
    let s = sorted(samples);
    Ok(Paced {
        p50_us: percentile(&s, 50.0).context("no latency samples")?,
        p99_us: percentile(&s, 99.0).context("no latency samples")?,
        max_us: *s.last().context("no latency samples")?,
        samples: n,
        achieved_rate: n as f64 / window,
    })
}
