//! Waypoint benchmark: `cargo bench -p benches --bench waypoint`.
//!
//! On the local mesh (two nodes; controller, node agents, ztunnels, a waypoint pod and
//! an nginx pod as separate processes), HTTP requests from a client pod on node 0 to
//! server pods on node 1, three ways (see `benches::waypoint_lab`): through the waypoint
//! with a five-rule VirtualService (the request matches the last rule), through the mesh
//! without a waypoint, and through nginx doing the same routing outside the mesh. For
//! HTTP/1.1 keep-alive and HTTP/2, closed loop: requests/s, p50/p99 latency, and the
//! proxy process's CPU time over the timed window (requests per proxy CPU-second, the
//! per-core figure the target compares); the waypoint's and nginx's RSS after each run.
//! `BENCH_RUNS` runs (default 5), each on a freshly started lab, the configurations back
//! to back (order alternating per run). Writes `bench-results/waypoint.{md,json}`.
//!
//! Knobs: `BENCH_QUICK=1` (short smoke run, writes `waypoint-quick.*`); `BENCH_RUNS`;
//! `BENCH_SECONDS` (timed window per figure, default 5); `BENCH_H1_CONNS` (default 16);
//! `BENCH_H2_CONNS` x `BENCH_H2_STREAMS` (default 2 x 16); `BENCH_WORKERS`;
//! `LAB_WAYPOINT_BIN=target/release/waypoint` runs the built waypoint binary (measure the
//! RSS target with it) instead of this benchmark re-executed. Requires nginx
//! (`apt-get install -y nginx-light`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use benches::host::loadavg;
use benches::http_load::{self, Proto, Window};
use benches::waypoint_lab::{self, CpuSample, ProxyConfig, WaypointLab, bench_path};
use benches::waypoint_report::{self, RunMemory, WpFigure, WpMetadata, WpResults};
use benches::{knobs, report};

/// Bound on any single measurement; exceeding it is an error, not a result.
const FIGURE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Plan {
    runs: usize,
    quick: bool,
    workers: usize,
    window: Window,
    h1_conns: usize,
    h2_conns: usize,
    h2_streams: usize,
}

impl Plan {
    fn from_env() -> Result<Plan> {
        let quick = knobs::quick();
        let seconds = knobs::number("BENCH_SECONDS", if quick { 1.5 } else { 5.0 }, 0.2..=600.0)?;
        Ok(Plan {
            runs: knobs::runs(quick)?,
            quick,
            workers: knobs::workers()?,
            window: Window {
                warmup: Duration::from_millis(if quick { 300 } else { 1000 }),
                timed: Duration::from_secs_f64(seconds),
            },
            h1_conns: knobs::number("BENCH_H1_CONNS", 16, 1..=1024)?,
            h2_conns: knobs::number("BENCH_H2_CONNS", 2, 1..=64)?,
            h2_streams: knobs::number("BENCH_H2_STREAMS", 16, 1..=100)?,
        })
    }

    fn load(&self) -> String {
        format!(
            "closed loop, GET answered with a 29–40 B body (`VERSION PATH`); HTTP/1.1: {} keep-alive \
             connections, one request in flight on each; HTTP/2 (prior knowledge): {} \
             connections x {} concurrent streams. Per figure {:.1} s warm-up, then {:.1} s \
             timed (requests completing inside the window count).",
            self.h1_conns,
            self.h2_conns,
            self.h2_streams,
            self.window.warmup.as_secs_f64(),
            self.window.timed.as_secs_f64(),
        )
    }
}

fn main() -> ExitCode {
    benches::lab_main::lab_main("waypoint", run)
}

fn run(sandbox: String) -> Result<()> {
    let plan = Plan::from_env()?;
    let nginx = waypoint_lab::find_nginx()?;
    let nginx_version = nginx_version(&nginx)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers)
        .enable_all()
        .build()?;
    let load_before = loadavg();
    let results = runtime.block_on(measure(&plan, &nginx))?;
    let load = [load_before, loadavg()];
    runtime.shutdown_timeout(Duration::from_secs(1));

    let meta = metadata(&plan, sandbox, nginx_version, load);
    let md = waypoint_report::markdown(&meta, &results);
    println!("\n{md}");
    let json = waypoint_report::json(&meta, &results);
    report::write_results("waypoint", plan.quick, &md, &json)?;
    for target in waypoint_report::targets(&results) {
        println!("{}", target.line());
    }
    Ok(())
}

