//! Lab e2e tier: what idle tunnelled connections cost. A client pod on node 0 opens
//! 10,000 concurrent connections to an echo server pod on node 1, each through both
//! ztunnels over HBONE; each is checked with a small echo, then all sit idle while both
//! ztunnels' resident memory is read and reported per connection (and held under
//! [`MAX_KIB_PER_CONNECTION`]); they must all still work, and once closed every hop must
//! report them closed.
//!
//! The echo server is this binary re-executed inside the server pod (so the test
//! process holds only the client ends: the default 20,000-ish descriptor limits of CI
//! machines fit 10,000 connections per process). `IDLE_CONNECTIONS=N` changes the count.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use lab::mesh::Mesh;
use lab::{PodSpec, assert_eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const TRIAL_BOUND: Duration = Duration::from_secs(110);
const IO_BOUND: Duration = Duration::from_secs(10);
const MESH_NS: &str = "mesh";
const APP_PORT: u16 = 8080;
const DEFAULT_CONNECTIONS: usize = 10_000;
/// Connections being opened at once (well under ztunnel's listen backlog).
const OPENING_AT_ONCE: usize = 128;
/// The target: resident memory an idle tunnelled connection adds to each ztunnel.
const MAX_KIB_PER_CONNECTION: f64 = 40.0;
/// Descriptors the test process needs beside one per connection.
const SPARE_FDS: u64 = 1_000;
/// Set in the re-executed echo server: where it writes its counts.
const ECHO_ENV: &str = "LAB_IDLE_ECHO_STATS";

fn main() -> ExitCode {
    if let Some(stats) = std::env::var_os(ECHO_ENV) {
        return echo_server(PathBuf::from(stats));
    }
    lab::trial::mesh_main("idle_connections", || {
        vec![lab::trial::trial(
            "ten_thousand_idle_tunnels_cost_each_ztunnel_under_40_kib_apiece",
            TRIAL_BOUND,
            idle_tunnels,
        )]
    })
}

fn connections() -> Result<usize> {
    match std::env::var("IDLE_CONNECTIONS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("IDLE_CONNECTIONS={v:?} is not a positive number")),
        Err(_) => Ok(DEFAULT_CONNECTIONS),
    }
}

async fn idle_tunnels() -> Result<()> {
    let count = connections()?;
    // Before any child exists: ztunnels and the echo server inherit the limit.
    raise_fd_limit(count as u64 + SPARE_FDS)?;
    let mut mesh = Mesh::start(2, &[MESH_NS]).await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(in_mesh("echo", 1)).await?;
    let stats_path = std::env::temp_dir().join(format!(
        "lab-idle-echo-{}-{}.txt",
        std::process::id(),
        server.ip()
    ));
    let _ = fs::remove_file(&stats_path);
    let mut echo = Command::new(std::env::current_exe()?);
    echo.env(ECHO_ENV, &stats_path);
    let _echo = server.spawn(echo)?;
    assert_eventually!(
        EchoStats::read(&stats_path).is_ok(),
        timeout = IO_BOUND,
        "the echo server in pod echo never started"
    );
    let addr = SocketAddr::from((server.ip(), APP_PORT));
    let pids = [
        mesh.ztunnel_pid(0).context("node 0 has no ztunnel")?,
        mesh.ztunnel_pid(1).context("node 1 has no ztunnel")?,
    ];

    // Warm up: the first tunnel pays for the pool's first connection, lazily built
    // state and the ztunnels' access-log machinery; then let the heap trimmer run.
    let mut warm = open(&client, addr, 0).await?;
    echo_check(&mut warm, 0).await?;
    drop(warm);
    assert_eventually!(
        EchoStats::read(&stats_path)?.closed == 1,
        timeout = IO_BOUND,
        "the warm-up connection never closed at the echo server"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let baseline = [rss_kib(pids[0])?, rss_kib(pids[1])?];

    let started = Instant::now();
    let opened = AtomicU64::new(0);
    let mut streams: Vec<(usize, TcpStream)> = stream::iter(1..=count)
        .map(|i| {
            let (client, opened) = (&client, &opened);
            async move {
                let mut s = open(client, addr, i).await?;
                echo_check(&mut s, i).await?;
                opened.fetch_add(1, Ordering::Relaxed);
                Ok::<_, anyhow::Error>((i, s))
            }
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .try_collect()
        .await
        .with_context(|| {
            format!(
                "after {} of {count} connections opened and echoed",
                opened.load(Ordering::Relaxed)
            )
        })?;
    let open_time = started.elapsed();
    streams.sort_by_key(|(i, _)| *i);
    assert_eventually!(
        EchoStats::read(&stats_path)?.open == count as u64,
        timeout = IO_BOUND,
        "the echo server does not see {count} open connections: {:?}",
        EchoStats::read(&stats_path)
    );

    // Idle: nothing moves; the trimmer had its chance to return what setup freed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let loaded = [rss_kib(pids[0])?, rss_kib(pids[1])?];
    let per_connection: Vec<f64> = (0..2)
        .map(|n| (loaded[n] as f64 - baseline[n] as f64) / count as f64)
        .collect();
    println!();
    println!("{count} idle tunnelled connections, opened in {open_time:.1?}");
    println!("| ztunnel          | baseline RSS | with connections | KiB per connection |");
    println!("|------------------|--------------|------------------|--------------------|");
    for (n, role) in ["node 0 (client)", "node 1 (server)"].iter().enumerate() {
        println!(
            "| {role:<16} | {:>8} KiB | {:>12} KiB | {:>18.2} |",
            baseline[n], loaded[n], per_connection[n]
        );
    }
    println!();

    // Every connection is still open (nothing to read, no EOF), and a sample still echoes.
    let mut closed = Vec::new();
    for (i, s) in &streams {
        let mut byte = [0u8; 1];
        match s.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) => closed.push(format!("{i}: closed")),
            Ok(_) => closed.push(format!("{i}: unexpected data")),
            Err(e) => closed.push(format!("{i}: {e}")),
        }
    }
    ensure!(
        closed.is_empty(),
        "{} of {count} idle connections broke: {:?}",
        closed.len(),
        &closed[..closed.len().min(10)]
    );
    let step = (count / 100).max(1);
    for (i, s) in streams.iter_mut().step_by(step) {
        echo_check(s, *i)
            .await
            .with_context(|| format!("connection {i} after idling"))?;
    }
    for (n, kib) in per_connection.iter().enumerate() {
        ensure!(
            *kib < MAX_KIB_PER_CONNECTION,
            "node {n}'s ztunnel grew by {kib:.1} KiB per idle connection (target: under {MAX_KIB_PER_CONNECTION} KiB)"
        );
    }

    // Close them all: every hop reports each one closed.
    drop(streams);
    let total = count as u64 + 1; // and the warm-up
    assert_eventually!(
        {
            let s = EchoStats::read(&stats_path)?;
            s.open == 0 && s.closed == total
        },
        timeout = Duration::from_secs(30),
        "the echo server did not see all connections closed: {:?}",
        EchoStats::read(&stats_path)
    );
    let dst = format!("dst.addr={addr}");
    let src = format!("src.identity={}", Mesh::identity(&client));
    let closed_lines = |node: usize, message: &str, with: &str| {
        mesh.ztunnel_log(node)
            .lines()
            .filter(|l| l.contains(message) && l.contains(&dst) && l.contains(with))
            .count() as u64
    };
    assert_eventually!(
        closed_lines(0, "outbound connection closed", "protocol=\"HBONE\"") == total,
        timeout = Duration::from_secs(30),
        "node 0's ztunnel logged {} of {total} outbound connections closed",
        closed_lines(0, "outbound connection closed", "protocol=\"HBONE\"")
    );
    assert_eventually!(
        closed_lines(1, "inbound connection closed", &src) == total,
        timeout = Duration::from_secs(30),
        "node 1's ztunnel logged {} of {total} inbound connections closed",
        closed_lines(1, "inbound connection closed", &src)
    );
    for node in 0..2 {
        let log = mesh.ztunnel_log(node);
        let failed: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(&dst)
                    && l.contains("response_flags=\"")
                    && !l.contains("response_flags=\"\"")
            })
            .take(5)
            .collect();
        ensure!(
            failed.is_empty(),
            "node {node}'s ztunnel flagged connections: {failed:#?}"
        );
    }
    let _ = fs::remove_file(&stats_path);
    Ok(())
}

