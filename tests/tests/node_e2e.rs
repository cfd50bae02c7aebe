//! Lab e2e tier: the node data path. Two nodes, each with a real node agent and a real
//! ztunnel process; pods are network namespaces with the agent's capture rules; apps are
//! tokio tasks listening and connecting inside the pods.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use api::prost::Message;
use lab::mesh::{Mesh, MeshService, listening};
use lab::{Pod, PodSpec, assert_eventually};
use libtest_mimic::Trial;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const TRIAL_BOUND: Duration = Duration::from_secs(90);
const IO_BOUND: Duration = Duration::from_secs(10);
/// Enrolled: the namespace carries `istio.io/dataplane-mode=ambient`.
const MESH_NS: &str = "mesh";
/// Not enrolled.
const LEGACY_NS: &str = "legacy";
const APP_PORT: u16 = 8080;

fn main() -> ExitCode {
    lab::trial::mesh_main("node_e2e", || {
        vec![
            trial(
                "captured_to_captured_on_the_same_and_the_other_node",
                captured_to_captured,
            ),
            trial(
                "service_vip_balances_over_endpoints_on_both_nodes",
                service_vip,
            ),
            trial(
                "captured_to_uncaptured_passes_through",
                captured_to_uncaptured,
            ),
            trial(
                "uncaptured_to_captured_arrives_on_15006",
                uncaptured_to_captured,
            ),
            trial(
                "no_plaintext_on_the_wire_between_captured_pods",
                no_plaintext_on_the_wire,
            ),
            trial(
                "deleted_pod_loses_its_listeners_and_peers_fail_cleanly",
                deleted_pod,
            ),
            trial(
                "restarted_ztunnel_gets_the_snapshot_and_traffic_flows",
                restarted_ztunnel,
            ),
            trial("garbage_on_the_zds_socket_is_survived", zds_garbage),
            trial(
                "ztunnel_upgrade_on_both_nodes_fails_no_connection",
                ztunnel_upgrade,
            ),
            trial(
                "a_draining_ztunnel_closes_what_is_left_at_its_deadline",
                drain_deadline,
            ),
            trial(
                "a_pod_at_its_inbound_connection_limit_refuses_more",
                inbound_connection_limit,
            ),
        ]
    })
}

fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    lab::trial::trial(name, TRIAL_BOUND, test)
}

fn in_mesh(name: &str, node: usize) -> PodSpec {
    PodSpec::new(name, node)
        .namespace(MESH_NS)
        .service_account(name)
        .label("app", name)
}

fn outside(name: &str, node: usize) -> PodSpec {
    PodSpec::new(name, node)
        .namespace(LEGACY_NS)
        .service_account(name)
        .label("app", name)
}

async fn mesh() -> Result<Mesh> {
    Mesh::start(2, &[MESH_NS]).await
}

/// The app: each connection gets `"<pod name> <peer ip>\n"`, then an echo of what it
/// sends until it half-closes.
fn serve(pod: &Pod) -> Result<JoinHandle<()>> {
    let listener = pod.listen(APP_PORT)?;
    let name = pod.name().to_owned();
    Ok(tokio::spawn(async move {
        while let Ok((mut conn, peer)) = listener.accept().await {
            let hello = format!("{name} {}\n", peer.ip());
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.split();
                if wr.write_all(hello.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    let _ = wr.shutdown().await;
                }
            });
        }
    }))
}

/// What one connection from `client` to `addr` saw: the server's name, the client IP the
/// server saw, and the echo of `payload`.
struct Exchange {
    server: String,
    seen_ip: IpAddr,
    echo: Vec<u8>,
}

async fn exchange(client: &Pod, addr: SocketAddr, payload: &[u8]) -> Result<Exchange> {
    let run = async {
        let stream = client
            .connect(addr)
            .await
            .with_context(|| format!("{} -> {addr}", client.name()))?;
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut line = String::new();
        rd.read_line(&mut line).await?;
        let (server, ip) = line
            .trim()
            .split_once(' ')
            .with_context(|| format!("bad hello {line:?} from {addr}"))?;
        wr.write_all(payload).await?;
        wr.shutdown().await?;
        let mut echo = Vec::new();
        rd.read_to_end(&mut echo).await?;
        Ok::<_, anyhow::Error>(Exchange {
            server: server.to_owned(),
            seen_ip: ip.parse()?,
            echo,
        })
    };
    timeout(IO_BOUND, run)
        .await
        .with_context(|| format!("{} -> {addr} hung", client.name()))?
}

