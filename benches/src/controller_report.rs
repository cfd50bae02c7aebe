//! The controller benchmark's report: per mesh size, the push latency (file change to
//! delta response), where the time goes, and the controller's memory; ratios against
//! the baseline mesh measured in the same run; the targets; Markdown and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{RunInfo, fmt_ratio, fmt_value, push_verdicts_and_notes, quick_note};
use crate::stats::{Summary, ratio};

/// What is measured, per mesh size and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// File renamed into place -> the client has the delta response: p50 of a run.
    PushP50,
    /// The same, p99 of a run.
    PushP99,
    /// Re-reading the changed file and reconciling the directory state (median per run).
    SourceScan,
    /// The pipeline's translation and snapshot build (`pipeline::Translator`, which keeps
    /// unchanged pods' results) (median per run).
    Publish,
    /// The stream's diff for one wildcard client (median per run).
    Diff,
    /// For reference: `translate` of the whole store, as the pipeline did before it kept
    /// results (and as `controller validate` does) (median per run).
    FullTranslate,
    /// For reference: the snapshot of that whole translation (median per run).
    FullSnapshot,
    /// The controller process's VmRSS once it serves one proxy.
    Rss,
    /// Its anonymous part (heap, stacks).
    RssAnon,
    /// Peak RSS over the process's life (the initial load).
    RssPeak,
}

impl Figure {
    pub const ALL: [Figure; 10] = [
        Figure::PushP50,
        Figure::PushP99,
        Figure::SourceScan,
        Figure::Publish,
        Figure::Diff,
        Figure::FullTranslate,
        Figure::FullSnapshot,
        Figure::Rss,
        Figure::RssAnon,
        Figure::RssPeak,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Figure::PushP50 => "file change -> push received, p50",
            Figure::PushP99 => "file change -> push received, p99",
            Figure::SourceScan => "breakdown: re-read file + reconcile",
            Figure::Publish => "breakdown: translate + snapshot (pipeline, incremental)",
            Figure::Diff => "breakdown: diff for one wildcard client",
            Figure::FullTranslate => "reference: translate whole store",
            Figure::FullSnapshot => "reference: snapshot of whole translation",
            Figure::Rss => "controller RSS serving one proxy",
            Figure::RssAnon => "controller RSS, anonymous part",
            Figure::RssPeak => "controller peak RSS (VmHWM)",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Figure::Rss | Figure::RssAnon | Figure::RssPeak => "MiB",
            _ => "ms",
        }
    }
}

/// Every run's value of every figure, per mesh size (pods).
#[derive(Debug, Default)]
pub struct Results {
    samples: BTreeMap<(Figure, usize), Vec<f64>>,
    /// Every push latency (ms) per size, all runs pooled, in measurement order.
    pub push_samples: BTreeMap<usize, Vec<f64>>,
}

impl Results {
    pub fn push(&mut self, figure: Figure, pods: usize, value: f64) {
        self.samples.entry((figure, pods)).or_default().push(value);
    }

    fn runs(&self, figure: Figure, pods: usize) -> &[f64] {
        self.samples.get(&(figure, pods)).map_or(&[], Vec::as_slice)
    }

    pub fn summary(&self, figure: Figure, pods: usize) -> Option<Summary> {
        Summary::of(self.runs(figure, pods))
    }

    /// Median at `pods` over median at `baseline`.
    pub fn ratio(&self, figure: Figure, pods: usize, baseline: usize) -> Option<f64> {
        ratio(
            self.summary(figure, pods)?.median,
            self.summary(figure, baseline)?.median,
        )
    }

    /// RSS above the baseline mesh's, scaled to `per` pods: (rss_N − rss_baseline) /
    /// (N / per), paired within each run (one run's processes are measured back to back).
    pub fn rss_per(&self, per: usize, pods: usize, baseline: usize) -> Option<Summary> {
        if pods == 0 {
            return None;
        }
        let scale = per as f64 / pods as f64;
        let per_run: Vec<f64> = self
            .runs(Figure::Rss, pods)
            .iter()
            .zip(self.runs(Figure::Rss, baseline))
            .map(|(n, b)| (n - b) * scale)
            .collect();
        Summary::of(&per_run)
    }

