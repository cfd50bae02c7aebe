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
    let snapshots = |mesh: &Mesh| {
        mesh.ztunnel_log(0)
            .matches("node agent snapshot applied")
            .count()
    };
    let before = snapshots(&mesh);
    mesh.kill_ztunnel(0)?;
    ensure!(
        !listening(&client, 15001)?,
        "a killed ztunnel's listeners must be gone"
    );
    mesh.start_ztunnel(0).await?;
    mesh.wait_captured(&client).await?;
    assert_eventually!(
        snapshots(&mesh) > before,
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
