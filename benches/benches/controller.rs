//! Controller benchmark: `cargo bench -p benches --bench controller`.
//!
//! For meshes of 10 (the baseline), 1,000 and 10,000 pods (manifest directories written
//! by `benches::manifests`), three measurements per run:
//!
//! - **Push latency**: the controller's real path in this process (`serve::serve`: the
//!   directory source, the pipeline, the delta xDS server over TLS) with one xDS client
//!   subscribed as ztunnel does. After the initial sync, one pod (alone in its file) has
//!   its `version` label flipped, repeatedly: the new file is renamed into place and the
//!   clock runs until the client has the delta response, which must carry exactly that
//!   one workload with the new label. p50 and p99 per run.
//! - **Breakdown**: the same one-pod change through the same functions called directly
//!   (re-read + reconcile, `translate`, snapshot build, diff for one wildcard client), so
//!   the latency can be attributed.
//! - **Memory**: the controller as its own process (this binary re-executed with
//!   `BENCH_EXEC=controller`, running `controller::app::main`), serving one xDS client
//!   once `/ready`: VmRSS, its anonymous part and the peak.
//!
//! Writes `bench-results/controller.{md,json}` (or `controller-quick.*`) under the
//! workspace root. Knobs: `BENCH_QUICK=1` (a smoke run), `BENCH_RUNS` (default 5, 2 when
//! quick), `BENCH_CHANGES` (one-pod changes per run and size; default 30, 5 when quick),
//! `BENCH_WORKERS` (the in-process runtime's threads; default one per CPU).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use api::prost::Message as _;
use api::workload::{Address, address};
use benches::controller_report::{self, Figure, Metadata, Results};
use benches::host::{loadavg, process_memory};
use benches::manifests::{self, CHURN_FILE, CHURN_UID, Layout};
use benches::stats::{median, percentile, sorted};
use benches::xds_client::{Target, XdsClient};
use benches::{knobs, report};
use controller::pipeline::{Translator, snapshot_of};
use controller::serve::{self, Listeners, RunFlags};
use controller::source::SourceEvent;
use controller::source::dir::{DirectoryState, read_changes};
use controller::store::Store;
use controller::translate::{MeshOptions, translate};
use controller::xds::{Held, Scope, Snapshot, diff_since};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Mesh sizes in pods; the first is the baseline.
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Set to `controller` in the re-executed child.
const EXEC_ENV: &str = "BENCH_EXEC";
const NODE: &str = "node-0";
const TOKEN: &str = "controller-bench-token-0123456789";
/// Changes made before the timed ones, per run and size.
const WARMUP_CHANGES: usize = 2;
/// Bound on start-up (parsing and translating the mesh) and on waits for `/ready`.
const START_PATIENCE: Duration = Duration::from_secs(120);
/// Bound on one push; exceeding it is an error, not a result.
const PUSH_PATIENCE: Duration = Duration::from_secs(10);
/// Quiet after each push: no other response may arrive, and the pipeline is idle again
/// (longer than its 100 ms debounce) when the next change comes.
const BETWEEN_CHANGES: Duration = Duration::from_millis(300);
/// How long the child serves its client before its memory is read.
const MEMORY_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Plan {
    runs: usize,
    quick: bool,
    changes: usize,
    workers: usize,
}

impl Plan {
    fn from_env() -> Result<Plan> {
        let quick = knobs::quick();
        Ok(Plan {
            runs: knobs::runs(quick)?,
            quick,
            changes: knobs::number("BENCH_CHANGES", if quick { 5 } else { 30 }, 1..=1000)?,
            workers: knobs::workers()?,
        })
    }
}

fn main() -> ExitCode {
    // The controller process of the memory figure: this binary re-executed.
    if let Ok(which) = std::env::var(EXEC_ENV) {
        return exec(&which);
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "controller benchmark: skipped (run it with `cargo bench -p benches --bench controller`)"
        );
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controller benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn exec(which: &str) -> ExitCode {
    match which {
        "controller" => {
            // Never outlive the benchmark, whatever happens to it.
            if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
                eprintln!("cannot set the parent-death signal: {e}");
                return ExitCode::FAILURE;
            }
            controller::app::main(std::env::args().skip(1).collect())
        }
        other => {
            eprintln!("{EXEC_ENV}={other}: unknown component");
            ExitCode::from(2)
        }
    }
}

