//! The waypoint benchmark's report: per protocol and configuration, requests/s, p50/p99
//! latency and the proxies' CPU; the waypoint's and nginx's memory; the targets; the
//! Markdown and JSON renderings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::host::ProcessMemory;
use crate::http_load::Proto;
use crate::report::{RunInfo, fmt_ratio, fmt_value, push_verdicts_and_notes};
use crate::report::{Verdict, fmt_rss, quick_note, write_loadavg};
use crate::stats::{Summary, ratio};
use crate::waypoint_lab::ProxyConfig;

/// What is measured per protocol and configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WpFigure {
    RequestsPerSecond,
    LatencyP50,
    LatencyP99,
    /// Requests answered per CPU-second of the L7 proxy process (waypoint or nginx).
    RequestsPerProxyCpuSecond,
    /// CPU the L7 proxy process used during the window, in cores (CPU-s per s).
    ProxyCores,
    /// CPU both ztunnels used during the window, in cores.
    ZtunnelCores,
    /// Requests answered per CPU-second of every proxy on the path: waypoint + both
    /// ztunnels, both ztunnels (mesh without a waypoint), or nginx.
    RequestsPerPathCpuSecond,
}

impl WpFigure {
    pub const ALL: [WpFigure; 7] = [
        WpFigure::RequestsPerSecond,
        WpFigure::LatencyP50,
        WpFigure::LatencyP99,
        WpFigure::RequestsPerProxyCpuSecond,
        WpFigure::ProxyCores,
        WpFigure::ZtunnelCores,
        WpFigure::RequestsPerPathCpuSecond,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WpFigure::RequestsPerSecond => "requests/s",
            WpFigure::LatencyP50 => "latency p50 (µs)",
            WpFigure::LatencyP99 => "latency p99 (µs)",
            WpFigure::RequestsPerProxyCpuSecond => "requests per proxy CPU-second",
            WpFigure::ProxyCores => "proxy CPU (cores)",
            WpFigure::ZtunnelCores => "both ztunnels' CPU (cores)",
            WpFigure::RequestsPerPathCpuSecond => {
                "requests per CPU-second of all proxies on the path"
            }
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            WpFigure::RequestsPerSecond
                | WpFigure::RequestsPerProxyCpuSecond
                | WpFigure::RequestsPerPathCpuSecond
        )
    }
}

/// Memory read in one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunMemory {
    /// The waypoint once the lab was verified, before the timed load.
    pub waypoint_idle: ProcessMemory,
    pub waypoint_after: ProcessMemory,
    pub nginx_after: ProcessMemory,
}

/// Every run's value of every figure.
#[derive(Debug, Default)]
pub struct WpResults {
    samples: BTreeMap<(Proto, ProxyConfig, WpFigure), Vec<f64>>,
    pub memory: Vec<RunMemory>,
}

impl WpResults {
    pub fn push(&mut self, proto: Proto, config: ProxyConfig, figure: WpFigure, value: f64) {
        self.samples
            .entry((proto, config, figure))
            .or_default()
            .push(value);
    }

    pub fn summary(&self, proto: Proto, config: ProxyConfig, figure: WpFigure) -> Option<Summary> {
        Summary::of(self.samples.get(&(proto, config, figure))?)
    }

    /// `config`'s median over nginx's median.
    pub fn vs_nginx(&self, proto: Proto, config: ProxyConfig, figure: WpFigure) -> Option<f64> {
        ratio(
            self.summary(proto, config, figure)?.median,
            self.summary(proto, ProxyConfig::Nginx, figure)?.median,
        )
    }

    fn memory_summary(&self, pick: impl Fn(&RunMemory) -> f64) -> Option<Summary> {
        let values: Vec<f64> = self.memory.iter().map(pick).collect();
        Summary::of(&values)
    }
}

/// One line of the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct WpRow {
    pub figure: String,
    pub protocol: Option<Proto>,
    pub config: String,
    pub higher_is_better: bool,
    #[serde(flatten)]
    pub summary: Summary,
    pub vs_nginx: Option<f64>,
}

pub fn rows(results: &WpResults) -> Vec<WpRow> {
    let mut rows = Vec::new();
    for proto in Proto::ALL {
        for figure in WpFigure::ALL {
            for config in ProxyConfig::ALL {
                let Some(summary) = results.summary(proto, config, figure) else {
                    continue;
                };
                rows.push(WpRow {
                    figure: figure.label().to_owned(),
                    protocol: Some(proto),
                    config: config.name().to_owned(),
                    higher_is_better: figure.higher_is_better(),
                    summary,
                    vs_nginx: results.vs_nginx(proto, config, figure),
                });
            }
        }
    }
    for (figure, config, summary) in memory_rows(results) {
        rows.push(WpRow {
            figure: figure.to_owned(),
            protocol: None,
            config: config.to_owned(),
            higher_is_better: false,
            summary,
            vs_nginx: None,
        });
    }
    rows
}