    /// MiB per 1,000 pods.
    pub fn rss_per_1k(&self, pods: usize, baseline: usize) -> Option<Summary> {
        self.rss_per(1_000, pods, baseline)
    }

    /// RSS above the baseline mesh's, paired within each run.
    pub fn rss_delta(&self, pods: usize, baseline: usize) -> Option<Summary> {
        self.rss_per(pods, pods, baseline)
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: Figure,
    pub pods: usize,
    pub unit: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
    pub vs_baseline: Option<f64>,
}

pub fn rows(results: &Results, sizes: &[usize], baseline: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for figure in Figure::ALL {
        for &pods in sizes {
            let Some(summary) = results.summary(figure, pods) else {
                continue;
            };
            rows.push(Row {
                figure,
                pods,
                unit: figure.unit(),
                summary,
                vs_baseline: results.ratio(figure, pods, baseline),
            });
        }
    }
    rows
}

/// A target of the issue, checked on medians over runs (reported, never enforced).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub measured: Option<f64>,
    pub unit: &'static str,
    pub pass: bool,
}

impl Target {
    pub fn line(&self) -> String {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        let measured = self.measured.map_or_else(
            || "n/a".to_owned(),
            |m| format!("{} {}", fmt_value(m), self.unit),
        );
        format!("{verdict}: {} (measured {measured})", self.name)
    }
}

/// Push p99 under 50 ms and RSS under 30 MiB, both at `largest` pods (10,000 by default).
pub fn targets(results: &Results, largest: usize, baseline: usize) -> Vec<Target> {
    let p99 = results.summary(Figure::PushP99, largest).map(|s| s.median);
    // The target is per 10k pods: the delta at 10k, scaled if the largest mesh differs.
    let per_10k = results.rss_per(10_000, largest, baseline).map(|s| s.median);
    vec![
        Target {
            name: format!("file change -> push p99 with {largest} pods < 50 ms"),
            measured: p99,
            unit: "ms",
            pass: p99.is_some_and(|v| v < 50.0),
        },
        Target {
            name: format!(
                "controller RSS per 10,000 pods (above the {baseline}-pod mesh) < 30 MiB"
            ),
            measured: per_10k,
            unit: "MiB",
            pass: per_10k.is_some_and(|v| v < 30.0),
        },
    ]
}

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    #[serde(flatten)]
    pub run: RunInfo,
    pub loadavg_before_after: [Option<f64>; 2],
    pub runs: usize,
    pub quick: bool,
    /// Mesh sizes in pods; the first is the baseline.
    pub sizes: Vec<usize>,
    pub changes_per_run: usize,
    /// Files, services, policies and nodes of each mesh size.
    pub layouts: Vec<String>,
    pub notes: Vec<String>,
}

fn cell(s: &Summary) -> String {
    format!(
        "{} ({}–{})",
        fmt_value(s.median),
        fmt_value(s.min),
        fmt_value(s.max)
    )
}

