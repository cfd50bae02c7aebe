//! Lab e2e tier: the lab topology itself. Real namespaces, veths, routes and processes.
//! Runs as root directly, otherwise inside a user namespace (see `lab::sandbox`).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use lab::{Lab, LabConfig, NetnsIdentity, Pod, PodSpec, assert_eventually, netns_holders};
use libtest_mimic::{Arguments, Trial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Set on a re-executed copy of this binary that builds a lab and waits to be killed.
const VICTIM_ENV: &str = "LAB_TOPOLOGY_CRASH_VICTIM";
/// Bound on each trial; a hang fails instead of stalling CI.
const TRIAL_BOUND: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let mode = match lab::sandbox::enter() {
        Ok(mode) => mode,
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("lab_topology: cannot set up the lab sandbox: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os(VICTIM_ENV).is_some() {
        return crash_victim();
    }
    eprintln!("lab_topology: sandbox {mode:?}");
    quiet_deliberate_panics();
    let trials = vec![
        trial("pod_to_pod_on_the_same_node", same_node),
        trial("pod_to_pod_across_nodes", across_nodes),
        trial("removed_pod_is_gone_and_unreachable", removed_pod),
        trial("dropped_lab_leaves_no_namespace_or_process", dropped_lab),
        trial("crashed_test_process_leaves_nothing", crashed_test_process),
        trial("capture_sees_cleartext_between_nodes_only", capture),
        trial("killed_process_reports_the_signal", killed_process),
        trial("panicking_test_leaves_nothing", panicking_test),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

/// Panics a trial provokes on purpose ("deliberate...") would print a message and
/// backtrace that look like failures; every other panic is reported as usual.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        if !message.is_some_and(|m| m.starts_with("deliberate")) {
            default(info);
        }
    }));
}

fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    lab::trial::trial(name, TRIAL_BOUND, test)
}

/// Accepts one connection, echoes one message, returns the client's address.
async fn echo_once(listener: TcpListener) -> anyhow::Result<SocketAddr> {
    let (mut stream, peer) = listener.accept().await?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await?;
    stream.write_all(&buf[..n]).await?;
    Ok(peer)
}

/// `client` talks to `server` on port 8080 and the server sees `client`'s own address.
async fn assert_echo(client: &Pod, server: &Pod) -> anyhow::Result<()> {
    let listener = server.listen(8080)?;
    let accepted = tokio::spawn(echo_once(listener));
    let exchange = async {
        let mut stream = client.connect((server.ip(), 8080).into()).await?;
        stream.write_all(b"ping").await?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).await?;
        ensure!(&reply == b"ping", "echo returned {reply:?}");
        anyhow::Ok(accepted.await??)
    };
    let route = format!(
        "{} ({}) -> {} ({})",
        client.name(),
        client.ip(),
        server.name(),
        server.ip()
    );
    let peer = timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("{route}: no echo within 10 s"))?
        .with_context(|| route.clone())?;
    ensure!(
        peer.ip() == IpAddr::V4(client.ip()),
        "server saw {peer}, expected the client pod's own address {}",
        client.ip()
    );
    Ok(())
}

async fn same_node() -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig { nodes: 2 }).await?;
    let a = lab.add_pod(PodSpec::new("a", 0)).await?;
    let b = lab
        .add_pod(PodSpec::new("b", 0).namespace("shop").label("app", "b"))
        .await?;
    ensure!(lab.node(0).pod_cidr().contains(a.ip()) && lab.node(0).pod_cidr().contains(b.ip()));
    ensure!(a.ip() != b.ip());
    assert_echo(&a, &b).await
}

async fn across_nodes() -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig { nodes: 3 }).await?;
    let a = lab.add_pod(PodSpec::new("a", 0)).await?;
    let c = lab.add_pod(PodSpec::new("c", 2)).await?;
    ensure!(lab.node(2).pod_cidr().contains(c.ip()));
    assert_echo(&a, &c).await?;
    assert_echo(&c, &a).await
}