/// One generated mesh.
#[derive(Debug)]
struct Mesh {
    dir: PathBuf,
    layout: Layout,
}

/// The benchmark's scratch directory, removed on drop.
#[derive(Debug)]
struct Work {
    dir: PathBuf,
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Work {
    fn staging(&self) -> PathBuf {
        self.dir.join("staging").join(CHURN_FILE)
    }

    fn tokens(&self) -> PathBuf {
        self.dir.join("tokens.yaml")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The arguments after `controller run` for `mesh` on these ports.
    fn run_args(&self, mesh: &Mesh, listen: SocketAddr, admin: SocketAddr) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--manifests".into(),
            path(mesh.dir.clone()),
            "--tokens".into(),
            path(self.tokens()),
            "--state-dir".into(),
            path(self.state_dir()),
            "--listen".into(),
            listen.to_string(),
            "--admin".into(),
            admin.to_string(),
        ]
    }

    fn target(&self, listen: SocketAddr) -> Target {
        Target {
            address: listen.to_string(),
            root_cert: self.state_dir().join("root-cert.pem"),
            token_file: self.token_file(),
            node: NODE.to_owned(),
        }
    }

    /// Puts the churn pod with `version` into `mesh` the way tools do: written elsewhere,
    /// renamed into place. Returns the moment of the rename.
    fn place_churn(&self, mesh: &Mesh, version: &str) -> Result<Instant> {
        let staging = self.staging();
        std::fs::write(&staging, manifests::churn_pod(version, &mesh.layout))
            .with_context(|| format!("write {}", staging.display()))?;
        let at = Instant::now();
        std::fs::rename(&staging, mesh.dir.join(CHURN_FILE)).context("rename the churn file")?;
        Ok(at)
    }
}

