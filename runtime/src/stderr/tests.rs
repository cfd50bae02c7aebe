use std::time::Instant;

use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::{LogFormat, format_layer};

/// Each `write` call the sink received, in order.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

impl Writes {
    fn taken(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|w| String::from_utf8(w.clone()).unwrap())
            .collect()
    }
}

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Logs through `writer` with the processes' own text layer while `f` runs.
fn logging(writer: &LogWriter, f: impl FnOnce()) {
    crate::scoped_logs_see_every_callsite();
    let subscriber =
        tracing_subscriber::registry().with(format_layer(LogFormat::Text, writer.clone(), false));
    tracing::subscriber::with_default(subscriber, f);
}

#[test]
fn access_lines_are_written_together_and_other_lines_at_once_in_order() {
    let writes = Writes::default();
    // A flush delay no test run reaches: only the writer's own rules write.
    let writer = LogWriter::new(Box::new(writes.clone()), Duration::from_secs(3600));
    logging(&writer, || {
        for i in 0..100 {
            tracing::info!(target: "access", i, "request");
        }
    });
    assert!(
        writes.taken().is_empty(),
        "access lines wait for their batch"
    );

    logging(&writer, || {
        tracing::debug!(target: "access", "debug access line");
        tracing::info!(target: "mesh", "an ordinary line");
    });
    let taken = writes.taken();
    assert_eq!(
        taken.len(),
        1,
        "the batch and the line in one write: {taken:?}"
    );
    let lines: Vec<&str> = taken[0].lines().collect();
    assert_eq!(lines.len(), 102, "{lines:?}");
    for (i, line) in lines[..100].iter().enumerate() {
        assert!(line.ends_with(&format!("request i={i}")), "{line}");
    }
    assert!(lines[100].ends_with("debug access line"), "{}", lines[100]);
    assert!(lines[101].ends_with("an ordinary line"), "{}", lines[101]);

    // Warnings and errors are never held back, access target or not.
    logging(&writer, || {
        tracing::warn!(target: "access", "refused");
        tracing::error!(target: "access", "broken");
    });
    let taken = writes.taken();
    assert_eq!(taken.len(), 3, "{taken:?}");
    assert!(taken[1].contains("WARN") && taken[1].contains("refused"));
    assert!(taken[2].contains("ERROR") && taken[2].contains("broken"));
}

#[test]
fn a_full_batch_is_written_at_once_and_the_rest_on_flush() {
    let writes = Writes::default();
    let writer = LogWriter::new(Box::new(writes.clone()), Duration::from_secs(3600));
    let path = "p".repeat(1000);
    logging(&writer, || {
        for _ in 0..100 {
            tracing::info!(target: "access", %path, "request");
        }
    });
    let taken = writes.taken();
    assert_eq!(taken.len(), 1, "100 lines of ~1 KiB fill one 64 KiB batch");
    assert!(taken[0].len() >= FLUSH_AT_BYTES, "{}", taken[0].len());
    writer.flush();
    let taken = writes.taken();
    assert_eq!(taken.len(), 2);
    assert_eq!(taken.concat().lines().count(), 100);
    writer.flush();
    assert_eq!(writes.taken().len(), 2, "nothing left, nothing written");
}

#[test]
fn a_batch_is_written_by_the_flushing_thread_soon_after_it_starts() {
    let writes = Writes::default();
    let writer = LogWriter::new(Box::new(writes.clone()), Duration::from_millis(20));
    logging(&writer, || tracing::info!(target: "access", "request"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while writes.taken().is_empty() {
        assert!(Instant::now() < deadline, "the batch was never written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let taken = writes.taken();
    assert_eq!(taken.len(), 1);
    assert!(taken[0].ends_with("request\n"), "{taken:?}");
}
