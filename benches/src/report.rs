//! Turns samples into the published report: one row per (figure, configuration) with
//! median, spread and ratios, the target checks, and the Markdown and JSON renderings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::host::{git_state, machine, nproc, workspace_root};
use crate::stats::{Summary, ratio};
use crate::topology::Config;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    Throughput,
    LatencyP50,
    LatencyP99,
    NewTunnelRate,
}

impl Figure {
    pub const ALL: [Figure; 4] = [
        Figure::Throughput,
        Figure::LatencyP50,
        Figure::LatencyP99,
        Figure::NewTunnelRate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Figure::Throughput => "bulk throughput",
            Figure::LatencyP50 => "1 KiB round trip p50",
            Figure::LatencyP99 => "1 KiB round trip p99",
            Figure::NewTunnelRate => "new-tunnel rate",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Figure::Throughput => "MiB/s",
            Figure::LatencyP50 | Figure::LatencyP99 => "µs",
            Figure::NewTunnelRate => "conn/s",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Figure::Throughput | Figure::NewTunnelRate)
    }
}

/// Every run's value of every figure.
#[derive(Debug, Default)]
pub struct Results {
    samples: BTreeMap<(Config, Figure), Vec<f64>>,
}

impl Results {
    pub fn push(&mut self, config: Config, figure: Figure, value: f64) {
        self.samples
            .entry((config, figure))
            .or_default()
            .push(value);
    }

    pub fn summary(&self, config: Config, figure: Figure) -> Option<Summary> {
        Summary::of(self.samples.get(&(config, figure))?)
    }

    fn median(&self, config: Config, figure: Figure) -> Option<f64> {
        self.summary(config, figure).map(|s| s.median)
    }

    /// Median of `config` over median of `baseline` (config / baseline for every figure,
    /// so for latency lower is better).
    pub fn ratio(&self, config: Config, baseline: Config, figure: Figure) -> Option<f64> {
        ratio(self.median(config, figure)?, self.median(baseline, figure)?)
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: Figure,
    pub config: Config,
    pub unit: &'static str,
    pub higher_is_better: bool,
    #[serde(flatten)]
    pub summary: Summary,
    pub vs_direct: Option<f64>,
    pub vs_tls_relay: Option<f64>,
}

pub fn rows(results: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for figure in Figure::ALL {
        for config in Config::ALL {
            let Some(summary) = results.summary(config, figure) else {
                continue;
            };
            rows.push(Row {
                figure,
                config,
                unit: figure.unit(),
                higher_is_better: figure.higher_is_better(),
                summary,
                vs_direct: results.ratio(config, Config::Direct, figure),
                vs_tls_relay: results.ratio(config, Config::TlsRelay, figure),
            });
        }
    }
    rows
}

/// A performance target, checked on medians (reported, never enforced).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub ratio: Option<f64>,
    pub pass: bool,
}

pub fn targets(results: &Results) -> Vec<Target> {
    let check = |name, figure, ok: fn(f64) -> bool| {
        let ratio = results.ratio(Config::Hbone, Config::TlsRelay, figure);
        Target {
            name,
            ratio,
            pass: ratio.is_some_and(ok),
        }
    };
    vec![
        check(
            "hbone throughput >= 0.8x tls-relay",
            Figure::Throughput,
            |r| r >= 0.8,
        ),
        check(
            "hbone p99 latency <= 1.3x tls-relay",
            Figure::LatencyP99,
            |r| r <= 1.3,
        ),
    ]
}

impl Target {
    pub fn line(&self) -> String {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        format!(
            "{verdict}: {} (measured {})",
            self.name,
            fmt_ratio(self.ratio)
        )
    }
}

/// A performance target of the lab benchmarks, checked on medians (reported, never
/// enforced): what it asks, what was measured (as the report prints it), the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub measured: String,
    pub pass: bool,
}

impl Verdict {
    pub fn line(&self) -> String {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        format!("{verdict}: {} (measured {})", self.name, self.measured)
    }
}

/// `MEDIAN MiB, runs MIN–MAX MiB` of an RSS summary, or `n/a`.
pub fn fmt_rss(rss: Option<&crate::stats::Summary>) -> String {
    rss.map_or_else(
        || "n/a".to_owned(),
        |r| format!("{:.1} MiB, runs {:.1}–{:.1} MiB", r.median, r.min, r.max),
    )
}