/// How a connection attempt to an address that should be dead ended.
async fn connect_outcome(from: &Pod, to: SocketAddr) -> String {
    match timeout(Duration::from_secs(3), from.connect(to)).await {
        Ok(Ok(_)) => "connected".to_owned(),
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => "timed out".to_owned(),
    }
}

async fn removed_pod() -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig { nodes: 2 }).await?;
    let client = lab.add_pod(PodSpec::new("client", 0)).await?;
    let neighbour = lab.add_pod(PodSpec::new("neighbour", 1)).await?;
    let victim = lab.add_pod(PodSpec::new("victim", 1)).await?;
    assert_echo(&client, &victim).await?;
    let target = SocketAddr::from((victim.ip(), 8080));
    let (inode, path) = (victim.inode(), victim.netns_path()?);
    ensure!(
        std::fs::metadata(&path)?.ino() == inode,
        "{path:?} is not the pod netns"
    );
    let veths = |lab: &Lab| -> anyhow::Result<usize> {
        let names = lab.node(1).interfaces()?;
        Ok(names.iter().filter(|n| n.starts_with("veth")).count())
    };
    ensure!(veths(&lab)? == 2);
    let mut sleeper = Command::new("sleep");
    sleeper.arg("600");
    let sleeper = victim.spawn(sleeper)?;

    lab.remove_pod("victim").await?;

    ensure!(lab.pod("victim").is_none());
    ensure!(
        veths(&lab)? == 1,
        "node-1 still has {:?}",
        lab.node(1).interfaces()?
    );
    let err = victim.netns_path().expect_err("path of a removed pod");
    ensure!(err.to_string().contains("no longer exists"), "{err}");
    let err = victim
        .connect(target)
        .await
        .expect_err("connect from a removed pod");
    ensure!(err.kind() == std::io::ErrorKind::NotFound, "{err}");
    ensure!(
        !victim.identity().is_at(&path),
        "{path:?} still reaches the pod netns"
    );
    let status = sleeper
        .try_wait()?
        .context("process of a removed pod still running")?;
    ensure!(status.signal() == Some(9), "{status}");
    let holders = netns_holders(&victim.identity());
    ensure!(
        holders.is_empty(),
        "removed pod's netns still held by {holders:?}"
    );

    // No route to the address any more: both nodes answer with ICMP unreachable.
    for from in [&client, &neighbour] {
        let outcome = connect_outcome(from, target).await;
        ensure!(
            outcome.starts_with("refused"),
            "{} -> {target}: {outcome}",
            from.name()
        );
    }

    // The name is free again; the address is not handed out again right away.
    let again = lab.add_pod(PodSpec::new("victim", 1)).await?;
    ensure!(again.ip() != victim.ip() && again.uid() != victim.uid());
    assert_echo(&client, &again).await
}