fn nginx_version(nginx: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new(nginx)
        .arg("-v")
        .output()
        .with_context(|| format!("running {} -v", nginx.display()))?;
    // nginx prints `nginx version: nginx/1.22.1` on stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(text
        .trim()
        .strip_prefix("nginx version: ")
        .unwrap_or(text.trim())
        .to_owned())
}

async fn measure(plan: &Plan, nginx: &std::path::Path) -> Result<WpResults> {
    let mut results = WpResults::default();
    for run in 1..=plan.runs {
        let dir = std::env::temp_dir().join(format!("bench-waypoint-{}", std::process::id()));
        let started = Instant::now();
        let lab = WaypointLab::start(&dir, nginx).await?;
        let mut line = format!(
            "run {run}/{} (lab up in {:.1?}):",
            plan.runs,
            started.elapsed()
        );
        let idle = lab.waypoint_memory()?;
        let outcome = one_run(plan, run, &lab, &mut results, &mut line).await;
        let memory = outcome.and_then(|()| {
            Ok(RunMemory {
                waypoint_idle: idle,
                waypoint_after: lab.waypoint_memory()?,
                nginx_after: lab.nginx_memory()?,
            })
        });
        lab.shutdown().await;
        let memory = memory?;
        line += &format!(
            " | waypoint RSS {:.1} MiB (anon {:.1}), nginx RSS {:.1} MiB",
            memory.waypoint_after.rss_mib,
            memory.waypoint_after.rss_anon_mib,
            memory.nginx_after.rss_mib
        );
        results.memory.push(memory);
        eprintln!("{line}");
    }
    Ok(results)
}

/// Every configuration for both protocols, back to back, then the access-log checks.
async fn one_run(
    plan: &Plan,
    run: usize,
    lab: &WaypointLab,
    results: &mut WpResults,
    line: &mut String,
) -> Result<()> {
    let order = report::alternating(&ProxyConfig::ALL, run);
    // Requests each config's proxy must have seen (warm-up and window edges included).
    let mut sent = [0u64; 3];
    for proto in Proto::ALL {
        for &config in &order {
            let path = lab.path(config);
            let (conns, streams) = match proto {
                Proto::Http1 => (plan.h1_conns, 1),
                Proto::Http2 => (plan.h2_conns, plan.h2_streams),
            };
            let mut senders = Vec::with_capacity(conns);
            for _ in 0..conns {
                senders.push(path.connect(proto).await?);
            }
            let expect = if config == ProxyConfig::Mesh {
                "v"
            } else {
                "v1 "
            };
            let pids = lab.pids;
            let request = bench_path(config);
            let measured = http_load::closed_loop(
                senders,
                streams,
                &path.target,
                &request,
                expect,
                plan.window,
                move || (Instant::now(), pids.sample()),
            );
            let (load, [(t0, cpu0), (t1, cpu1)]) = tokio::time::timeout(FIGURE_TIMEOUT, measured)
                .await
                .with_context(|| {
                    format!(
                        "{} {}: exceeded {FIGURE_TIMEOUT:?}",
                        config.name(),
                        proto.name()
                    )
                })?
                .with_context(|| format!("{} {}", config.name(), proto.name()))?;
            let cpu: CpuSample = cpu1 - cpu0;
            ensure!(
                cpu.waypoint.is_finite() && cpu.nginx.is_finite() && cpu.ztunnels.is_finite(),
                "a measured process went away during {} {}",
                config.name(),
                proto.name()
            );
            sent[config as usize] += load.completed_total;
            let secs = (t1 - t0).as_secs_f64();
            results.push(
                proto,
                config,
                WpFigure::RequestsPerSecond,
                load.requests_per_s,
            );
            results.push(proto, config, WpFigure::LatencyP50, load.p50_us);
            results.push(proto, config, WpFigure::LatencyP99, load.p99_us);
            let proxy_cpu = match config {
                ProxyConfig::Waypoint => Some(cpu.waypoint),
                ProxyConfig::Nginx => Some(cpu.nginx),
                ProxyConfig::Mesh => None,
            };
            if let Some(proxy_cpu) = proxy_cpu {
                ensure!(
                    proxy_cpu > 0.0,
                    "{} used no measurable CPU during {} {}",
                    config.name(),
                    load.requests,
                    proto.name()
                );
                results.push(proto, config, WpFigure::ProxyCores, proxy_cpu / secs);
                results.push(
                    proto,
                    config,
                    WpFigure::RequestsPerProxyCpuSecond,
                    load.requests as f64 / proxy_cpu,
                );
            }
            let ztunnels = (config != ProxyConfig::Nginx).then_some(cpu.ztunnels);
            if let Some(ztunnels) = ztunnels {
                results.push(proto, config, WpFigure::ZtunnelCores, ztunnels / secs);
            }
            let path_cpu = proxy_cpu.unwrap_or(0.0) + ztunnels.unwrap_or(0.0);
            if path_cpu > 0.0 {
                results.push(
                    proto,
                    config,
                    WpFigure::RequestsPerPathCpuSecond,
                    load.requests as f64 / path_cpu,
                );
            }
            *line += &format!(
                " | {} {} {:.0} req/s p50 {:.0} p99 {:.0} µs",
                config.name(),
                proto.name(),
                load.requests_per_s,
                load.p50_us,
                load.p99_us
            );
            if let Some(proxy_cpu) = proxy_cpu {
                *line += &format!(" proxy {:.2} cores", proxy_cpu / secs);
            }
        }
    }
    check_logs(lab, &sent, run).await
}

