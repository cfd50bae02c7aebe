//! Node benchmark: `cargo bench -p benches --bench node`.
//!
//! On the lab (two nodes, a real node agent and ztunnel process per node), pod -> pod on
//! the other node, three ways: `direct` (neither pod enrolled), `relay` (neither enrolled;
//! client pod -> a plain TCP relay process in the client pod -> another in the server pod
//! -> server: the same processes and hops as the mesh with none of its work, the floor any
//! two user-space proxies cost here) and `ztunnel` (both enrolled: client pod -> ztunnel ->
//! HBONE -> ztunnel -> server pod). Figures: single-stream and
//! 8-stream bulk throughput, 1 KiB request/response latency at a fixed rate, new
//! connections per second, and the ztunnels' RSS. The latency figure is repeated with
//! every process on the path held to one CPU, which separates ztunnel's own cost from the
//! cost of waking idle vCPUs. `BENCH_RUNS` runs (default 5), each on
//! a freshly started lab, each figure measured for every configuration back to back
//! (order alternating per run).
//! Writes `bench-results/node.{md,json}` under the workspace root.
//!
//! Knobs: `BENCH_QUICK=1` is a short smoke run (writes `node-quick.*`); `BENCH_RATE` is
//! the latency figure's request rate (default 1000 req/s); `BENCH_BULK_MIB` the
//! single-stream transfer's size (default 256, 32 when quick; raise it to profile the
//! bulk path); `BENCH_WORKERS` sets the load
//! generator runtime's worker threads (default: one per CPU);
//! `LAB_MESH_LOG` is the ztunnels' `RUST_LOG` (default `info`: one access-log line per
//! connection, as ztunnel ships).

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use benches::affinity::OneCpu;
use benches::host::loadavg;
use benches::node::{NodeConfig, NodeLab};
use benches::node_report::{self, NodeFigure, NodeMetadata, NodeResults};
use benches::report;
use benches::{knobs, load};

/// Bound on any single measurement; exceeding it is an error, not a result.
const FIGURE_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: u64 = 1024 * 1024;

/// What to measure and how much.
#[derive(Debug)]
struct Plan {
    runs: usize,
    quick: bool,
    workers: usize,
    bulk_bytes: u64,
    streams: usize,
    stream_bytes: u64,
    rate: f64,
    warmup: Duration,
    paced: Duration,
    message: usize,
    conns: usize,
    concurrency: usize,
}

impl Plan {
    fn from_env() -> Result<Plan> {
        let quick = knobs::quick();
        let runs = knobs::runs(quick)?;
        let workers = knobs::workers()?;
        let rate = knobs::number("BENCH_RATE", 1000.0, 1.0..=1e6)?;
        let bulk_mib = knobs::number("BENCH_BULK_MIB", if quick { 32 } else { 256 }, 1..=1 << 20)?;
        Ok(Plan {
            runs,
            quick,
            workers,
            bulk_bytes: bulk_mib * MIB,
            streams: 8,
            stream_bytes: if quick { 4 * MIB } else { 32 * MIB },
            rate,
            warmup: Duration::from_millis(if quick { 200 } else { 500 }),
            paced: Duration::from_secs(if quick { 1 } else { 5 }),
            message: 1024,
            conns: if quick { 200 } else { 2_000 },
            concurrency: 4,
        })
    }

    fn sizes(&self) -> String {
        format!(
            "bulk {} MiB one way on one connection; {} streams x {} MiB at once; latency {} B \
             request/response paced at {:.0} req/s on one connection, {:.1} s warm-up + {:.1} s \
             timed; new connections {} (connect, {} B each way, close), {} concurrent.",
            self.bulk_bytes / MIB,
            self.streams,
            self.stream_bytes / MIB,
            self.message,
            self.rate,
            self.warmup.as_secs_f64(),
            self.paced.as_secs_f64(),
            self.conns,
            self.message,
            self.concurrency,
        )
    }
}

fn main() -> ExitCode {
    benches::lab_main::lab_main("node", run)
}

fn run(sandbox: String) -> Result<()> {
    let plan = Plan::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers)
        .enable_all()
        .build()?;
    let load_before = loadavg();
    let results = runtime.block_on(measure(&plan))?;
    let load = [load_before, loadavg()];
    runtime.shutdown_timeout(Duration::from_secs(1));

    let meta = metadata(&plan, sandbox, load);
    let rows = node_report::rows(&results);
    let md = node_report::markdown(&meta, &rows, &results);
    println!("\n{md}");
    let json = node_report::json(&meta, &rows, &results);
    report::write_results("node", plan.quick, &md, &json)?;
    for target in node_report::targets(&results) {
        println!("{}", target.line());
    }
    Ok(())
}