/// Every namespace of the lab, by name, with its identity and `/proc/<pid>/fd/<n>` path.
fn namespaces(lab: &Lab) -> anyhow::Result<Vec<(String, NetnsIdentity, std::path::PathBuf)>> {
    let mut all = vec![lab.wire().clone()];
    all.extend(lab.nodes().iter().map(|n| (**n).clone()));
    all.extend(lab.pods().iter().map(|p| (**p).clone()));
    all.iter()
        .map(|ns| Ok((ns.name().to_owned(), ns.identity(), ns.netns_path()?)))
        .collect()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn dropped_lab() -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig { nodes: 2 }).await?;
    let pod = lab.add_pod(PodSpec::new("app", 1)).await?;
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let in_pod = pod.spawn(sleep)?;
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let in_node = lab.node(0).spawn(sleep)?;
    let (pod_pid, node_pid) = (in_pod.pid(), in_node.pid());
    in_node.detach();
    let ns_of = |pid: u32| std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
    ensure!(ns_of(pod_pid)? == pod.inode(), "child not in the pod netns");
    ensure!(
        ns_of(node_pid)? == lab.node(0).inode(),
        "child not in the node netns"
    );
    let namespaces = namespaces(&lab)?;
    ensure!(namespaces.len() == 4);
    for (name, id, path) in &namespaces {
        ensure!(id.is_at(path), "{name}: {path:?} does not reach it");
        ensure!(
            !netns_holders(id).is_empty(),
            "{name}: nothing holds it before drop?"
        );
    }

    drop(lab);

    ensure!(
        !process_exists(pod_pid) && !process_exists(node_pid),
        "children survived"
    );
    let status = in_pod.try_wait()?.context("pod process not reaped")?;
    ensure!(status.signal() == Some(9), "{status}");
    for (name, id, path) in &namespaces {
        let holders = netns_holders(id);
        ensure!(holders.is_empty(), "{name} netns still held by {holders:?}");
        ensure!(
            !id.is_at(path),
            "{name}: {path:?} still reaches the namespace"
        );
    }
    let err = pod.netns().expect_err("netns of a dropped lab");
    ensure!(err.to_string().contains("no longer exists"), "{err}");
    Ok(())
}

/// Child role: build a lab with a process in a pod, report, then wait to be SIGKILLed
/// (no unwinding, no destructors: only the kernel and the watchdog clean up).
fn crash_victim() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (lab, pid) = runtime.block_on(async {
        let lab = Lab::start(LabConfig { nodes: 1 }).await.expect("lab");
        let pod = lab.add_pod(PodSpec::new("doomed", 0)).await.expect("pod");
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        let child = pod.spawn(sleep).expect("spawn");
        let pid = child.pid();
        child.detach();
        (lab, pid)
    });
    let ids: Vec<String> = namespaces(&lab)
        .expect("namespaces")
        .iter()
        .map(|(_, id, _)| id.to_string())
        .collect();
    println!("{pid} {}", ids.join(" "));
    loop {
        std::thread::park();
    }
}

async fn crashed_test_process() -> anyhow::Result<()> {
    let mut victim = Command::new(std::env::current_exe()?)
        .env(VICTIM_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = victim.stdout.take().context("stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = match timeout(Duration::from_secs(30), line).await {
        Ok(line) => line??,
        Err(_) => {
            victim.kill().ok();
            bail!("crash victim never reported");
        }
    };
    let mut fields = line.split_whitespace();
    let sleeper: u32 = fields.next().context("victim output")?.parse()?;
    let ids = fields
        .map(str::parse::<NetnsIdentity>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    ensure!(ids.len() == 3, "victim reported {line:?}");
    ensure!(process_exists(sleeper), "victim's pod process not running");

    victim.kill()?; // SIGKILL
    victim.wait()?;

    // The orphan may linger as a zombie if our init does not reap; a zombie has left
    // its namespaces.
    let dead = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    assert_eventually!(
        dead(sleeper),
        timeout = Duration::from_secs(5),
        "pod process {sleeper}"
    );
    for id in ids {
        assert_eventually!(
            netns_holders(&id).is_empty(),
            timeout = Duration::from_secs(5),
            "netns {id} held by {:?}",
            netns_holders(&id)
        );
    }
    Ok(())
}

async fn capture() -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig { nodes: 2 }).await?;
    let client = lab.add_pod(PodSpec::new("client", 0)).await?;
    let server = lab.add_pod(PodSpec::new("server", 1)).await?;
    let local = lab.add_pod(PodSpec::new("local", 0)).await?;
    let cap = lab.capture()?;

    // Across nodes, in two segments so the marker only exists reassembled.
    let marker = b"LAB-MARKER-7731";
    let listener = server.listen(9000)?;
    let received = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; marker.len()];
        s.read_exact(&mut buf).await?;
        s.write_all(b"ok").await?;
        anyhow::Ok(buf)
    });
    let mut stream = client.connect((server.ip(), 9000).into()).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&marker[..7]).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&marker[7..]).await?;
    let mut ok = [0u8; 2];
    stream.read_exact(&mut ok).await?;
    ensure!(received.await?? == marker);

    // Between pods of one node: never on the bridge.
    let same_node_marker = b"SAME-NODE-5512";
    let listener = local.listen(9001)?;
    let echoed = tokio::spawn(echo_once(listener));
    let mut stream = client.connect((local.ip(), 9001).into()).await?;
    stream.write_all(same_node_marker).await?;
    let mut back = [0u8; 14];
    stream.read_exact(&mut back).await?;
    echoed.await??;

    let frames = cap.stop()?;
    ensure!(
        frames.between(client.ip(), server.ip()).count() >= 3,
        "{frames:?}"
    );
    ensure!(
        frames.contains_bytes(marker),
        "marker not seen on the wire: {frames:?}"
    );
    let whole_in_one_frame = frames
        .iter()
        .any(|f| f.data.windows(marker.len()).any(|w| w == marker));
    ensure!(
        !whole_in_one_frame,
        "marker was not split; the reassembly path went untested"
    );
    ensure!(!frames.contains_bytes(b"NEVER-SENT-0000"));
    ensure!(
        !frames.contains_bytes(same_node_marker),
        "same-node traffic crossed the bridge"
    );
    ensure!(frames.between(client.ip(), local.ip()).count() == 0);
    Ok(())
}