/// `all` in order on odd runs and reversed on even ones, so that no configuration always
/// gets the machine first.
pub fn alternating<T: Copy>(all: &[T], run: usize) -> Vec<T> {
    let mut order = all.to_vec();
    if run.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// How the run was made: enough to compare results across commits and machines.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub date_utc: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub tls_backend: &'static str,
    pub nproc: usize,
    /// 1-minute load average before and after measuring (Linux `/proc/loadavg`).
    pub loadavg_before_after: [Option<f64>; 2],
    pub runtime_worker_threads: usize,
    pub runs: usize,
    pub quick: bool,
    pub bulk_bytes: u64,
    pub latency_warmup: usize,
    pub latency_round_trips: usize,
    pub message_bytes: usize,
    pub new_tunnel_connections: usize,
    pub new_tunnel_concurrency: usize,
    /// TLS handshakes the HBONE pool made over the whole run.
    pub hbone_pool_handshakes: Option<u64>,
    pub notes: Vec<String>,
}

pub fn fmt_value(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
}

/// `abc123`, `abc123 (uncommitted changes)` or `unknown`, for report headers.
pub fn commit_label(commit: Option<&str>, dirty: Option<bool>) -> String {
    match (commit, dirty) {
        (Some(c), Some(true)) => format!("{c} (uncommitted changes)"),
        (Some(c), _) => c.to_owned(),
        (None, _) => "unknown".to_owned(),
    }
}

pub fn markdown(meta: &Metadata, rows: &[Row], targets: &[Target]) -> String {
    let mut md = String::from("# Tunnel benchmark\n\n");
    let commit = commit_label(meta.git_commit.as_deref(), meta.git_dirty);
    let _ = writeln!(
        md,
        "{date}, commit {commit}, TLS backend `{tls}`, {nproc} CPUs, tokio multi-thread \
         runtime with {workers} workers. Median of {runs} runs; spread = min–max over runs.\n",
        date = meta.date_utc,
        tls = meta.tls_backend,
        nproc = meta.nproc,
        workers = meta.runtime_worker_threads,
        runs = meta.runs,
    );
    write_loadavg(&mut md, meta.loadavg_before_after);
    let _ = writeln!(
        md,
        "Sizes: bulk {} MiB one way on one connection; latency {} warm-up + {} round trips of \
         {} B on one connection; new tunnels {} connections, {} concurrent, {} B each way.{}\n",
        meta.bulk_bytes / (1024 * 1024),
        meta.latency_warmup,
        meta.latency_round_trips,
        meta.message_bytes,
        meta.new_tunnel_connections,
        meta.new_tunnel_concurrency,
        meta.message_bytes,
        quick_note(meta.quick),
    );
    md.push_str("| figure | config | median | spread (min–max) | vs direct | vs tls-relay |\n");
    md.push_str("|---|---|---:|---:|---:|---:|\n");
    for row in rows {
        let better = if row.higher_is_better {
            "higher"
        } else {
            "lower"
        };
        let s = &row.summary;
        let _ = writeln!(
            md,
            "| {} ({}, {better} is better) | {} | {} | {}–{} | {} | {} |",
            row.figure.label(),
            row.unit,
            row.config.name(),
            fmt_value(s.median),
            fmt_value(s.min),
            fmt_value(s.max),
            fmt_ratio(row.vs_direct),
            fmt_ratio(row.vs_tls_relay),
        );
    }
    md.push_str("\nRatios are config / baseline medians for every figure: above 1 is better for ");
    md.push_str("throughput and rate, below 1 is better for latency.\n\n");
    let verdicts: Vec<String> = targets.iter().map(Target::line).collect();
    push_verdicts_and_notes(&mut md, &verdicts, "Notes", &meta.notes);
    md
}

pub fn json(meta: &Metadata, rows: &[Row], targets: &[Target]) -> serde_json::Value {
    serde_json::json!({ "metadata": meta, "results": rows, "targets": targets })
}

/// When, on what and from which commit a benchmark ran, and how to run it again: the part
/// of the node and controller reports' metadata they share.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub date_utc: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    /// The command line that reproduces the run, with the knobs that were set.
    pub command: String,
    pub machine: String,
    pub nproc: usize,
}