/// How long the proxies' logs may take to show a run's last requests.
const LOGS_SETTLE: Duration = Duration::from_secs(5);

/// The proxies' own logs account for every request: the waypoint logged each waypoint
/// request and none of the mesh path's, nginx logged each nginx request; neither
/// complained.
async fn check_logs(lab: &WaypointLab, sent: &[u64; 3], run: usize) -> Result<()> {
    let waypoint_sent = sent[ProxyConfig::Waypoint as usize];
    // Access lines are written in batches, a moment after the requests.
    lab::eventually::wait_for(LOGS_SETTLE, || {
        lab.waypoint_requests(ProxyConfig::Waypoint) as u64 >= waypoint_sent
    })
    .await;
    let logged = lab.waypoint_requests(ProxyConfig::Waypoint) as u64;
    ensure!(
        logged >= waypoint_sent,
        "run {run}: the waypoint logged {logged} of {waypoint_sent} waypoint requests"
    );
    let stray = lab.waypoint_requests(ProxyConfig::Mesh);
    ensure!(
        stray == 0,
        "run {run}: {stray} requests of the mesh path went through the waypoint"
    );
    let nginx_sent = sent[ProxyConfig::Nginx as usize];
    let nginx_logged = lab.nginx_requests()? as u64;
    ensure!(
        nginx_logged >= nginx_sent,
        "run {run}: nginx logged {nginx_logged} of {nginx_sent} requests"
    );
    let complaints = lab.waypoint_complaints();
    ensure!(
        complaints.is_empty(),
        "run {run}: the waypoint logged warnings/errors:\n{}",
        complaints.join("\n")
    );
    Ok(())
}

