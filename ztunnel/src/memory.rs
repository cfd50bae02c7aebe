//! Giving freed heap back to the system. Bulk transfers grow copy buffers to hundreds of
//! KiB; glibc keeps what they free inside the heap, so the RSS of an idle ztunnel would stay
//! at its busiest. Once a second, if connections closed since the last look, the free
//! memory is returned (`malloc_trim`).

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

/// Runs until `shutdown`, trimming after each second in which connections closed.
pub async fn trim_after_traffic(mut shutdown: watch::Receiver<bool>) {
    let mut seen = CLOSED.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = CLOSED.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            runtime::release_free_heap();
        }
    }
}
