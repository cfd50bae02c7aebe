//! The `controller` command line.

use std::path::Path;
use std::process::ExitCode;

use crate::serve::{self, FlagError, RUN_USAGE, RunFlags};
use crate::source::reader::DirectoryReader;
use crate::store::Store;
use crate::translate::{MeshOptions, translate};

pub const USAGE: &str = "\
usage: controller run --manifests DIR --tokens FILE [options]   (controller run --help)
       controller validate DIR

  run            watch DIR, serve delta xDS and the CA on 15012 (TLS with the mesh root),
                 admin pages on 127.0.0.1:15014; stops cleanly on SIGTERM / Ctrl-C.

  validate DIR   check every manifest under DIR (*.yaml, *.yml, *.json, recursively) and
                 print each problem as FILE (document N): KIND NAMESPACE/NAME: FIELD: WHY,
                 then what ztunnel cannot enforce as written (e.g. L7 rules in a policy
                 without targetRefs to a waypoint).
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
        ["run", ..] => run(args[1..].to_vec()),
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

/// `controller run ...`.
fn run(args: Vec<String>) -> ExitCode {
    let flags = match RunFlags::parse(args, |k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(FlagError::Help) => {
            print!("{RUN_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("controller run: {e}\n\n{RUN_USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = runtime::init_logging(None, flags.json_logs);
    // serve::run returns at once when it cannot start, and after a clean stop otherwise.
    runtime::block_on(Some(2), async move {
        let shutdown = runtime::stop_on_signals()?;
        serve::run(flags.config, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}

/// `controller validate DIR`.
fn validate(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("controller: {} is not a directory", dir.display());
        return ExitCode::from(2);
    }
    let store = load_once(dir);
    // Objects that are valid on their own can still not mean what they say once
    // translated for ztunnel: those warnings fail validation too.
    let translation = translate(&store, &MeshOptions::default());
    let problems: Vec<_> = store
        .problems()
        .iter()
        .chain(&translation.problems)
        .collect();
    for problem in &problems {
        println!("{problem}");
    }
    let n = problems.len();
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
    DirectoryReader::new(dir).store().clone()
}