async fn captured_to_captured() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let near = mesh.add_pod(in_mesh("near", 0)).await?;
    let far = mesh.add_pod(in_mesh("far", 1)).await?;
    let _apps = (serve(&near)?, serve(&far)?);
    for (server, node) in [(&near, 0), (&far, 1)] {
        let payload = format!("hello {} over HBONE", server.name()).repeat(100);
        let got = exchange(&client, (server.ip(), APP_PORT).into(), payload.as_bytes()).await?;
        ensure!(
            got.server == server.name(),
            "reached {} instead of {}",
            got.server,
            server.name()
        );
        ensure!(
            got.seen_ip == IpAddr::V4(client.ip()),
            "{} saw {} instead of the client's IP",
            server.name(),
            got.seen_ip
        );
        ensure!(
            got.echo == payload.as_bytes(),
            "echo from {} differs",
            server.name()
        );
        let src = format!("src.identity={}", Mesh::identity(&client));
        let dst = format!("dst.addr={}:{APP_PORT}", server.ip());
        assert_eventually!(
            mesh.ztunnel_log(node)
                .lines()
                .any(|l| l.contains("inbound connection closed")
                    && l.contains(&src)
                    && l.contains(&dst)),
            timeout = IO_BOUND,
            "node {node}'s ztunnel did not log the tunnel from {src} to {dst}"
        );
    }
    Ok(())
}

async fn service_vip() -> Result<()> {
    let mut mesh = mesh().await?;
    let vip = "10.96.0.10".parse()?;
    mesh.add_service(MeshService {
        name: "echo".into(),
        namespace: MESH_NS.into(),
        vip,
        port: 80,
        target_port: APP_PORT,
        selector: [("app".to_owned(), "echo".to_owned())].into(),
    })
    .await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let mut apps = Vec::new();
    for (name, node) in [("echo-a", 0), ("echo-b", 1), ("echo-c", 1)] {
        let pod = mesh
            .add_pod(in_mesh(name, node).label("app", "echo"))
            .await?;
        apps.push(serve(&pod)?);
    }
    let mut hits = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..9 {
        let got = exchange(&client, (vip, 80).into(), b"ping").await?;
        ensure!(
            got.seen_ip == IpAddr::V4(client.ip()),
            "{} saw {}",
            got.server,
            got.seen_ip
        );
        *hits.entry(got.server).or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, usize> = [
        ("echo-a".into(), 3),
        ("echo-b".into(), 3),
        ("echo-c".into(), 3),
    ]
    .into();
    ensure!(
        hits == expected,
        "round robin over 3 endpoints should hit each 3 times in 9 connections, got {hits:?}"
    );
    let vip_dst = format!("original_dst={vip}:80");
    assert_eventually!(
        mesh.ztunnel_log(0)
            .lines()
            .filter(|l| l.contains("outbound connection closed")
                && l.contains(&vip_dst)
                && l.contains("protocol=\"HBONE\""))
            .count()
            == 9,
        timeout = IO_BOUND,
        "all 9 connections to the VIP should have left node 0 over HBONE"
    );
    Ok(())
}

async fn captured_to_uncaptured() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(outside("plain", 1)).await?;
    ensure!(
        !listening(&server, 15008)?,
        "an uncaptured pod must not get ztunnel listeners"
    );
    let _app = serve(&server)?;
    let got = exchange(&client, (server.ip(), APP_PORT).into(), b"plain bytes").await?;
    ensure!(
        got.server == "plain" && got.echo == b"plain bytes",
        "passthrough broke the exchange"
    );
    ensure!(
        got.seen_ip == IpAddr::V4(client.ip()),
        "passthrough must leave from the client pod's IP, server saw {}",
        got.seen_ip
    );
    let dst = format!("dst.addr={}:{APP_PORT}", server.ip());
    assert_eventually!(
        mesh.ztunnel_log(0)
            .lines()
            .any(|l| l.contains("outbound connection closed")
                && l.contains(&dst)
                && l.contains("protocol=\"TCP\"")),
        timeout = IO_BOUND,
        "node 0's ztunnel did not log a plain TCP passthrough to {dst}"
    );
    Ok(())
}

