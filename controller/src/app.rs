//! The `controller` command line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use crate::source::SourceEvent;
use crate::source::dir::{DirectoryState, read_changes};
use crate::store::Store;

pub const USAGE: &str = "\
usage: controller validate DIR

  validate DIR   check every manifest under DIR (*.yaml, *.yml, *.json, recursively) and
                 print each problem as FILE (document N): KIND NAMESPACE/NAME: FIELD: WHY.
                 Exits 0 when everything is valid, 1 when something is not, 2 on usage errors.
";

pub fn main(args: Vec<String>) -> ExitCode {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["validate", dir] => validate(Path::new(dir)),
        ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("controller: unrecognised arguments {args:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `controller validate DIR`.
fn validate(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("controller: {} is not a directory", dir.display());
        return ExitCode::from(2);
    }
    let store = load_once(dir);
    for problem in store.problems() {
        println!("{problem}");
    }
    let n = store.problems().len();
    if n == 0 {
        println!("{}: {} objects, all valid", dir.display(), store.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "{}: {n} problem{} ({} valid objects)",
            dir.display(),
            if n == 1 { "" } else { "s" },
            store.len()
        );
        ExitCode::from(1)
    }
}

/// Reads `dir` once, as the directory source's first scan does.
pub fn load_once(dir: &Path) -> Store {
    let mut state = DirectoryState::default();
    for (path, change) in read_changes(dir, &BTreeMap::new()) {
        state.update_file(path, change);
    }
    let mut store = Store::default();
    for event in state.reconcile() {
        store.apply(event);
    }
    store.apply(SourceEvent::Synced);
    store
}
