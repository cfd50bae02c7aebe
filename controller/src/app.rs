//! The `controller` command line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::serve::{self, FlagError, RUN_USAGE, RunFlags};
use crate::source::SourceEvent;
use crate::source::dir::{DirectoryState, read_changes};
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
    init_logging(flags.json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (stop, shutdown) = watch::channel(false);
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
        let mut server = tokio::spawn(serve::run(flags.config, shutdown));
        // The server may stop on its own (it could not start): then there is nothing to
        // wait for.
        let finished = tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); None }
            _ = int.recv() => { info!("SIGINT: stopping"); None }
            done = &mut server => Some(done),
        };
        let done = match finished {
            Some(done) => done,
            None => {
                let _ = stop.send(true);
                server.await
            }
        };
        match done {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the controller task failed: {e}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests running the app twice in one process) keeps the first.
    if json {
        drop(builder.json().try_init());
    } else {
        drop(builder.try_init());
    }
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
