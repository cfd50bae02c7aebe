//! Giving memory back to the system after a burst of short-lived allocations.
//!
//! A full push to a proxy (every resource of a large mesh in one response) and a full
//! translation allocate megabytes that live for milliseconds. glibc's allocator keeps what
//! they free in its arenas, so without help the process keeps the high-water mark of every
//! burst: at 10,000 pods, one connecting proxy left about 8 MiB behind. After such a burst,
//! `malloc_trim` returns the free pages to the kernel.
//!
//! Requests are coalesced: the first schedules one trim [`DELAY`] later (a response must be
//! encoded and written before its memory is free), run on a blocking thread; requests made
//! before it runs join it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::debug;

/// How long after a burst the trim runs.
pub const DELAY: Duration = Duration::from_millis(500);

/// Work with fewer items than this (resources in a response, objects translated) is not a
/// burst worth a trim.
pub const BURST: usize = 1000;

static TRIMMER: Trimmer = Trimmer::new();

/// Schedules a trim after a burst of `items` items, if that is a burst. Outside a Tokio
/// runtime it does nothing.
pub fn after_burst(items: usize) {
    TRIMMER.after_burst(items, runtime::release_free_heap);
}

struct Trimmer {
    scheduled: AtomicBool,
    runs: AtomicUsize,
}

impl Trimmer {
    const fn new() -> Self {
        Trimmer {
            scheduled: AtomicBool::new(false),
            runs: AtomicUsize::new(0),
        }
    }

    fn after_burst(&'static self, items: usize, work: fn()) {
        if items < BURST {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return; // one is on its way
        }
        runtime.spawn(async move {
            tokio::time::sleep(DELAY).await;
            self.scheduled.store(false, Ordering::Release);
            let started = Instant::now();
            if tokio::task::spawn_blocking(work).await.is_ok() {
                self.runs.fetch_add(1, Ordering::Relaxed);
                debug!(took = ?started.elapsed(), "returned free memory to the system");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_are_coalesced_into_one_trim() {
        static T: Trimmer = Trimmer::new();
        fn nothing() {}
        T.after_burst(BURST - 1, nothing);
        tokio::time::sleep(DELAY * 2).await;
        assert_eq!(T.runs.load(Ordering::Relaxed), 0, "not a burst");
        T.after_burst(BURST, nothing);
        T.after_burst(BURST * 10, nothing); // joins the scheduled one
        tokio::time::sleep(DELAY * 2).await;
        assert_eq!(T.runs.load(Ordering::Relaxed), 1);
        T.after_burst(BURST, nothing);
        tokio::time::sleep(DELAY * 2).await;
        assert_eq!(
            T.runs.load(Ordering::Relaxed),
            2,
            "a later burst gets its own"
        );
    }

    #[test]
    fn outside_a_runtime_nothing_happens() {
        static T: Trimmer = Trimmer::new();
        T.after_burst(BURST, || panic!("must not run"));
        assert!(!T.scheduled.load(Ordering::Relaxed));
    }
}