fn run() -> Result<()> {
    if cfg!(debug_assertions) {
        bail!("debug build: benchmark numbers would be meaningless; use `cargo bench`");
    }
    let plan = Plan::from_env()?;
    let work = Work {
        dir: std::env::temp_dir().join(format!("controller-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&work.dir);
    std::fs::create_dir_all(work.dir.join("staging"))?;
    std::fs::write(work.tokens(), format!("{NODE}: {TOKEN}\n"))?;
    std::fs::write(work.token_file(), TOKEN)?;
    let mut meshes = Vec::new();
    for pods in SIZES {
        let dir = work.dir.join(format!("mesh-{pods}"));
        let layout = manifests::write(&dir, pods)?;
        meshes.push(Mesh { dir, layout });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers)
        .enable_all()
        .build()?;

    let load_before = loadavg();
    let mut results = Results::default();
    for run in 1..=plan.runs {
        let mut line = format!("run {run}/{}:", plan.runs);
        for mesh in &meshes {
            let pods = mesh.layout.pods;
            let samples = runtime
                .block_on(push_latency(&work, mesh, &plan))
                .with_context(|| format!("push latency, {pods} pods"))?;
            let s = sorted(samples.clone());
            let (p50, p99) = (percentile(&s, 50.0), percentile(&s, 99.0));
            let (Some(p50), Some(p99)) = (p50, p99) else {
                bail!("no push latency samples");
            };
            results.push(Figure::PushP50, pods, p50);
            results.push(Figure::PushP99, pods, p99);
            results
                .push_samples
                .entry(pods)
                .or_default()
                .extend(samples);
            line += &format!(" | {pods} pods: push p50 {p50:.1} p99 {p99:.1} ms");

            let steps =
                breakdown(&work, mesh, &plan).with_context(|| format!("breakdown, {pods} pods"))?;
            for (figure, ms) in &steps {
                results.push(*figure, pods, *ms);
            }
            line += &format!(
                " (translate + snapshot {:.1}, full translate {:.1})",
                steps[&Figure::Publish],
                steps[&Figure::FullTranslate]
            );
        }
        for mesh in &meshes {
            let pods = mesh.layout.pods;
            let m =
                memory(&work, mesh, &runtime).with_context(|| format!("memory, {pods} pods"))?;
            results.push(Figure::Rss, pods, m.rss_mib);
            results.push(Figure::RssAnon, pods, m.rss_anon_mib);
            results.push(Figure::RssPeak, pods, m.hwm_mib);
            line += &format!(" | {pods} pods: RSS {:.1} MiB", m.rss_mib);
        }
        eprintln!("{line}");
    }
    let load = [load_before, loadavg()];
    runtime.shutdown_timeout(Duration::from_secs(1));

    let meta = metadata(&plan, &meshes, load);
    let baseline = SIZES[0];
    let largest = SIZES[SIZES.len() - 1];
    let targets = controller_report::targets(&results, largest, baseline);
    let md = controller_report::markdown(&meta, &results, &targets);
    println!("\n{md}");
    let json = controller_report::json(&meta, &results, &targets);
    report::write_results("controller", plan.quick, &md, &json)?;
    for target in &targets {
        println!("{}", target.line());
    }
    Ok(())
}

/// The in-process controller on `mesh`; returns the timed changes' latencies (ms).
async fn push_latency(work: &Work, mesh: &Mesh, plan: &Plan) -> Result<Vec<f64>> {
    work.place_churn(mesh, "v1")?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let (listen, admin_addr) = (grpc.local_addr()?, admin.local_addr()?);
    let flags = RunFlags::parse(work.run_args(mesh, listen, admin_addr), |_| None)?;
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(serve::serve(
        flags.config,
        Listeners { grpc, admin },
        shutdown,
    ));
    let measured = async {
        wait_ready(admin_addr, || Ok(())).await?;
        let mut client = connect(work, mesh, listen).await?;
        let mut samples = Vec::with_capacity(plan.changes);
        for i in 0..WARMUP_CHANGES + plan.changes {
            let version = if i.is_multiple_of(2) { "v2" } else { "v1" };
            let changed = work.place_churn(mesh, version)?;
            let received = client.next(PUSH_PATIENCE).await?;
            check_push(&received.response, version)?;
            if i >= WARMUP_CHANGES {
                samples.push((received.at - changed).as_secs_f64() * 1e3);
            }
            client
                .expect_nothing(BETWEEN_CHANGES)
                .await
                .context("one change, one response")?;
        }
        anyhow::Ok(samples)
    }
    .await;
    stop.send_replace(true);
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
    let samples = measured?;
    match stopped {
        Ok(Ok(Ok(()))) => Ok(samples),
        Ok(Ok(Err(e))) => Err(e).context("the controller failed"),
        Ok(Err(e)) => Err(e).context("the controller task"),
        Err(_) => bail!("the controller did not stop within 10 s"),
    }
}

/// Connects a client and checks the initial responses hold the whole mesh.
async fn connect(work: &Work, mesh: &Mesh, listen: SocketAddr) -> Result<XdsClient> {
    let mut client = XdsClient::connect(&work.target(listen)).await?;
    let counts = client.initial(START_PATIENCE).await?;
    let expected = BTreeMap::from([
        (api::ADDRESS_TYPE_URL.to_owned(), mesh.layout.addresses()),
        (api::AUTHORIZATION_TYPE_URL.to_owned(), mesh.layout.policies),
    ]);
    ensure!(
        counts == expected,
        "initial responses: {counts:?}, expected {expected:?}"
    );
    Ok(client)
}

/// The response to a churn: exactly the churn pod's workload, with the new version.
fn check_push(response: &api::xds::DeltaDiscoveryResponse, version: &str) -> Result<()> {
    ensure!(
        response.type_url == api::ADDRESS_TYPE_URL
            && response.resources.len() == 1
            && response.removed_resources.is_empty(),
        "expected one changed address, got {} {:?} (removed {:?})",
        response.type_url,
        response
            .resources
            .iter()
            .map(|r| &r.name)
            .collect::<Vec<_>>(),
        response.removed_resources
    );
    let resource = &response.resources[0];
    ensure!(resource.name == CHURN_UID, "pushed {}", resource.name);
    let any = resource.resource.as_ref().context("no payload")?;
    let decoded = Address::decode(any.value.as_slice())?;
    let Some(address::Type::Workload(w)) = decoded.r#type else {
        bail!("{CHURN_UID} is not a workload");
    };
    ensure!(
        w.canonical_revision == version,
        "pushed revision {}, expected {version}",
        w.canonical_revision
    );
    Ok(())
}

/// Polls `GET /ready` on the admin port until 200; `alive` fails if the controller died.
async fn wait_ready(admin: SocketAddr, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        alive()?;
        if ready(admin).await.unwrap_or(false) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not ready within {START_PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready(admin: SocketAddr) -> Result<bool> {
    let mut tcp = TcpStream::connect(admin).await?;
    tcp.write_all(b"GET /ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await??;
    Ok(response.starts_with(b"HTTP/1.1 200"))
}

/// The median time of each step of a one-pod change, calling the controller's functions
/// directly on a store of the whole mesh.
fn breakdown(work: &Work, mesh: &Mesh, plan: &Plan) -> Result<BTreeMap<Figure, f64>> {
    work.place_churn(mesh, "v1")?;
    let options = MeshOptions::default();
    let mut state = DirectoryState::default();
    for (path, change) in read_changes(&mesh.dir, &BTreeMap::new()) {
        state.update_file(path, change);
    }
    let mut store = Store::default();
    for event in state.reconcile() {
        store.apply(event);
    }
    store.apply(SourceEvent::Synced);
    ensure!(store.problems().is_empty(), "{:?}", store.problems());
    let mut translator = Translator::new(options.clone());
    let mut snapshot = Arc::new(
        translator
            .translate(&store, Arc::new(Snapshot::default()))
            .snapshot,
    );
    let mut full = Arc::new(snapshot_of(
        &translate(&store, &options),
        Arc::new(Snapshot::default()),
    ));
    ensure!(
        snapshot == full,
        "the pipeline's snapshot differs from a full translation's"
    );
    // What a wildcard client holds.
    let mut held: Held = snapshot
        .resources(api::ADDRESS_TYPE_URL)
        .iter()
        .map(|(name, entry)| (Arc::from(name), Some(entry.version)))
        .collect();
    let mut times: BTreeMap<Figure, Vec<f64>> = BTreeMap::new();
    let mut time = |figure: Figure, started: Instant| {
        times
            .entry(figure)
            .or_default()
            .push(started.elapsed().as_secs_f64() * 1e3);
    };
    for i in 0..WARMUP_CHANGES + plan.changes {
        let version = if i.is_multiple_of(2) { "v2" } else { "v1" };
        work.place_churn(mesh, version)?;
        let started = Instant::now();
        for (path, change) in read_changes(&mesh.dir, &state.fingerprints()) {
            state.update_file(path, change);
        }
        let events = state.reconcile();
        time(Figure::SourceScan, started);
        ensure!(
            matches!(events.as_slice(), [SourceEvent::Applied(p)] if *p.key.name == *manifests::CHURN_POD.1),
            "expected the churn pod alone, got {} events",
            events.len()
        );
        for event in events {
            store.apply(event);
        }
        let started = Instant::now();
        let next = Arc::new(translator.translate(&store, snapshot.clone()).snapshot);
        time(Figure::Publish, started);
        let started = Instant::now();
        let update = diff_since(
            &held,
            &snapshot.resources(api::ADDRESS_TYPE_URL),
            &next.resources(api::ADDRESS_TYPE_URL),
            Scope::All,
        );
        time(Figure::Diff, started);
        ensure!(
            update.removed.is_empty()
                && update.changed.len() == 1
                && *update.changed[0].0 == *CHURN_UID,
            "diff: {} changed, {} removed",
            update.changed.len(),
            update.removed.len()
        );
        for (name, entry) in update.changed {
            held.insert(name, Some(entry.version));
        }
        snapshot = next;

        let started = Instant::now();
        let translation = translate(&store, &options);
        time(Figure::FullTranslate, started);
        let started = Instant::now();
        full = Arc::new(snapshot_of(&translation, full.clone()));
        time(Figure::FullSnapshot, started);
        ensure!(
            full.version() == snapshot.version(),
            "the pipeline's snapshot differs from a full translation's"
        );
    }
    times
        .into_iter()
        .map(|(figure, all)| {
            let timed = &all[WARMUP_CHANGES..];
            Ok((figure, median(timed).context("no samples")?))
        })
        .collect()
}

/// Kills and reaps the child on every path.
#[derive(Debug)]
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released for the child to bind).
fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The controller as its own process on `mesh`, serving one client: its memory.
fn memory(
    work: &Work,
    mesh: &Mesh,
    runtime: &tokio::runtime::Runtime,
) -> Result<benches::host::ProcessMemory> {
    work.place_churn(mesh, "v1")?;
    let (listen, admin) = (free_port()?, free_port()?);
    let log_path = work
        .dir
        .join(format!("controller-{}.log", mesh.layout.pods));
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(std::env::current_exe()?)
        .env(EXEC_ENV, "controller")
        .env("RUST_LOG", "info")
        .arg("run")
        .args(work.run_args(mesh, listen, admin))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start the controller")?;
    let pid = child.id();
    let mut child = ChildGuard(child);
    let log_tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    let measured = runtime.block_on(async {
        wait_ready(admin, || match child.0.try_wait()? {
            Some(status) => bail!("the controller exited ({status})"),
            None => Ok(()),
        })
        .await?;
        let _client = connect(work, mesh, listen).await?;
        tokio::time::sleep(MEMORY_SETTLE).await;
        process_memory(pid)
    });
    measured.with_context(|| format!("controller log:\n{}", log_tail()))
}

fn metadata(plan: &Plan, meshes: &[Mesh], load: [Option<f64>; 2]) -> Metadata {
    let knobs = [
        "BENCH_QUICK",
        "BENCH_RUNS",
        "BENCH_CHANGES",
        "BENCH_WORKERS",
    ];
    let layouts = meshes
        .iter()
        .map(|m| {
            let l = &m.layout;
            format!(
                "{} pods: Services {}, AuthorizationPolicies {}, nodes {}, files {}; {} \
                 Address resources",
                l.pods,
                l.services,
                l.policies,
                l.nodes,
                l.files,
                l.addresses(),
            )
        })
        .collect();
    Metadata {
        run: report::RunInfo::now("controller", &knobs),
        loadavg_before_after: load,
        runs: plan.runs,
        quick: plan.quick,
        sizes: SIZES.to_vec(),
        changes_per_run: plan.changes,
        layouts,
        notes: vec![
            format!(
                "Mesh: {} namespaces ({} enrolled in ambient), apps of {} pods (two Deployment \
                 versions), a Service (a numbered and a named target port) and a ServiceAccount \
                 per app, 2 AuthorizationPolicies per enrolled namespace (namespace-wide ALLOW, \
                 DENY selecting version=v2), {} pods per node, pod files of at most {} pods. The \
                 changing pod is alone in {CHURN_FILE}.",
                manifests::NAMESPACES.len(),
                manifests::ENROLLED,
                manifests::PODS_PER_APP,
                manifests::PODS_PER_NODE,
                manifests::PODS_PER_FILE,
            ),
            format!(
                "Push latency: `serve::serve` in this process (directory source with inotify, \
                 pipeline with the default debounce, delta xDS over TLS on 127.0.0.1) on a tokio \
                 runtime with {} workers, shared with one xDS client that subscribes to both \
                 Istio types with `*` as ztunnel does and ACKs every response. Each change \
                 writes the churn pod with its `version` label flipped to a file outside the \
                 directory and renames it into place; the time runs from the rename to the \
                 client's receipt of the delta response, which must carry exactly that workload \
                 with the new label (and nothing else may arrive in the next {} ms). {} \
                 untimed changes first; changes {} ms apart, so each finds the pipeline idle.",
                plan.workers,
                BETWEEN_CHANGES.as_millis(),
                WARMUP_CHANGES,
                BETWEEN_CHANGES.as_millis(),
            ),
            "Breakdown: the same change through the same functions, called directly on a store \
             of the whole mesh: `read_changes` + `DirectoryState::reconcile` (the source's \
             scan), `pipeline::Translator::translate` (translation and snapshot, keeping \
             unchanged pods' results, as the pipeline does), and `xds::diff_since` against \
             what a wildcard client holds (the stream's work). For reference, a full \
             `translate` of the store and `pipeline::snapshot_of` of it (what every change \
             cost before; the benchmark checks both give the same snapshot). Median per run. \
             What the push latency adds on top: the notification, task hand-offs, encoding, \
             TLS and HTTP/2 on loopback."
                .to_owned(),
            format!(
                "Memory: this benchmark binary re-executed as `controller run` (the same \
                 `controller::app::main` as the controller binary), one process per mesh size, \
                 read from /proc/<pid>/status once `/ready` answers 200 and one xDS client has \
                 received the whole mesh and stayed connected for {} s. Per 1,000 pods = \
                 (RSS at N − RSS at the {}-pod baseline) / (N / 1000), paired within each run.",
                MEMORY_SETTLE.as_secs(),
                SIZES[0],
            ),
        ],
    }
}