async fn measure(plan: &Plan) -> Result<NodeResults> {
    let mut results = NodeResults::default();
    for run in 1..=plan.runs {
        // A fresh lab per run: every run's ztunnels start from nothing, so their memory
        // (and everything else) is an independent sample.
        let started = Instant::now();
        let lab = NodeLab::start().await?;
        let setup = started.elapsed();
        results.idle_memory.push(lab.ztunnel_memory()?);
        let mut line = format!("run {run}/{} (lab up in {setup:.1?}):", plan.runs);
        one_run(plan, run, &lab, &mut results, &mut line).await?;
        let memory = lab.ztunnel_memory()?;
        for m in &memory {
            line += &format!(" | node {} ztunnel RSS {:.1} MiB", m.node, m.rss_mib);
        }
        results.memory.push(memory);
        eprintln!("{line}");
    }
    Ok(results)
}

/// Every figure for both configurations, back to back.
async fn one_run(
    plan: &Plan,
    run: usize,
    lab: &NodeLab,
    results: &mut NodeResults,
    line: &mut String,
) -> Result<()> {
    // Alternate which configuration goes first, so neither always gets a warm machine.
    let order = report::alternating(&NodeConfig::ALL, run);
    for &config in &order {
        let path = lab.path(config);
        let tput = load::bulk_on(path.dial().await?, plan.bulk_bytes);
        let tput = bounded(config, "bulk", tput).await?;
        results.push(config, NodeFigure::Throughput, tput);
        *line += &format!(" {} {tput:.0} MiB/s", config.name());
    }
    for &config in &order {
        let path = lab.path(config);
        let mut streams = Vec::with_capacity(plan.streams);
        for _ in 0..plan.streams {
            streams.push(path.dial().await?);
        }
        let agg = load::parallel_bulk(streams, plan.stream_bytes);
        let agg = bounded(config, "parallel bulk", agg).await?;
        results.push(config, NodeFigure::ParallelThroughput, agg);
        *line += &format!(" | {} x{} {agg:.0} MiB/s", config.name(), plan.streams);
    }
    paced_latency(plan, lab, &order, results, line, false).await?;
    {
        // Every process on the paths (this one, both ztunnels, both relays) held to CPU 0
        // for the repeat.
        let mut pids = vec![
            std::process::id(),
            lab.mesh.ztunnel_pid(0).context("node 0 has no ztunnel")?,
            lab.mesh.ztunnel_pid(1).context("node 1 has no ztunnel")?,
        ];
        pids.extend(lab.relay_pids());
        let _pinned = OneCpu::pin(&pids)?;
        paced_latency(plan, lab, &order, results, line, true).await?;
    }
    for &config in &order {
        let dialer = lab.path(config).dialer();
        let rate = load::new_connection_rate(dialer, plan.conns, plan.concurrency, plan.message);
        let rate = bounded(config, "new connections", rate).await?;
        results.push(config, NodeFigure::ConnectionRate, rate);
        *line += &format!(" | {} {rate:.0} conn/s", config.name());
    }
    ensure!(
        lab.errors.count() == 0,
        "{} load-server errors during run {run}",
        lab.errors.count()
    );
    let complaints = lab.ztunnel_complaints();
    ensure!(
        complaints.is_empty(),
        "ztunnel warnings/errors during run {run}:\n{}",
        complaints.join("\n")
    );
    Ok(())
}

/// The 1 KiB request/response figure for both configurations; `one_cpu` files it under the
/// one-CPU figures (the caller holds the pin).
async fn paced_latency(
    plan: &Plan,
    lab: &NodeLab,
    order: &[NodeConfig],
    results: &mut NodeResults,
    line: &mut String,
    one_cpu: bool,
) -> Result<()> {
    let (p50, p99, tag) = if one_cpu {
        (
            NodeFigure::OneCpuLatencyP50,
            NodeFigure::OneCpuLatencyP99,
            " (CPU 0)",
        )
    } else {
        (NodeFigure::LatencyP50, NodeFigure::LatencyP99, "")
    };
    for &config in order {
        let tcp = lab.path(config).dial().await?;
        let lat = load::paced_latency(tcp, plan.rate, plan.warmup, plan.paced, plan.message);
        let lat = bounded(config, "paced latency", lat).await?;
        if lat.achieved_rate < 0.9 * plan.rate {
            eprintln!(
                "warning: {}{tag}: paced latency reached only {:.0} of {:.0} req/s",
                config.name(),
                lat.achieved_rate,
                plan.rate
            );
        }
        results.achieved_rates.push(lat.achieved_rate);
        results.push(config, p50, lat.p50_us);
        results.push(config, p99, lat.p99_us);
        *line += &format!(
            " | {}{tag} p50 {:.0} p99 {:.0} max {:.0} µs @{:.0}/s",
            config.name(),
            lat.p50_us,
            lat.p99_us,
            lat.max_us,
            lat.achieved_rate
        );
    }
    Ok(())
}