fn memory_rows(results: &WpResults) -> Vec<(&'static str, &'static str, Summary)> {
    type Pick = (&'static str, &'static str, fn(&RunMemory) -> f64);
    let picks: [Pick; 5] = [
        ("RSS once up, before the load (MiB)", "waypoint", |m| {
            m.waypoint_idle.rss_mib
        }),
        ("RSS after the run (MiB)", "waypoint", |m| {
            m.waypoint_after.rss_mib
        }),
        ("anonymous RSS after the run (MiB)", "waypoint", |m| {
            m.waypoint_after.rss_anon_mib
        }),
        ("peak RSS, VmHWM (MiB)", "waypoint", |m| {
            m.waypoint_after.hwm_mib
        }),
        ("RSS after the run (MiB)", "nginx", |m| {
            m.nginx_after.rss_mib
        }),
    ];
    picks
        .into_iter()
        .filter_map(|(figure, config, pick)| Some((figure, config, results.memory_summary(pick)?)))
        .collect()
}

/// The targets: at least nginx's requests per core (per protocol), and the
/// waypoint's RSS under 30 MiB.
pub fn targets(results: &WpResults) -> Vec<Verdict> {
    let mut out = Vec::new();
    for proto in Proto::ALL {
        let fig = WpFigure::RequestsPerProxyCpuSecond;
        let r = results.vs_nginx(proto, ProxyConfig::Waypoint, fig);
        let detail = match (
            results.summary(proto, ProxyConfig::Waypoint, fig),
            results.summary(proto, ProxyConfig::Nginx, fig),
        ) {
            (Some(w), Some(n)) => format!(
                "{} ({:.0} vs {:.0} requests per CPU-second)",
                fmt_ratio(r),
                w.median,
                n.median
            ),
            _ => "n/a".to_owned(),
        };
        out.push(Verdict {
            name: format!(
                "{}: waypoint requests per CPU-second >= nginx's (median ratio)",
                proto.name()
            ),
            measured: detail,
            pass: r.is_some_and(|r| r >= 1.0),
        });
    }
    let rss = results.memory_summary(|m| m.waypoint_after.rss_mib);
    out.push(Verdict {
        name: "waypoint RSS < 30 MiB after the run (median over runs)".to_owned(),
        measured: fmt_rss(rss.as_ref()),
        pass: rss.is_some_and(|r| r.median < 30.0),
    });
    out
}

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct WpMetadata {
    #[serde(flatten)]
    pub run: RunInfo,
    pub tls_backend: &'static str,
    pub sandbox: String,
    /// What ran as the waypoint: the built binary (`LAB_WAYPOINT_BIN`) or this benchmark
    /// re-executed.
    pub waypoint_binary: String,
    pub nginx_version: String,
    pub log_level: String,
    /// 1-minute load average before and after measuring (Linux `/proc/loadavg`).
    pub loadavg_before_after: [Option<f64>; 2],
    pub runtime_worker_threads: usize,
    pub runs: usize,
    pub quick: bool,
    pub load: String,
    pub notes: Vec<String>,
}

fn cell(s: &Option<Summary>) -> String {
    match s {
        Some(s) if s.runs.len() > 1 => format!(
            "{} ({}–{})",
            fmt_value(s.median),
            fmt_value(s.min),
            fmt_value(s.max)
        ),
        Some(s) => fmt_value(s.median),
        None => "–".to_owned(),
    }
}

/// The results table: one line per protocol and figure, one column per configuration.
pub fn table(results: &WpResults) -> String {
    let mut md = String::new();
    md.push_str(
        "| protocol | figure | waypoint | mesh, no waypoint | nginx | waypoint / nginx |\n",
    );
    md.push_str("|---|---|---:|---:|---:|---:|\n");
    for proto in Proto::ALL {
        for figure in WpFigure::ALL {
            let cells: Vec<Option<Summary>> = ProxyConfig::ALL
                .iter()
                .map(|&c| results.summary(proto, c, figure))
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let r = results.vs_nginx(proto, ProxyConfig::Waypoint, figure);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                proto.name(),
                figure.label(),
                cell(&cells[0]),
                cell(&cells[1]),
                cell(&cells[2]),
                if r.is_some() {
                    fmt_ratio(r)
                } else {
                    String::new()
                }
            );
        }
    }
    for (figure, config, summary) in memory_rows(results) {
        let s = Some(summary);
        let (w, n) = if config == "waypoint" {
            (cell(&s), String::new())
        } else {
            (String::new(), cell(&s))
        };
        let _ = writeln!(md, "| | {figure} | {w} | | {n} | |");
    }
    md
}