pub fn markdown(meta: &Metadata, results: &Results, targets: &[Target]) -> String {
    let sizes = &meta.sizes;
    let baseline = sizes[0];
    let largest = *sizes.last().unwrap_or(&baseline);
    let mut md = String::from("# Controller benchmark\n\n");
    let _ = writeln!(
        md,
        "{}, commit {}, `{}`.\n\nMachine: {}, {} CPUs. Median of {} runs \
         (min–max over runs); {} one-pod changes per run and mesh size.{}\n",
        meta.run.date_utc,
        meta.run.commit(),
        meta.run.command,
        meta.run.machine,
        meta.run.nproc,
        meta.runs,
        meta.changes_per_run,
        quick_note(meta.quick),
    );
    if let [Some(before), Some(after)] = meta.loadavg_before_after {
        let _ = writeln!(
            md,
            "1-minute load average before/after: {before:.2}/{after:.2}.\n"
        );
    }
    for layout in &meta.layouts {
        let _ = writeln!(md, "- {layout}");
    }
    md.push('\n');
    md.push_str("| figure |");
    for &pods in sizes {
        let tag = if pods == baseline { " (baseline)" } else { "" };
        let _ = write!(md, " {pods} pods{tag} |");
    }
    let _ = writeln!(md, " {largest} / {baseline} pods |");
    md.push_str("|---|");
    for _ in 0..=sizes.len() {
        md.push_str("---:|");
    }
    md.push('\n');
    for figure in Figure::ALL {
        if sizes.iter().all(|&p| results.summary(figure, p).is_none()) {
            continue;
        }
        let _ = write!(md, "| {} ({}) |", figure.label(), figure.unit());
        for &pods in sizes {
            let c = results
                .summary(figure, pods)
                .map_or_else(String::new, |s| cell(&s));
            let _ = write!(md, " {c} |");
        }
        let _ = writeln!(
            md,
            " {} |",
            fmt_ratio(results.ratio(figure, largest, baseline))
        );
    }
    type Derived = fn(&Results, usize, usize) -> Option<Summary>;
    let derived: [(&str, Derived); 2] = [
        (
            "RSS above the baseline mesh, per 1,000 pods",
            Results::rss_per_1k,
        ),
        ("RSS above the baseline mesh", Results::rss_delta),
    ];
    for (label, figure) in derived {
        let _ = write!(md, "| {label} (MiB) |");
        for &pods in sizes {
            let c = (pods != baseline)
                .then(|| figure(results, pods, baseline))
                .flatten()
                .map_or_else(String::new, |s| cell(&s));
            let _ = write!(md, " {c} |");
        }
        md.push_str(" |\n");
    }
    md.push('\n');
    let verdicts: Vec<String> = targets.iter().map(Target::line).collect();
    push_verdicts_and_notes(&mut md, &verdicts, "What was measured", &meta.notes);
    md
}

pub fn json(meta: &Metadata, results: &Results, targets: &[Target]) -> serde_json::Value {
    let baseline = meta.sizes[0];
    let rss_per_1k: BTreeMap<String, Option<Summary>> = meta.sizes[1..]
        .iter()
        .map(|&p| (p.to_string(), results.rss_per_1k(p, baseline)))
        .collect();
    serde_json::json!({
        "metadata": meta,
        "results": rows(results, &meta.sizes, baseline),
        "rss_per_1k_pods_above_baseline": rss_per_1k,
        "push_latency_samples_ms": results.push_samples,
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_paired_per_run_and_targets_use_medians() {
        let mut r = Results::default();
        for (rss_base, rss_1k, rss_10k) in
            [(10.0, 12.0, 30.0), (11.0, 13.5, 29.0), (10.0, 12.5, 35.0)]
        {
            r.push(Figure::Rss, 10, rss_base);
            r.push(Figure::Rss, 1_000, rss_1k);
            r.push(Figure::Rss, 10_000, rss_10k);
        }
        for p99 in [40.0, 60.0, 45.0] {
            r.push(Figure::PushP99, 10_000, p99);
            r.push(Figure::PushP99, 10, p99 / 10.0);
        }
        // Per run: (30-10)/10, (29-11)/10, (35-10)/10 MiB per 1k; median 2.0.
        let per_1k = r.rss_per_1k(10_000, 10).unwrap();
        assert_eq!((per_1k.median, per_1k.min, per_1k.max), (2.0, 1.8, 2.5));
        assert_eq!(r.rss_delta(1_000, 10).unwrap().median, 2.5);
        assert_eq!(r.ratio(Figure::PushP99, 10_000, 10), Some(10.0));
        let t = targets(&r, 10_000, 10);
        assert!(t[0].pass, "45 ms p99 median: {t:?}");
        assert!(t[1].pass, "about 20 MiB per 10k: {t:?}");
        assert!(t[0].line().starts_with("PASS"));
        let rows = rows(&r, &[10, 1_000, 10_000], 10);
        assert_eq!(rows.len(), 5, "Rss at 3 sizes, p99 at 2");
    }

    #[test]
    fn missing_figures_fail_targets() {
        let t = targets(&Results::default(), 10_000, 10);
        assert!(t.iter().all(|t| !t.pass && t.measured.is_none()));
    }
}
