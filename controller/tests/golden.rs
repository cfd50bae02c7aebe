//! Golden tests for translation: each `tests/golden/<case>/` holds `manifests/*.yaml` and
//! `expected.json`, the rendered translation (problems' file paths relative to the case
//! directory). `UPDATE_GOLDEN=1 cargo test -p controller --test golden` rewrites the
//! expected files; review the diff before committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use controller::app::load_once;
use controller::translate::{MeshOptions, render, translate};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The rendered translation of one case, or why the case itself is broken.
fn actual(case: &Path) -> Result<Value, String> {
    let manifests = case.join("manifests");
    if !manifests.is_dir() {
        return Err(format!("{} is missing", manifests.display()));
    }
    let store = load_once(&manifests);
    // A golden case with invalid manifests would silently test less than it claims.
    if !store.problems().is_empty() {
        let list: Vec<String> = store.problems().iter().map(|p| p.to_string()).collect();
        return Err(format!("invalid manifests:\n  {}", list.join("\n  ")));
    }
    let mut translation = translate(&store, &MeshOptions::default());
    for problem in &mut translation.problems {
        if let Ok(relative) = problem.file.strip_prefix(case) {
            problem.file = relative.to_owned();
        }
    }
    Ok(render(&translation))
}

/// Writes straight to stderr: the test harness captures `eprintln!` of passing tests,
/// and an update must always say what it rewrote.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where `actual` differs from `expected`, as JSON paths (the first few).
fn differences(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    const SHOWN: usize = 12;
    if out.len() >= SHOWN || expected == actual {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            for k in keys {
                match (e.get(k), a.get(k)) {
                    (Some(ev), Some(av)) => differences(ev, av, &format!("{path}.{k}"), out),
                    (Some(_), None) => out.push(format!("{path}.{k}: missing")),
                    (None, Some(av)) => out.push(format!("{path}.{k}: unexpected {av}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                differences(ev, av, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

#[test]
fn translation_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cases = cases();
    assert!(!cases.is_empty(), "no golden cases found");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let actual = match actual(case) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let pretty = serde_json::to_string_pretty(&actual).expect("render is JSON") + "\n";
        let expected_path = case.join("expected.json");
        if update {
            std::fs::write(&expected_path, &pretty)
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            say(&format!("updated {}", expected_path.display()));
            continue;
        }
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!(
                    "{name}: {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                    expected_path.display()
                ));
                continue;
            }
        };
        match serde_json::from_str::<Value>(&expected) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => {
                let mut diffs = Vec::new();
                differences(&expected, &actual, "$", &mut diffs);
                failures.push(format!(
                    "{name}: translation differs from {}:\n  {}",
                    expected_path.display(),
                    diffs.join("\n  ")
                ));
            }
            Err(e) => failures.push(format!("{name}: {}: {e}", expected_path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
