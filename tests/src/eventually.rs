//! Bounded waiting for tests: poll a condition until it holds or a deadline passes.
//! The bound is a failure threshold, not a delay: a condition that already holds
//! returns at once.

use std::time::Duration;

/// Default bound for [`assert_eventually!`](crate::assert_eventually).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before re-checking: short at first, then backing off to 100 ms.
#[doc(hidden)]
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(5u64 << attempt.min(5)).min(Duration::from_millis(100))
}

#[doc(hidden)]
pub use tokio::time::sleep as __sleep;

/// Waits until the async `check` says true (`Ok(true)`) or `timeout` passes
/// (`Ok(false)`), re-checking with [`backoff`]; an error from `check` ends the wait.
pub async fn until<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        if check().await? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        __sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// Waits until `cond` holds (true) or `timeout` passes (false), re-checking with
/// [`backoff`]: the non-panicking form, for tools that report instead of failing.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        __sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// Asserts that a condition becomes true within a bound, re-evaluating it (the
/// expression may `.await`) with a short backoff. Use inside async code.
///
/// ```no_run
/// # use std::time::Duration;
/// # use lab::{Pod, assert_eventually};
/// async fn example(pod: &Pod, addr: std::net::SocketAddr, done: impl Fn() -> bool) {
///     assert_eventually!(done());
///     assert_eventually!(pod.connect(addr).await.is_err(), timeout = Duration::from_secs(2));
///     assert_eventually!(done(), timeout = Duration::from_secs(2), "{} never finished", pod.name());
/// }
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, timeout = $crate::eventually::DEFAULT_TIMEOUT)
    };
    ($cond:expr, timeout = $timeout:expr $(,)?) => {
        $crate::assert_eventually!($cond, timeout = $timeout, "")
    };
    ($cond:expr, timeout = $timeout:expr, $($msg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let start = ::std::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            if $cond {
                break;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "assertion `{}` still false after {:?} ({} checks) {}",
                    stringify!($cond),
                    start.elapsed(),
                    attempt + 1,
                    format_args!($($msg)+),
                );
            }
            $crate::eventually::__sleep($crate::eventually::backoff(attempt)).await;
            attempt += 1;
        }
    }};
}

/// Blocking twin of [`assert_eventually!`](crate::assert_eventually) for synchronous
/// code (never call it on an async runtime thread: it sleeps the thread).
#[macro_export]
macro_rules! assert_eventually_blocking {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually_blocking!($cond, timeout = $crate::eventually::DEFAULT_TIMEOUT)
    };
    ($cond:expr, timeout = $timeout:expr $(,)?) => {
        $crate::assert_eventually_blocking!($cond, timeout = $timeout, "")
    };
    ($cond:expr, timeout = $timeout:expr, $($msg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let start = ::std::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            if $cond {
                break;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "assertion `{}` still false after {:?} ({} checks) {}",
                    stringify!($cond),
                    start.elapsed(),
                    attempt + 1,
                    format_args!($($msg)+),
                );
            }
            ::std::thread::sleep($crate::eventually::backoff(attempt));
            attempt += 1;
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(10), Duration::from_millis(100));
    }

    #[test]
    fn returns_once_the_condition_holds() {
        let checks = Cell::new(0);
        crate::assert_eventually_blocking!(
            {
                checks.set(checks.get() + 1);
                checks.get() == 3
            },
            timeout = Duration::from_secs(5)
        );
        assert_eq!(checks.get(), 3);
    }

    #[test]
    #[should_panic(expected = "still false after")]
    fn fails_with_the_condition_after_the_bound() {
        crate::assert_eventually_blocking!(
            1 + 1 == 3,
            timeout = Duration::from_millis(20),
            "context {}",
            7
        );
    }
}