impl RunInfo {
    /// This run of `cargo bench -p benches --bench BENCH`; `knobs` are the environment
    /// variables it reads (those set go into the command).
    pub fn now(bench: &str, knobs: &[&str]) -> RunInfo {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (git_commit, git_dirty) = git_state(&workspace_root());
        let mut command = String::new();
        for var in knobs {
            if let Ok(v) = std::env::var(var) {
                command += &format!("{var}={v} ");
            }
        }
        RunInfo {
            date_utc: utc_timestamp(secs),
            git_commit,
            git_dirty,
            command: command + &format!("cargo bench -p benches --bench {bench}"),
            machine: machine(),
            nproc: nproc(),
        }
    }

    /// The commit for report headers (see [`commit_label`]).
    pub fn commit(&self) -> String {
        commit_label(self.git_commit.as_deref(), self.git_dirty)
    }
}

/// Writes `bench-results/STEM.md` and `STEM.json` under the workspace root (`STEM-quick.*`
/// for a smoke run), saying where.
pub fn write_results(stem: &str, quick: bool, md: &str, json: &serde_json::Value) -> Result<()> {
    let dir = workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let stem = if quick {
        format!("{stem}-quick")
    } else {
        stem.to_owned()
    };
    let json = serde_json::to_string_pretty(json)? + "\n";
    for (ext, body) in [("md", md), ("json", json.as_str())] {
        let path = dir.join(format!("{stem}.{ext}"));
        std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The end of a Markdown report: a line per target verdict, then the notes under `heading`.
pub fn push_verdicts_and_notes(
    md: &mut String,
    verdicts: &[String],
    heading: &str,
    notes: &[String],
) {
    for verdict in verdicts {
        let _ = writeln!(md, "- {verdict}");
    }
    if !notes.is_empty() {
        let _ = write!(md, "\n{heading}:\n\n");
        for note in notes {
            let _ = writeln!(md, "- {note}");
        }
    }
}

/// `secs` since the Unix epoch as an RFC 3339 UTC timestamp.
pub fn utc_timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant), shifted so the era starts on 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The Markdown marker of a `BENCH_QUICK` run (empty otherwise).
pub fn quick_note(quick: bool) -> &'static str {
    if quick {
        " **BENCH_QUICK smoke run.**"
    } else {
        ""
    }
}

/// The load-average line of a report, when both readings were taken.
pub fn write_loadavg(md: &mut String, before_after: [Option<f64>; 2]) {
    if let [Some(before), Some(after)] = before_after {
        let _ = writeln!(
            md,
            "1-minute load average before/after: {before:.2}/{after:.2} (other work on the \
             machine skews every figure).\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ratios_and_targets_use_medians() {
        let mut r = Results::default();
        for (config, tput, p99) in [
            (Config::Direct, [1000.0, 900.0, 1100.0], [10.0, 11.0, 9.0]),
            (Config::TlsRelay, [500.0, 400.0, 600.0], [40.0, 50.0, 30.0]),
            (Config::Hbone, [350.0, 450.0, 1.0], [60.0, 52.0, 51.0]),
        ] {
            for (t, p) in tput.into_iter().zip(p99) {
                r.push(config, Figure::Throughput, t);
                r.push(config, Figure::LatencyP99, p);
            }
        }
        // hbone throughput median 350 vs tls 500 and direct 1000; p99 median 52 vs 40.
        assert_eq!(
            r.ratio(Config::Hbone, Config::TlsRelay, Figure::Throughput),
            Some(0.7)
        );
        assert_eq!(
            r.ratio(Config::Hbone, Config::Direct, Figure::Throughput),
            Some(0.35)
        );
        assert_eq!(
            r.ratio(Config::Hbone, Config::TlsRelay, Figure::LatencyP99),
            Some(1.3)
        );
        let t = targets(&r);
        assert!(!t[0].pass, "0.7x throughput misses 0.8x");
        assert!(t[1].pass, "1.3x p99 meets <= 1.3x");
        assert!(t[0].line().starts_with("FAIL"));
        let rows = rows(&r);
        assert_eq!(rows.len(), 6, "3 configs x 2 figures with samples");
        assert!(rows.iter().all(|row| row.vs_tls_relay.is_some()));
    }

    #[test]
    fn missing_baseline_gives_no_ratio_and_fails_targets() {
        let mut r = Results::default();
        r.push(Config::Hbone, Figure::Throughput, 10.0);
        assert_eq!(
            r.ratio(Config::Hbone, Config::TlsRelay, Figure::Throughput),
            None
        );
        assert!(targets(&r).iter().all(|t| !t.pass));
    }
}
