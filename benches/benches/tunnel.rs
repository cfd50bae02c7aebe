//! Tunnel benchmark: `cargo bench -p benches --bench tunnel`.
//!
//! Four paths on 127.0.0.1 (direct, tcp-relay, tls-relay, hbone), each measured for bulk
//! throughput, 1 KiB round-trip latency and new-tunnel rate, `BENCH_RUNS` times (default 5)
//! with the configurations interleaved inside each run. Prints a Markdown table and writes
//! `bench-results/tunnel.{md,json}` under the workspace root.
//!
//! Knobs: `BENCH_QUICK=1` is a short smoke run (writes `tunnel-quick.*`);
//! `BENCH_CONFIGS=tls-relay,hbone` measures only the named paths and writes nothing (for
//! profiling one path); `BENCH_WORKERS` overrides the runtime's worker threads (default:
//! one per CPU).

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use benches::host::{git_state, loadavg, nproc, workspace_root};
use benches::report::{self, Figure, Metadata, Results};
use benches::topology::{Certs, Config, Topology};
use benches::{knobs, load};

/// Bound on any single measurement; exceeding it is an error, not a result.
const FIGURE_TIMEOUT: Duration = Duration::from_secs(120);

/// What to measure and how much.
#[derive(Debug)]
struct Plan {
    runs: usize,
    quick: bool,
    workers: usize,
    /// `BENCH_CONFIGS` (comma-separated names) narrows the run, e.g. for profiling one path.
    configs: Vec<Config>,
    bulk_bytes: u64,
    warmup: usize,
    round_trips: usize,
    message: usize,
    conns: usize,
    concurrency: usize,
}

impl Plan {
    fn from_env() -> Result<Plan> {
        let quick = knobs::quick();
        let runs = knobs::runs(quick)?;
        let workers = knobs::workers()?;
        let configs = match std::env::var("BENCH_CONFIGS") {
            Ok(list) => list
                .split(',')
                .map(|name| {
                    Config::ALL
                        .into_iter()
                        .find(|c| c.name() == name.trim())
                        .with_context(|| format!("BENCH_CONFIGS: unknown config {name:?}"))
                })
                .collect::<Result<Vec<_>>>()?,
            Err(_) => Config::ALL.to_vec(),
        };
        let mib = 1024 * 1024;
        Ok(Plan {
            runs,
            quick,
            workers,
            configs,
            bulk_bytes: if quick { 32 * mib } else { 512 * mib },
            warmup: if quick { 200 } else { 2_000 },
            round_trips: if quick { 2_000 } else { 20_000 },
            message: 1024,
            conns: if quick { 300 } else { 3_000 },
            concurrency: 16,
        })
    }
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("tunnel benchmark: skipped (run it with `cargo bench -p benches --bench tunnel`)");
        return Ok(());
    }
    if cfg!(debug_assertions) {
        bail!("debug build: benchmark numbers would be meaningless; use `cargo bench`");
    }
    let plan = Plan::from_env()?;
    let nproc = nproc();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers)
        .enable_all()
        .build()?;
    let load_before = loadavg();
    let (results, handshakes) = runtime.block_on(measure(&plan))?;
    let load = [load_before, loadavg()];
    runtime.shutdown_timeout(Duration::from_secs(1));

    let root = workspace_root();
    let meta = metadata(&plan, nproc, handshakes, load, &root);
    let rows = report::rows(&results);
    let targets = report::targets(&results);
    let md = report::markdown(&meta, &rows, &targets);
    println!("\n{md}");

    if plan.configs != Config::ALL {
        println!("partial run (BENCH_CONFIGS): results not written");
        return Ok(());
    }
    report::write_results(
        "tunnel",
        plan.quick,
        &md,
        &report::json(&meta, &rows, &targets),
    )?;
    for target in &targets {
        println!("{}", target.line());
    }
    Ok(())
}

