//! Giving freed heap back to the system. Bulk transfers grow copy buffers to hundreds of
//! KiB, and a new workload state is built beside the old one before the old one is freed;
//! glibc is told to keep freed memory inside the heap (`runtime::hold_freed_heap_until_trim`,
//! so bulk buffers are reused instead of mapped afresh), so the RSS of an idle ztunnel would
//! stay at its busiest. Once a second, if connections closed or the state was replaced
//! since the last look, the free memory is returned (`malloc_trim`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

static CLOSED: AtomicU64 = AtomicU64::new(0);

/// How often closed connections are looked for.
const PERIOD: Duration = Duration::from_secs(1);

/// Records that a proxied connection ended (its buffers are free now).
pub fn connection_closed() {
    CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// Runs until `shutdown`, trimming after each second in which connections closed or the
/// workload state changed (`state_changes`: the state store's subscription).
pub async fn trim_after_traffic(
    mut state_changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = CLOSED.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = CLOSED.load(Ordering::Relaxed);
        // A closed channel (the store is gone) counts as no change.
        let state_changed = state_changes.has_changed().unwrap_or(false);
        if now != seen || state_changed {
            seen = now;
            state_changes.borrow_and_update();
            runtime::release_free_heap();
        }
    }
}