async fn uncaptured_to_captured() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(outside("legacy-client", 0)).await?;
    let server = mesh.add_pod(in_mesh("server", 1)).await?;
    let _app = serve(&server)?;
    let got = exchange(
        &client,
        (server.ip(), APP_PORT).into(),
        b"from outside the mesh",
    )
    .await?;
    ensure!(
        got.server == "server" && got.echo == b"from outside the mesh",
        "exchange broke"
    );
    ensure!(
        got.seen_ip == IpAddr::V4(client.ip()),
        "the app must see the real client IP, saw {}",
        got.seen_ip
    );
    let src = format!("src.addr={}:", client.ip());
    assert_eventually!(
        mesh.ztunnel_log(1)
            .lines()
            .any(|l| l.contains("inbound plaintext connection closed") && l.contains(&src)),
        timeout = IO_BOUND,
        "node 1's ztunnel did not log the plaintext connection from {src}"
    );
    Ok(())
}

async fn no_plaintext_on_the_wire() -> Result<()> {
    let mut mesh = mesh().await?;
    let a = mesh.add_pod(in_mesh("a", 0)).await?;
    let b = mesh.add_pod(in_mesh("b", 1)).await?;
    let c = mesh.add_pod(outside("c", 0)).await?;
    let d = mesh.add_pod(outside("d", 1)).await?;
    let _apps = (serve(&b)?, serve(&d)?);
    let secret = b"MARKER-7f3a9c-must-stay-encrypted";
    let clear = b"MARKER-51be02-sent-in-the-clear";
    let capture = mesh.lab().capture()?;
    let got = exchange(&a, (b.ip(), APP_PORT).into(), secret).await?;
    ensure!(got.echo == secret, "mesh exchange failed");
    let got = exchange(&c, (d.ip(), APP_PORT).into(), clear).await?;
    ensure!(got.echo == clear, "plain exchange failed");
    let frames = capture.stop()?;
    ensure!(
        frames.contains_bytes(clear),
        "the capture must see uncaptured traffic in the clear (else it proves nothing)"
    );
    ensure!(
        !frames.contains_bytes(secret),
        "the marker exchanged between captured pods crossed the wire in the clear"
    );
    Ok(())
}

async fn deleted_pod() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let doomed = mesh.add_pod(in_mesh("doomed", 1)).await?;
    let _app = serve(&doomed)?;
    let addr: SocketAddr = (doomed.ip(), APP_PORT).into();
    exchange(&client, addr, b"before").await?;
    drop(doomed);
    // Returns only once ztunnel holds nothing in the pod's namespace (listeners included).
    mesh.remove_pod("doomed").await?;
    let attempt = async {
        let mut stream = client.connect(addr).await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        Ok::<_, std::io::Error>(n)
    };
    match timeout(IO_BOUND, attempt).await {
        Err(_) => bail!("a connection to the deleted pod hung instead of failing"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => bail!("a connection to the deleted pod received {n} bytes"),
    }
    // The surviving pod still works.
    let other = mesh.add_pod(in_mesh("other", 1)).await?;
    let _other_app = serve(&other)?;
    exchange(&client, (other.ip(), APP_PORT).into(), b"after").await?;
    Ok(())
}

async fn restarted_ztunnel() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(in_mesh("server", 1)).await?;
    let _app = serve(&server)?;
    let addr: SocketAddr = (server.ip(), APP_PORT).into();
    exchange(&client, addr, b"before the crash").await?;
    let before = mesh.snapshots_applied(0);
    mesh.kill_ztunnel(0)?;
    ensure!(
        !listening(&client, 15001)?,
        "a killed ztunnel's listeners must be gone"
    );
    mesh.start_ztunnel(0).await?;
    mesh.wait_captured(&client).await?;
    assert_eventually!(
        mesh.snapshots_applied(0) > before,
        timeout = IO_BOUND,
        "the new ztunnel never applied a snapshot"
    );
    let got = exchange(&client, addr, b"after the restart").await?;
    ensure!(
        got.echo == b"after the restart" && got.seen_ip == IpAddr::V4(client.ip()),
        "traffic after the restart broke"
    );
    Ok(())
}

