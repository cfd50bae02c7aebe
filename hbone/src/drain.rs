//! Counting what is still in flight, for a graceful stop: every connection a proxy
//! accepts holds a [`Guard`] of a shared [`Tracker`], and the stopping process waits for
//! [`Tracker::idle`] (or its deadline) before it closes what is left.

use std::sync::Arc;

use tokio::sync::watch;

/// How many guarded things are alive. Cheap to clone; clones count together.
#[derive(Debug, Clone, Default)]
pub struct Tracker(Arc<watch::Sender<usize>>);

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more until the guard is dropped.
    pub fn guard(&self) -> Guard {
        self.0.send_modify(|n| *n += 1);
        Guard(self.clone())
    }

    /// How many guards are alive now.
    pub fn active(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once no guard is alive (at once if none is).
    pub async fn idle(&self) {
        let mut count = self.0.subscribe();
        // The sender is `self`: the channel cannot close while this waits.
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

/// One counted connection (or anything else in flight); dropping it uncounts it.
#[derive(Debug)]
pub struct Guard(Tracker);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_guard() {
        let tracker = Tracker::new();
        tokio::time::timeout(Duration::from_secs(1), tracker.idle())
            .await
            .expect("a tracker with no guard is idle");
        let (a, b) = (tracker.guard(), tracker.clone().guard());
        assert_eq!(tracker.active(), 2);
        drop(a);
        let idle = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!idle.is_finished(), "idle with a guard still alive");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), idle)
            .await
            .expect("idle once the last guard is dropped")
            .unwrap();
        assert_eq!(tracker.active(), 0);
    }
}