fn metadata(
    plan: &Plan,
    sandbox: String,
    nginx_version: String,
    load: [Option<f64>; 2],
) -> WpMetadata {
    let knobs = [
        "BENCH_QUICK",
        "BENCH_RUNS",
        "BENCH_SECONDS",
        "BENCH_H1_CONNS",
        "BENCH_H2_CONNS",
        "BENCH_H2_STREAMS",
        "BENCH_WORKERS",
        "LAB_WAYPOINT_BIN",
        "RUST_LOG",
    ];
    let waypoint_binary = match std::env::var("LAB_WAYPOINT_BIN") {
        Ok(bin) => format!("`{bin}` (LAB_WAYPOINT_BIN)"),
        Err(_) => "this benchmark binary re-executed (set LAB_WAYPOINT_BIN for the shipped \
                   binary's RSS)"
            .to_owned(),
    };
    WpMetadata {
        run: report::RunInfo::now("waypoint", &knobs),
        tls_backend: hbone::tls::BACKEND,
        sandbox,
        waypoint_binary,
        nginx_version,
        log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        loadavg_before_after: load,
        runtime_worker_threads: plan.workers,
        runs: plan.runs,
        quick: plan.quick,
        load: plan.load(),
        notes: vec![
            "Lab: network namespaces for two nodes and the pods, routed through the nodes. \
             Client pods and the two proxies (the waypoint pod, which the lab always places \
             on node 0, and the nginx pod) on node 0; server pods v1 and v2 on node 1. \
             waypoint = client pod -> node 0's ztunnel -> HBONE -> waypoint -> HBONE -> node \
             1's ztunnel -> server pod, via the Service `routed` (label \
             istio.io/use-waypoint). mesh-no-waypoint = the same pods via the Service \
             `direct`: ztunnel -> HBONE -> ztunnel, no L7 proxy, no routing. nginx = \
             namespace `legacy` outside the mesh: client pod -> nginx pod -> server pod, \
             plaintext."
                .to_owned(),
            "Routing: a VirtualService with five rules (header x-canary: true; prefix \
             /api/v2 with a rewrite to /api; path regex /users/[0-9]+/orders; query \
             debug=1; default), the first four to subset v2, the last to v1, with a \
             DestinationRule for the subsets. The timed request matches only the last rule. \
             nginx has the same rules in the same order (a map over header|path|query with \
             ordered regexes, a rewrite for /api/v2) and upstream keep-alive. Before timing, \
             requests matching each rule are checked to reach the right version (and \
             rewritten path) through both proxies, over both protocols."
                .to_owned(),
            "Proof of path: before timing, the waypoint's access log must hold the \
             verification requests and none of the mesh path's, and node 0's ztunnel must \
             log the mesh path's connection over HBONE to the `direct` service; after every \
             run, the waypoint's access log must hold a line for every waypoint request the \
             client completed and none for the mesh path's, and nginx's access log a line \
             for every nginx request. Every timed answer must be 200 from v1."
                .to_owned(),
            "Protocols: the waypoint forwards in the protocol it received (HTTP/2 downstream \
             -> one multiplexed HTTP/2 connection per endpoint, inside HBONE). nginx cannot \
             proxy HTTP/2 upstream: it takes h2c (prior knowledge, on its own port 8081, as \
             nginx 1.22 cannot serve HTTP/1.1 and h2c on one plaintext port) and forwards \
             over kept-alive HTTP/1.1. The waypoint also does mTLS on both sides (HBONE) and \
             records Istio metrics; nginx does plaintext. Both write one access-log line per \
             request (the waypoint to its container log at RUST_LOG info, nginx to a file)."
                .to_owned(),
            "Per-core figure: requests completed in the window / CPU time (utime + stime \
             from /proc/PID/stat, 10 ms ticks) the proxy process used over the same window. \
             nginx runs as one process (master_process off, worker_processes 1); the \
             waypoint runs its defaults: a main thread (control plane, accept loop) and 2 \
             worker threads, each with its own event loop, over which the tunnel \
             connections from node 0's ztunnel are spread. Everything (load generator, HTTP \
             servers, controller, ztunnels, waypoint, nginx, kernel forwarding) shares the \
             machine's CPUs, so requests/s is bounded by the whole path's CPU; requests per \
             proxy CPU-second is the fair comparison of the two proxies. 'All proxies on \
             the path' adds both ztunnels' CPU for the two mesh configurations (the mesh's \
             whole cost per request, mTLS included) against nginx alone."
                .to_owned(),
            "Memory: VmRSS (and RssAnon) of the waypoint process from /proc/PID/status once \
             the lab is verified and after every run (each run starts a fresh lab, so a new \
             waypoint); the target checks the median after the run. The re-executed \
             benchmark binary is much larger than the waypoint binary, so its file-backed \
             RSS is higher: measure the target with LAB_WAYPOINT_BIN."
                .to_owned(),
        ],
    }
}