async fn zds_garbage() -> Result<()> {
    let mut mesh = mesh().await?;
    let socket = mesh.zds_socket(0);
    // A client that says garbage instead of hello, then one with a wrong version.
    let garbage = inpod::SeqPacket::connect(&socket)?;
    garbage.send(&[0xff, 0xff, 0xff, 0xff, 0x0f], &[]).await?;
    let wrong = inpod::SeqPacket::connect(&socket)?;
    wrong
        .send(&api::zds::ZdsHello { version: 99 }.encode_to_vec(), &[])
        .await?;
    assert_eventually!(
        mesh.agent_log(0).matches("ZDS").count() >= 2 && mesh.agent_log(0).contains("99"),
        timeout = IO_BOUND,
        "the node agent did not log the bad ZDS clients:\n{}",
        mesh.agent_log(0)
    );
    // The agent and ztunnel keep serving: a new pod is captured and traffic flows.
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(in_mesh("server", 0)).await?;
    let _app = serve(&server)?;
    let got = exchange(&client, (server.ip(), APP_PORT).into(), b"still serving").await?;
    ensure!(
        got.echo == b"still serving",
        "exchange after ZDS garbage failed"
    );
    ensure!(
        mesh.ztunnel_pid(0).is_some(),
        "ztunnel must still be running"
    );
    Ok(())
}

/// Counts of the rollout load: new connections attempted and the failures (with the
/// first few errors).
#[derive(Default)]
struct Load {
    attempted: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Opens new connections from `client` to `addr` back to back on `workers` tasks until
/// `stop`, each a full exchange (hello, echo, close); records every failure.
fn generate_load(
    client: &Pod,
    addr: SocketAddr,
    workers: usize,
    load: &std::sync::Arc<Load>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    use std::sync::atomic::Ordering::Relaxed;
    (0..workers)
        .map(|worker| {
            let (client, load, stop) = (client.clone(), load.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !*stop.borrow() {
                    n += 1;
                    let payload = format!("worker {worker} connection {n}");
                    load.attempted.fetch_add(1, Relaxed);
                    let outcome = exchange(&client, addr, payload.as_bytes()).await;
                    let error = match outcome {
                        Ok(got) if got.echo == payload.as_bytes() => continue,
                        Ok(got) => {
                            format!("{payload}: echo {:?}", String::from_utf8_lossy(&got.echo))
                        }
                        Err(e) => format!("{payload}: {e:#}"),
                    };
                    load.failed.fetch_add(1, Relaxed);
                    let mut errors = load.errors.lock().unwrap();
                    if errors.len() < 5 {
                        errors.push(error);
                    }
                }
            })
        })
        .collect()
}

/// A connection opened before the upgrade, kept open across it.
struct LongLived {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl LongLived {
    async fn open(client: &Pod, addr: SocketAddr) -> Result<Self> {
        let stream = timeout(IO_BOUND, client.connect(addr)).await??;
        let (rd, writer) = stream.into_split();
        let mut reader = BufReader::new(rd);
        let mut hello = String::new();
        timeout(IO_BOUND, reader.read_line(&mut hello)).await??;
        let mut conn = LongLived { reader, writer };
        conn.round_trip("before the upgrade\n").await?;
        Ok(conn)
    }

    async fn round_trip(&mut self, line: &str) -> Result<()> {
        let run = async {
            self.writer.write_all(line.as_bytes()).await?;
            let mut echo = String::new();
            self.reader.read_line(&mut echo).await?;
            ensure!(echo == line, "echo {echo:?} instead of {line:?}");
            Ok(())
        };
        timeout(IO_BOUND, run).await?
    }