pub fn markdown(meta: &WpMetadata, results: &WpResults) -> String {
    let mut md = String::from(
        "# Waypoint benchmark (lab: client ztunnel -> waypoint -> server ztunnel, against \
         the mesh without a waypoint and against nginx)\n\n",
    );
    let _ = writeln!(
        md,
        "{date}, commit {commit}, `{cmd}`.\n\nMachine: {machine}, {nproc} CPUs; TLS backend \
         `{tls}`; lab sandbox: {sandbox}; waypoint: {bin}; {nginx}; RUST_LOG `{log}`; load \
         generator and HTTP servers on a tokio runtime with {workers} workers. Median of \
         {runs} runs (min–max in parentheses).{quick}\n",
        date = meta.run.date_utc,
        commit = meta.run.commit(),
        cmd = meta.run.command,
        machine = meta.run.machine,
        nproc = meta.run.nproc,
        tls = meta.tls_backend,
        sandbox = meta.sandbox,
        bin = meta.waypoint_binary,
        nginx = meta.nginx_version,
        log = meta.log_level,
        workers = meta.runtime_worker_threads,
        runs = meta.runs,
        quick = quick_note(meta.quick),
    );
    write_loadavg(&mut md, meta.loadavg_before_after);
    let _ = writeln!(md, "Load: {}\n", meta.load);
    md.push_str(&table(results));
    md.push_str(
        "\nwaypoint / nginx is the ratio of medians: above 1 is better for requests/s and \
         requests per CPU-second, below 1 is better for latency and CPU.\n\n",
    );
    if let Some(m) = results.memory.last() {
        let w = &m.waypoint_after;
        let _ = writeln!(
            md,
            "After the last run: waypoint VmRSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), \
             peak {:.1} MiB; nginx VmRSS {:.1} MiB (anonymous {:.1}).\n",
            w.rss_mib,
            w.rss_anon_mib,
            w.rss_file_mib,
            w.hwm_mib,
            m.nginx_after.rss_mib,
            m.nginx_after.rss_anon_mib
        );
    }
    let verdicts: Vec<String> = targets(results).iter().map(Verdict::line).collect();
    push_verdicts_and_notes(&mut md, &verdicts, "Notes", &meta.notes);
    md
}

pub fn json(meta: &WpMetadata, results: &WpResults) -> serde_json::Value {
    serde_json::json!({
        "metadata": meta,
        "results": rows(results),
        "memory_each_run": results.memory,
        "targets": targets(results),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(rss: f64) -> ProcessMemory {
        ProcessMemory {
            rss_mib: rss,
            rss_anon_mib: rss / 2.0,
            rss_file_mib: rss / 2.0,
            hwm_mib: rss,
        }
    }

    #[test]
    fn targets_compare_medians_per_protocol() {
        let mut r = WpResults::default();
        let fig = WpFigure::RequestsPerProxyCpuSecond;
        for (w, n) in [(9000.0, 10000.0), (12000.0, 10000.0), (11000.0, 9000.0)] {
            r.push(Proto::Http1, ProxyConfig::Waypoint, fig, w);
            r.push(Proto::Http1, ProxyConfig::Nginx, fig, n);
        }
        for (w, n) in [(5000.0, 10000.0), (6000.0, 12000.0)] {
            r.push(Proto::Http2, ProxyConfig::Waypoint, fig, w);
            r.push(Proto::Http2, ProxyConfig::Nginx, fig, n);
        }
        r.memory.push(RunMemory {
            waypoint_idle: mem(10.0),
            waypoint_after: mem(29.0),
            nginx_after: mem(5.0),
        });
        let t = targets(&r);
        assert!(t[0].pass, "HTTP/1.1: 11000 vs 10000");
        assert!(!t[1].pass, "HTTP/2: 5500 vs 11000");
        assert!(t[2].pass, "29 MiB < 30 MiB");
        assert_eq!(
            r.vs_nginx(Proto::Http2, ProxyConfig::Waypoint, fig),
            Some(0.5)
        );
        let rows = rows(&r);
        assert_eq!(rows.len(), 4 + 5, "2 protocols x 2 configs + 5 memory rows");
        let md = table(&r);
        assert!(md.contains("| HTTP/1.1 | requests per proxy CPU-second | 11000 (9000–12000) |"));
    }

    #[test]
    fn nothing_measured_fails_every_target() {
        assert!(targets(&WpResults::default()).iter().all(|t| !t.pass));
    }
}