fn in_mesh(name: &str, node: usize) -> PodSpec {
    PodSpec::new(name, node)
        .namespace(MESH_NS)
        .service_account(name)
        .label("app", name)
}

async fn open(client: &lab::Pod, addr: SocketAddr, i: usize) -> Result<TcpStream> {
    let stream = timeout(IO_BOUND, client.connect(addr))
        .await
        .with_context(|| format!("connection {i} to {addr}: connect hung"))?
        .with_context(|| format!("connection {i} to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends a line naming connection `i` and reads the same line back.
async fn echo_check(stream: &mut TcpStream, i: usize) -> Result<()> {
    let line = format!("connection {i:06}\n");
    let run = async {
        stream.write_all(line.as_bytes()).await?;
        let mut back = vec![0u8; line.len()];
        stream.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let back = timeout(IO_BOUND, run)
        .await
        .with_context(|| format!("connection {i}: no echo within {IO_BOUND:?}"))?
        .with_context(|| format!("connection {i}: echo failed"))?;
    ensure!(
        back == line.as_bytes(),
        "connection {i}: echoed {:?} instead of {line:?}",
        String::from_utf8_lossy(&back)
    );
    Ok(())
}

/// Resident memory of process `pid` (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Raises this process's soft descriptor limit to `needed` (children inherit it), and the
/// hard one too when that is below `needed` and we may (root).
fn raise_fd_limit(needed: u64) -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft >= needed {
        return Ok(());
    }
    let target = hard.max(needed);
    setrlimit(Resource::RLIMIT_NOFILE, target, target)
        .or_else(|_| match hard >= needed {
            true => setrlimit(Resource::RLIMIT_NOFILE, hard, hard),
            false => Err(nix::errno::Errno::EPERM),
        })
        .with_context(|| {
            format!(
                "cannot raise RLIMIT_NOFILE to {needed} (soft {soft}, hard {hard}): this test \
                 holds one descriptor per connection; run it with a higher `ulimit -n` or \
                 IDLE_CONNECTIONS below {}",
                hard.saturating_sub(SPARE_FDS)
            )
        })
}

/// The echo server's counts, as written to its stats file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EchoStats {
    open: u64,
    closed: u64,
}

impl EchoStats {
    fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)?;
        let fields: HashMap<&str, u64> = text
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect();
        let field = |k: &str| {
            fields
                .get(k)
                .copied()
                .with_context(|| format!("no {k} in {text:?}"))
        };
        Ok(EchoStats {
            open: field("open")?,
            closed: field("closed")?,
        })
    }
}