    /// Half-closes and reads to the end: the connection completes normally.
    async fn finish(mut self) -> Result<()> {
        let run = async {
            self.writer.shutdown().await?;
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest).await?;
            ensure!(rest.is_empty(), "unexpected bytes at the end: {rest:?}");
            Ok(())
        };
        timeout(IO_BOUND, run).await?
    }
}

/// The DaemonSet upgrade path: while a client opens new connections back to back across
/// nodes, ztunnel is replaced on the server's node and then on the client's: each new
/// ztunnel takes over the pods' listeners beside the old one, which gets SIGTERM,
/// closes its listeners, GOAWAYs its tunnels and drains. No connection attempt may fail,
/// and connections opened before the swap keep working and complete within the drain
/// window, after which each old ztunnel exits on its own.
async fn ztunnel_upgrade() -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(in_mesh("server", 1)).await?;
    let _app = serve(&server)?;
    let addr: SocketAddr = (server.ip(), APP_PORT).into();
    exchange(&client, addr, b"warm up").await?;
    let mut long_lived = Vec::new();
    for _ in 0..10 {
        long_lived.push(LongLived::open(&client, addr).await?);
    }

    let load = std::sync::Arc::new(Load::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let workers = generate_load(&client, addr, 8, &load, &stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_server_side = mesh.upgrade_ztunnel(1, &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_client_side = mesh.upgrade_ztunnel(0, &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Both old ztunnels (default drain deadline: 29 s) wait for the long-lived
    // connections, which still work.
    for (old, node) in [(&old_server_side, 1), (&old_client_side, 0)] {
        ensure!(
            old.try_wait()?.is_none(),
            "node {node}'s old ztunnel exited with connections in flight:\n{}",
            mesh.ztunnel_log(node)
        );
    }
    let drain_started = std::time::Instant::now();
    for (i, conn) in long_lived.iter_mut().enumerate() {
        conn.round_trip(&format!("during the drain {i}\n"))
            .await
            .with_context(|| format!("long-lived connection {i} broke during the drain"))?;
    }
    for (i, conn) in long_lived.into_iter().enumerate() {
        conn.finish()
            .await
            .with_context(|| format!("long-lived connection {i} did not complete"))?;
    }
    for (old, node) in [(&old_server_side, 1), (&old_client_side, 0)] {
        let status = timeout(Duration::from_secs(20), old.wait())
            .await
            .with_context(|| format!("node {node}'s old ztunnel did not exit once drained"))??;
        ensure!(
            status.success(),
            "node {node}'s old ztunnel exited with {status}"
        );
        ensure!(
            mesh.ztunnel_log(node)
                .contains("drained: every connection has finished"),
            "node {node}'s old ztunnel did not drain cleanly:\n{}",
            mesh.ztunnel_log(node)
        );
    }
    let drained_in = drain_started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed();
    let (attempted, failed) = (load.attempted.load(Relaxed), load.failed.load(Relaxed));
    let rate = attempted as f64 / elapsed.as_secs_f64();
    println!(
        "ztunnel upgrade on both nodes: {attempted} connections attempted over {:.1} s ({rate:.0}/s), {failed} failed; 10 long-lived connections completed, old ztunnels exited {:.0} ms after",
        elapsed.as_secs_f64(),
        drained_in.as_secs_f64() * 1000.0
    );
    ensure!(
        failed == 0,
        "{failed} of {attempted} connection attempts failed during the upgrade: {:?}\n--- node-0 ---\n{}\n--- node-1 ---\n{}",
        load.errors.lock().unwrap(),
        mesh.ztunnel_log(0),
        mesh.ztunnel_log(1)
    );
    ensure!(
        rate >= 100.0,
        "only {rate:.0} new connections/s: the upgrade was not exercised under load"
    );
    // The new ztunnels carry the traffic now.
    let got = exchange(&client, addr, b"after the upgrade").await?;
    ensure!(got.echo == b"after the upgrade" && got.seen_ip == IpAddr::V4(client.ip()));
    Ok(())
}

/// A connection still open when the drain deadline passes is closed, and the old
/// ztunnel exits; new connections go to the new one throughout.
async fn drain_deadline() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(in_mesh("server", 1)).await?;
    let _app = serve(&server)?;
    let addr: SocketAddr = (server.ip(), APP_PORT).into();
    // The ztunnel that will drain is itself an upgrade, with a short deadline; the
    // original, idle, exits at once.
    let original = mesh.upgrade_ztunnel(1, &["--drain-timeout", "1.5"]).await?;
    timeout(IO_BOUND, original.wait()).await??;
    let mut idle = LongLived::open(&client, addr).await?;
    let old = mesh.upgrade_ztunnel(1, &[]).await?;
    let signalled = std::time::Instant::now();
    exchange(&client, addr, b"new connections go to the new ztunnel").await?;
    let status = timeout(Duration::from_secs(10), old.wait())
        .await
        .context("the draining ztunnel outlived its deadline")??;
    let took = signalled.elapsed();
    ensure!(status.success(), "the drained ztunnel exited with {status}");
    ensure!(
        took >= Duration::from_millis(1400),
        "the old ztunnel exited after {took:?}, before its 1.5 s deadline"
    );
    ensure!(
        mesh.ztunnel_log(1)
            .contains("drain deadline passed; closing the remaining connections"),
        "no deadline in the log:\n{}",
        mesh.ztunnel_log(1)
    );
    // The idle connection was cut: the next read ends (EOF or reset) instead of echoing.
    let cut = idle.round_trip("still there?\n").await;
    ensure!(cut.is_err(), "a connection outlived the drain deadline");
    exchange(&client, addr, b"after the drain").await?;

    // A second SIGTERM cuts a drain short (the current ztunnel's deadline is 29 s).
    let mut idle = LongLived::open(&client, addr).await?;
    let old = mesh.upgrade_ztunnel(1, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        old.try_wait()?.is_none(),
        "it did not wait for the idle connection"
    );
    old.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = timeout(Duration::from_secs(10), old.wait())
        .await
        .context("a second SIGTERM did not end the drain")??;
    ensure!(
        status.success(),
        "the cut-short ztunnel exited with {status}"
    );
    ensure!(
        mesh.ztunnel_log(1).contains("drain cut short"),
        "no cut-short drain in the log:\n{}",
        mesh.ztunnel_log(1)
    );
    ensure!(
        idle.round_trip("still there?\n").await.is_err(),
        "a connection outlived the cut-short drain"
    );
    exchange(&client, addr, b"after the second drain").await?;
    Ok(())
}

/// `--max-inbound-connections`: a pod holding its limit of inbound connections refuses
/// the next one (503 to the tunnel, flag `UO`), and accepts again once one has closed.
async fn inbound_connection_limit() -> Result<()> {
    let mut mesh = mesh().await?;
    let client = mesh.add_pod(in_mesh("client", 0)).await?;
    let server = mesh.add_pod(in_mesh("server", 1)).await?;
    let _app = serve(&server)?;
    let addr: SocketAddr = (server.ip(), APP_PORT).into();
    let original = mesh
        .upgrade_ztunnel(1, &["--max-inbound-connections", "3"])
        .await?;
    timeout(IO_BOUND, original.wait()).await??;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(LongLived::open(&client, addr).await?);
    }
    ensure!(
        exchange(&client, addr, b"one too many").await.is_err(),
        "a fourth connection got through a limit of 3"
    );
    assert_eventually!(
        mesh.ztunnel_log(1)
            .lines()
            .any(|l| l.contains("inbound connection refused") && l.contains("limit=3")),
        timeout = IO_BOUND,
        "the refusal was not logged:\n{}",
        mesh.ztunnel_log(1)
    );
    assert_eventually!(
        mesh.ztunnel_log(1).lines().any(|l| l.contains("inbound connection closed")
            && l.contains("response_flags=\"UO\"")),
        timeout = IO_BOUND,
        "no access line with UO:\n{}",
        mesh.ztunnel_log(1)
    );
    for conn in &mut held {
        conn.round_trip("held connections still work\n").await?;
    }
    held.pop().context("three held")?.finish().await?;
    let mut ok = false;
    for _ in 0..50 {
        if exchange(&client, addr, b"room again").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(ok, "no room after a connection closed");
    Ok(())
}