async fn measure(plan: &Plan) -> Result<(Results, Option<u64>)> {
    let certs = Certs::new()?;
    let mut topologies = Vec::new();
    for &config in &plan.configs {
        let topo = Topology::start(config, &certs).await?;
        // One echo through the path proves it is wired before anything is timed.
        bounded(
            config,
            "smoke check",
            load::latency(topo.entry, 0, 1, plan.message),
        )
        .await?;
        topologies.push(topo);
    }
    let mut results = Results::default();
    for run in 1..=plan.runs {
        for topo in &topologies {
            let (config, entry) = (topo.config, topo.entry);
            let tput = bounded(config, "bulk", load::bulk(entry, plan.bulk_bytes)).await?;
            let lat = load::latency(entry, plan.warmup, plan.round_trips, plan.message);
            let lat = bounded(config, "latency", lat).await?;
            let rate = load::new_tunnel_rate(entry, plan.conns, plan.concurrency, plan.message);
            let rate = bounded(config, "new tunnels", rate).await?;
            ensure!(
                topo.errors.count() == 0,
                "{}: {} hop errors during run {run}",
                config.name(),
                topo.errors.count()
            );
            results.push(config, Figure::Throughput, tput);
            results.push(config, Figure::LatencyP50, lat.p50_us);
            results.push(config, Figure::LatencyP99, lat.p99_us);
            results.push(config, Figure::NewTunnelRate, rate);
            eprintln!(
                "run {run}/{}: {:<9} {tput:>7.0} MiB/s  p50 {:>6.1} µs  p99 {:>6.1} µs  {rate:>6.0} conn/s",
                plan.runs,
                config.name(),
                lat.p50_us,
                lat.p99_us,
            );
        }
    }
    let handshakes = topologies
        .iter()
        .find_map(Topology::pool_stats)
        .map(|s| s.handshakes);
    Ok((results, handshakes))
}

async fn bounded<T>(config: Config, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(FIGURE_TIMEOUT, f)
        .await
        .with_context(|| format!("{}: {what} exceeded {FIGURE_TIMEOUT:?}", config.name()))?
        .with_context(|| format!("{}: {what}", config.name()))
}

fn metadata(
    plan: &Plan,
    nproc: usize,
    handshakes: Option<u64>,
    load: [Option<f64>; 2],
    root: &Path,
) -> Metadata {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (git_commit, git_dirty) = git_state(root);
    Metadata {
        date_utc: report::utc_timestamp(now),
        git_commit,
        git_dirty,
        tls_backend: hbone::tls::BACKEND,
        nproc,
        loadavg_before_after: load,
        runtime_worker_threads: plan.workers,
        runs: plan.runs,
        quick: plan.quick,
        bulk_bytes: plan.bulk_bytes,
        latency_warmup: plan.warmup,
        latency_round_trips: plan.round_trips,
        message_bytes: plan.message,
        new_tunnel_connections: plan.conns,
        new_tunnel_concurrency: plan.concurrency,
        hbone_pool_handshakes: handshakes,
        notes: vec![
            "Every path is load client -> [hop A] -> [hop B] -> load server on 127.0.0.1, all in \
             one process on one tokio runtime (load generator included); TCP_NODELAY on every \
             socket; configurations are interleaved within each run."
                .to_owned(),
            format!(
                "New-tunnel rate: each connection is a new TCP connection to hop A with a 1 KiB \
                 request and 1 KiB reply, counted once the far end has closed after the \
                 client's half-close. tls-relay does a full mTLS handshake per connection \
                 (hbone::tls disables resumption); hbone opens a new HTTP/2 CONNECT stream on \
                 the pooled mTLS connection ({} TLS handshake(s) over the whole run).",
                handshakes.map_or_else(|| "?".to_owned(), |h| h.to_string())
            ),
            "Latency p50/p99 are computed within each run over its timed round trips; the table \
             shows the median and spread of those per-run percentiles."
                .to_owned(),
        ],
    }
}