async fn killed_process() -> anyhow::Result<()> {
    let lab = Lab::start(LabConfig { nodes: 1 }).await?;
    let pod = lab.add_pod(PodSpec::new("app", 0)).await?;
    // The shell's child is in the process group: killing the leader kills it too.
    let mut sh = Command::new("sh");
    sh.args(["-c", "sleep 600 & echo $!; wait"])
        .stdout(Stdio::piped());
    let mut process = pod.spawn(sh)?;
    let mut out = BufReader::new(process.take_stdout().context("stdout")?);
    let mut grandchild = String::new();
    out.read_line(&mut grandchild)?;
    let grandchild: u32 = grandchild.trim().parse()?;
    ensure!(process.try_wait()?.is_none());
    let status = process.kill()?;
    ensure!(status.signal() == Some(9), "{status}");
    assert_eventually!(
        !process_exists(grandchild) || {
            let stat =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        }
    );
    ensure!(process.kill()?.signal() == Some(9), "kill is idempotent");
    ensure!(process.signal(lab::Signal::SIGTERM).is_err());
    Ok(())
}

async fn panicking_test() -> anyhow::Result<()> {
    let (report, inodes) = tokio::sync::oneshot::channel();
    let home = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    let doomed = tokio::spawn(async move {
        let lab = Lab::start(LabConfig { nodes: 2 }).await.expect("lab");
        let pod = lab.add_pod(PodSpec::new("app", 1)).await.expect("pod");
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        pod.spawn(sleep).expect("spawn").detach();
        // A panic inside the namespace must not strand this worker thread there.
        let inside = std::panic::catch_unwind(|| pod.run(|| panic!("deliberate, inside the pod")));
        let back = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino());
        report
            .send((
                namespaces(&lab).expect("namespaces"),
                inside.is_err(),
                back.ok(),
            ))
            .ok();
        panic!("deliberate: the lab must be torn down while unwinding");
    });
    let (namespaces, inner_panicked, back) = inodes.await?;
    ensure!(inner_panicked, "the closure's panic was swallowed");
    ensure!(
        back == Some(home),
        "worker left in net:[{back:?}], expected net:[{home}]"
    );
    ensure!(doomed.await.is_err_and(|e| e.is_panic()));
    for (name, id, _) in namespaces {
        let holders = netns_holders(&id);
        ensure!(holders.is_empty(), "{name} netns still held by {holders:?}");
    }
    Ok(())
}
