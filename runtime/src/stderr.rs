//! Where log lines go: stderr, with the access lines batched.
//!
//! A proxy writes an access line per request or connection; one `write(2)` each is a
//! measurable part of a busy waypoint's CPU. Lines on the target [`ACCESS_TARGET`] at
//! INFO and below are therefore collected and written together, at most
//! [`FLUSH_AFTER`] after the first of a batch or once [`FLUSH_AT_BYTES`] have gathered.
//! Every other line (and so every warning and error) is written at once, after whatever
//! was batched before it, in the same `write(2)`: lines keep their order. The batch is
//! also written when the process ends through [`crate::block_on`] and before a panic's
//! message.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The target of access lines (ztunnel's per connection, the waypoint's per request).
pub const ACCESS_TARGET: &str = "access";
/// How long an access line may wait for others.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// A batch this large is written at once.
pub const FLUSH_AT_BYTES: usize = 64 * 1024;

/// A [`MakeWriter`] for `tracing_subscriber`'s fmt layer. Cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    batch: Arc<Batch>,
}

struct Batch {
    state: Mutex<State>,
    /// Signalled when a batch starts (the buffer was empty).
    started: Condvar,
    flush_after: Duration,
}

struct State {
    buf: Vec<u8>,
    sink: Box<dyn Write + Send>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("flush_after", &self.batch.flush_after)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Lines to `sink`; a thread writes each batch at most `flush_after` after it starts.
    pub fn new(sink: Box<dyn Write + Send>, flush_after: Duration) -> Self {
        let batch = Arc::new(Batch {
            state: Mutex::new(State {
                buf: Vec::new(),
                sink,
            }),
            started: Condvar::new(),
            flush_after,
        });
        let weak = Arc::downgrade(&batch);
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || flush_batches(&weak));
        if spawned.is_err() {
            // No thread: batches are still written when full, by the next direct line,
            // and at exit; say so once, the only way we can.
            let _ = writeln!(
                io::stderr(),
                "cannot start the log flushing thread; access lines are written when 64 KiB gathered"
            );
        }
        LogWriter { batch }
    }

    /// Writes what is batched now.
    pub fn flush(&self) {
        self.batch.lock().write_out();
    }
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while writing leaves nothing half-done that matters more than the logs.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // Nowhere to report a failed write of the log itself; the lines are dropped.
        let _ = self.sink.write_all(&self.buf);
        let _ = self.sink.flush();
        self.buf.clear();
        if self.buf.capacity() > 4 * FLUSH_AT_BYTES {
            self.buf.shrink_to(FLUSH_AT_BYTES);
        }
    }
}

/// The flushing thread: waits for a batch to start, lets it gather, writes it. Ends when
/// the writer is gone.
fn flush_batches(batch: &std::sync::Weak<Batch>) {
    loop {
        let Some(batch) = batch.upgrade() else {
            return;
        };
        let flush_after = batch.flush_after;
        {
            let state = batch.lock();
            // Wake now and then to notice the writer going away.
            let (state, _) = batch
                .started
                .wait_timeout_while(state, Duration::from_secs(1), |s| s.buf.is_empty())
                .unwrap_or_else(|e| e.into_inner());
            if state.buf.is_empty() {
                continue;
            }
        }
        std::thread::sleep(flush_after);
        batch.lock().write_out();
    }
}

/// One event's writer: batched (access lines at INFO and below) or direct.
pub struct Line<'a> {
    batch: &'a Batch,
    batched: bool,
}

impl std::fmt::Debug for Line<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("batched", &self.batched)
            .finish_non_exhaustive()
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.batch.lock();
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(buf);
        if !self.batched || state.buf.len() >= FLUSH_AT_BYTES {
            state.write_out();
        } else if was_empty {
            self.batch.started.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            batch: &self.batch,
            batched: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            batch: &self.batch,
            batched: meta.target() == ACCESS_TARGET
                && !matches!(*meta.level(), Level::ERROR | Level::WARN),
        }
    }
}

/// The process's stderr writer, once [`crate::init_logging`] has set it up.
static STDERR: OnceLock<LogWriter> = OnceLock::new();

/// The writer [`crate::init_logging`] logs through: stderr, batched as described above.
/// The first call also makes a panic write the batch before its message.
pub(crate) fn process_writer() -> LogWriter {
    STDERR
        .get_or_init(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // `try_lock`: the panic may have come from inside a log write.
                if let Some(writer) = STDERR.get()
                    && let Ok(mut state) = writer.batch.state.try_lock()
                {
                    state.write_out();
                }
                previous(info);
            }));
            LogWriter::new(Box::new(io::stderr()), FLUSH_AFTER)
        })
        .clone()
}

/// Writes the process's batched log lines now (at exit, [`crate::block_on`] does it).
pub fn flush_logs() {
    if let Some(writer) = STDERR.get() {
        writer.flush();
    }
}

#[cfg(test)]
mod tests;
