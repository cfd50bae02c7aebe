//! Process start-up and shutdown shared by every binary (ztunnel, node-agent, controller,
//! demo-app), so they log, exit and stop on signals the same way.

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::Subscriber;
use tracing::{error, info};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

mod log_time;
pub use log_time::civil_from_days;
mod plain_fields;
mod stderr;
pub mod testing;

pub use stderr::{ACCESS_TARGET, FLUSH_AFTER, FLUSH_AT_BYTES, Line, LogWriter, flush_logs};

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`): free memory
/// at the top of each heap and unused whole pages inside them. glibc otherwise keeps what
/// bursts of short-lived allocations freed, so a process's RSS stays at its busiest.
/// Walks every heap: call it after a burst, not per allocation. A no-op with other C
/// libraries (musl returns memory by itself).
pub fn release_free_heap() {
    trim_heap();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    unsafe extern "C" {
        /// glibc: safe to call at any time from any thread.
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes no pointers and is thread-safe in glibc.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// For a process that calls [`release_free_heap`] itself after bursts: tells glibc to keep
/// up to 64 MiB of freed memory at the top of the heap meanwhile, and to serve blocks up to
/// 1 MiB from the heap. By default glibc gives the heap's top back as soon as a little more
/// than 128 KiB is free there (the bar moves up with use, not far enough for bulk copy
/// buffers) and maps a fresh zeroed region for each block of 128 KiB or more, so a bulk
/// transfer whose buffers come and go pays `brk` calls and page faults on every cycle (in
/// ztunnel's node benchmark, a 4 MiB bar still meant ~400 `brk` calls a second). A no-op
/// with other C libraries.
pub fn hold_freed_heap_until_trim() {
    tune_heap();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_heap() {
    // glibc's <malloc.h> parameter numbers.
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    unsafe extern "C" {
        /// glibc: takes and returns plain integers; thread-safe.
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt takes no pointers and is thread-safe in glibc.
    unsafe {
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_heap() {}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines: `time LEVEL spans: target: message key=value ...`.
    Text,
    /// One JSON object per line, the event's fields nested under `"fields"`
    /// (tracing-subscriber's default JSON).
    Json,
    /// One JSON object per line with the event's fields at the top level, next to
    /// `timestamp`, `level`, `target` and `message`: what log collectors index directly.
    FlatJson,
}

/// Logs to stderr, coloured only on a terminal (log files and collectors get plain text);
/// access lines are written in batches ([`LogWriter`]), everything else at once.
/// `filter` overrides `RUST_LOG`, which defaults to `info`; an invalid `filter` is an
/// error. A second call (tests running an app twice in one process) keeps the first.
/// The filter can be read and replaced later through [`log_filter`].
pub fn init_logging(filter: Option<&str>, json: bool) -> Result<(), String> {
    let format = if json {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    init_logging_as(filter, format)
}

/// [`init_logging`] with a choice of [`LogFormat`].
pub fn init_logging_as(filter: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match filter {
        Some(f) => parse_filter(f)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let (filter_layer, handle) = LogFilter::layer(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let installed = tracing_subscriber::registry()
        .with(filter_layer)
        .with(format_layer(format, stderr::process_writer(), ansi))
        .try_init()
        .is_ok();
    if installed {
        // Only the first call installs a subscriber; its handle is the one that matters.
        let _ = LOG_FILTER.set(handle);
    }
    Ok(())
}

/// The layer that writes events to `writer` in `format` (`ansi`: colours, text only).
/// [`init_logging_as`] writes with it to stderr; tests can capture exactly the lines the
/// processes write.
pub fn format_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The same timestamps, written faster (log_time.rs).
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_timer(log_time::LogTime);
    match format {
        // The same text, written faster (plain_fields.rs).
        LogFormat::Text if !ansi => layer
            .with_ansi(false)
            .fmt_fields(plain_fields::PlainFields)
            .boxed(),
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().boxed(),
        LogFormat::FlatJson => layer.json().flatten_event(true).boxed(),
    }
}

fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| format!("invalid log filter {directives:?}: {e}"))
}

/// The filter [`init_logging`] installed, if it installed one.
static LOG_FILTER: OnceLock<LogFilter> = OnceLock::new();

/// The running process's log filter (as `RUST_LOG` or `init_logging`'s `filter` set it),
/// to be read and replaced at runtime; `None` before [`init_logging`] or when another
/// subscriber was installed first.
pub fn log_filter() -> Option<LogFilter> {
    LOG_FILTER.get().cloned()
}

/// Reads and replaces a log filter while the process runs (ztunnel's `/logging`). A
/// change applies to every thread at once, including events already seen once (their
/// cached interest is rebuilt). Cheap to clone; all clones act on the same filter.
#[derive(Clone)]
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter it started with, for [`LogFilter::reset`].
    initial: Arc<str>,
}

impl std::fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFilter")
            .field("current", &self.current())
            .field("initial", &self.initial)
            .finish()
    }
}

impl LogFilter {
    /// A filter layer starting as `directives` (`RUST_LOG` syntax, e.g.
    /// `info,access=debug`) and the handle that changes it. The layer goes directly on a
    /// [`Registry`], under the layers that write.
    pub fn new(directives: &str) -> Result<(reload::Layer<EnvFilter, Registry>, Self), String> {
        Ok(Self::layer(parse_filter(directives)?))
    }

    fn layer(filter: EnvFilter) -> (reload::Layer<EnvFilter, Registry>, Self) {
        let initial = filter.to_string().into();
        let (layer, handle) = reload::Layer::new(filter);
        (layer, LogFilter { handle, initial })
    }

    /// The filter in force, as directives (`EnvFilter`'s own rendering, e.g.
    /// `access=debug,info`).
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_else(|e| format!("unavailable ({e})"))
    }

    /// Replaces the filter with `directives`; answers the new filter. Invalid directives
    /// are an error and change nothing.
    pub fn set(&self, directives: &str) -> Result<String, String> {
        let directives = directives.trim();
        if directives.is_empty() {
            return Err("empty log filter".into());
        }
        let filter = parse_filter(directives)?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        Ok(self.current())
    }

    /// Goes back to the filter it started with; answers it.
    pub fn reset(&self) -> Result<String, String> {
        let initial = self.initial.clone();
        self.set(&initial)
    }
}

/// Runs `main` on a tokio runtime and turns its outcome into the exit code, logging the
/// error. `threads`: `Some(1)` runs everything on this thread, `Some(n)` uses `n`
/// workers, `None` one per CPU.
pub fn block_on(
    threads: Option<usize>,
    main: impl Future<Output = Result<(), String>>,
) -> ExitCode {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    };
    flush_logs();
    code
}

/// A channel that turns true at the first SIGTERM or SIGINT (logged). Must be called
/// inside the runtime.
pub fn stop_on_signals() -> Result<watch::Receiver<bool>, String> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
        stop.send_replace(true);
    });
    Ok(stopped)
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// For tests that capture logs with a per-thread (scoped) subscriber: call it first.
///
/// `tracing` caches, per callsite and process-wide, whether anyone listens. While exactly
/// one dispatcher exists it asks only the *current thread's* default, so a callsite first
/// reached by another test's thread (with no subscriber) is cached as "never" for every
/// thread, and the capture misses it. A second dispatcher kept alive for the life of the
/// process makes `tracing` ask every live dispatcher instead.
pub fn scoped_logs_see_every_callsite() {
    static SILENT: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SILENT.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_outcomes_become_exit_codes() {
        assert_eq!(block_on(Some(1), async { Ok(()) }), ExitCode::SUCCESS);
        assert_eq!(
            block_on(Some(2), async { Err("boom".into()) }),
            ExitCode::FAILURE
        );
        assert_eq!(block_on(None, async { Ok(()) }), ExitCode::SUCCESS);
    }

    #[test]
    fn an_invalid_filter_is_an_error() {
        let err = init_logging(Some("info,[[["), false).unwrap_err();
        assert!(err.contains("invalid log filter"), "{err}");
    }

    use crate::testing::CapturedLog as Captured;

    #[test]
    fn the_filter_is_read_and_replaced_at_runtime() {
        let (layer, filter) = LogFilter::new("info").unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(format_layer(LogFormat::Text, move || writer.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(filter.current(), "info");
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            tracing::debug!("hidden");

            assert_eq!(filter.set("debug"), Ok("debug".to_owned()));
            assert!(tracing::enabled!(tracing::Level::DEBUG));
            tracing::debug!("shown");

            // Per target: `access` at debug, the rest at warn.
            let now = filter.set(" access=debug,warn ").unwrap();
            assert!(
                now.contains("access=debug") && now.contains("warn"),
                "{now}"
            );
            assert!(tracing::enabled!(target: "access", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(tracing::Level::INFO));

            let err = filter.set("info,[[[").unwrap_err();
            assert!(err.contains("invalid log filter"), "{err}");
            assert_eq!(filter.set("  ").unwrap_err(), "empty log filter");
            assert_eq!(filter.current(), now, "a bad filter changes nothing");

            assert_eq!(filter.reset(), Ok("info".to_owned()));
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
        });
        let text = captured.text();
        assert!(text.contains("shown") && !text.contains("hidden"), "{text}");
    }

    #[test]
    fn flat_json_puts_the_fields_at_the_top_level() {
        let line = |format| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::registry().with(format_layer(
                format,
                move || writer.clone(),
                false,
            ));
            tracing::subscriber::with_default(subscriber, || {
                tracing::event!(target: "access", tracing::Level::INFO, src.addr = "10.0.0.1:1234", bytes_sent = 7u64, "closed");
            });
            let text = captured.text();
            assert_eq!(text.lines().count(), 1, "{text}");
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let flat = line(LogFormat::FlatJson);
        assert_eq!(flat["target"], "access");
        assert_eq!(flat["level"], "INFO");
        assert_eq!(flat["message"], "closed");
        assert_eq!(flat["src.addr"], "10.0.0.1:1234");
        assert_eq!(flat["bytes_sent"], 7);
        // The other binaries' JSON is unchanged: fields under "fields".
        let nested = line(LogFormat::Json);
        assert_eq!(nested["fields"]["src.addr"], "10.0.0.1:1234");
        assert!(nested.get("src.addr").is_none());
    }

    #[tokio::test]
    async fn sigterm_turns_the_channel_true() {
        let stop = stop_on_signals().unwrap();
        assert!(!*stop.borrow());
        // Signals this very process; the handler installed above catches it.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), stopped(stop))
            .await
            .expect("SIGTERM seen");
    }
}