async fn bounded<T>(
    config: NodeConfig,
    what: &str,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(FIGURE_TIMEOUT, f)
        .await
        .with_context(|| format!("{}: {what} exceeded {FIGURE_TIMEOUT:?}", config.name()))?
        .with_context(|| format!("{}: {what}", config.name()))
}

fn metadata(plan: &Plan, sandbox: String, load: [Option<f64>; 2]) -> NodeMetadata {
    let knobs = [
        "BENCH_QUICK",
        "BENCH_RUNS",
        "BENCH_RATE",
        "BENCH_BULK_MIB",
        "BENCH_WORKERS",
        "LAB_MESH_LOG",
    ];
    NodeMetadata {
        run: report::RunInfo::now("node", &knobs),
        tls_backend: hbone::tls::BACKEND,
        sandbox,
        ztunnel_log_level: std::env::var("LAB_MESH_LOG").unwrap_or_else(|_| "info".to_owned()),
        loadavg_before_after: load,
        runtime_worker_threads: plan.workers,
        runs: plan.runs,
        quick: plan.quick,
        sizes: plan.sizes(),
        notes: vec![
            "Lab topology: network namespaces for a wire bridge, two nodes and the pods (ptp \
             veths, routed through the nodes); client pod on node 0, server pod on node 1. \
             direct = both pods in the non-enrolled namespace `legacy`; ztunnel = both in \
             `mesh`, so client pod -> node 0's ztunnel (listening inside the pod) -> HBONE \
             (mTLS, HTTP/2 CONNECT) -> node 1's ztunnel -> server pod; relay = both in the \
             non-enrolled namespace `relay`, the client dialling 127.0.0.1:15001 in its own pod, \
             where a plain TCP relay process (current-thread tokio, the same copy loop ztunnel \
             uses for plain TCP, TCP_NODELAY) forwards to a second one on the server pod's \
             15008, which forwards to the server on 127.0.0.1. Before timing, the ztunnel logs \
             prove the ztunnel path went over HBONE and the other two through no ztunnel."
                .to_owned(),
            "The load client and server run in this process on one tokio runtime; the two \
             ztunnels (and node agents) and the two relays are separate processes. Everything, \
             kernel forwarding included, shares the machine's CPUs. Each figure is measured for \
             every configuration back to back, the order reversing between runs."
                .to_owned(),
            "Latency: one connection; a 1 KiB request is sent on each tick of a tokio \
             interval (1 ms; missed ticks are caught up) and timed from its first write to the \
             last byte of its echo. p50/p99 are per run; the table shows their median and \
             spread. 'added by ztunnel' (or 'by two TCP relays') is ztunnel − direct (relay − \
             direct) within each run, then the median and spread of those differences."
                .to_owned(),
            "One CPU: the latency figure again with every thread of this process, both \
             ztunnels and both relays held to CPU 0 (sched_setaffinity), then released. On a VM that halts idle \
             vCPUs, each hand-off to a process whose vCPU is asleep waits for the hypervisor \
             to wake it; the ztunnel and relay paths have four more hand-offs per round trip \
             than the direct one. On one CPU the hand-offs are plain context switches, so this figure isolates \
             what ztunnel's own work adds."
                .to_owned(),
            "New connections: each is a socket created inside the client pod (setns), \
             connect, 1 KiB request, 1 KiB echo, half-close, wait for the server's close. With \
             ztunnel each is a new CONNECT stream on the pooled HBONE connection; both ztunnels \
             write an access-log line per connection at the default log level."
                .to_owned(),
            "Memory: VmRSS of both ztunnel processes from /proc/<pid>/status once the lab is \
             up (before traffic) and after each run; every run starts a fresh lab, so each \
             run's ztunnels are new processes. The target takes, per run, the larger of the \
             two ztunnels after the run, and checks the median over runs. The ztunnel process is this \
             benchmark binary re-executed (lab::mesh), running the same app::main as the \
             ztunnel binary."
                .to_owned(),
        ],
    }
}