/// The re-executed echo server (inside the server pod): echoes every connection on
/// [`APP_PORT`] until it half-closes, and keeps `open=N closed=M` in `stats`.
fn echo_server(stats: PathBuf) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_echo(stats)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_echo(stats: PathBuf) -> Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], APP_PORT))).await?;
    let counts = Arc::new(Counts::default());
    tokio::select! {
        r = write_stats(&stats, &counts) => r,
        r = accept_echo(&listener, &counts) => r,
    }
}

/// Connections accepted and closed by the echo server.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    closed: AtomicU64,
}

async fn accept_echo(listener: &TcpListener, counts: &Arc<Counts>) -> Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        counts.accepted.fetch_add(1, Ordering::AcqRel);
        let counts = counts.clone();
        tokio::spawn(async move {
            let (mut rd, mut wr) = conn.split();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
            counts.closed.fetch_add(1, Ordering::AcqRel);
        });
    }
}

/// Keeps `stats` up to date (replaced atomically, so a reader never sees half of it).
async fn write_stats(stats: &Path, counts: &Counts) -> Result<()> {
    let mut written = None;
    loop {
        // Closed first: it never exceeds accepted read after it.
        let closed = counts.closed.load(Ordering::Acquire);
        let accepted = counts.accepted.load(Ordering::Acquire);
        if written != Some((accepted, closed)) {
            let tmp = stats.with_extension("tmp");
            fs::write(
                &tmp,
                format!("open={} closed={closed}\n", accepted - closed),
            )?;
            fs::rename(&tmp, stats)?;
            written = Some((accepted, closed));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
